"""Which client addresses succeeded recently for which workspace, in bounded memory.

The workspace limits (SPEC section 5) must never lock out a workspace's working integrations, so
a client bucket (IP, or IPv6 /64) that authenticated successfully for a workspace within
``trusted_for`` (24 hours by default) is not refused by them: see :mod:`moeconnect.ratelimit`.
Only a correct key adds an entry, so a client without one can't fill this; and a key holder can
fill only its own workspace's :attr:`TrustedClients.per_workspace` slots (the least recently
successful one makes way), while :attr:`TrustedClients.total` bounds the whole process (the least
recently active workspace makes way).

Successes come in far more often than the trust needs refreshing: :meth:`TrustedClients.due`
tells the caller when an entry is worth writing again (once per :attr:`refresh_every` per
workspace and address), which is also when the limiter writes it to Redis.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

__all__ = ["BYTES_PER_ENTRY", "TrustedClients"]

# What one entry can cost at most, measured with tracemalloc when every entry is a workspace of
# its own with a 64-character ID and an IPv6 /64 bucket (tests/abuse/test_lockout.py): the
# bound stated in docs/limits.md is ``total × BYTES_PER_ENTRY``.
BYTES_PER_ENTRY: Final = 600


class TrustedClients:
    """Workspace → {client bucket: time of its last recorded success}, LRU at both levels."""

    __slots__ = ("_by_workspace", "_size", "per_workspace", "refresh_every", "total", "trusted_for")

    def __init__(self, trusted_for: float, *, per_workspace: int = 64, total: int = 50_000) -> None:
        self.trusted_for = trusted_for
        # Written again (and sent to Redis) at most this often per workspace and address.
        self.refresh_every = min(300.0, trusted_for / 4)
        self.per_workspace = per_workspace
        self.total = total
        self._by_workspace: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def trusted(self, workspace: str, bucket: str, now: float) -> bool:
        """Whether ``bucket`` succeeded for ``workspace`` within the last ``trusted_for``."""
        ips = self._by_workspace.get(workspace)
        if ips is None:
            return False
        last = ips.get(bucket)
        return last is not None and now - last < self.trusted_for

    def due(self, workspace: str, bucket: str, now: float) -> bool:
        """Whether a success of ``bucket`` for ``workspace`` should be recorded (:meth:`mark`):
        the hot path's only cost here, two dict lookups."""
        ips = self._by_workspace.get(workspace)
        if ips is None:
            return True
        last = ips.get(bucket)
        return last is None or now - last >= self.refresh_every

    def mark(self, workspace: str, bucket: str, at: float) -> None:
        """Record a success of ``bucket`` for ``workspace`` at ``at``."""
        by_workspace = self._by_workspace
        ips = by_workspace.get(workspace)
        if ips is None:
            ips = by_workspace[workspace] = {}
        else:
            by_workspace.move_to_end(workspace)
        if ips.pop(bucket, None) is not None:
            self._size -= 1
        elif len(ips) >= self.per_workspace:
            del ips[next(iter(ips))]  # the least recently recorded
            self._size -= 1
        ips[bucket] = at
        self._size += 1
        while self._size > self.total:
            oldest, oldest_ips = next(iter(by_workspace.items()))
            del oldest_ips[next(iter(oldest_ips))]
            self._size -= 1
            if not oldest_ips:
                del by_workspace[oldest]

    def sweep(self, now: float) -> None:
        """Forget successes older than ``trusted_for``."""
        horizon = now - self.trusted_for
        for workspace in list(self._by_workspace):
            ips = self._by_workspace[workspace]
            stale = [bucket for bucket, last in ips.items() if last <= horizon]
            for bucket in stale:
                del ips[bucket]
            self._size -= len(stale)
            if not ips:
                del self._by_workspace[workspace]
