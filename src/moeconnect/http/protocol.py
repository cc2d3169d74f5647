"""uvicorn's httptools protocol, with a bound on request heads, enveloped protocol errors and a
fast path for the Test Connection endpoint's warm answers.

httptools buffers a request line and headers of any size before uvicorn sees them, so a client
could make one request hold gigabytes. This protocol counts the bytes of each request head as
they arrive and, past :data:`MAX_HEAD`, answers 431 and closes the connection; a head that came
whole in one large read is measured once parsed, and a chunked body's trailer section is bounded
the same way. It also keeps the connection limits of :mod:`.connections`: a head must be whole
by a deadline (408), an idle kept-alive connection is closed, and connections over the cap are
answered 503 and closed before anything they sent is read. Requests that are
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

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from ..checks import MAX_BODY
from ..request_ids import new_request_id
from .connections import ConnectionLimits, Sweeper
from .endpoint import PATH
from .pending import PendingAnswer
from .responses import JSON_HEADERS, error_body_around_id, header_lines

__all__ = ["MAX_HEAD", "AnswerAtOnce", "BoundedHttpToolsProtocol"]

MAX_HEAD = 64 * 1024  # request line + headers; browsers send a few kilobytes at most

log = logging.getLogger("moeconnect.http")

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
_PATH = PATH.encode()
_NEVER = float("inf")
# One sweeper per server (uvicorn's ServerState), so one per process in production.
_SWEEPERS: weakref.WeakKeyDictionary[ServerState, Sweeper] = weakref.WeakKeyDictionary()


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head already answered 431."""


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
    """Rejects request heads larger than :data:`MAX_HEAD` with 431 and late ones with 408,
    refuses connections over the cap with 503, envelopes parser 400s, and answers what the
    app's ``answer_at_once`` can answer without an ASGI task."""

    # The server's default headers (``date``, renewed every second as a new list), rendered once
    # per list: (the list, its bytes).
    _defaults: tuple[object, bytes] = (None, b"")
    # Read from the environment by the first connection of the process (moeconnect serve sets
    # it from its flags); tests may set it on the class.
    limits: ConnectionLimits | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = BoundedHttpToolsProtocol.limits
        if limits is None:
            limits = BoundedHttpToolsProtocol.limits = ConnectionLimits.from_env()
        self._limits = limits
        # After a response, the connection is idle until a byte arrives: closed quietly once
        # timeout_keep_alive (uvicorn's setting, --idle-timeout) has passed. Once a byte
        # arrives, its head must be whole by head_timeout after the response, but never sooner
        # than the idle deadline, so that a head timeout shorter than the idle one can't cut
        # short a client who starts just before the idle deadline.
        self._idle_extra = max(limits.head_timeout - self.timeout_keep_alive, 0.0)
        # The connection's deadline (loop time), read by the sweeper: while idle after a
        # response, when it is closed quietly; while a head is awaited, when it is answered 408;
        # never while a request is being read or answered. No timer per request: uvicorn's
        # keep-alive timer (a call_later per response) cost ~0.7 µs a request.
        self._due = _NEVER
        self._idle = False
        self._head_bytes = 0  # bytes of reads that began outside a body, since the last head
        # Bytes read since the current head may have begun (the whole read in which the last
        # message ended, and every read since): above MAX_HEAD, the head is measured exactly.
        self._span = 0
        self._read = 0  # the length of the read being parsed
        self._in_body = False
        # After a chunk header with no data since (the last chunk's, before trailers): the
        # bytes of the reads that began since.
        self._trailers = False
        self._trailer_bytes = 0
        self._answer_at_once: AnswerAtOnce | None = getattr(self.app, "answer_at_once", None)
        self._held: list[bytes] | None = None  # the body so far of a held request
        self._held_size = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sweeper = _SWEEPERS.get(self.server_state)
        if sweeper is None:
            sweeper = _SWEEPERS[self.server_state] = Sweeper(
                self.loop,
                self.connections,
                min(self._limits.head_timeout, self.timeout_keep_alive),
            )
        if len(self.connections) >= self._limits.max_connections:
            # Refused before anything is read or allocated for it; never in `connections`.
            self.transport = transport
            sweeper.refused += 1
            sweeper.ensure_running()
            self._reject(503, "TOO_MANY_CONNECTIONS", retry_after=b"1")
            return
        super().connection_made(transport)
        self._due = self.loop.time() + self._limits.head_timeout
        sweeper.note_open()
        sweeper.ensure_running()

    def data_received(self, data: bytes) -> None:
        # uvicorn's, inlined (one frame less per read), with head bytes counted.
        size = len(data)
        self._read = size
        self._span += size
        if self._idle:  # the first bytes after a response: the head deadline runs
            self._idle = False
            self._due += self._idle_extra
        in_body = self._in_body
        if not in_body:
            self._head_bytes += size
        elif self._trailers:  # reads that began after a chunk header with no data since
            self._trailer_bytes += size
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self.transport.is_closing():  # not already answered (431 from a callback)
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # Still inside a head after this read: every byte of a read that began outside a body
        # was head, so memory held by the parser is at most MAX_HEAD plus a read or two. The
        # same for a chunked body's trailer section.
        if in_body:
            too_large = self._trailers and self._trailer_bytes > MAX_HEAD
        else:
            too_large = not self._in_body and self._head_bytes > MAX_HEAD
        if too_large and not self.transport.is_closing():
            self._reject(431, "HEADERS_TOO_LARGE", limit=MAX_HEAD)

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._head_bytes = 0
        self._due = _NEVER
        if self._span > MAX_HEAD and self._head_size() > MAX_HEAD:
            # The head came whole in one large read (or a few): httptools parsed it before any
            # count after a read could see it.
            self._reject(431, "HEADERS_TOO_LARGE", limit=MAX_HEAD)
            raise _HeadTooLarge
        if self._answer_at_once is not None and self._may_hold():
            self._held = []
            self._held_size = 0
            return
        super().on_headers_complete()

    def _head_size(self) -> int:
        """The parsed head's size as sent, but for optional whitespace: request line, headers,
        the blank line."""
        size = len(self.parser.get_method()) + len(self.url) + len(b"  HTTP/1.1\r\n\r\n")
        for name, value in self.headers:
            size += len(name) + len(value) + 4  # ": " and CRLF
        return size

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

    def on_chunk_header(self) -> None:
        """A chunk's size line: if no data follows, what comes next is the trailer section
        (header fields after a chunked body), which httptools buffers like a head, and
        uvicorn appends to the request's headers: bounded by MAX_HEAD like one."""
        self._trailers = True
        self._trailer_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._trailers = False
        if self._held is None:
            super().on_body(body)
            return
        self._held.append(body)
        self._held_size += len(body)
        if self._held_size > MAX_BODY:
            self._release()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._trailers = False
        self._span = self._read  # the next head may have begun in this read
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

    def on_response_complete(self) -> None:
        # uvicorn's, but for its keep-alive timer: the sweeper closes idle connections.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._due = self.loop.time() + self.timeout_keep_alive
        self._idle = True

    def overdue(self) -> bool:
        """Called by the sweeper once the deadline has passed: close an idle connection, answer
        408 to one whose head is late. True for a 408."""
        self._due = _NEVER
        if self.transport.is_closing():
            return False
        if self._idle:
            self.transport.close()
            return False
        self._reject(408, "REQUEST_TIMEOUT", limit=_seconds(self._limits.head_timeout))
        return True

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

    def _reject(
        self, status: int, code: str, retry_after: bytes | None = None, **params: object
    ) -> None:
        """Answer ``status`` in the envelope and close the connection.

        Rendered once per kind of refusal, then only joined around each one's request ID: a
        sweep may answer thousands of late heads at once (~13 µs each rendered, ~1 joined).
        """
        key = (status, code, retry_after, *params.items())
        canned = _CANNED.get(key)
        if canned is None:
            canned = _CANNED[key] = _can(status, code, retry_after, params)
        status_line, before_id, between_ids, after_id = canned
        request_id = new_request_id().encode()
        self.transport.write(
            b"".join(
                (
                    status_line,
                    self._default_headers(),
                    before_id,
                    request_id,
                    between_ids,
                    request_id,
                    after_id,
                )
            )
        )
        self.transport.close()


_ID_LENGTH = 18  # of every minted request ID (request_ids.new_request_id)
_Canned = tuple[bytes, bytes, bytes, bytes]
_CANNED: dict[tuple[object, ...], _Canned] = {}


def _can(status: int, code: str, retry_after: bytes | None, params: dict[str, object]) -> _Canned:
    """A refusal's bytes around its request ID: (status line, what comes between the server's
    headers and the ID in ``x-request-id``, what comes between that and the ID in the body,
    the rest)."""
    body_head, body_tail = error_body_around_id(code, **params)
    length = len(body_head) + _ID_LENGTH + len(body_tail)
    headers = [(b"content-length", b"%d" % length), (b"connection", b"close")]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after))
    return (
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
        header_lines(JSON_HEADERS) + b"x-request-id: ",
        b"\r\n" + header_lines(headers) + b"\r\n" + body_head,
        body_tail,
    )


def _seconds(value: float) -> str:
    """A timeout as a message says it: ``10``, ``2.5``."""
    return f"{value:g}"
