"""Must-show 4: every admin route refuses a missing, wrong or revoked token, and changes nothing."""

from __future__ import annotations

from pathlib import Path

import httpx

from moeconnect.accounts import Accounts
from moeconnect.http.admin import AdminAPI
from moeconnect.store import open_store
from moeconnect.testing import MoeconnectServer

from .helpers import admin, operator_token

# Every route of the admin API, with a body that would succeed given a valid token.
ROUTES: list[tuple[str, str, dict[str, object] | None]] = [
    ("POST", "/workspaces", {"name": "Intruder"}),
    ("GET", "/workspaces", None),
    ("GET", "/workspaces/{wid}", None),
    ("PATCH", "/workspaces/{wid}", {"name": "Renamed"}),
    ("DELETE", "/workspaces/{wid}", None),
    ("POST", "/workspaces/{wid}/suspend", None),
    ("POST", "/workspaces/{wid}/resume", None),
    ("GET", "/workspaces/{wid}/keys", None),
    ("POST", "/workspaces/{wid}/keys", {"grace": "1h"}),
    ("POST", "/workspaces/{wid}/keys/import", {"key": "imported-key-123"}),
    ("POST", "/workspaces/{wid}/keys/revoke", {}),
    ("GET", "/workspaces/{wid}/attempts", None),
    ("GET", "/workspaces/{wid}/sources", None),
    ("GET", "/audit", None),
]


def test_route_list_is_complete(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    api = AdminAPI(Accounts(store, b"s" * 32))
    served = {
        (method, route.path.replace("{workspace_id}", "{wid}"))  # type: ignore[attr-defined]
        for route in api.router.routes
        for method in route.methods or ()  # type: ignore[attr-defined]
        if method != "HEAD"
    }
    assert served == {(m, p) for m, p, _ in ROUTES}


def snapshot(server: MoeconnectServer) -> object:
    async def read(accounts: Accounts) -> object:
        workspaces = await accounts.store.list_workspaces(limit=1000)
        keys = {w.id: await accounts.list_keys(w.id) for w in workspaces}
        tokens = await accounts.store.list_tokens()
        return workspaces, keys, [(t.id, t.revoked_at) for t in tokens]

    return server.run(read)


def test_every_route_needs_a_valid_token(server: MoeconnectServer) -> None:
    wid, _ = server.workspace_with_key("Victim")
    good = operator_token(server, "good")
    revoked = operator_token(server, "to-revoke")
    server.run(lambda a: a.store.revoke_token("to-revoke"))
    before = snapshot(server)
    variants: list[str | None] = [
        None,  # no Authorization header
        "Bearer wrong-token-0123456789",  # a token nobody created
        f"Bearer {good[:-1]}",  # nearly right
        "Bearer",  # the scheme alone
        f"Bearer {revoked}",  # revoked
        f"Basic {good}",  # the right token, the wrong scheme
    ]
    with httpx.Client(base_url=server.base_url + "/admin/v1", timeout=10) as client:
        for authorization in variants:
            headers = {"Authorization": authorization} if authorization is not None else {}
            for method, path, body in [*ROUTES, ("GET", "/no/such/route", None)]:
                response = client.request(method, path.format(wid=wid), json=body, headers=headers)
                where = (authorization and authorization[:9], method, path)
                assert response.status_code == 401, (where, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer"), where
                assert response.headers["content-type"] == "application/json"
                assert response.json()["status"] == "fail"
                assert response.json()["error"]["code"] == "UNAUTHORIZED", where
    assert snapshot(server) == before
    # The valid token still works, so the 401s were about the tokens and nothing else.
    with admin(server, good) as api:
        assert api.get(f"/workspaces/{wid}").status_code == 200
    assert good not in server.logs() and revoked not in server.logs()
