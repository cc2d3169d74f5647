"""PostgreSQL stopped and started under load: the admin API and the endpoint never answer 500.

While PostgreSQL shuts down or starts up (after a clean stop, and after a crash) the driver
raises errors the store once let through as 500s: asyncpg's ``CannotConnectNowError`` ("the
database system is starting up", SQLSTATE 57P03) arrives as SQLAlchemy's plain ``DBAPIError``.
Every one of them must answer 503 ``STORE_UNAVAILABLE`` (SPEC section 9). The test runs its own
PostgreSQL (tests/throwaway.py), stops it with ``pg_ctl stop -m fast`` and ``-m immediate`` and
starts it again, while admin API and Test Connection requests keep coming.
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
from .helpers import NO_LIMITS, PATH, request_kwargs

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MAX_REQUESTS = 40_000  # a bound on the whole run, whatever the machine's speed


class Load:
    """Admin API and Test Connection requests from a background thread until stopped.

    Every answer is kept as (phase, route, status); a transport error counts as status 0.
    """

    def __init__(self, base_url: str, token: str, hot: tuple[str, str]) -> None:
        self.base_url = base_url
        self.token = token
        self.hot = hot
        self.phase = "before"
        self.answers: list[tuple[str, str, int]] = []
        self.created: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def _done(self) -> bool:
        return self._stop.is_set() or len(self.answers) >= MAX_REQUESTS

    async def _send(self, client: httpx.AsyncClient, route: str, method: str, url: str,
                    **kwargs: object) -> httpx.Response | None:  # fmt: skip
        phase = self.phase
        try:
            response = await client.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError:
            self.answers.append((phase, route, 0))
            return None
        self.answers.append((phase, route, response.status_code))
        return response

    async def _admin(self, client: httpx.AsyncClient, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        api = "/admin/v1"
        while not self._done():
            n += 1
            step = n % 4
            if step == 0:
                body = {"name": f"Outage {n}", "workspace_id": new_workspace_id()}
                response = await self._send(
                    client, "POST /workspaces", "POST", f"{api}/workspaces", json=body,
                    headers=headers,
                )  # fmt: skip
                if response is not None and response.status_code == 201:
                    self.created.append(response.json()["workspace_id"])
            elif step == 1:
                await self._send(
                    client, "GET /workspaces", "GET", f"{api}/workspaces?limit=5", headers=headers
                )
            elif step == 2 and self.created:
                wid = self.created[n % len(self.created)]
                await self._send(
                    client, "GET /workspaces/{id}", "GET", f"{api}/workspaces/{wid}",
                    headers=headers,
                )  # fmt: skip
            elif self.created:
                wid = self.created[n % len(self.created)]
                await self._send(
                    client, "POST /keys", "POST", f"{api}/workspaces/{wid}/keys", json={},
                    headers=headers,
                )  # fmt: skip
            await asyncio.sleep(0.005)

    async def _endpoint(self, client: httpx.AsyncClient, n: int) -> None:
        workspace_id, key = self.hot
        while not self._done():
            n += 1
            # The hot workspace (cached), and one no cache holds: only the store can answer.
            wid = workspace_id if n % 2 else new_workspace_id()
            await self._send(client, "Test Connection", "POST", PATH, **request_kwargs(wid, key))
            await asyncio.sleep(0.005)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=15) as client:
            await asyncio.gather(
                *(self._admin(client, i) for i in range(4)),
                *(self._endpoint(client, i) for i in range(2)),
            )

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def recovered(self, since: int) -> bool:
        """The last answers after index ``since`` include successes on every admin route."""
        recent = self.answers[since:][-40:]
        ok = {route for _, route, status in recent if status in (200, 201)}
        return {"POST /workspaces", "GET /workspaces", "POST /keys", "Test Connection"} <= ok


def test_postgres_stop_and_start_never_answer_500(
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
        token = server.run(lambda a: a.create_token("outage test")).token
        hot = server.workspace_with_key("Hot")
        with Load(server.base_url, token, hot) as load:
            time.sleep(1.0)
            for mode in ("fast", "immediate"):
                load.phase = f"stop -m {mode}"
                pg.stop(mode)
                load.phase = f"down ({mode})"
                time.sleep(1.5)
                load.phase = f"start after {mode}"
                pg.start()
                load.phase = f"after {mode}"
                mark = len(load.answers)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not load.recovered(mark):
                    time.sleep(0.1)
                assert load.recovered(mark), f"not recovered after -m {mode}"
                time.sleep(0.5)

        by_status = Counter(status for _, _, status in load.answers)
        by_route = Counter((route, status) for _, route, status in load.answers)
        by_phase = Counter((phase, status) for phase, _, status in load.answers)
        with capsys.disabled():
            print(f"\n[pg stop/start] {len(load.answers)} answers by status: {dict(by_status)}")
            print(f"[pg stop/start] by route: {dict(sorted(by_route.items()))}")
            print(f"[pg stop/start] by phase: {dict(sorted(by_phase.items()))}")
        assert by_status[503] > 0, "PostgreSQL was never seen down"
        assert by_status[500] == 0, (dict(by_route), server.logs()[-4000:])
        # Nothing else either: only answers a working or an unavailable store gives. (A 404:
        # the throwaway cluster runs with synchronous_commit=off, so a crash can lose the last
        # workspaces created, which later requests then don't find.)
        assert set(by_status) <= {200, 201, 401, 404, 503}, dict(by_route)
