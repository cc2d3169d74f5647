"""What a client controls in the request line and headers must not steer the server (issue 22,
item 10): no redirect to the client's own Host, no endpoint behind an encoded slash, and a
``Secure`` dashboard cookie behind a TLS proxy only when that proxy is trusted. Against a real
server over a socket.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from moeconnect.testing import MoeconnectServer

PROXY = "127.0.0.2"  # trusted by the server below; tests connect from it or from 127.0.0.1


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    with MoeconnectServer(
        workdir=tmp_path_factory.mktemp("paths"),
        env={"MOECONNECT_TRUSTED_PROXIES": f"{PROXY}/32"},
    ) as running:
        yield running


def _client(server: MoeconnectServer, source: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=server.base_url, transport=transport, timeout=15)


def test_a_trailing_slash_is_never_redirected_to_the_clients_host(srv: MoeconnectServer) -> None:
    token = srv.run(lambda accounts: accounts.create_token("slashes")).token
    evil = {"Host": "evil.example"}
    with _client(srv) as client:
        anonymous = client.get("/admin/v1/workspaces/", headers=evil)
        assert anonymous.status_code == 401, anonymous.headers
        assert "location" not in anonymous.headers
        assert anonymous.json()["error"]["code"] == "UNAUTHORIZED"
        operator = client.get(
            "/admin/v1/workspaces/", headers={**evil, "Authorization": f"Bearer {token}"}
        )
        assert operator.status_code == 404, operator.headers
        assert "location" not in operator.headers
        assert operator.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
        for path in ("/healthz/", "/dashboard/workspaces/new/", "/openapi.json/"):
            answer = client.get(path, headers=evil)
            assert answer.status_code == 404, (path, answer.headers)
            assert "location" not in answer.headers
            assert answer.json()["error"]["code"] == "NOT_FOUND"


def test_an_encoded_slash_is_another_path(srv: MoeconnectServer) -> None:
    """A proxy rule on /v1/integrations/authentication can't be bypassed with %2F."""
    workspace_id, key = srv.workspace_with_key()
    request = {
        "auth": (workspace_id, key),
        "headers": {"MOE-APPKEY": workspace_id},
        "json": {"app_id": workspace_id, "app_secret": key, "source": "t", "region": "01"},
    }
    with _client(srv) as client:
        assert client.post("/v1/integrations/authentication", **request).status_code == 200
        for path in ("/v1/integrations%2Fauthentication", "/v1/integrations%2fauthentication"):
            answer = client.post(path, **request)
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json()["error"]["code"] == "NOT_FOUND"
        assert client.get("/admin%2Fv1/workspaces").json()["error"]["code"] == "NOT_FOUND"


def _signin_cookie(response: httpx.Response) -> str:
    cookies = [c for c in response.headers.get_list("set-cookie") if "moeconnect_signin=" in c]
    assert len(cookies) == 1, response.headers
    return cookies[0]


def test_the_cookie_is_secure_behind_a_trusted_tls_proxy(srv: MoeconnectServer) -> None:
    https = {"X-Forwarded-Proto": "https"}
    with _client(srv, PROXY) as proxy, _client(srv) as stranger:
        page = proxy.get("/dashboard/sign-in", headers=https)
        assert "; secure" in _signin_cookie(page).lower()
        # The proxy's own word is the last value; anything before it came from the client.
        spoofed = proxy.get("/dashboard/sign-in", headers={"X-Forwarded-Proto": "https, http"})
        assert "secure" not in _signin_cookie(spoofed).lower()
        assert "secure" not in _signin_cookie(proxy.get("/dashboard/sign-in")).lower()
        # From a peer that is not a trusted proxy, the header proves nothing.
        direct = stranger.get("/dashboard/sign-in", headers=https)
        assert "secure" not in _signin_cookie(direct).lower()

        # Signing in through the proxy: the session cookie is Secure too. (httpx would not send
        # a Secure cookie back over http, so the pre-session cookie goes by hand.)
        token = srv.run(lambda accounts: accounts.create_token("proxied")).token
        pre = _signin_cookie(page).split(";", 1)[0]
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        proxy.cookies.clear()
        signed_in = proxy.post(
            "/dashboard/sign-in",
            data={"csrf": csrf, "token": token},
            headers={**https, "Cookie": pre},
        )
        assert signed_in.status_code == 303, signed_in.text[:300]
        session = [
            c for c in signed_in.headers.get_list("set-cookie") if "moeconnect_session=" in c
        ]
        assert len(session) == 1 and "; secure" in session[0].lower(), signed_in.headers
