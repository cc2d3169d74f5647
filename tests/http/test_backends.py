"""The endpoint's answers are the same whichever store is behind it: SQLite or PostgreSQL.

A real server over a socket for each backend; with PostgreSQL it runs with a configured server
secret (``MOECONNECT_SECRET``), as every PostgreSQL deployment must.
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from moeconnect.testing import MoeconnectServer

PATH = "/v1/integrations/authentication"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_server(request: pytest.FixtureRequest, tmp_path: Path) -> MoeconnectServer:
    if request.param == "sqlite":
        server = MoeconnectServer(workdir=tmp_path)
    else:
        pg_url: str = request.getfixturevalue("pg_url")
        server = MoeconnectServer(
            db_url=pg_url, env={"MOECONNECT_SECRET": secrets.token_urlsafe(32)}, workdir=tmp_path
        )
    server.start()
    request.addfinalizer(server.close)
    return server


def _post(server: MoeconnectServer, workspace_id: str, key: str) -> httpx.Response:
    return httpx.post(
        server.base_url + PATH,
        auth=(workspace_id, key),
        headers={"MOE-APPKEY": workspace_id},
        json={"app_id": workspace_id, "app_secret": key, "source": "test", "region": "01"},
        timeout=10,
    )


def _answer(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    return response.status_code, body["error"]["code"] if body["status"] == "fail" else "SUCCESS"


def _eventually(
    server: MoeconnectServer, workspace_id: str, key: str, within: float = 1.0
) -> tuple[int, str]:
    """The answer once a change written straight to the database (as the CLI does) is seen.

    Such a change reaches the server's cache through the change-feed poll: up to a poll
    interval (0.25 s) late, and always within a second.
    """
    deadline = time.monotonic() + within
    while True:
        answer = _answer(_post(server, workspace_id, key))
        if answer[0] != 200 or time.monotonic() > deadline:
            return answer
        time.sleep(0.02)


def test_success_and_refusals_on_each_backend(backend_server: MoeconnectServer) -> None:
    server = backend_server
    workspace_id, key = server.workspace_with_key("PI-Prod-DC01")
    response = _post(server, workspace_id, key)
    assert response.status_code == 200
    assert response.json() == {"status": "success", "app_name": "PI-Prod-DC01"}

    # Another workspace's key: well-formed, but not this workspace's.
    _, other_key = server.workspace_with_key("Other")
    assert _answer(_post(server, workspace_id, other_key)) == (401, "KEY_MISMATCH")

    # An ID nobody has.
    assert _answer(_post(server, "NOSUCHWORKSPACE0001", key)) == (401, "WORKSPACE_NOT_FOUND")

    # Rotated with a grace period: the old key still works, flagged stale with a Sunset header.
    new = server.generate_key(workspace_id, grace=timedelta(hours=1))
    deadline = time.monotonic() + 1.0
    while "sunset" not in (stale := _post(server, workspace_id, key)).headers:
        assert time.monotonic() < deadline, "the rotation never reached the server"
        time.sleep(0.02)
    assert stale.status_code == 200
    assert _answer(_post(server, workspace_id, new)) == (200, "SUCCESS")

    # Revoked: both the current key and the one in grace are refused as revoked.
    server.revoke_key(workspace_id)
    # No current key is left, which the workspace check reports first.
    assert _eventually(server, workspace_id, new) == (401, "NO_DATA_KEY")
    assert _eventually(server, workspace_id, key) == (401, "NO_DATA_KEY")

    # A key generated after revocation works at once; the revoked ones are KEY_REVOKED.
    newest = server.generate_key(workspace_id)
    assert _answer(_post(server, workspace_id, newest)) == (200, "SUCCESS")
    refused = _post(server, workspace_id, new)
    assert _answer(refused) == (401, "KEY_REVOKED")
    assert "revoked" in refused.json()["error"]["message"]

    # Suspended workspaces are refused, resumed ones work again.
    server.suspend(workspace_id)
    assert _eventually(server, workspace_id, newest) == (403, "WORKSPACE_SUSPENDED")
    server.resume(workspace_id)
    assert _answer(_post(server, workspace_id, newest)) == (200, "SUCCESS")
