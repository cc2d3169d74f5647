"""``moeconnect serve --workers 2`` on SQLite and on PostgreSQL, without Redis.

Each worker has its own cache; the change-feed poll is what tells them all. Connections are kept
open and mapped to the worker process that accepted them (``/proc``), so the test knows it asked
both workers, not one of them twice.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import pytest

from moeconnect.testing import MoeconnectServer

from .helpers import NO_LIMITS, PATH, children, code_of, request_kwargs, worker_holding

pytestmark = pytest.mark.slow

ROTATIONS = 3
LIMIT = 1.0


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """(database URL, server environment) for each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'moeconnect.db'}", dict(NO_LIMITS)
    url: str = request.getfixturevalue("pg_url")
    return url, {"MOECONNECT_SECRET": secrets.token_urlsafe(32), **NO_LIMITS}


def _post(client: httpx.Client, workspace_id: str, key: str) -> tuple[int, str]:
    response = client.post(PATH, **request_kwargs(workspace_id, key))
    return response.status_code, code_of(response)


def test_both_workers_answer_and_refuse_a_rotated_key_within_a_second(
    backend: tuple[str, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url, env = backend
    with MoeconnectServer(db_url=db_url, env=env, workers=2, workdir=tmp_path) as server:
        assert server.process is not None
        workspace_id, key = server.workspace_with_key("Workers")
        clients: list[httpx.Client] = []
        holder: dict[int, int] = {}  # client index -> worker pid
        try:
            while len(set(holder.values())) < 2 and len(clients) < 48:
                client = httpx.Client(base_url=server.base_url, timeout=10)
                clients.append(client)
                response = client.post(PATH, **request_kwargs(workspace_id, key))
                assert response.status_code == 200
                stream = response.extensions["network_stream"]
                port = stream.get_extra_info("client_addr")[1]
                pid = worker_holding(children(server.process.pid), server.port, port)
                assert pid is not None, "no worker holds the connection"
                holder[len(clients) - 1] = pid
            assert len(set(holder.values())) == 2, f"one worker took all connections: {holder}"

            worst = 0.0
            for _ in range(ROTATIONS):
                for client in clients:  # every worker has the current key cached
                    assert _post(client, workspace_id, key) == (200, "SUCCESS")
                # The CLI's way: straight to the database, no Redis. Timed from its commit (the
                # helper's connection setup is not part of the delay).
                new = server.generate_key(workspace_id)
                started = time.monotonic()
                refused: dict[int, float] = {}
                while len(refused) < len(clients) and time.monotonic() - started < 5:
                    for index, client in enumerate(clients):
                        if index in refused:
                            continue
                        status, code = _post(client, workspace_id, key)
                        if status == 401:
                            refused[index] = time.monotonic() - started
                        else:
                            assert (status, code) == (200, "SUCCESS")
                assert len(refused) == len(clients)
                worst = max(worst, *refused.values())
                for client in clients:  # and the new key works on every worker at once
                    assert _post(client, workspace_id, new) == (200, "SUCCESS")
                key = new
        finally:
            for client in clients:
                client.close()
    with capsys.disabled():
        print(
            f"\n[workers] {db_url.split(':')[0]}: {len(clients)} connections over 2 workers, "
            f"worst refusal delay {worst * 1000:.0f} ms"
        )
    assert worst < LIMIT
