"""Issue 23, must-show 1 (admin API half): each role walks every admin route; the routes beyond
its role answer 403 INSUFFICIENT_ROLE and change nothing; a workspace-restricted token sees and
changes only its workspaces; ``last_used_at`` is kept, without a write per request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from moeconnect.records import OperatorToken
from moeconnect.testing import MoeconnectServer

from ..openapi_check import assert_response_matches
from .helpers import admin
from .test_auth import ROUTES, snapshot

# What each role may use: admin and keys every route there is (no admin route manages tokens,
# the one thing keys may not do), read only the GETs.
ALLOWED = {
    "admin": {(m, p) for m, p, _ in ROUTES},
    "keys": {(m, p) for m, p, _ in ROUTES},
    "read": {(m, p) for m, p, _ in ROUTES if m == "GET"},
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    with MoeconnectServer(workdir=tmp_path_factory.mktemp("roles")) as running:
        yield running


def new_token(server: MoeconnectServer, name: str, role: str, **options: object) -> str:
    async def create(accounts: object) -> object:
        return await accounts.create_token(name, role=role, **options)  # type: ignore[attr-defined]

    return str(server.run(create).token)  # type: ignore[attr-defined]


def token_record(server: MoeconnectServer, name: str) -> OperatorToken:
    tokens = server.run(lambda a: a.store.list_tokens())
    return next(t for t in tokens if t.name == name)


def call(api: httpx.Client, method: str, path: str, body: object, wid: str) -> httpx.Response:
    return api.request(method, path.format(wid=wid), json=body)


@pytest.mark.parametrize("role", ["admin", "keys", "read"])
def test_each_role_walks_every_route(srv: MoeconnectServer, role: str) -> None:
    wid, _key = srv.workspace_with_key(f"Walked by {role}")
    token = new_token(srv, f"walker-{role}", role)
    allowed = ALLOWED[role]
    refused = [r for r in ROUTES if (r[0], r[1]) not in allowed]
    # DELETE last: after it, every other route of the workspace would be a 404.
    permitted = sorted(
        (r for r in ROUTES if (r[0], r[1]) in allowed), key=lambda r: r[0] == "DELETE"
    )
    with admin(srv, token) as api:
        before = snapshot(srv)
        for method, path, body in refused:
            response = call(api, method, path, body, wid)
            assert response.status_code == 403, (role, method, path, response.text)
            error = response.json()["error"]
            assert error["code"] == "INSUFFICIENT_ROLE", (role, method, path)
            assert f"role {role}" in error["message"] and error["type"] == "Forbidden"
            assert_response_matches(response)
        assert snapshot(srv) == before, f"a refused request of a {role} token changed the store"
        for method, path, body in permitted:
            response = call(api, method, path, body, wid)
            assert response.status_code < 300, (role, method, path, response.text)
    if "DELETE" in {m for m, _ in allowed}:
        assert srv.run(lambda a: a.store.get_workspace(wid)) is None
    else:
        assert srv.run(lambda a: a.store.get_workspace(wid)) is not None
        assert refused, "a read token must be refused something"


def test_a_restricted_token_sees_and_changes_only_its_workspaces(srv: MoeconnectServer) -> None:
    mine, _ = srv.workspace_with_key("Mine")
    other, _ = srv.workspace_with_key("Not mine")
    # A listed workspace need not exist yet; a deleted one is not replaced by "everything".
    token = new_token(srv, "restricted", "keys", workspace_ids=[mine, "NOT-CREATED-YET"])
    before = snapshot(srv)
    with admin(srv, token) as api:
        listed = api.get("/workspaces").json()["items"]
        assert [w["workspace_id"] for w in listed] == [mine]
        assert api.get("/workspaces", params={"search": "mine"}).json()["items"] == listed
        for method, path, body in ROUTES:
            if "{wid}" not in path:
                continue
            response = call(api, method, path, body, other)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
            # The same answer as for a workspace that does not exist: nothing leaks.
            missing = call(api, method, path, body, "NO-SUCH-WORKSPACE")
            assert missing.status_code == 404
            assert (
                missing.json()["error"]["message"].replace("NO-SUCH-WORKSPACE", other)
                == (response.json()["error"]["message"])
            )
        created = api.post("/workspaces", json={"name": "Sprawl"})
        assert created.status_code == 403, created.text
        assert created.json()["error"]["code"] == "INSUFFICIENT_ROLE"
        assert "restricted" in created.json()["error"]["message"]
        assert_response_matches(created)
        assert snapshot(srv) == before
        # The audit log: its workspaces' entries only; never the whole log (token entries).
        whole = api.get("/audit")
        assert whole.status_code == 403, whole.text
        assert whole.json()["error"]["code"] == "INSUFFICIENT_ROLE"
        theirs = api.get("/audit", params={"workspace_id": other})
        missing = api.get("/audit", params={"workspace_id": "NO-SUCH-WORKSPACE"})
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["error"]["message"] == missing.json()["error"]["message"].replace(
            "NO-SUCH-WORKSPACE", other
        )
        own = api.get("/audit", params={"workspace_id": mine})
        assert own.status_code == 200
        assert {e["workspace_id"] for e in own.json()["items"]} == {mine}
        # Its own workspace: every route works.
        assert api.patch(f"/workspaces/{mine}", json={"name": "Still mine"}).status_code == 200
        assert api.post(f"/workspaces/{mine}/keys", json={}).status_code == 201
        assert api.get(f"/workspaces/{mine}/keys").status_code == 200
        assert api.delete(f"/workspaces/{mine}").status_code == 204
        # Its list is now empty, not everything.
        assert api.get("/workspaces").json()["items"] == []
    assert srv.run(lambda a: a.store.get_workspace(other)) is not None


def test_last_used_at_is_kept_in_batches(srv: MoeconnectServer) -> None:
    token = new_token(srv, "busy", "read")
    assert token_record(srv, "busy").last_used_at is None
    started = datetime.now(UTC)
    with admin(srv, token) as api:
        for _ in range(25):
            assert api.get("/workspaces").status_code == 200
        deadline = time.monotonic() + 10
        while (first := token_record(srv, "busy").last_used_at) is None:
            assert time.monotonic() < deadline, "last_used_at was never written"
            time.sleep(0.1)
        assert started <= first <= datetime.now(UTC)
        for _ in range(25):
            assert api.get("/workspaces").status_code == 200
    time.sleep(1.0)  # a per-request write would have landed by now
    # One write for 50 requests: the stored time is still the first request's.
    assert token_record(srv, "busy").last_used_at == first, "last_used_at moved within a minute"
