"""Two instances on one PostgreSQL and one Redis: a change made through one reaches the other.

Instance B polls the change feed only once a minute here, so what brings its cache in line within
a second is the Redis message that instance A's write path publishes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx
import pytest

from moeconnect.config import Settings
from moeconnect.runtime import Runtime
from moeconnect.testing import MoeconnectServer

from .helpers import NO_LIMITS, PATH, code_of, request_kwargs

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

CYCLES = 100
LIMIT = 1.0


def test_rotations_and_revocations_reach_the_other_instance_within_a_second(
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = secrets.token_urlsafe(32)
    env = {"MOECONNECT_SECRET": secret, "MOECONNECT_CHANGE_POLL": "60", **NO_LIMITS}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    args = ["--redis", redis_url]
    with (
        MoeconnectServer(db_url=pg_url, env=env, args=args, workdir=tmp_path / "a") as a,
        MoeconnectServer(db_url=pg_url, env=env, args=args, workdir=tmp_path / "b") as b,
    ):
        monkeypatch.setenv("MOECONNECT_SECRET", secret)
        delays = asyncio.run(_cycle(a, b, pg_url, redis_url))
    worst = max(delays)
    with capsys.disabled():
        print(
            f"\n[scale] {len(delays)} changes through A refused by B: worst delay "
            f"{worst * 1000:.1f} ms, median {sorted(delays)[len(delays) // 2] * 1000:.1f} ms"
        )
    assert len(delays) == 2 * CYCLES
    assert worst < LIMIT, f"B served a changed key for {worst:.3f}s"


async def _cycle(
    a: MoeconnectServer, b: MoeconnectServer, pg_url: str, redis_url: str
) -> list[float]:
    # Instance A's write path: the same Runtime (store listeners, Redis publisher) its admin API
    # and dashboard write through.
    runtime = Runtime(Settings(db_url=pg_url, redis_url=redis_url, change_poll_interval=60))
    await runtime.start()
    delays: list[float] = []
    try:
        accounts = runtime.accounts
        async with httpx.AsyncClient(base_url=b.base_url, timeout=5) as client:

            async def status(wid: str, key: str) -> tuple[int, str]:
                response = await client.post(PATH, **request_kwargs(wid, key))
                return response.status_code, code_of(response)

            async def refused_after(wid: str, old: str, started: float) -> float:
                while True:
                    code, name = await status(wid, old)
                    elapsed = time.monotonic() - started
                    if code == 401:
                        return elapsed
                    assert code == 200, name
                    if elapsed > 5:
                        return elapsed

            ws = await accounts.create_workspace("Scale", "01")
            key = (await accounts.generate_key(ws.id)).key
            for _ in range(CYCLES):
                # B has the current key cached: two successes, the second from its cache.
                assert await status(ws.id, key) == (200, "SUCCESS")
                assert await status(ws.id, key) == (200, "SUCCESS")
                started = time.monotonic()
                new = (await accounts.generate_key(ws.id)).key  # rotate, no grace
                delays.append(await refused_after(ws.id, key, started))
                # The new key works on B at once.
                assert await status(ws.id, new) == (200, "SUCCESS")
                started = time.monotonic()
                await accounts.revoke_key(ws.id)
                delays.append(await refused_after(ws.id, new, started))
                key = (await accounts.generate_key(ws.id)).key
            assert a.process is not None and a.process.poll() is None
    finally:
        await runtime.stop()
    return delays
