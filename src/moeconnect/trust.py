"""Which client addresses succeeded recently for which workspace, in bounded memory.

The workspace limits (SPEC section 5) must never lock out a workspace's working integrations, so
a client bucket (IP, or IPv6 /64) that authenticated successfully for a workspace within
``trusted_for`` (24 hours by default) is not refused by them: see :mod:`moeconnect.ratelimit`.
Only a correct key adds an entry, so a client without one can't fill this; a key holder fills
only its own workspace's :attr:`TrustedClients.per_workspace` slots (the least recently
successful makes way), and :attr:`TrustedClients.total` bounds the whole process (past it, the
workspaces recorded least recently, expired ones first, are forgotten down to half of it).

Every warm workspace has an entry, so an entry is one small int: 30 bits of the client bucket's
hash and 30 bits of the minute of its last recorded success (a workspace with several client
addresses has a tuple of them). A stranger whose address's hash collides with a trusted one's
(one chance in 2³⁰, blind: ``str`` hashes are keyed per process) gains only what that address
would: it is still held to the per-IP limit.

Successes come in far more often than the trust needs refreshing: :meth:`TrustedClients.due`
tells the caller when an entry is worth writing again (once per :attr:`refresh_minutes` per
workspace and address), which is also when the limiter writes it to Redis.
"""

from __future__ import annotations

import time
from itertools import islice
from typing import Final

__all__ = ["BYTES_PER_ENTRY", "MINUTE_MASK", "TAG_SHIFT", "TrustedClients"]

# What one entry can cost at most, measured with tracemalloc when every entry is a workspace of
# its own with a 64-character ID held nowhere else (tests/abuse/test_trust.py): the bound stated
# in docs/limits.md is ``total × BYTES_PER_ENTRY``. A workspace ID the credential cache holds
# too, as the warm path passes it, costs nothing here: ~80 bytes an entry then.
BYTES_PER_ENTRY: Final = 250
# An entry: the client bucket's hash tag above TAG_SHIFT, the minute of its success below.
TAG_SHIFT: Final = 30
MINUTE_MASK: Final = (1 << TAG_SHIFT) - 1  # also the tag's mask
_BITS: Final = TAG_SHIFT
_MASK: Final = MINUTE_MASK


class TrustedClients:
    """Workspace → packed (client bucket, minute of its last success) entries."""

    __slots__ = (
        "_size",
        "fresh_since",
        "minute_ends",
        "per_workspace",
        "refresh_minutes",
        "seen",
        "total",
        "trusted_minutes",
    )

    def __init__(self, trusted_for: float, *, per_workspace: int = 64, total: int = 50_000) -> None:
        self.trusted_minutes = max(1, int(trusted_for // 60))
        # Written again (and sent to Redis) at most this often per workspace and address.
        self.refresh_minutes = max(1, min(5, self.trusted_minutes // 4))
        self.per_workspace = per_workspace
        self.total = total
        # Read directly by RateLimiter.pass_known (the warm path); written only here.
        self.seen: dict[str, int | tuple[int, ...]] = {}
        self._size = 0
        # For that reader: an entry recorded before minute ``fresh_since`` is due again, and
        # ``minute_ends`` is when to call tick() (a float comparison instead of int(now) // 60).
        self.fresh_since = 0
        self.minute_ends = 0.0
        self.tick(time.time())

    def tick(self, now: float) -> None:
        """Move :attr:`fresh_since` on to the minute of ``now``."""
        minute = int(now) // 60
        self.fresh_since = minute - self.refresh_minutes + 1
        self.minute_ends = (minute + 1) * 60.0

    @property
    def trusted_for(self) -> float:
        return self.trusted_minutes * 60.0

    def __len__(self) -> int:
        return self._size

    def _last(self, workspace: str, bucket: str) -> int | None:
        """The minute of ``bucket``'s last recorded success for ``workspace``, or None."""
        entry = self.seen.get(workspace)
        if entry is None:
            return None
        tag = hash(bucket) & _MASK
        if type(entry) is int:
            return entry & _MASK if entry >> _BITS == tag else None
        for one in entry:  # type: ignore[union-attr]  # a tuple: several addresses
            if one >> _BITS == tag:
                return one & _MASK
        return None

    def trusted(self, workspace: str, bucket: str, now: float) -> bool:
        """Whether ``bucket`` succeeded for ``workspace`` within the last ``trusted_for``."""
        last = self._last(workspace, bucket)
        return last is not None and int(now) // 60 - last < self.trusted_minutes

    def due(self, workspace: str, bucket: str, now: float) -> bool:
        """Whether a success of ``bucket`` for ``workspace`` should be recorded (:meth:`mark`):
        the hot path's only cost here, a dict lookup and a few integer operations."""
        last = self._last(workspace, bucket)
        return last is None or int(now) // 60 - last >= self.refresh_minutes

    def mark(self, workspace: str, bucket: str, at: float) -> None:
        """Record a success of ``bucket`` for ``workspace`` at ``at`` (seconds)."""
        tag = hash(bucket) & _MASK
        packed = tag << _BITS | (int(at) // 60 & _MASK)
        seen = self.seen
        entry = seen.get(workspace)
        if entry is None:
            seen[workspace] = packed
            self._size += 1
        else:
            others = (entry,) if type(entry) is int else entry
            kept = tuple(one for one in others if one >> _BITS != tag)  # type: ignore[union-attr]
            if len(kept) >= self.per_workspace:
                kept = kept[1:]  # the least recently recorded makes way
            self._size += len(kept) + 1 - len(others)  # type: ignore[arg-type]
            del seen[workspace]  # to the end: the dict's order is the order of recording
            seen[workspace] = (*kept, packed) if kept else packed
        if self._size > self.total:
            self._prune()

    def sweep(self, now: float) -> None:
        """Forget successes older than ``trusted_for``."""
        self._keep_since(int(now) // 60 - self.trusted_minutes + 1)

    def _prune(self) -> None:
        """Over :attr:`total`: forget the workspaces recorded least recently (a dict keeps the
        order :meth:`mark` left, so expired entries go first) down to half of it, so that a
        flood of distinct workspaces costs one pass per ``total / 2`` of them."""
        seen = self.seen
        size = self._size
        target = self.total // 2
        for workspace in list(islice(seen, max(1, len(seen) - target))):
            entry = seen.pop(workspace)
            size -= 1 if type(entry) is int else len(entry)  # type: ignore[arg-type]
            if size <= target:
                break
        self._size = size

    def _keep_since(self, minute: int) -> None:
        seen = self.seen
        size = 0
        for workspace in list(seen):
            entry = seen[workspace]
            if type(entry) is int:
                if entry & _MASK >= minute:
                    size += 1
                else:
                    del seen[workspace]
                continue
            kept = tuple(one for one in entry if one & _MASK >= minute)  # type: ignore[union-attr]
            size += len(kept)
            if not kept:
                del seen[workspace]
            else:
                seen[workspace] = kept if len(kept) > 1 else kept[0]
        self._size = size
