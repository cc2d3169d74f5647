"""The in-process credential cache, and the change watcher that keeps it honest.

A valid request served from here costs no database round trip. Every write that changes a
workspace appends to the store's change feed, which :class:`ChangeWatcher` polls and turns into
invalidations, so a rotation or revocation made by any process reaches every worker within one
poll interval. The TTL is the safety net when that fails: no entry is trusted more than ``ttl``
seconds after both its own read and the last successful poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

from .instants import Instants
from .records import WorkspaceCredentials
from .store import Store, StoreError
from .store.base import CHANGES_PAGE, FeedPage

__all__ = ["ChangeWatcher", "CredentialCache"]

log = logging.getLogger("moeconnect.cache")


class CredentialCache:
    """Workspace ID → (expiry, credentials), bounded in size and age.

    An invalidation also remembers *when* it happened, so a read that started before it (and so
    may have seen the old rows) can't put the old record back afterwards.

    The TTL bounds how far behind the store an entry can be when invalidations are lost. An
    entry is as current as its read, or as the latest change-feed poll that has been applied
    (:meth:`confirm`), whichever is later: so while the feed is read, entries don't expire (and
    a workspace used every minute isn't re-read every ``ttl`` seconds); once it can't be read,
    every entry expires ``ttl`` seconds after the last poll that succeeded.
    """

    __slots__ = (
        "_cleared_at",
        "_entries",
        "_instants",
        "_invalidated",
        "fresh_until",
        "hits",
        "max_entries",
        "misses",
        "ttl",
    )

    # Invalidation times older than this can't race with any read still in flight.
    _REMEMBER = 60.0

    def __init__(self, ttl: float = 30.0, max_entries: int = 200_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        # (time loaded, record): the expiry is ``loaded + ttl``, not a float of its own per entry.
        self._entries: dict[str, tuple[float, WorkspaceCredentials]] = {}
        # Load times a millisecond apart share one float (an entry expires that much earlier).
        self._instants = Instants()
        self._invalidated: dict[str, float] = {}
        self._cleared_at = float("-inf")
        # Entries are trusted until here whatever their own expiry: see confirm().
        self.fresh_until = float("-inf")
        self.hits = 0
        self.misses = 0

    def confirm(self, polled_at: float) -> None:
        """Every change committed before monotonic time ``polled_at`` has been applied here."""
        self.fresh_until = max(self.fresh_until, polled_at + self.ttl)

    def get(
        self, workspace_id: str, count: bool = True
    ) -> tuple[float, WorkspaceCredentials] | None:
        """(time loaded, credentials) if cached and fresh; a hit or a miss when ``count``."""
        entry = self._entries.get(workspace_id)
        if entry is None:
            self.misses += count
            return None
        loaded, record = entry
        now = time.monotonic()
        if now >= loaded + self.ttl and now >= self.fresh_until:
            self._entries.pop(workspace_id, None)
            self.misses += count
            return None
        self.hits += count
        return loaded, record

    def holds(self, workspace_id: str, record: WorkspaceCredentials, count: bool = True) -> bool:
        """Whether the fresh entry for ``workspace_id`` is ``record`` itself.

        For the endpoint's warm path, which reuses an answer checked against ``record``: any
        change to the workspace replaces or drops the entry, so identity means nothing changed.
        True counts as a hit when ``count``; False counts nothing (the caller falls back to
        :meth:`get`, which counts).
        """
        entry = self._entries.get(workspace_id)
        if entry is None or entry[1] is not record:
            return False
        now = time.monotonic()
        if now >= self.fresh_until and now >= entry[0] + self.ttl:
            return False
        if count:
            self.hits += 1
        return True

    def put(self, record: WorkspaceCredentials, loaded: float | None = None) -> None:
        """Cache ``record``, read from the store starting at monotonic time ``loaded``."""
        if self.ttl <= 0:
            return
        now = time.monotonic() if loaded is None else loaded
        if now <= self._cleared_at or now <= self._invalidated.get(record.workspace_id, now - 1):
            return  # invalidated while it was being read: it may be the old record
        entries = self._entries
        if record.workspace_id not in entries and len(entries) >= self.max_entries:
            # Dicts keep insertion order: drop the oldest tenth in one go.
            for stale in list(entries)[: max(1, self.max_entries // 10)]:
                del entries[stale]
        entries[record.workspace_id] = (self._instants(now), record)

    def invalidate(self, workspace_id: str) -> None:
        self._entries.pop(workspace_id, None)
        now = time.monotonic()
        marks = self._invalidated
        if len(marks) >= 10_000:
            for wid in [w for w, at in marks.items() if now - at > self._REMEMBER]:
                del marks[wid]
            if len(marks) >= 10_000:  # a storm of changes: forget them all, refuse older reads
                marks.clear()
                self._cleared_at = now
        marks[workspace_id] = now

    def invalidate_many(self, workspace_ids: Iterable[str]) -> None:
        for workspace_id in workspace_ids:
            self.invalidate(workspace_id)

    def clear(self) -> None:
        self._entries.clear()
        self._invalidated.clear()
        self._cleared_at = time.monotonic()

    def __len__(self) -> int:
        return len(self._entries)


class ChangeWatcher:
    """Polls the store's change feed and invalidates the cache entries it names.

    The feed's IDs can commit out of order on PostgreSQL, so each poll re-reads a small window
    below the newest ID seen and remembers which IDs it already applied.

    A restored or recreated store rewrites the feed under a running server: its IDs start lower
    again, and changes made after the restore reuse IDs this watcher already applied. Each poll
    therefore checks that it still reads the same feed: the store's ``epoch`` is the one it saw
    (a recreated store, or another's backup, has another), and the change it applied last is
    still there, unchanged (the window re-read always covers it; a backup of this very store
    lacks it, or holds a different change under its ID). When either fails, every cached entry
    is dropped and the watcher starts over from the feed's current end (:meth:`_start_over`).

    Besides the regular poll, :meth:`caught_up` polls on demand: the endpoint asks it before it
    trusts a *failure* found in the cache, because a key or workspace written by another process
    a moment ago must work at once. Concurrent callers share one poll.
    """

    WINDOW = 256

    def __init__(self, store: Store, cache: CredentialCache, interval: float = 0.25) -> None:
        self.store = store
        self.cache = cache
        self.interval = interval
        self.last_id = 0
        # The feed this watcher follows: the store's epoch and the stamp of change ``last_id``
        # (None until a poll has read them).
        self.epoch: str | None = None
        self.last_stamp: object = None
        self.restarts = 0
        self._seen: deque[int] = deque(maxlen=4096)
        self._seen_set: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self.healthy = True
        self.last_poll = 0.0
        # When the latest successful poll started (monotonic): every change committed before
        # then has been applied to the cache.
        self.synced_from = float("-inf")
        self._on_demand: asyncio.Task[None] | None = None
        # (since, callback) of callers waiting for an on-demand poll: see when_caught_up().
        self._waiters: list[tuple[float, Callable[[bool], None]]] = []
        self.on_demand_polls = 0

    async def start(self) -> None:
        try:
            self.last_id = await self.store.last_change_id()
        except StoreError as err:
            log.warning("change feed unavailable at start: %s", err)
        self._task = asyncio.create_task(self._run(), name="moeconnect-change-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _remember(self, change_id: int) -> bool:
        if change_id in self._seen_set:
            return False
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(change_id)
        self._seen_set.add(change_id)
        return True

    async def poll_once(self) -> int:
        """Apply new changes; returns how many workspaces were invalidated."""
        started = time.monotonic()
        page = await self.store.read_feed(max(0, self.last_id - self.WINDOW), self.last_id)
        changes = page.changes
        if (why := self._rewritten(page)) is not None:
            self._start_over(why, page)
            if len(changes) >= CHANGES_PAGE:  # the feed's end is further: start from there
                self.last_id, self.last_stamp = await self.store.last_change_id(), None
        applied = 0
        for change_id, workspace_id in changes:
            if self._remember(change_id):
                self.cache.invalidate(workspace_id)
                applied += 1
        if changes and changes[-1][0] > self.last_id:
            self.last_id, self.last_stamp = changes[-1][0], page.last
        elif self.last_stamp is None and self.last_id > 0:
            self.last_stamp = page.anchor  # learnt now: the start, or after a start over
        self.epoch = page.epoch
        self.last_poll = time.monotonic()
        if len(changes) < CHANGES_PAGE:  # a full page: more are waiting, nothing is confirmed
            self.synced_from = max(self.synced_from, started)
            self.cache.confirm(started)
        return applied

    def _rewritten(self, page: FeedPage) -> str | None:
        """Why ``page`` is not from the feed this watcher followed (None: it is)."""
        if self.epoch is not None and page.epoch != self.epoch:
            return "the store's epoch changed (a recreated store, or another store's backup)"
        if self.last_id <= 0:
            return None
        if page.anchor is None:  # ``at`` is never NULL: the change is gone
            return (
                f"change {self.last_id}, applied already, is gone (a restored or recreated store)"
            )
        if self.last_stamp is not None and page.anchor != self.last_stamp:
            return f"change {self.last_id} is not the one applied (a restored backup)"
        return None

    def _start_over(self, why: str, page: FeedPage) -> None:
        """Drop every cached entry and follow the feed as it now is, from the end of ``page``.

        Whatever the cache holds may come from the store as it was; reads begun before the clear
        are refused too (see :meth:`CredentialCache.put`). The changes of ``page`` count as
        applied: the cache they would invalidate is empty.
        """
        log.warning("%s: every cached credential dropped, the change feed followed afresh", why)
        self.cache.clear()
        self._seen.clear()
        self._seen_set.clear()
        self.restarts += 1
        self.epoch = page.epoch
        for change_id, _ in page.changes:
            self._remember(change_id)
        self.last_id = page.changes[-1][0] if page.changes else 0
        self.last_stamp = page.last

    async def caught_up(self, since: float) -> bool:
        """Wait until a poll that started at or after ``since`` (monotonic) has been applied.

        Then every change committed before ``since`` — by any process — has reached the cache.
        False when the feed can't be read (the caller asks the store itself, which will say
        whether it is down). Callers arriving while a poll is running wait for it if it started
        late enough, else for the next one, which they share.
        """
        if self.synced_from >= since:
            return True
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def settle(ok: bool) -> None:
            if not answer.done():  # the waiting caller may have been cancelled
                answer.set_result(ok)

        self.when_caught_up(since, settle)
        return await answer

    def when_caught_up(self, since: float, callback: Callable[[bool], None]) -> None:
        """:meth:`caught_up` for code that can't await (the HTTP protocol's refusals).

        ``callback`` gets True once a poll that started at or after ``since`` has been applied
        (at once, if one has), or False when the feed can't be read. It is called from the
        event loop, at most once.
        """
        if self.synced_from >= since:
            callback(True)
            return
        self._waiters.append((since, callback))
        if self._on_demand is None:
            self._on_demand = asyncio.get_running_loop().create_task(self._poll_on_demand())

    async def _poll_on_demand(self) -> None:
        ok = False
        try:
            await self.poll_once()
            ok = True
        except Exception:  # StoreError or a surprise: the callers ask the store themselves
            log.debug("on-demand change-feed poll failed", exc_info=True)
        finally:
            # Also when cancelled (the watcher stops): no caller may wait forever.
            self._on_demand = None
            self.on_demand_polls += 1
            self._answer_waiters(ok)

    def _answer_waiters(self, ok: bool) -> None:
        """After an on-demand poll: tell each waiter, or keep it for the next poll when this one
        started too early for it."""
        waiters, self._waiters = self._waiters, []
        for since, callback in waiters:
            if ok and self.synced_from < since:
                self._waiters.append((since, callback))
                continue
            try:
                callback(ok)
            except Exception:  # one caller's bug must not leave the others waiting
                log.exception("change watcher waiter failed")
        if self._waiters:
            self._on_demand = asyncio.get_running_loop().create_task(self._poll_on_demand())

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
                if not self.healthy:
                    log.info("change feed reachable again")
                self.healthy = True
            except StoreError as err:
                if self.healthy:
                    log.warning("change feed poll failed: %s", err)
                self.healthy = False
            except Exception:
                log.exception("change watcher error")
                self.healthy = False
            await asyncio.sleep(self.interval)
