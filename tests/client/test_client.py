"""The Python client against a real moeconnect server, and against scripted real HTTP servers."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

import moeconnect.client as client_module
from moeconnect.client import AsyncClient, Client, ConnectionResult, _retry_after
from moeconnect.testing import MoeconnectServer, WorkspaceKey, free_port

from .stub import PROXY_PAGE, SUCCESS, Answer, json_answer, stub_server

RATE_LIMITED = json_answer(
    429,
    '{"status": "fail", "error": {"message": "Too many attempts (30 per 1 minute); wait 1 '
    'seconds before trying again.", "type": "Rate Limit Exceeded", "code": "RATE_LIMITED", '
    '"request_id": "stub-429-request"}}',
    ("Retry-After", "1"),
)


def test_exports_are_small_and_sorted() -> None:
    assert client_module.__all__ == sorted(client_module.__all__)
    assert {"AsyncClient", "Client", "ConnectionResult"} <= set(client_module.__all__)
    assert "test_connection" not in client_module.__all__  # pytest would collect it


def test_success_against_a_real_server(moeconnect_workspace: WorkspaceKey) -> None:
    ws = moeconnect_workspace
    with Client() as client:
        result = client.test_connection(ws.workspace_id, ws.key, base_url=ws.base_url)
    assert result.ok and result.code == "SUCCESS" and result.status == 200
    assert result.app_name == ws.name
    assert result.request_id and 8 <= len(result.request_id) <= 32
    assert result.endpoint == ws.endpoint
    assert result.attempts == 1 and result.waited == 0


def test_failures_carry_the_servers_code_message_and_request_id(
    moeconnect_server: MoeconnectServer, moeconnect_workspace: WorkspaceKey
) -> None:
    ws = moeconnect_workspace
    with Client() as client:
        wrong = client.test_connection(ws.workspace_id, "an-imported-key-1", base_url=ws.base_url)
        assert (wrong.ok, wrong.status, wrong.code) == (False, 401, "KEY_MISMATCH")
        assert wrong.message.startswith("App Secret key mismatch")
        assert wrong.request_id

        wrong_dc = client.test_connection(ws.workspace_id, ws.key, dc="DC-02", base_url=ws.base_url)
        assert (wrong_dc.status, wrong_dc.code) == (400, "WRONG_DC")
        assert "https://api-02.moengage.com" in wrong_dc.message

        new_key = moeconnect_server.rotate_key(ws.workspace_id)
        replaced = client.test_connection(ws.workspace_id, ws.key, base_url=ws.base_url)
        assert (replaced.status, replaced.code) == (401, "KEY_REVOKED")
        assert "replaced" in replaced.message
        assert client.test_connection(ws.workspace_id, new_key, base_url=ws.base_url).ok


def test_a_key_in_its_grace_period_works_and_reports_its_sunset(
    moeconnect_server: MoeconnectServer, moeconnect_workspace: WorkspaceKey
) -> None:
    ws = moeconnect_workspace
    moeconnect_server.rotate_key(ws.workspace_id, grace="2h")
    with Client() as client:
        result = client.test_connection(ws.workspace_id, ws.key, base_url=ws.base_url)
    assert result.ok
    assert result.sunset is not None
    left = result.sunset - datetime.now(UTC)
    assert timedelta(hours=1, minutes=58) < left <= timedelta(hours=2)


def test_a_mistyped_generated_key_fails_locally_without_any_request(
    moeconnect_workspace: WorkspaceKey,
) -> None:
    ws = moeconnect_workspace
    typo = ws.key[:-7] + ("A" if ws.key[-7] != "A" else "B") + ws.key[-6:]
    with stub_server([SUCCESS]) as stub, Client() as client:
        result = client.test_connection(ws.workspace_id, typo, base_url=stub.base_url)
        assert stub.requests == []
    assert (result.ok, result.code, result.status, result.attempts) == (
        False,
        "KEY_MALFORMED",
        None,
        0,
    )


def test_default_endpoint_is_moengages_for_the_dc() -> None:
    # A mistyped generated key never leaves the machine, so this touches no network.
    with Client() as client:
        result = client.test_connection("WS", "moe_data_" + "x" * 38, dc="dc3")
    assert result.endpoint == "https://api-03.moengage.com/v1/integrations/authentication"
    with Client() as client, pytest.raises(ValueError, match="unknown data center"):
        client.test_connection("WS", "secret-key-value", dc="99")


def test_429_with_retry_after_is_waited_out_then_succeeds() -> None:
    with stub_server([RATE_LIMITED, SUCCESS]) as stub, Client(max_attempts=3) as client:
        started = time.monotonic()
        result = client.test_connection("WS1", "imported-key-1234", base_url=stub.base_url)
        took = time.monotonic() - started
    assert result.ok and result.app_name == "Stubbed"
    assert result.attempts == 2
    assert 1.0 <= result.waited < 1.5  # Retry-After: 1, plus at most 10% jitter (+50 ms)
    assert took >= 1.0
    assert stub.arrivals[1] - stub.arrivals[0] >= 1.0  # the server saw the client wait


def test_async_client_waits_out_429_too() -> None:
    async def go() -> tuple[ConnectionResult, float]:
        async with AsyncClient() as client:
            started = time.monotonic()
            result = await client.test_connection("WS1", "imported-key-1", base_url=base)
            return result, time.monotonic() - started

    with stub_server([RATE_LIMITED, SUCCESS]) as stub:
        base = stub.base_url
        result, took = asyncio.run(go())
    assert result.ok and result.attempts == 2 and took >= 1.0


def test_async_client_against_a_real_server(moeconnect_workspace: WorkspaceKey) -> None:
    ws = moeconnect_workspace

    async def go() -> ConnectionResult:
        async with AsyncClient() as client:
            return await client.test_connection(ws.workspace_id, ws.key, base_url=ws.base_url)

    assert asyncio.run(go()).app_name == ws.name


def test_503_without_retry_after_backs_off_and_gives_up_after_max_attempts() -> None:
    unavailable = json_answer(
        503,
        '{"status": "fail", "error": {"message": "down", "type": "Service Unavailable", '
        '"code": "STORE_UNAVAILABLE", "request_id": "stub-503-request"}}',
    )
    with stub_server([unavailable]) as stub, Client(max_attempts=3, backoff=0.1) as client:
        result = client.test_connection("WS1", "imported-key-1", base_url=stub.base_url)
    assert (result.ok, result.status, result.code, result.attempts) == (
        False,
        503,
        "STORE_UNAVAILABLE",
        3,
    )
    assert len(stub.arrivals) == 3
    assert 0.05 <= result.waited <= 0.3  # 0.05–0.1 then 0.1–0.2: exponential with jitter


def test_a_retry_after_beyond_max_wait_is_reported_not_waited() -> None:
    long_wait = Answer(429, RATE_LIMITED.body, (*RATE_LIMITED.headers[:1], ("Retry-After", "120")))
    with stub_server([long_wait, SUCCESS]) as stub, Client(max_wait=5) as client:
        started = time.monotonic()
        result = client.test_connection("WS1", "imported-key-1", base_url=stub.base_url)
    assert time.monotonic() - started < 2
    assert (result.code, result.attempts, result.retry_after) == ("RATE_LIMITED", 1, 120.0)


def test_retry_after_as_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert _retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert _retry_after("7") == 7
    assert _retry_after("soon") is None
    assert _retry_after(None) is None


def test_an_html_page_from_a_proxy_is_a_result_not_a_crash() -> None:
    with stub_server([PROXY_PAGE]) as stub, Client() as client:
        result = client.test_connection("WS1", "imported-key-1", base_url=stub.base_url)
    assert (result.ok, result.status, result.code) == (False, 502, "NON_JSON_RESPONSE")
    assert "text/html" in result.message and "502 Bad Gateway" in result.message


def test_json_that_is_not_the_api_is_reported() -> None:
    with stub_server([json_answer(200, '{"hello": "world"}')]) as stub, Client() as client:
        result = client.test_connection("WS1", "imported-key-1", base_url=stub.base_url)
    assert (result.ok, result.code) == (False, "UNEXPECTED_RESPONSE")


def test_network_failures_become_results() -> None:
    port = free_port()
    with Client(timeout=2) as client:
        refused = client.test_connection(
            "WS1", "imported-key-1", base_url=f"http://127.0.0.1:{port}"
        )
        dns = client.test_connection(
            "WS1", "imported-key-1", base_url="http://no-such-host.invalid"
        )
    assert (refused.ok, refused.status, refused.code) == (False, None, "CONNECT_ERROR")
    assert refused.network and dns.code == "CONNECT_ERROR"


def test_https_to_a_plain_http_port_is_a_tls_error(moeconnect_server: MoeconnectServer) -> None:
    with Client(timeout=5) as client:
        result = client.test_connection(
            "WS1", "imported-key-1", base_url=f"https://127.0.0.1:{moeconnect_server.port}"
        )
    assert (result.ok, result.code) == (False, "TLS_ERROR")


def test_a_stalled_server_is_a_timeout() -> None:
    with stub_server([Answer(200, b"{}", delay=1.5)]) as stub, Client(timeout=0.3) as client:
        result = client.test_connection("WS1", "imported-key-1", base_url=stub.base_url)
    assert result.code == "TIMEOUT" and "0.3 seconds" in result.message


def test_the_request_is_exactly_what_the_spec_asks_for() -> None:
    """In-process (httpx.MockTransport): headers and body of the request the client sends."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "success", "app_name": "Mock"})

    with Client(transport=httpx.MockTransport(handler)) as client:
        result = client.test_connection("WS1", "imported-key-1", dc="dc-1", source="acme")
    assert result.ok and result.app_name == "Mock"
    (request,) = seen
    assert str(request.url) == "https://api-01.moengage.com/v1/integrations/authentication"
    assert request.method == "POST"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(
        b"WS1:imported-key-1"
    ).decode("ascii")
    assert request.headers["moe-appkey"] == "WS1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("moeconnect-client/")
    assert json.loads(request.content) == {
        "app_id": "WS1",
        "app_secret": "imported-key-1",
        "source": "acme",
        "region": "01",
    }


def test_a_body_that_fails_to_decode_is_a_result_not_an_exception() -> None:
    broken = Answer(
        200,
        b"this is not gzip",
        (("Content-Type", "application/json"), ("Content-Encoding", "gzip")),
    )
    with stub_server([broken]) as stub, Client() as client:
        result = client.test_connection("WS1", "imported-key-1", base_url=stub.base_url)
    assert (result.ok, result.code) == (False, "UNEXPECTED_RESPONSE")
    assert "could not be read" in result.message
