"""Two instances on one PostgreSQL and one Redis: a change made through one reaches the other.

Rotations and revocations go through instance A's admin API. Instance B polls the change feed
only once a minute here, so what brings its cache in line within a second is the Redis message A
publishes. Delays are measured from the change's own timestamp in the feed (taken by A before its
transaction) to B's first refusal, both on this machine's clock.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC
from pathlib import Path

import asyncpg
import httpx
import pytest

from moeconnect.testing import MoeconnectServer

from .helpers import NO_LIMITS, PATH, code_of, request_kwargs

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

CYCLES = 100
LIMIT = 1.0


def test_rotations_and_revocations_reach_the_other_instance_within_a_second(
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
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
        delays = asyncio.run(_cycle(a, b, pg_url))
    worst = max(delays)
    with capsys.disabled():
        print(
            f"\n[scale] {len(delays)} admin-API changes through A refused by B: worst delay "
            f"{worst * 1000:.1f} ms, median {sorted(delays)[len(delays) // 2] * 1000:.1f} ms"
        )
    assert len(delays) == 2 * CYCLES
    assert worst < LIMIT, f"B served a changed key for {worst:.3f}s"


async def _last_change(pg_url: str, workspace_id: str) -> float:
    """When the newest change to ``workspace_id`` was made: the writer's own timestamp, taken
    before its transaction, so delays measured from it are never flattering."""
    conn = await asyncpg.connect(pg_url)
    try:
        at = await conn.fetchval(
            "SELECT max(at) FROM changes WHERE workspace_id = $1", workspace_id
        )
    finally:
        await conn.close()
    return float(at.replace(tzinfo=UTC).timestamp())


async def _cycle(a: MoeconnectServer, b: MoeconnectServer, pg_url: str) -> list[float]:
    token = a.run(lambda accounts: accounts.create_token("scale test")).token
    delays: list[float] = []
    async with (
        httpx.AsyncClient(
            base_url=a.base_url + "/admin/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ) as admin,
        httpx.AsyncClient(base_url=b.base_url, timeout=10) as client,
    ):

        async def status(wid: str, key: str) -> tuple[int, str]:
            response = await client.post(PATH, **request_kwargs(wid, key))
            return response.status_code, code_of(response)

        async def rotate(wid: str) -> str:
            response = await admin.post(f"/workspaces/{wid}/keys")
            assert response.status_code == 201, response.text
            return str(response.json()["key"])

        async def refused_after_change(wid: str, old: str) -> float:
            """Poll B with ``old`` until refused; seconds since the change was made."""
            deadline = time.monotonic() + 5
            while True:
                code, name = await status(wid, old)
                refused = time.time()
                if code == 401 or time.monotonic() > deadline:
                    return refused - await _last_change(pg_url, wid)
                assert code == 200, name

        created = await admin.post("/workspaces", json={"name": "Scale", "dc": "01"})
        assert created.status_code == 201, created.text
        wid = str(created.json()["workspace_id"])
        key = await rotate(wid)
        for _ in range(CYCLES):
            # B has the current key cached: two successes, the second from its cache.
            assert await status(wid, key) == (200, "SUCCESS")
            assert await status(wid, key) == (200, "SUCCESS")
            new = await rotate(wid)  # rotation through A, no grace
            delays.append(await refused_after_change(wid, key))
            # The new key works on B at once.
            assert await status(wid, new) == (200, "SUCCESS")
            revoked = await admin.post(f"/workspaces/{wid}/keys/revoke")
            assert revoked.status_code == 200, revoked.text
            delays.append(await refused_after_change(wid, new))
            key = await rotate(wid)
    assert a.process is not None and a.process.poll() is None
    return delays
