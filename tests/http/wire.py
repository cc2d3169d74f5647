"""Helpers for Test Connection requests over real HTTP, and the assertions every response gets.

``attempt()`` sends a well-formed request that any keyword can spoil; ``assert_failure()`` and
``assert_success()`` check the status, the exact envelope, the headers SPEC section 3 promises on
every response, and the response against the OpenAPI document.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from moeconnect.errors import CATALOGUE

from ..openapi_check import assert_response_matches

__all__ = [
    "NO_LIMITS",
    "PATH",
    "assert_common",
    "assert_failure",
    "assert_success",
    "attempt",
    "basic",
    "eventually",
]

PATH = "/v1/integrations/authentication"
# Abuse limits (row 5) are another suite's subject; here they would only get in the way.
NO_LIMITS = {
    "MOECONNECT_LIMIT_FAILED_PER_IP": "off",
    "MOECONNECT_LIMIT_FAILED_PER_WORKSPACE": "off",
    "MOECONNECT_LIMIT_PER_WORKSPACE": "off",
}
_UNSET: Any = object()


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def attempt(
    base_url: str,
    workspace_id: str,
    key: str,
    *,
    region: str = "01",
    source: str = "pytest",
    body: Any = _UNSET,
    authorization: str | None = _UNSET,
    appkey: str | None = _UNSET,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
    method: str = "POST",
    content: bytes | None = None,
) -> httpx.Response:
    """One request to the endpoint; every part defaults to the consistent, valid form."""
    sent: dict[str, str] = {}
    if content_type is not None:
        sent["Content-Type"] = content_type
    authorization = basic(workspace_id, key) if authorization is _UNSET else authorization
    if authorization is not None:
        sent["Authorization"] = authorization
    appkey = workspace_id if appkey is _UNSET else appkey
    if appkey is not None:
        sent["MOE-APPKEY"] = appkey
    sent.update(headers or {})
    if content is None:
        payload = (
            {"app_id": workspace_id, "app_secret": key, "source": source, "region": region}
            if body is _UNSET
            else body
        )
        content = orjson.dumps(payload)
    return httpx.request(method, base_url + PATH, headers=sent, content=content, timeout=10)


def eventually(
    send: Callable[[], httpx.Response], status: int, within: float = 5.0
) -> httpx.Response:
    """Repeat ``send`` until it answers ``status`` (or ``within`` seconds pass); the last response.

    A change made by another process reaches a server's credential cache through the change
    feed (polled every 0.25 s; SPEC section 6 allows 1 s), so a test polls rather than sleeps.
    """
    deadline = time.monotonic() + within
    while True:
        response = send()
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def assert_common(response: httpx.Response) -> None:
    """What every response of the endpoint carries, success or not."""
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    request_id = response.headers["x-request-id"]
    assert 8 <= len(request_id) <= 32
    assert_response_matches(response)


def assert_failure(
    response: httpx.Response, status: int, code: str, message: str | None = None
) -> dict[str, Any]:
    """The exact envelope for ``code``; returns its ``error`` object for further checks."""
    assert response.status_code == status, (response.status_code, response.text)
    assert_common(response)
    body = response.json()
    assert set(body) == {"status", "error"}
    assert body["status"] == "fail"
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "code", "request_id"}
    assert error["code"] == code, error
    assert error["type"] == CATALOGUE[code].type
    assert error["request_id"] == response.headers["x-request-id"]
    # Every template field was filled (render_message shows a missing one as a lone "?").
    assert error["message"] and not re.search(r"(^|\s)\?([\s;.,]|$)", error["message"])
    if message is not None:
        assert error["message"] == message
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")
    else:
        assert "www-authenticate" not in response.headers
    if status == 405:
        assert response.headers["allow"] == "POST"
    if status in (429, 503):
        assert int(response.headers["retry-after"]) > 0
    return error


def assert_success(response: httpx.Response, app_name: str) -> None:
    assert response.status_code == 200, response.text
    assert_common(response)
    assert response.content == orjson.dumps({"status": "success", "app_name": app_name})
    assert "www-authenticate" not in response.headers
