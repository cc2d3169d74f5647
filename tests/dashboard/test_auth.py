"""Sign-in, sessions and CSRF through a real server: no page without a session, no change
without the form's CSRF token, and no operator token in a cookie or a page."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from .conftest import Dashboard, create_token, csrf_of

GET_ROUTES = [
    "/dashboard",
    "/dashboard/",
    "/dashboard/workspaces/new",
    "/dashboard/workspaces/{ws}",
    "/dashboard/workspaces/{ws}/activity",
    "/dashboard/workspaces/{ws}/keys/data/generate",
    "/dashboard/workspaces/{ws}/keys/push/revoke",
]
POST_ROUTES = [
    "/dashboard/sign-out",
    "/dashboard/workspaces/new",
    "/dashboard/workspaces/{ws}/keys/data/generate",
    "/dashboard/workspaces/{ws}/keys/data/revoke",
]


def test_every_route_redirects_to_sign_in_without_a_session(dashboard: Dashboard) -> None:
    server = dashboard.server
    ws, key = server.workspace_with_key("Guarded")
    with dashboard.client() as client:
        for route in GET_ROUTES:
            path = route.format(ws=ws)
            response = client.get(path)
            assert response.status_code == 303, path
            location = response.headers["location"]
            assert location.startswith("/dashboard/sign-in?next="), path
            assert unquote(location.split("next=")[1]) == path
        client.cookies.set("moeconnect_session", "v1.tok_x.1.abc.forged", path="/dashboard")
        for route in POST_ROUTES:
            path = route.format(ws=ws)
            response = client.post(path, data={"name": "Nope", "grace": "none", "replaces": "x"})
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/dashboard/sign-in"), path
    # Nothing changed: no new workspace, the same key is still the current one.
    names = [w.name for w in server.run(lambda a: a.store.list_workspaces(limit=1000))]
    assert "Nope" not in names
    keys = server.run(lambda a: a.list_keys(ws))
    assert [(k.scope, k.state) for k in keys] == [("data", "current")]
    assert key.endswith(keys[0].hint)


@pytest.mark.parametrize("csrf", [None, "", "wrong-token"])
def test_forms_without_the_csrf_token_change_nothing(
    dashboard: Dashboard, csrf: str | None
) -> None:
    server = dashboard.server
    ws, _key = server.workspace_with_key("Protected")
    before = server.run(lambda a: a.list_keys(ws))
    extra = {} if csrf is None else {"csrf": csrf}
    with dashboard.signed_in() as client:
        page = client.get(f"/dashboard/workspaces/{ws}/keys/data/generate")
        replaces = before[0].id
        assert f'value="{replaces}"' in page.text
        attempts = [
            ("/dashboard/workspaces/new", {"name": "Sneaky", "dc": "01"}),
            (
                f"/dashboard/workspaces/{ws}/keys/data/generate",
                {"grace": "none", "replaces": replaces},
            ),
            (f"/dashboard/workspaces/{ws}/keys/data/revoke", {}),
            ("/dashboard/sign-out", {}),
        ]
        for path, data in attempts:
            response = client.post(path, data={**data, **extra})
            assert response.status_code == 403, path
            assert "Nothing was changed" in response.text
            assert "moe_data_" not in response.text
        # Still signed in (sign-out without a token was refused too).
        assert client.get("/dashboard").status_code == 200
        # A CSRF token from another session is no good either.
        with dashboard.signed_in() as other:
            foreign = csrf_of(other.get("/dashboard").text)
        response = client.post(
            f"/dashboard/workspaces/{ws}/keys/data/revoke", data={"csrf": foreign}
        )
        assert response.status_code == 403
    names = [w.name for w in server.run(lambda a: a.store.list_workspaces(limit=1000))]
    assert "Sneaky" not in names
    assert server.run(lambda a: a.list_keys(ws)) == before


def test_sign_in_form_needs_its_csrf_token(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        client.get("/dashboard/sign-in")
        response = client.post("/dashboard/sign-in", data={"token": dashboard.token})
        assert response.status_code == 403
        assert "moeconnect_session" not in response.headers.get("set-cookie", "")
        assert dashboard.token not in response.text


def test_session_cookie_is_httponly_lax_and_holds_no_token(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        page = client.get("/dashboard/sign-in?next=/dashboard/workspaces/new")
        response = client.post(
            "/dashboard/sign-in",
            data={
                "csrf": csrf_of(page.text),
                "token": dashboard.token,
                "next": "/dashboard/workspaces/new",
            },
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/workspaces/new"
        cookies = response.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("moeconnect_session="))
        attributes = [part.strip().lower() for part in session.split(";")]
        assert "httponly" in attributes
        assert "samesite=lax" in attributes
        assert "path=/dashboard" in attributes
        assert "secure" not in attributes  # plain HTTP here; Secure is set over TLS
        assert dashboard.token not in session
        assert dashboard.token[-20:] not in session


def test_wrong_token_is_refused_and_not_echoed(dashboard: Dashboard) -> None:
    wrong = "moeop_" + "x" * 40
    with dashboard.client() as client:
        page = client.get("/dashboard/sign-in")
        response = client.post(
            "/dashboard/sign-in", data={"csrf": csrf_of(page.text), "token": wrong}
        )
        assert response.status_code == 401
        assert "not valid" in response.text
        assert wrong not in response.text
        assert client.get("/dashboard").status_code == 303


def test_sign_in_never_redirects_off_the_dashboard(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        for target in ("https://evil.example/", "//evil.example/dashboard", "/admin/v1/x"):
            client.cookies.clear()
            page = client.get("/dashboard/sign-in", params={"next": target})
            response = client.post(
                "/dashboard/sign-in",
                data={"csrf": csrf_of(page.text), "token": dashboard.token, "next": target},
            )
            assert response.headers["location"] == "/dashboard", target


def test_sign_in_page_sends_a_signed_in_operator_on(dashboard: Dashboard) -> None:
    with dashboard.signed_in() as client:
        response = client.get("/dashboard/sign-in", params={"next": "/dashboard/workspaces/new"})
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/workspaces/new"


def test_sign_out_and_revoked_token_end_the_session(dashboard: Dashboard) -> None:
    server = dashboard.server
    with dashboard.signed_in() as client:
        csrf = csrf_of(client.get("/dashboard").text)
        response = client.post("/dashboard/sign-out", data={"csrf": csrf})
        assert response.status_code == 303
        assert client.get("/dashboard").status_code == 303
    second = create_token(server, "second")
    with httpx.Client(base_url=server.base_url) as client:
        page = client.get("/dashboard/sign-in")
        client.post("/dashboard/sign-in", data={"csrf": csrf_of(page.text), "token": second})
        assert client.get("/dashboard").status_code == 200
        server.run(lambda a: a.store.revoke_token("second"))
        assert client.get("/dashboard").status_code == 303


def test_new_key_is_shown_once_and_never_again(dashboard: Dashboard) -> None:
    server = dashboard.server
    ws = server.create_workspace("Once").id
    with dashboard.signed_in() as client:
        page = client.get(f"/dashboard/workspaces/{ws}/keys/data/generate")
        data = {"csrf": csrf_of(page.text), "grace": "none", "replaces": "none"}
        response = client.post(f"/dashboard/workspaces/{ws}/keys/data/generate", data=data)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        key = response.text.split('id="new-key" type="text" value="')[1].split('"')[0]
        assert key.startswith("moe_data_")
        assert all(key not in c for c in response.headers.get_list("set-cookie"))
        # Resubmitting the same confirmation (a reload) neither shows it nor makes another.
        again = client.post(f"/dashboard/workspaces/{ws}/keys/data/generate", data=data)
        assert again.status_code == 409
        assert key not in again.text
        assert key not in client.get(f"/dashboard/workspaces/{ws}").text
    assert len(server.run(lambda a: a.list_keys(ws))) == 1


def test_store_outage_is_503_never_a_bad_token(dashboard: Dashboard, tmp_path: Path) -> None:
    """With the store gone, pages say so (503) and sign-in never calls the token invalid."""
    server = dashboard.server
    db_file = Path(server.db_url.removeprefix("sqlite:///"))
    with dashboard.signed_in() as client, dashboard.client() as fresh:
        page = fresh.get("/dashboard/sign-in")
        os.rename(db_file, tmp_path / "away.db")
        try:
            response = client.get("/dashboard")
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert "reach its database right now" in response.text
            signin = fresh.post(
                "/dashboard/sign-in", data={"csrf": csrf_of(page.text), "token": dashboard.token}
            )
            assert signin.status_code == 503
            assert "not valid" not in signin.text
        finally:
            os.rename(tmp_path / "away.db", db_file)
        assert client.get("/dashboard").status_code == 200
