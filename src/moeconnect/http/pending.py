"""An answer the endpoint will have in a moment, for the HTTP protocol to write when it has.

A refusal found in the credential cache stands only once the change feed confirms the cached
record (see ``TestConnectionEndpoint._authenticate``), so the protocol's fast path can't write it
at once. :class:`PendingAnswer` carries it from the endpoint to the protocol without an ASGI
task. An ``asyncio.Future`` would do, but its callbacks each cost a turn of the event loop; this
calls back at once.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Deliver", "PendingAnswer"]

# (status, the response after the status line and the server's own headers)
Deliver = Callable[[int, bytes], None]


class PendingAnswer:
    """Resolved once by the endpoint; delivered once to whoever asked :meth:`then`."""

    __slots__ = ("_deliver", "_response")

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._response: tuple[int, bytes] | None = None

    def resolve(self, status: int, response: bytes) -> None:
        deliver = self._deliver
        if deliver is None:
            self._response = (status, response)
        else:
            self._deliver = None
            deliver(status, response)

    def then(self, deliver: Deliver) -> None:
        """Call ``deliver`` with the answer: now if it is known, else when it is."""
        response = self._response
        if response is None:
            self._deliver = deliver
        else:
            self._response = None
            deliver(*response)
