"""uvicorn's httptools protocol, with a bound on request heads, enveloped protocol errors and a
fast path for the Test Connection endpoint's warm answers.

httptools buffers a request line and headers of any size before uvicorn sees them, so a client
could make one request hold gigabytes. This protocol counts the bytes of each request head as
they arrive and, past :data:`MAX_HEAD`, answers 431 and closes the connection. Requests that are
not valid HTTP (which uvicorn answers with a plain-text 400) get the JSON error envelope here too,
so every answer of the server has the same shape.

The fast path: most Test Connection requests repeat one that succeeded a moment ago, and the
endpoint can answer those from memory (``answer_at_once``, see :mod:`.endpoint`). For such a
request uvicorn's ASGI machinery — a task, an event, two messages, a regex per response header,
two writes — would cost more than the answer. So a plain keep-alive ``POST`` to the endpoint's
path is *held*: its body is collected here, and once it is complete the app's ``answer_at_once``
is asked first. An answer is written in one piece, after the loop has read all the requests that
arrived with it; ``None`` releases the request to uvicorn as if it had never been held, with the
body it already has. Anything unusual (another path, a query
string, HTTP/1.0, ``Connection: close``, ``Expect``, an upgrade, a request pipelined behind one
still being answered, a paused writer, a body over the endpoint's limit) is never held. A
request still held (its body not complete) when the server shuts down is closed with its
connection, like one whose headers had not all arrived: the client sees a closed connection,
never a wrong answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from ..checks import MAX_BODY
from ..request_ids import new_request_id
from .endpoint import PATH
from .pending import PendingAnswer
from .responses import JSON_HEADERS, error_body, header_lines

__all__ = ["MAX_HEAD", "AnswerAtOnce", "BoundedHttpToolsProtocol"]

MAX_HEAD = 64 * 1024  # request line + headers; browsers send a few kilobytes at most

log = logging.getLogger("moeconnect.http")

_REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}
_PATH = PATH.encode()

# (headers, complete body, client address) -> a success's response after the status line and
# the server's own headers, an answer to come, or None to let the ASGI app answer.
AnswerAtOnce = Callable[
    [list[tuple[bytes, bytes]], bytes, "tuple[str, int] | None"], bytes | PendingAnswer | None
]


class _NoEvent:
    """What uvicorn sets on a cycle's ``message_event`` on connection loss: nothing waits on a
    parked answer's."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class _Parked:
    """Stands in for uvicorn's ``RequestResponseCycle`` while an answer is to come: what
    uvicorn reads or sets on its current cycle (pipelining, connection loss, shutdown).

    Free of reference cycles, so it goes when its answer is written: one that referred to itself
    lived until the cyclic collector's next run, which every ~50,000 answers then stopped the
    event loop for 30-40 ms to free them (docs/benchmarks.md, item 36).
    """

    __slots__ = ("disconnected", "keep_alive", "message_event", "response_complete")

    def __init__(self) -> None:
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = True
        self.message_event = _NO_EVENT


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Rejects request heads larger than :data:`MAX_HEAD` with 431; envelopes parser 400s;
    answers what the app's ``answer_at_once`` can answer without an ASGI task."""

    # The server's default headers (``date``, renewed every second as a new list), rendered once
    # per list: (the list, its bytes).
    _defaults: tuple[object, bytes] = (None, b"")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_body = False
        self._answer_at_once: AnswerAtOnce | None = getattr(self.app, "answer_at_once", None)
        self._held: list[bytes] | None = None  # the body so far of a held request
        self._held_size = 0

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
        if self._answer_at_once is not None and self._may_hold():
            self._held = []
            self._held_size = 0
            return
        super().on_headers_complete()

    def _may_hold(self) -> bool:
        parser = self.parser
        return (
            self.url == _PATH
            and parser.get_method() == b"POST"
            and parser.get_http_version() == "1.1"
            and parser.should_keep_alive()
            and not parser.should_upgrade()
            and not self.expect_100_continue
            and (self.cycle is None or self.cycle.response_complete)
            and not self.flow.write_paused
            and not self.transport.is_closing()
        )

    def on_body(self, body: bytes) -> None:
        if self._held is None:
            super().on_body(body)
            return
        self._held.append(body)
        self._held_size += len(body)
        if self._held_size > MAX_BODY:
            self._release()

    def on_message_complete(self) -> None:
        self._in_body = False
        held = self._held
        if held is None:
            super().on_message_complete()
            return
        self._held = None
        body = b"".join(held)
        assert self._answer_at_once is not None
        try:
            answer = self._answer_at_once(self.headers, body, self.client)
        except Exception:  # a bug here must not become the parser's 400: let the app answer
            log.exception("the fast path failed; the request goes to the app")
            answer = None
        if answer is None:
            self._held = [body] if body else []
            self._release()
            super().on_message_complete()
            return
        # Written later in any case: a stand-in for uvicorn's cycle makes it queue requests
        # pipelined behind this one (and keeps this one's order), as it does behind an ASGI task.
        parked = _Parked()
        self.cycle = cast(RequestResponseCycle, parked)
        if isinstance(answer, bytes):
            # Not at once, but once the loop has read every request of this turn (as uvicorn's
            # own tasks write): an answer written while the client sleeps wakes it, which on
            # these VMs cost the server's core ~3 us a time; written together, the answers wake
            # it once. 34,500 -> 47,800 req/s (docs/benchmarks.md).
            self.loop.call_soon(self._deliver, parked, 200, answer)
            return
        answer.then(lambda status, response: self._deliver(parked, status, response))

    def _deliver(self, parked: _Parked, status: int, response: bytes) -> None:
        """Write an answer that was to come, as uvicorn's cycle would have written it."""
        parked.response_complete = True
        if parked.disconnected or self.transport.is_closing():
            return
        close = not parked.keep_alive  # the server is shutting down
        self.transport.write(
            STATUS_LINE[status]
            + self._default_headers()
            + (b"connection: close\r\n" if close else b"")
            + response
        )
        if close:
            self.transport.close()
        self.on_response_complete()

    def _release(self) -> None:
        """Hand a held request to uvicorn: start its ASGI task, with the body held so far."""
        held, self._held = self._held or [], None
        super().on_headers_complete()
        for chunk in held:
            super().on_body(chunk)

    def _default_headers(self) -> bytes:
        defaults = self.server_state.default_headers
        cached = BoundedHttpToolsProtocol._defaults
        if cached[0] is not defaults:
            cached = BoundedHttpToolsProtocol._defaults = (defaults, header_lines(defaults))
        return cached[1]

    def send_400_response(self, msg: str) -> None:
        self._reject(400, "MALFORMED_REQUEST")

    def _reject(self, status: int, code: str, **params: object) -> None:
        request_id = new_request_id()
        body = error_body(code, request_id, **params)
        headers = [
            *JSON_HEADERS,
            (b"x-request-id", request_id.encode()),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        status_line = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
        self.transport.write(
            status_line + self._default_headers() + header_lines(headers) + b"\r\n" + body
        )
        self.transport.close()
