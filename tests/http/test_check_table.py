"""SPEC section 3's check table, row by row, through a real server over HTTP.

Each test sends one request to a ``moeconnect serve`` subprocess and checks status, envelope,
``type``, ``code`` and headers (via :mod:`tests.http.wire`, which also validates every response
against the OpenAPI document). Row 5 (rate limits) belongs to the abuse-limit tests.
"""

from __future__ import annotations

import base64
import socket
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from moeconnect.testing import MoeconnectServer

from ..openapi_check import assert_response_matches
from .wire import (
    NO_LIMITS,
    PATH,
    assert_common,
    assert_failure,
    assert_success,
    attempt,
    basic,
    eventually,
)

KEY_MISMATCH_MESSAGE = "App Secret key mismatch. Please login to the dashboard to verify key"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    """One DC-01 server for the module; tests make their own workspaces so they don't collide."""
    with MoeconnectServer(workdir=tmp_path_factory.mktemp("table"), env=NO_LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def creds(srv: MoeconnectServer) -> tuple[str, str]:
    """A workspace in DC 01 with a valid Data key, shared by the tests that never change it."""
    return srv.workspace_with_key("PI-Prod-DC01")


# -- success -------------------------------------------------------------------------------------


def test_success_body_is_exact_and_carries_the_common_headers(
    srv: MoeconnectServer, creds: tuple[str, str]
) -> None:
    wid, key = creds
    response = attempt(srv.base_url, wid, key)
    assert_success(response, "PI-Prod-DC01")
    assert response.text == '{"status":"success","app_name":"PI-Prod-DC01"}'


def test_caller_request_id_is_echoed_and_a_bad_one_replaced(
    srv: MoeconnectServer, creds: tuple[str, str]
) -> None:
    wid, key = creds
    mine = attempt(srv.base_url, wid, key, headers={"X-Request-ID": "partner-req-0001"})
    assert_success(mine, "PI-Prod-DC01")
    assert mine.headers["x-request-id"] == "partner-req-0001"
    bad = attempt(srv.base_url, wid, key, headers={"X-Request-ID": "no spaces allowed!"})
    assert_success(bad, "PI-Prod-DC01")
    assert bad.headers["x-request-id"] != "no spaces allowed!"
    failing = attempt(srv.base_url, wid, "wrong-key-123", headers={"X-Request-ID": "abcd1234"})
    assert assert_failure(failing, 401, "KEY_MISMATCH")["request_id"] == "abcd1234"


@pytest.mark.parametrize("region", ["01", "1", "DC-01", "dc01", "Dc-1"])
def test_every_spelling_of_the_region_is_accepted(
    srv: MoeconnectServer, creds: tuple[str, str], region: str
) -> None:
    wid, key = creds
    assert_success(attempt(srv.base_url, wid, key, region=region), "PI-Prod-DC01")


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/vnd+json"]
)
def test_json_content_types_with_parameters_are_accepted(
    srv: MoeconnectServer, creds: tuple[str, str], content_type: str
) -> None:
    wid, key = creds
    assert_success(attempt(srv.base_url, wid, key, content_type=content_type), "PI-Prod-DC01")


def test_unknown_body_fields_are_ignored(srv: MoeconnectServer, creds: tuple[str, str]) -> None:
    wid, key = creds
    body = {"app_id": wid, "app_secret": key, "source": "s", "region": "01", "extra": [1, 2]}
    assert_success(attempt(srv.base_url, wid, key, body=body), "PI-Prod-DC01")


# -- rows 1-4 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_row_1_method_not_allowed(
    srv: MoeconnectServer, creds: tuple[str, str], method: str
) -> None:
    wid, key = creds
    error = assert_failure(
        attempt(srv.base_url, wid, key, method=method), 405, "METHOD_NOT_ALLOWED"
    )
    assert method in error["message"]


def test_row_1_head_gets_405_headers_without_a_body(srv: MoeconnectServer) -> None:
    response = httpx.head(srv.base_url + PATH)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"]
    assert response.content == b""
    assert_response_matches(response)


def test_row_1_comes_before_every_other_row(srv: MoeconnectServer) -> None:
    response = httpx.request(
        "GET", srv.base_url + PATH, content=b"x" * 200_000, headers={"Content-Type": "text/plain"}
    )
    assert_failure(response, 405, "METHOD_NOT_ALLOWED")


def test_row_2_payload_too_large(srv: MoeconnectServer, creds: tuple[str, str]) -> None:
    wid, key = creds
    body = {"app_id": wid, "app_secret": key, "source": "s", "region": "01", "pad": "x" * 102_400}
    error = assert_failure(attempt(srv.base_url, wid, key, body=body), 413, "PAYLOAD_TOO_LARGE")
    assert "102400" in error["message"]


def test_row_2_payload_too_large_when_chunked(
    srv: MoeconnectServer, creds: tuple[str, str]
) -> None:
    """No Content-Length to trust: the limit is enforced while the body streams in."""
    wid, key = creds

    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 4096  # JSON whitespace: 120 KB in all

    response = httpx.post(
        srv.base_url + PATH,
        content=chunks(),
        headers={"Content-Type": "application/json", "Authorization": basic(wid, key)},
    )
    assert "content-length" not in response.request.headers
    assert_failure(response, 413, "PAYLOAD_TOO_LARGE")


def test_row_2_exactly_100_kb_is_allowed(srv: MoeconnectServer, creds: tuple[str, str]) -> None:
    wid, key = creds
    content = orjson.dumps({"app_id": wid, "app_secret": key, "source": "s", "region": "01"})
    content = content + b" " * (100 * 1024 - len(content))
    assert len(content) == 102_400
    assert_success(attempt(srv.base_url, wid, key, content=content), "PI-Prod-DC01")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_row_3_unsupported_media_type(
    srv: MoeconnectServer, creds: tuple[str, str], content_type: str | None
) -> None:
    wid, key = creds
    response = attempt(srv.base_url, wid, key, content_type=content_type)
    assert_failure(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_row_3_comes_before_row_4(srv: MoeconnectServer) -> None:
    response = attempt(srv.base_url, "W", "k", content_type="text/plain", authorization=None)
    assert_failure(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("authorization", [None, ""])
def test_row_4_auth_missing(
    srv: MoeconnectServer, creds: tuple[str, str], authorization: str | None
) -> None:
    wid, key = creds
    response = attempt(srv.base_url, wid, key, authorization=authorization)
    assert_failure(response, 401, "AUTH_MISSING")


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Bearer abcdefgh", "not Basic"),
        ("Basic !!!not-base64!!!", "base64"),
        ("Basic " + base64.b64encode(b"\xff\xfe:\xfa").decode(), "UTF-8"),
        ("Basic " + base64.b64encode(b"no-colon-here").decode(), "':'"),
    ],
)
def test_row_4_auth_malformed(
    srv: MoeconnectServer, creds: tuple[str, str], authorization: str, reason: str
) -> None:
    wid, key = creds
    error = assert_failure(
        attempt(srv.base_url, wid, key, authorization=authorization), 401, "AUTH_MALFORMED"
    )
    assert reason in error["message"]


def test_row_4_basic_scheme_is_case_insensitive(
    srv: MoeconnectServer, creds: tuple[str, str]
) -> None:
    wid, key = creds
    lower = "basic " + basic(wid, key).split(" ", 1)[1]
    assert_success(attempt(srv.base_url, wid, key, authorization=lower), "PI-Prod-DC01")


# -- rows 6-12 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("appkey", [None, ""])
def test_row_6_appkey_missing(
    srv: MoeconnectServer, creds: tuple[str, str], appkey: str | None
) -> None:
    wid, key = creds
    assert_failure(attempt(srv.base_url, wid, key, appkey=appkey), 400, "APPKEY_MISSING")


def test_row_6_blank_appkey_sent_raw(srv: MoeconnectServer, creds: tuple[str, str]) -> None:
    """A header of spaces only, which httpx would not send as is: a raw HTTP/1.1 request."""
    wid, key = creds
    body = orjson.dumps({"app_id": wid, "app_secret": key, "source": "s", "region": "01"})
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {basic(wid, key)}\r\nMOE-APPKEY:    \r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        sock.sendall(request)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"\r\ncache-control: no-store" in head.lower()
    assert orjson.loads(payload)["error"]["code"] == "APPKEY_MISSING"


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe"])
def test_row_7_invalid_json(srv: MoeconnectServer, creds: tuple[str, str], content: bytes) -> None:
    wid, key = creds
    assert_failure(attempt(srv.base_url, wid, key, content=content), 400, "INVALID_JSON")


@pytest.mark.parametrize("field", ["app_id", "app_secret", "source", "region"])
def test_row_7_field_missing_names_the_field(
    srv: MoeconnectServer, creds: tuple[str, str], field: str
) -> None:
    wid, key = creds
    body: dict[str, object] = {"app_id": wid, "app_secret": key, "source": "s", "region": "01"}
    del body[field]
    error = assert_failure(attempt(srv.base_url, wid, key, body=body), 400, "FIELD_MISSING")
    assert field in error["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("app_id", 42), ("app_secret", ""), ("source", ["s"]), ("region", 1), ("source", "s" * 65)],
)
def test_row_7_field_invalid_names_the_field(
    srv: MoeconnectServer, creds: tuple[str, str], field: str, value: object
) -> None:
    wid, key = creds
    body: dict[str, object] = {"app_id": wid, "app_secret": key, "source": "s", "region": "01"}
    body[field] = value
    error = assert_failure(attempt(srv.base_url, wid, key, body=body), 400, "FIELD_INVALID")
    assert field in error["message"]


def test_row_6_comes_before_row_7(srv: MoeconnectServer, creds: tuple[str, str]) -> None:
    wid, key = creds
    response = attempt(srv.base_url, wid, key, appkey=None, content=b"not json")
    assert_failure(response, 400, "APPKEY_MISSING")


@pytest.mark.parametrize("region", ["99", "eu", "DC-7", "api-01"])
def test_row_8_unknown_region(srv: MoeconnectServer, creds: tuple[str, str], region: str) -> None:
    wid, key = creds
    error = assert_failure(attempt(srv.base_url, wid, key, region=region), 400, "UNKNOWN_REGION")
    assert "01, 02, 03, 04, 05, 06, 101" in error["message"]


def test_row_9_appkey_differs(srv: MoeconnectServer, creds: tuple[str, str]) -> None:
    wid, key = creds
    response = attempt(srv.base_url, wid, key, appkey="SOMEONEELSE")
    error = assert_failure(response, 400, "WORKSPACE_ID_MISMATCH")
    assert "MOE-APPKEY" in error["message"]


def test_row_9_app_id_differs(srv: MoeconnectServer, creds: tuple[str, str]) -> None:
    wid, key = creds
    body = {"app_id": "SOMEONEELSE", "app_secret": key, "source": "s", "region": "01"}
    error = assert_failure(attempt(srv.base_url, wid, key, body=body), 400, "WORKSPACE_ID_MISMATCH")
    assert "app_id" in error["message"]


def test_row_10_app_secret_differs(srv: MoeconnectServer, creds: tuple[str, str]) -> None:
    wid, key = creds
    body = {"app_id": wid, "app_secret": key + "x", "source": "s", "region": "01"}
    error = assert_failure(attempt(srv.base_url, wid, key, body=body), 400, "API_KEY_MISMATCH")
    assert "app_secret" in error["message"]


def test_row_11_wrong_dc_names_the_endpoint(srv: MoeconnectServer, creds: tuple[str, str]) -> None:
    wid, key = creds
    error = assert_failure(attempt(srv.base_url, wid, key, region="dc02"), 400, "WRONG_DC")
    assert "https://api-02.moengage.com" in error["message"]
    assert "01" in error["message"]


def test_row_12_key_malformed(srv: MoeconnectServer, creds: tuple[str, str]) -> None:
    wid, key = creds
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert_failure(attempt(srv.base_url, wid, typo), 401, "KEY_MALFORMED")
    truncated = key[:-3]
    assert_failure(attempt(srv.base_url, wid, truncated), 401, "KEY_MALFORMED")


# -- rows 13-18 ----------------------------------------------------------------------------------


def test_row_13_workspace_not_found(srv: MoeconnectServer) -> None:
    response = attempt(srv.base_url, "NOSUCHWORKSPACE", "some-imported-key")
    assert_failure(response, 401, "WORKSPACE_NOT_FOUND")


def test_row_14_workspace_in_other_dc_names_it(srv: MoeconnectServer) -> None:
    ws = srv.create_workspace("In DC 02", dc="02")
    key = srv.generate_key(ws.id)
    error = assert_failure(attempt(srv.base_url, ws.id, key), 401, "WORKSPACE_IN_OTHER_DC")
    assert "02" in error["message"]
    assert "https://api-02.moengage.com" in error["message"]


def test_row_15_workspace_suspended_then_resumed(srv: MoeconnectServer) -> None:
    wid, key = srv.workspace_with_key("Suspended")
    assert_success(attempt(srv.base_url, wid, key), "Suspended")  # now cached
    srv.suspend(wid)
    response = eventually(lambda: attempt(srv.base_url, wid, key), 403)
    assert_failure(response, 403, "WORKSPACE_SUSPENDED")
    srv.resume(wid)
    assert_success(attempt(srv.base_url, wid, key), "Suspended")  # a failure re-reads the store


def test_row_16_no_data_key(srv: MoeconnectServer) -> None:
    ws = srv.create_workspace("Keyless")
    srv.generate_key(ws.id, scope="push")  # a key of another scope is not a Data key
    assert_failure(attempt(srv.base_url, ws.id, "any-imported-key"), 401, "NO_DATA_KEY")


def test_row_16_after_revoke(srv: MoeconnectServer) -> None:
    wid, key = srv.workspace_with_key("Revoked")
    assert_success(attempt(srv.base_url, wid, key), "Revoked")
    srv.revoke_key(wid)
    response = eventually(lambda: attempt(srv.base_url, wid, key), 401)
    assert_failure(response, 401, "NO_DATA_KEY")


def test_row_17_replaced_key_gives_the_date(srv: MoeconnectServer) -> None:
    wid, old = srv.workspace_with_key("Rotated")
    assert_success(attempt(srv.base_url, wid, old), "Rotated")
    new = srv.generate_key(wid)
    response = eventually(lambda: attempt(srv.base_url, wid, old), 401)
    error = assert_failure(response, 401, "KEY_REVOKED")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert f"replaced on {today}" in error["message"], error["message"]
    assert_success(attempt(srv.base_url, wid, new), "Rotated")


def test_row_17_revoked_key_gives_the_date(srv: MoeconnectServer) -> None:
    wid, old = srv.workspace_with_key("Revoked then new")
    srv.revoke_key(wid)
    srv.generate_key(wid)
    error = assert_failure(attempt(srv.base_url, wid, old), 401, "KEY_REVOKED")
    assert "revoked on " + datetime.now(UTC).strftime("%Y-%m-%d") in error["message"]


def test_row_18_key_mismatch_is_moengages_message(
    srv: MoeconnectServer, creds: tuple[str, str]
) -> None:
    wid, _ = creds
    other_wid, other_key = srv.workspace_with_key("Other")
    for wrong in ("an-imported-wrong-key", other_key):
        response = attempt(srv.base_url, wid, wrong)
        assert_failure(response, 401, "KEY_MISMATCH", KEY_MISMATCH_MESSAGE)
    assert_success(attempt(srv.base_url, other_wid, other_key), "Other")


def test_imported_key_authenticates(srv: MoeconnectServer) -> None:
    ws = srv.create_workspace("Imported")
    srv.import_key(ws.id, "legacy key: ~!@# 123")
    assert_success(attempt(srv.base_url, ws.id, "legacy key: ~!@# 123"), "Imported")
    response = attempt(srv.base_url, ws.id, "legacy key: ~!@# 124")
    assert_failure(response, 401, "KEY_MISMATCH", KEY_MISMATCH_MESSAGE)


# -- 404, 500, 503 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("POST", "/v1/integrations/authentication/"), ("POST", "/v1/nothing")],
)
def test_unknown_path_is_404_in_the_envelope(srv: MoeconnectServer, method: str, path: str) -> None:
    response = httpx.request(method, srv.base_url + path, json={})
    assert_failure(response, 404, "NOT_FOUND")


def test_500_on_a_corrupt_row(tmp_path: Path) -> None:
    """Honestly unexpected: a key row whose timestamp is not a date. The answer is 500 INTERNAL,
    never a verdict on the credentials, and the log names the request_id."""
    with MoeconnectServer(workdir=tmp_path, env=NO_LIMITS) as server:
        wid, key = server.workspace_with_key("Corrupt")
        with sqlite3.connect(tmp_path / "moeconnect.db") as db:
            db.execute(
                "UPDATE api_keys SET created_at = 'not a date' WHERE workspace_id = ?", (wid,)
            )
        error = assert_failure(attempt(server.base_url, wid, key), 500, "INTERNAL")
        assert error["request_id"] in server.logs()
        assert key not in server.logs()


def test_503_when_the_database_file_is_removed(tmp_path: Path) -> None:
    """Valid credentials the server has not cached, and the store gone: 503, never 401."""
    with MoeconnectServer(workdir=tmp_path, env=NO_LIMITS) as server:
        wid, key = server.workspace_with_key("Outage")
        (tmp_path / "moeconnect.db").unlink()
        error = assert_failure(attempt(server.base_url, wid, key), 503, "STORE_UNAVAILABLE")
        assert "not checked" in error["message"]


# -- several DCs on one instance -----------------------------------------------------------------


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    with MoeconnectServer(
        workdir=tmp_path_factory.mktemp("multi"), dc="01,02", env=NO_LIMITS
    ) as running:
        yield running


def test_multi_dc_host_header_selects_the_dc(multi: MoeconnectServer) -> None:
    ws2 = multi.create_workspace("Second DC", dc="02")
    key2 = multi.generate_key(ws2.id)
    host02 = {"Host": f"api-02.localhost:{multi.port}"}
    assert_success(attempt(multi.base_url, ws2.id, key2, region="02", headers=host02), "Second DC")
    # Without an api-XX. Host the first listed DC (01) is served.
    error = assert_failure(attempt(multi.base_url, ws2.id, key2, region="02"), 400, "WRONG_DC")
    assert "https://api-02.moengage.com" in error["message"]
    # At api-02, region 01 is the wrong DC, and the message points at api-01.
    response = attempt(multi.base_url, ws2.id, key2, region="01", headers=host02)
    assert "https://api-01.moengage.com" in assert_failure(response, 400, "WRONG_DC")["message"]


def test_multi_dc_first_dc_and_other_dc_workspace(multi: MoeconnectServer) -> None:
    wid1, key1 = multi.workspace_with_key("First DC")  # created in the first DC, 01
    assert_success(attempt(multi.base_url, wid1, key1), "First DC")
    host01 = {"Host": f"api-01.localhost:{multi.port}"}
    assert_success(attempt(multi.base_url, wid1, key1, headers=host01), "First DC")
    # api-03 is not served here: the first listed DC answers.
    host03 = {"Host": f"api-03.localhost:{multi.port}"}
    assert_success(attempt(multi.base_url, wid1, key1, headers=host03), "First DC")
    # A DC-01 workspace asked for at api-02 with region 02: it lives in another DC of this store.
    host02 = {"Host": f"api-02.localhost:{multi.port}"}
    response = attempt(multi.base_url, wid1, key1, region="02", headers=host02)
    error = assert_failure(response, 401, "WORKSPACE_IN_OTHER_DC")
    assert "https://api-01.moengage.com" in error["message"]


def test_every_response_has_a_request_id(srv: MoeconnectServer, creds: tuple[str, str]) -> None:
    wid, key = creds
    seen = set()
    for response in (
        attempt(srv.base_url, wid, key),
        attempt(srv.base_url, wid, "x" * 9),
        attempt(srv.base_url, wid, key, method="GET"),
        httpx.get(srv.base_url + "/nowhere"),
    ):
        assert_common(response)
        seen.add(response.headers["x-request-id"])
    assert len(seen) == 4
