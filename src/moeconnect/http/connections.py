"""Limits on connections, so that clients who send nothing, or send slowly, cannot hold a process.

Three settings (SPEC section 9), read from the environment by every server process; ``moeconnect
serve`` sets them from its flags:

- ``MOECONNECT_HEAD_TIMEOUT`` (``--head-timeout``, default 10 s): a request head (request line and
  headers) must be complete within this time of the connection opening, or on a kept-alive
  connection of the previous response; otherwise the connection is answered 408 REQUEST_TIMEOUT
  and closed.
- ``MOECONNECT_IDLE_TIMEOUT`` (``--idle-timeout``, default 5 s): a kept-alive connection on which
  nothing arrives for this long after a response is closed quietly (uvicorn's
  ``timeout_keep_alive``, which the protocol applies itself).
- ``MOECONNECT_MAX_CONNECTIONS`` (``--max-connections``, default 10,000): open connections per
  process; one more is answered 503 TOO_MANY_CONNECTIONS and closed at once, its request unread.

Neither deadline costs a timer per request: :class:`Sweeper` walks a server's connections once a
second and closes those whose deadline has passed; a request only stores its deadline. uvicorn
arms a ``call_later`` for its keep-alive timeout after every response; doing without it made the
protocol's fast path ~0.7 µs a request cheaper (in process, ~7 µs a request in all), where timing
each head with ``call_at`` would have cost ~0.3 µs more.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import threading
from collections.abc import Callable, Mapping, MutableSet
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import ConfigError

__all__ = [
    "DESCRIPTOR_MARGIN",
    "ENV",
    "ConnectionLimits",
    "Sweeper",
    "fit_descriptor_limit",
]

log = logging.getLogger("moeconnect.http")

ENV = {
    "head_timeout": "MOECONNECT_HEAD_TIMEOUT",
    "idle_timeout": "MOECONNECT_IDLE_TIMEOUT",
    "max_connections": "MOECONNECT_MAX_CONNECTIONS",
}
# Descriptors a process needs beyond its clients' connections: a whole accept backlog (uvicorn's
# 2,048: libuv accepts every pending connection before the refused ones are closed) plus the
# store's, Redis', the logs' and the event loop's own.
DESCRIPTOR_MARGIN = 2048 + 512
SWEEP_INTERVAL = 1.0  # seconds at most; a late head is closed at most this long after its deadline
# Late connections answered 408 and closed per turn of the loop: with 100, a wave of 6,000 made
# the served client's worst answer 19-21 ms; with 10, 11-12 ms (p99 11 -> 7-9.5 ms).
_CLOSE_AT_ONCE = 10
# After this many connections have closed since the last trim, free heap pages go back to the OS.
_TRIM_AFTER = 500


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The connection settings of one process."""

    head_timeout: float = 10.0
    idle_timeout: float = 5.0
    max_connections: int = 10_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConnectionLimits:
        env = os.environ if env is None else env
        default = cls()
        return cls(
            head_timeout=_seconds(env, ENV["head_timeout"], default.head_timeout),
            idle_timeout=_seconds(env, ENV["idle_timeout"], default.idle_timeout),
            max_connections=_count(env, ENV["max_connections"], default.max_connections),
        )

    def to_env(self) -> dict[str, str]:
        return {
            ENV["head_timeout"]: repr(self.head_timeout),
            ENV["idle_timeout"]: repr(self.idle_timeout),
            ENV["max_connections"]: str(self.max_connections),
        }


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not 0 < value <= 3600:
        raise ConfigError(f"{name} must be more than 0 and at most 3600 seconds, not {raw!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, not {raw!r}")
    return value


def fit_descriptor_limit(max_connections: int) -> int:
    """The connection cap this process can honour, raising its descriptor limit to fit.

    Raises the soft ``RLIMIT_NOFILE`` to the hard limit when it is below ``max_connections`` plus
    :data:`DESCRIPTOR_MARGIN`; if even the hard limit is too low, the cap is lowered to fit (and
    said so in the log): a cap the process can't reach would let clients take every descriptor,
    which is what the cap is there to prevent.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + DESCRIPTOR_MARGIN
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = hard if hard == resource.RLIM_INFINITY else min(hard, max(wanted, soft))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = new_soft
        except (ValueError, OSError) as err:  # pragma: no cover - a hard limit we may not reach
            log.warning("could not raise the open-file limit to %s: %s", new_soft, err)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    fitted = max(soft - DESCRIPTOR_MARGIN, soft // 2, 1)
    log.warning(
        "--max-connections %d needs an open-file limit of %d, but the hard limit is %d: "
        "at most %d connections are served at once (raise the hard limit, e.g. LimitNOFILE= "
        "in the systemd unit)",
        max_connections,
        wanted,
        soft,
        fitted,
    )
    return fitted


class Sweepable(Protocol):
    """What the sweeper needs of a connection (:class:`.protocol.BoundedHttpToolsProtocol`)."""

    _due: float

    def overdue(self) -> bool: ...


class Sweeper:
    """Closes, once a second, the connections of one server whose request head is late.

    One per server (so per process). It runs while the server has connections and stops when
    it has none; :meth:`ensure_running` starts it again. It also reports, at most once a sweep,
    how many connections the cap refused, and gives freed heap pages back to the OS once many
    connections have closed (see :func:`_trim`).
    """

    def __init__(self, loop: Any, connections: MutableSet[Any], timeouts: float) -> None:
        self.loop = loop
        self.connections = connections
        # Once a second, or more often for short timeouts (``timeouts``, the shortest): a
        # connection is closed within a quarter of its timeout after its deadline.
        self.interval = min(SWEEP_INTERVAL, timeouts / 4)
        self.running = False
        self.refused = 0  # by the cap, since the last report
        self.timed_out = 0  # since the last report
        self.closed_since_trim = 0
        self._peak = 0

    def ensure_running(self) -> None:
        if not self.running:
            self.running = True
            self.loop.call_later(self.interval, self.sweep)

    def sweep(self) -> None:
        now = self.loop.time()
        late: list[Sweepable] = [c for c in self.connections if getattr(c, "_due", now) < now]
        if late:
            self._close(late, now)
        self._report()
        count = len(self.connections)
        if count < self._peak:
            self.closed_since_trim += self._peak - count
        if self.closed_since_trim >= _TRIM_AFTER and (count >= self._peak or not count):
            # Many closed, and none since the last sweep (or none left open): the wave is over.
            self.closed_since_trim = 0
            # In a thread: ~20 ms after 2,000 heads of 60 KB, with the GIL released (ctypes).
            threading.Thread(target=_trim, name="moeconnect-trim", daemon=True).start()
        self._peak = count
        if self.connections or self.refused:
            self.loop.call_later(self.interval, self.sweep)
        else:
            self.running = False

    def _close(self, late: list[Sweepable], now: float) -> None:
        """Close ``late`` connections, :data:`_CLOSE_AT_ONCE` per turn of the loop: thousands
        closed in one go (~15 µs each) would hold up every other client for tens of ms."""
        for connection in late[:_CLOSE_AT_ONCE]:
            if connection._due < now and connection.overdue():  # not answered meanwhile
                self.timed_out += 1
        if len(late) > _CLOSE_AT_ONCE:
            self.loop.call_soon(self._close, late[_CLOSE_AT_ONCE:], now)

    def note_open(self) -> None:
        count = len(self.connections)
        if count > self._peak:
            self._peak = count

    def _report(self) -> None:
        if self.timed_out:
            log.info(
                "closed %d connections whose request head did not arrive in time (408)",
                self.timed_out,
            )
            self.timed_out = 0
        if self.refused:
            log.warning(
                "refused %d connections over the cap of open connections (503)", self.refused
            )
            self.refused = 0


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS)."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def _trim() -> None:
    """Give free heap pages back to the OS.

    Partial request heads are kilobytes each, allocated by glibc's malloc between longer-lived
    objects; once thousands of them are freed, glibc keeps the pages (only the top of the heap
    is returned by itself), so the RSS an attack raised would stay raised for ever: 2,000
    heads of 60 KB left it at +90 to +115 MB without this, +6 to +25 MB with it.
    ``malloc_trim`` returns every whole free page.
    """
    global _malloc_trim
    if _malloc_trim is _UNLOADED:
        _malloc_trim = _load_malloc_trim()
    if _malloc_trim is not None:
        _malloc_trim(0)


_UNLOADED: Any = object()
_malloc_trim: Callable[[int], int] | None = _UNLOADED
