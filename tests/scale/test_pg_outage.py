"""PostgreSQL stopped under load: 503 STORE_UNAVAILABLE or a success from cache, never a 401.

The test runs its own PostgreSQL (initdb + pg_ctl in a temporary directory), so it can stop and
restart it without touching the machine's shared one; the server is never restarted.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from moeconnect.keys import new_workspace_id
from moeconnect.testing import MoeconnectServer

from .. import services
from ..throwaway import ThrowawayPostgres, postgres_bin
from .helpers import NO_LIMITS, PATH, code_of, request_kwargs

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

Answer = tuple[str, str, int, str]  # (phase, kind, status, code)


class Load:
    """Concurrent Test Connection requests of three kinds until stopped, every answer kept."""

    def __init__(self, base_url: str, hot: tuple[str, str], wrong_key: str) -> None:
        self.base_url = base_url
        self.hot = hot
        self.wrong_key = wrong_key
        self.phase = "before"
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def request(self, kind: str) -> tuple[str, str]:
        workspace_id, key = self.hot
        if kind == "wrong":
            return workspace_id, self.wrong_key
        if kind == "unknown":  # never cached: only the store can answer
            return new_workspace_id(), key
        return workspace_id, key

    async def _loop(self, client: httpx.AsyncClient, offset: int) -> None:
        kinds = ("valid", "wrong", "unknown")
        n = offset
        while not self._stop.is_set():
            kind = kinds[n % 3]
            n += 1
            phase = self.phase
            try:
                response = await client.post(PATH, **request_kwargs(*self.request(kind)))
            except httpx.HTTPError as err:
                self.answers.append((phase, kind, 0, type(err).__name__))
                continue
            self.answers.append((phase, kind, response.status_code, code_of(response)))
            await asyncio.sleep(0.005)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=15) as client:
            await asyncio.gather(*(self._loop(client, i) for i in range(6)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def in_phase(self, phase: str) -> list[Answer]:
        return [a for a in self.answers if a[0] == phase]


def test_postgres_outage_answers_503_never_401_and_recovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    services.need_tool(
        postgres_bin() is not None, "needs initdb and pg_ctl to run a throwaway PostgreSQL"
    )
    env = {"MOECONNECT_SECRET": secrets.token_urlsafe(32), **NO_LIMITS}
    with (
        ThrowawayPostgres() as pg,
        MoeconnectServer(db_url=pg.url, env=env, workdir=tmp_path) as server,
    ):
        hot = server.workspace_with_key("Hot")
        _, wrong_key = server.workspace_with_key("Other")
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            assert client.post(PATH, **request_kwargs(*hot)).status_code == 200  # now cached
        pid = server.process.pid if server.process else None

        with Load(server.base_url, hot, wrong_key) as load:
            time.sleep(1.0)
            load.phase = "stopping"
            pg.stop()
            load.phase = "down"
            time.sleep(2.5)
            load.phase = "restarting"
            pg.start()
            load.phase = "after"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                recent = {kind: (s, c) for _, kind, s, c in load.in_phase("after")[-12:]}
                if recent == {
                    "valid": (200, "SUCCESS"),
                    "wrong": (401, "KEY_MISMATCH"),
                    "unknown": (401, "WORKSPACE_NOT_FOUND"),
                }:
                    break
                time.sleep(0.1)
            time.sleep(0.5)

        before, down = load.in_phase("before"), load.in_phase("down")
        summary = {p: Counter((k, s, c) for _, k, s, c in load.in_phase(p)) for p in
                   ("before", "stopping", "down", "restarting", "after")}  # fmt: skip
        with capsys.disabled():
            print(f"\n[outage] answers while PostgreSQL was down: {dict(summary['down'])}")
        assert before and down, summary
        assert {(s, c) for _, k, s, c in before if k == "valid"} == {(200, "SUCCESS")}, summary
        # While the store is down: a cached success, or 503 STORE_UNAVAILABLE. Never a 401.
        for _, kind, status, code in down:
            if kind == "valid":
                assert (status, code) in {(200, "SUCCESS"), (503, "STORE_UNAVAILABLE")}, summary
            else:
                assert (status, code) == (503, "STORE_UNAVAILABLE"), summary
        assert any(k == "unknown" for _, k, _, _ in down), summary
        # A valid key is never refused, whatever the phase.
        assert not [a for a in load.answers if a[1] == "valid" and a[2] != 200 and a[2] != 503]
        # Back without restarting the server: the store answers again for every kind.
        after = load.in_phase("after")[-12:]
        assert {(k, s, c) for _, k, s, c in after} == {
            ("valid", 200, "SUCCESS"),
            ("wrong", 401, "KEY_MISMATCH"),
            ("unknown", 401, "WORKSPACE_NOT_FOUND"),
        }, summary
        assert server.process is not None and server.process.pid == pid
        assert server.process.poll() is None
        # And a workspace created after the outage works at once.
        fresh = server.workspace_with_key("After the outage")
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            response = client.post(PATH, **request_kwargs(*fresh))
            assert (response.status_code, code_of(response)) == (200, "SUCCESS")
