"""The key never shows: not in logs (ours, httpx's, httpcore's at DEBUG), reprs or exceptions.

The ``Authorization`` header carries ``base64(workspace_id:key)``, so that form is looked for too.
"""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest

from moeconnect.client import AsyncClient, Client, ConnectionResult, _Call
from moeconnect.testing import MoeconnectServer, WorkspaceKey, free_port

from .stub import PROXY_PAGE, SUCCESS, Answer, json_answer, stub_server

RATE_LIMITED = json_answer(
    429,
    '{"status": "fail", "error": {"message": "wait", "type": "Rate Limit Exceeded", '
    '"code": "RATE_LIMITED", "request_id": "stub-429-request"}}',
    ("Retry-After", "0"),
)


def forms_of(workspace_id: str, key: str) -> list[str]:
    """Every way the key could leak: plain, and base64 as in the Authorization header."""
    both = f"{workspace_id}:{key}".encode()
    return [
        key,
        key[9:30],  # any long run of its random part
        base64.b64encode(both).decode(),
        base64.b64encode(key.encode()).decode(),
        base64.urlsafe_b64encode(both).decode(),
    ]


def assert_absent(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text


def test_key_never_in_logs_reprs_or_exceptions(
    caplog: pytest.LogCaptureFixture,
    moeconnect_server: MoeconnectServer,
    moeconnect_workspace: WorkspaceKey,
) -> None:
    ws = moeconnect_workspace
    secrets = forms_of(ws.workspace_id, ws.key)
    seen: list[object] = [ws]
    for name in ("", "httpx", "httpcore", "moeconnect", "moeconnect.client", "hpack"):
        caplog.set_level(logging.DEBUG, logger=name)

    with Client(timeout=2, max_attempts=2) as client:
        seen.append(client)
        # Success, a failure, a retried 429, a proxy page, a refused port, a TLS failure.
        seen.append(client.test_connection(ws.workspace_id, ws.key, base_url=ws.base_url))
        seen.append(client.test_connection(ws.workspace_id, ws.key, dc="02", base_url=ws.base_url))
        with stub_server([RATE_LIMITED, PROXY_PAGE]) as stub:
            seen.append(client.test_connection(ws.workspace_id, ws.key, base_url=stub.base_url))
        seen.append(
            client.test_connection(
                ws.workspace_id, ws.key, base_url=f"http://127.0.0.1:{free_port()}"
            )
        )
        seen.append(
            client.test_connection(
                ws.workspace_id, ws.key, base_url=f"https://127.0.0.1:{moeconnect_server.port}"
            )
        )
        seen.append(_Call(client, ws.workspace_id, ws.key, "01", "s", ws.base_url))
        with pytest.raises(ValueError) as unknown_dc:
            client.test_connection(ws.workspace_id, ws.key, dc="77")
        seen.append(unknown_dc.value)

    async def go() -> ConnectionResult:
        async with AsyncClient() as aclient:
            seen.append(aclient)
            return await aclient.test_connection(ws.workspace_id, ws.key, base_url=ws.base_url)

    seen.append(asyncio.run(go()))
    # A mistyped key is just as secret as the right one.
    typo = ws.key[:-1] + ("x" if ws.key[-1] != "x" else "y")
    with Client() as client:
        seen.append(client.test_connection(ws.workspace_id, typo, base_url=ws.base_url))

    results = [item for item in seen if isinstance(item, ConnectionResult)]
    assert [r.code for r in results] == [
        "SUCCESS",
        "WRONG_DC",
        "NON_JSON_RESPONSE",
        "CONNECT_ERROR",
        "TLS_ERROR",
        "SUCCESS",
        "KEY_MALFORMED",
    ]
    assert any(r.name.startswith("httpcore") for r in caplog.records)  # they did log, at DEBUG
    assert any(r.name == "moeconnect.client" for r in caplog.records)
    texts = [caplog.text, *(f"{r.getMessage()} {r.args}" for r in caplog.records)]
    texts += [repr(item) for item in seen] + [str(item) for item in seen]
    texts += [str(r.as_dict()) for r in results]
    assert_absent("\n".join(texts), [*secrets, *forms_of(ws.workspace_id, typo)])


def test_success_stub_is_not_leaking_either() -> None:
    with stub_server([SUCCESS]) as stub, Client() as client:
        result = client.test_connection("WS1", "imported-secret-9", base_url=stub.base_url)
        headers, body = stub.requests[0]
    # The key did travel (that is the point), but only in the body and the Basic header.
    assert "imported-secret-9" in body.decode()
    assert (
        headers["Authorization"] == "Basic " + base64.b64encode(b"WS1:imported-secret-9").decode()
    )
    assert "imported-secret-9" not in repr(result)


@pytest.mark.parametrize("echo", ["html", "json"])
def test_a_server_echoing_the_request_does_not_carry_the_key_into_the_result(echo: str) -> None:
    """Some proxies' debug pages print the request; the result scrubs every form of the key."""
    key = "imported-secret-echoed-0123456789"
    ctype = "text/html" if echo == "html" else "application/json"
    answer = Answer(502 if echo == "html" else 400, b"", (("Content-Type", ctype),), echo=echo)
    with stub_server([answer]) as stub, Client() as client:
        result = client.test_connection("WS1", key, base_url=stub.base_url)
    assert result.code == ("NON_JSON_RESPONSE" if echo == "html" else "HTTP_400")
    assert "***" in result.message
    assert_absent(repr(result) + str(result.as_dict()), forms_of("WS1", key))


def test_moengage_style_answers_without_a_code_still_get_one() -> None:
    """MoEngage's own envelope has no ``code``; its key-mismatch message is recognised."""
    mismatch = json_answer(
        401,
        '{"status": "fail", "error": {"message": "App Secret key mismatch. Please login to the '
        'dashboard to verify key", "type": "Authentication required", "request_id": "abcdefgh"}}',
    )
    with stub_server([mismatch]) as stub, Client() as client:
        result = client.test_connection("WS1", "imported-key-1", base_url=stub.base_url)
    assert (result.status, result.code, result.request_id) == (401, "KEY_MISMATCH", "abcdefgh")
