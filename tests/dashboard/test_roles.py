"""Issue 23, must-show 1 (dashboard half): each role's pages offer only the forms it may use,
a forged POST beyond the role is refused (403) and changes nothing, a restricted token sees only
its workspaces, and a revoked or expired token ends an open session at once (and the admin API
refuses it at once too)."""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from moeconnect.accounts import Accounts
from moeconnect.testing import MoeconnectServer

from .conftest import Dashboard, csrf_of

FORM_PAGES = [
    "/dashboard/workspaces/new",
    "/dashboard/workspaces/{ws}/keys/data/generate",
    "/dashboard/workspaces/{ws}/keys/data/revoke",
]


def role_token(server: MoeconnectServer, name: str, role: str, **options: Any) -> str:
    async def create(accounts: Accounts) -> str:
        return (await accounts.create_token(name, role=role, **options)).token

    return server.run(create)


def state(server: MoeconnectServer) -> object:
    """Everything a dashboard form can change: workspaces and their keys."""

    async def read(accounts: Accounts) -> object:
        workspaces = await accounts.store.list_workspaces(limit=1000)
        return workspaces, {w.id: await accounts.list_keys(w.id) for w in workspaces}

    return server.run(read)


def forms(ws: str, replaces: str, csrf: str) -> list[tuple[str, dict[str, str]]]:
    """Every change form of the dashboard but sign-out, as a browser would post it."""
    return [
        ("/dashboard/workspaces/new", {"csrf": csrf, "name": "Forged", "dc": "01"}),
        (
            f"/dashboard/workspaces/{ws}/keys/data/generate",
            {"csrf": csrf, "grace": "none", "replaces": replaces},
        ),
        (f"/dashboard/workspaces/{ws}/keys/data/revoke", {"csrf": csrf}),
    ]


@pytest.mark.parametrize("role", ["admin", "keys", "read"])
def test_each_role_sees_and_posts_only_its_forms(
    dashboard_server: MoeconnectServer, role: str
) -> None:
    server = dashboard_server
    ws, _key = server.workspace_with_key(f"Forms for {role}")
    may_change = role != "read"
    session = Dashboard(server, role_token(server, f"dash-{role}", role))
    with session.signed_in() as client:
        listing = client.get("/dashboard")
        page = client.get(f"/dashboard/workspaces/{ws}")
        assert listing.status_code == page.status_code == 200
        assert f"dash-{role}" in page.text and f">{role}<" in page.text  # who is signed in
        # The pages offer only what the role may use (the sign-out form is everyone's).
        assert ("/workspaces/new" in listing.text) is may_change, role
        assert ("/keys/data/generate" in page.text) is may_change, role
        assert ("/keys/data/revoke" in page.text) is may_change, role
        assert page.text.count("<form") == 1 and 'action="/dashboard/sign-out"' in page.text
        assert ("not change them" in page.text) is not may_change
        csrf = csrf_of(page.text)
        for path in FORM_PAGES:
            response = client.get(path.format(ws=ws))
            assert response.status_code == (200 if may_change else 403), (role, path)
        replaces = server.run(lambda a: a.list_keys(ws))[0].id
        before = state(server)
        for path, data in forms(ws, replaces, csrf):
            response = client.post(path, data=data)
            if may_change:
                assert response.status_code in (200, 303), (role, path, response.text)
            else:
                assert response.status_code == 403, (role, path)
                text = html.unescape(response.text)
                assert "can't do this" in text and "has the role read" in text
        after = state(server)
        if may_change:
            assert after != before
            assert "Forged" in [w.name for w in after[0]]  # type: ignore[index]
            keys = server.run(lambda a: a.list_keys(ws))
            assert {k.state for k in keys} == {"replaced", "revoked"}  # generated, then revoked
        else:
            assert after == before, "a forged form of a read token changed the store"
        assert client.post("/dashboard/sign-out", data={"csrf": csrf}).status_code == 303


def test_a_restricted_session_sees_only_its_workspaces(dashboard_server: MoeconnectServer) -> None:
    server = dashboard_server
    mine, _ = server.workspace_with_key("Restricted mine")
    other, _ = server.workspace_with_key("Restricted other")
    session = Dashboard(server, role_token(server, "dash-narrow", "keys", workspace_ids=[mine]))
    before = state(server)
    with session.signed_in() as client:
        listing = client.get("/dashboard")
        assert mine in listing.text and other not in listing.text
        assert "/workspaces/new" not in listing.text  # it can't create one
        csrf = csrf_of(listing.text)
        for path in ("", "/activity", "/keys/data/generate", "/keys/data/revoke"):
            assert client.get(f"/dashboard/workspaces/{other}{path}").status_code == 404, path
        assert client.get("/dashboard/workspaces/new").status_code == 403
        other_key = server.run(lambda a: a.list_keys(other))[0].id
        for path, data in forms(other, other_key, csrf):
            expected = 403 if path.endswith("/new") else 404
            assert client.post(path, data=data).status_code == expected, path
        assert state(server) == before
        page = client.get(f"/dashboard/workspaces/{mine}")
        assert page.status_code == 200 and "/keys/data/generate" in page.text
        mine_key = server.run(lambda a: a.list_keys(mine))[0].id
        generated = client.post(
            f"/dashboard/workspaces/{mine}/keys/data/generate",
            data={"csrf": csrf, "grace": "none", "replaces": mine_key},
        )
        assert generated.status_code == 200


def _refused(client: httpx.Client, api: httpx.Client, ws: str, csrf: str) -> None:
    page = client.get(f"/dashboard/workspaces/{ws}")
    assert page.status_code == 303 and "/dashboard/sign-in" in page.headers["location"]
    # A form with the session's own valid CSRF token: refused before anything changes.
    posted = client.post(f"/dashboard/workspaces/{ws}/keys/data/revoke", data={"csrf": csrf})
    assert posted.status_code == 303 and "/dashboard/sign-in" in posted.headers["location"]
    assert api.get(f"/workspaces/{ws}").status_code == 401


def test_revoked_or_expired_token_ends_an_open_session_at_once(
    dashboard_server: MoeconnectServer,
) -> None:
    server = dashboard_server
    ws, _ = server.workspace_with_key("Session ends")
    lifetime = timedelta(seconds=4)  # generous: signing in must happen well within it
    created = datetime.now(UTC)
    expiring = role_token(server, "dash-expiring", "keys", expires_in=lifetime)
    revoked = role_token(server, "dash-revoked", "keys")
    base = server.base_url
    with (
        Dashboard(server, expiring).signed_in() as exp_client,
        Dashboard(server, revoked).signed_in() as rev_client,
        httpx.Client(base_url=base + "/admin/v1", timeout=15) as api,
    ):
        exp_api = {"Authorization": f"Bearer {expiring}"}
        rev_api = {"Authorization": f"Bearer {revoked}"}
        csrfs = []
        for client in (exp_client, rev_client):
            page = client.get(f"/dashboard/workspaces/{ws}")
            assert page.status_code == 200
            csrfs.append(csrf_of(page.text))
        assert api.get(f"/workspaces/{ws}", headers=exp_api).status_code == 200
        assert api.get(f"/workspaces/{ws}", headers=rev_api).status_code == 200
        assert datetime.now(UTC) < created + lifetime, "the machine is too slow for this test"
        before = state(server)

        server.run(lambda a: a.store.revoke_token("dash-revoked"))
        # At once: the very next request of the open session is refused.
        api.headers.update(rev_api)
        _refused(rev_client, api, ws, csrfs[1])

        time.sleep(max(0.0, (created + lifetime - datetime.now(UTC)).total_seconds()) + 0.3)
        api.headers.update(exp_api)
        _refused(exp_client, api, ws, csrfs[0])
        assert state(server) == before
        # Signing in again is refused too.
        page = exp_client.get("/dashboard/sign-in")
        again = exp_client.post(
            "/dashboard/sign-in", data={"csrf": csrf_of(page.text), "token": expiring}
        )
        assert again.status_code == 401 and "has expired" in again.text
