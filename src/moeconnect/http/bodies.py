"""Request body limits for every route Starlette serves: 413 before a body is read whole.

Starlette buffers whatever a handler asks for: ``request.body()`` the whole body,
``request.form()`` up to 1,000 fields of up to 1 MB each (three sign-in POSTs of 990 such
fields took a server from 85 MB to 2.9 GB before anyone had signed in). So :class:`BodyLimit`
sits in front of the Starlette app (the Test Connection endpoint has its own limit,
:data:`moeconnect.checks.MAX_BODY`, and never goes through it) and, per route
(:func:`body_limit`):

- refuses a declared ``Content-Length`` over the limit at once, without reading a byte of it;
- counts the bytes of a body without one (chunked) as the handler reads them, and stops the
  handler at the first chunk past the limit (:class:`BodyTooLarge`, answered by the app's
  HTTP error handler).

Either way the answer is 413 ``PAYLOAD_TOO_LARGE`` in the JSON error envelope with
``Connection: close``. Before closing, up to :data:`DRAIN_BYTES` more of the body are read and
thrown away, for at most :data:`DRAIN_SECONDS`: closing a socket with unread data sends a reset,
and a client still writing a slightly oversized body would then see "connection reset" instead
of the 413 (a "lingering close", as nginx and Apache do). Nothing drained is kept. A client that
asked ``Expect: 100-continue`` and was refused before ``100 Continue`` went out has sent no body
and will send none: nothing is drained.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.exceptions import HTTPException

from ..request_ids import request_id_from
from .responses import JSON_HEADERS, envelope

__all__ = [
    "ADMIN_MAX_BODY",
    "DASHBOARD_MAX_BODY",
    "DRAIN_BYTES",
    "DRAIN_SECONDS",
    "OTHER_MAX_BODY",
    "SIGN_IN_MAX_BODY",
    "BodyLimit",
    "BodyTooLarge",
    "body_limit",
    "too_large_body",
]

ADMIN_MAX_BODY = 64 * 1024  # /admin/v1: JSON documents of a few fields
SIGN_IN_MAX_BODY = 4 * 1024  # POST /dashboard/sign-in: a CSRF token, an operator token, ?next=
DASHBOARD_MAX_BODY = 16 * 1024  # every other dashboard form: a name, a choice, a CSRF token
OTHER_MAX_BODY = 16 * 1024  # /healthz, /readyz, /metrics, /openapi.json, unknown paths: unread

DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 1.0

Scope = dict[str, Any]
Message = dict[str, Any]


def body_limit(path: str) -> int:
    """The largest body, in bytes, a request to ``path`` may carry."""
    if path == "/admin/v1" or path.startswith("/admin/"):
        return ADMIN_MAX_BODY
    if path == "/dashboard/sign-in":
        return SIGN_IN_MAX_BODY
    if path == "/dashboard" or path.startswith("/dashboard/"):
        return DASHBOARD_MAX_BODY
    return OTHER_MAX_BODY


class BodyTooLarge(HTTPException):
    """A body grew past its route's limit while a handler was reading it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413)
        self.limit = limit


def too_large_body(limit: int, request_id: str) -> bytes:
    """The 413 envelope: the catalogue's message speaks of the Test Connection fields."""
    return envelope(
        "PAYLOAD_TOO_LARGE",
        f"The request body is larger than {limit} bytes, the limit of this path; send less.",
        request_id,
    )


def _head(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool, bytes]:
    """The declared Content-Length (None when absent or unreadable), whether the client waits
    for ``100 Continue``, and its ``X-Request-Id``."""
    length: int | None = None
    expects = False
    request_id = b""
    for name, value in headers:
        if name == b"content-length":
            text = value.strip()
            length = int(text) if text.isdigit() and len(text) < 20 else None
        elif name == b"expect":
            expects = value.strip().lower() == b"100-continue"
        elif name == b"x-request-id":
            request_id = value
    return length, expects, request_id


class _Guard:
    """One request's receive and send: counts the body; after a 413, drains and closes."""

    __slots__ = ("_receive", "_send", "drain", "limit", "over", "size")

    def __init__(self, limit: int, receive: Any, send: Any, drain: bool) -> None:
        self.limit = limit
        self._receive = receive
        self._send = send
        self.drain = drain
        self.size = 0
        self.over = False

    async def receive(self) -> Message:
        if self.over:  # a handler that caught BodyTooLarge and read on
            raise BodyTooLarge(self.limit)
        message: Message = await self._receive()
        self.drain = True  # "100 Continue" has gone out, if it was asked for: a body comes
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.limit:
                self.over = True
                raise BodyTooLarge(self.limit)
        return message

    async def send(self, message: Message) -> None:
        if not self.over:
            await self._send(message)
            return
        if message["type"] == "http.response.start":
            headers = [(n, v) for n, v in message.get("headers", ()) if n.lower() != b"connection"]
            await self._send({**message, "headers": [*headers, (b"connection", b"close")]})
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            if self.drain:
                await self._send({**message, "more_body": True})
                await self._drain()
                await self._send({"type": "http.response.body", "body": b""})
            else:
                await self._send(message)
        else:
            await self._send(message)

    async def _drain(self) -> None:
        """Read and drop what the client is still sending, within the drain budget."""
        budget = DRAIN_BYTES
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while budget > 0:
                    message = await self._receive()
                    if message["type"] != "http.request":
                        return
                    budget -= len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return
        except TimeoutError:
            pass


class BodyLimit:
    """ASGI middleware: every HTTP request's body bounded by :func:`body_limit` of its path."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["path"])
        length, expects, request_id = _head(scope["headers"])
        guard = _Guard(limit, receive, send, drain=not expects)
        if length is not None and length > limit:
            guard.over = True
            await _refuse(guard, limit, request_id)
            return
        await self.app(scope, guard.receive, guard.send)


async def _refuse(guard: _Guard, limit: int, request_id_header: bytes) -> None:
    request_id = request_id_from(request_id_header)[0]
    body = too_large_body(limit, request_id)
    await guard.send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                *JSON_HEADERS,
                (b"x-request-id", request_id.encode()),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await guard.send({"type": "http.response.body", "body": body})
