"""uvicorn's httptools protocol with a bound on request heads and enveloped protocol errors.

httptools buffers a request line and headers of any size before uvicorn sees them, so a client
could make one request hold gigabytes. This protocol counts the bytes of each request head as
they arrive and, past :data:`MAX_HEAD`, answers 431 and closes the connection. Requests that are
not valid HTTP (which uvicorn answers with a plain-text 400) get the JSON error envelope here too,
so every answer of the server has the same shape.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .responses import error_body, new_request_id

__all__ = ["MAX_HEAD", "BoundedHttpToolsProtocol"]

MAX_HEAD = 64 * 1024  # request line + headers; browsers send a few kilobytes at most

_REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Rejects request heads larger than :data:`MAX_HEAD` with 431; envelopes parser 400s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_body = False

    def data_received(self, data: bytes) -> None:
        if self._in_body:
            super().data_received(data)
            return
        self._head_bytes += len(data)
        super().data_received(data)
        # Still inside a head after this chunk: every byte of it was head, so memory held by
        # the parser is at most MAX_HEAD plus one read.
        if not self._in_body and self._head_bytes > MAX_HEAD and not self.transport.is_closing():
            self._reject(431, "HEADERS_TOO_LARGE", limit=MAX_HEAD)

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._reject(400, "MALFORMED_REQUEST")

    def _reject(self, status: int, code: str, **params: object) -> None:
        request_id = new_request_id()
        body = error_body(code, request_id, **params)
        head = [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"cache-control: no-store\r\n",
            b"x-request-id: " + request_id.encode() + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
