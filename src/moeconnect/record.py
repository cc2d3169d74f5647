"""The connection record writer: every endpoint attempt, buffered in memory, written in batches.

The endpoint calls :meth:`ConnectionRecorder.record` after each response. That call is O(1) and
never waits: a failure is appended to a list, a success is added to an in-memory aggregate per
(workspace, source, key, outcome, minute), and a 429 or a refusal made before the rate limits
(405, 413, 415, a missing or malformed Authorization) to one per (outcome, workspace, client IP,
minute); each aggregate's ``count`` is exact. A background task flushes the buffer to the store
in batches; aggregates are upserted, so counts also add up across batches, workers and instances.

So one client address adds at most one row per minute for each of those six outcomes (and one
per workspace whose limit refused it), however many requests it sends; its other failures are
bounded by its failure limit (SPEC section 9).

No key is stored in plaintext, whatever field a client put it in: a workspace ID that can't be
one (a key sent as the Basic username, a 27 KB username) is recorded as none, and a key inside a
``source`` or a User-Agent is redacted (:func:`moeconnect.keys.redact_keys`) before anything is
cut to its column's length.

Nothing recorded is lost under normal load: a failed flush puts the rows back and retries, and
:meth:`stop` (reached from SIGTERM through uvicorn's graceful shutdown and the Starlette lifespan)
writes whatever is left. Only when the buffer holds ``max_pending`` rows — the store has been away
for long under heavy traffic — are new rows dropped, and each drop is counted in :attr:`dropped`
and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from datetime import UTC, datetime, timedelta

from .config import ConfigError
from .durations import parse_duration
from .errors import STALE_SUCCESS, SUCCESS
from .instants import Instants
from .keys import WORKSPACE_ID_PATTERN, looks_like_key, redact_keys
from .records import Attempt
from .request_ids import KeptRequestId, request_id_text
from .store import Store, StoreError
from .store.base import AttemptRow
from .timestamps import minute_of

__all__ = [
    "AGENT_KEPT",
    "BY_ADDRESS",
    "DEFAULT_RETENTION",
    "ConnectionRecorder",
    "SuccessCounter",
    "aggregate_key",
    "parse_audit_retention",
    "parse_retention",
]

log = logging.getLogger("moeconnect.record")

DEFAULT_RETENTION = timedelta(days=30)
DEFAULT_AUDIT_RETENTION = timedelta(days=365)
RATE_LIMITED = "RATE_LIMITED"
_AGGREGATED = frozenset((SUCCESS, STALE_SUCCESS))
# Outcomes aggregated per (outcome, workspace, client IP, minute): 429s, and the refusals of
# rows 1-4, which come before the rate limits and so can arrive by the hundred thousand from one
# address (SPEC section 9): each was a row of its own, 107 MB in 15 s.
BY_ADDRESS = frozenset(
    (
        RATE_LIMITED,
        "METHOD_NOT_ALLOWED",
        "PAYLOAD_TOO_LARGE",
        "UNSUPPORTED_MEDIA_TYPE",
        "AUTH_MISSING",
        "AUTH_MALFORMED",
    )
)
_MAX_AGENT = 256  # characters of a User-Agent the record keeps
# What the endpoint keeps of a User-Agent until the record redacts keys in it: its column's
# length and a whole key more (the longest is 54 characters), so a key that starts inside the
# kept part is whole when redacted.
AGENT_KEPT = _MAX_AGENT + 64
_WORKSPACE_ID = WORKSPACE_ID_PATTERN.fullmatch  # see records.could_be_workspace_id
# How many successes' combinations _news() remembers before starting again. Forgetting one only
# means its next full-path success is written as news once more; the warm path never asks. At
# 150,000 workspaces in use, remembering up to max_pending of them held ~9 MB of hashes.
_SEEN_MAX = 16_384
# An aggregate spans one minute: waiting longer than that to write its count saves nothing.
_MAX_AGGREGATE_INTERVAL = 60.0
_ALL_MINUTES = 1 << 62
# Rows built between yields to the event loop (~2 us each): a whole batch at once was a pause
# of several milliseconds for every request in flight. Not fewer: under load each yield is a
# turn of the loop that answers dozens of requests, and with 50 rows a step the writer fell
# behind the failures it had to write (the buffer grew by 6,000 rows a second at 24,000
# failures a second).
_BUILD_STEP = 256


def aggregate_key(
    outcome: str, workspace_id: str | None, key_id: str | None, minute: int, source: str | None
) -> str:
    """The key under which successes of one workspace, key, source and minute add up.

    The minute (epoch minutes, 8 digits until the 22nd century) comes first: each minute's keys
    are new, and so they go to the end of the record's ``agg_key`` index instead of a place
    beside each workspace's earlier minutes, one page write each.
    """
    return f"{minute}|{outcome}|{workspace_id}|{key_id}|{source}"


def parse_retention(text: str | None) -> timedelta:
    """``MOECONNECT_RECORD_RETENTION`` / ``--record-retention``: a duration such as ``30d``."""
    if not text:
        return DEFAULT_RETENTION
    try:
        value = parse_duration(text)
    except ValueError as err:
        raise ConfigError(f"record retention: {err}") from None
    if value < timedelta(minutes=1):
        raise ConfigError(f"record retention must be at least 1m, not {text!r}")
    return value


def parse_audit_retention(text: str | None) -> timedelta:
    """``MOECONNECT_AUDIT_RETENTION`` / ``--audit-retention``: how long audit entries stay
    (default 365d, at least 1d); older ones go in the same hourly prune as the record's."""
    if not text:
        return DEFAULT_AUDIT_RETENTION
    try:
        value = parse_duration(text)
    except ValueError as err:
        raise ConfigError(f"audit retention: {err}") from None
    if value < timedelta(days=1):
        raise ConfigError(f"audit retention must be at least 1d, not {text!r}")
    return value


class _Aggregate:
    """A mutable running total of recorded attempts, so adding one is a few assignments."""

    __slots__ = ("count", "first", "last", "minute", "template")

    def __init__(self, attempt: Attempt) -> None:
        self.template = attempt  # the latest attempt: the row shows its details
        self.first = self.last = attempt.at.timestamp()  # epoch seconds
        self.count = 1
        self.minute = int(self.last) // 60

    def add(self, attempt: Attempt) -> None:
        self.count += 1
        at = attempt.at.timestamp()
        if at >= self.last:
            self.last = at
            self.template = attempt


# A success counter's counts of one minute: (count, minute, first, last, request ID, client IP,
# User-Agent bytes), times in epoch seconds, details of the latest attempt.
_Counts = tuple[int, int, float, float, KeptRequestId, str | None, bytes | None]


class SuccessCounter:
    """The warm successes of one workspace, key and source, counted minute after minute.

    The endpoint's memo entries are success counters (a subclass), so counting a warm success
    (:meth:`ConnectionRecorder.count_success`) builds no :class:`Attempt`, formats no key and
    looks nothing up, and no object is made per minute: when a minute is over its counts move
    to ``previous`` (one tuple) until they are written. The latest attempt's details are kept as
    raw parts. Rows are built, and the counts reset, when the write of all counts comes.
    """

    __slots__ = (
        "agent",
        "client_ip",
        "count",
        "dc",
        "first",
        "key_id",
        "last",
        "minute",
        "previous",
        "queued",
        "request_id",
        "source",
        "workspace_id",
    )

    def __init__(self, workspace_id: str, dc: str, source: str, key_id: str = "") -> None:
        self.workspace_id = workspace_id
        self.dc = dc
        self.source = redact_keys(source)  # as record() stores it
        self.key_id = key_id
        self.count = 0
        self.minute = -1
        self.first = self.last = 0.0  # epoch seconds
        self.queued = False  # waiting in the recorder's buffer to be written
        self.request_id: KeptRequestId = ""
        self.client_ip: str | None = None
        self.agent: bytes | None = None
        self.previous: _Counts | None = None  # the counts of a minute that is over

    def counts(self) -> _Counts:
        return (
            self.count,
            self.minute,
            self.first,
            self.last,
            self.request_id,
            self.client_ip,
            self.agent,
        )

    def row(self, counts: _Counts) -> AttemptRow:
        count, minute, first, last, request_id, client_ip, agent = counts
        latest = Attempt(
            at=datetime.fromtimestamp(last, UTC),
            request_id=request_id_text(request_id),
            workspace_id=self.workspace_id,
            dc=self.dc,
            source=self.source,
            outcome=SUCCESS,
            key_id=self.key_id,
            client_ip=client_ip,
            user_agent=_agent(agent.decode("latin-1")) if agent else None,
        )
        key = aggregate_key(SUCCESS, self.workspace_id, self.key_id, minute, self.source)
        return _row(latest, count, key, first=datetime.fromtimestamp(first, UTC))

    def take_rows(self, through: int) -> list[AttemptRow]:
        """The rows of the counts of minutes up to ``through`` (epoch minutes), which start
        again from zero; counts of a later minute stay."""
        rows = []
        if self.previous is not None:
            rows.append(self.row(self.previous))
            self.previous = None
        if self.count and self.minute <= through:
            rows.append(self.row(self.counts()))
            self.count = 0
        return rows


_Pending = AttemptRow | Attempt | tuple[str, _Aggregate] | SuccessCounter


def _build(item: _Pending, through: int) -> list[AttemptRow]:
    """The rows of a buffered item: a retried row, a single failure, an aggregate, or a success
    counter's counts of minutes up to ``through`` since it was last written (none, one or two)."""
    if isinstance(item, AttemptRow):
        return [item]
    if isinstance(item, Attempt):
        return [_row(item)]
    if isinstance(item, SuccessCounter):
        return item.take_rows(through)
    key, agg = item
    return [_row(agg.template, agg.count, key, first=datetime.fromtimestamp(agg.first, UTC))]


def _agent(text: str) -> str:
    """A User-Agent as the record keeps it: keys redacted, then cut to its column."""
    if len(text) > _MAX_AGENT or "moe_" in text:
        return redact_keys(text[:AGENT_KEPT])[:_MAX_AGENT]
    return text


def _scrub(attempt: Attempt) -> None:
    """Keep keys and outsized client values out of the record (and out of its buffer).

    A workspace ID that can't be one names no workspace (the test of
    :func:`.records.could_be_workspace_id`, inlined: this runs for every failure): recorded as
    none. Keys inside a source or a User-Agent are redacted. ~0.6 us an attempt, the regular
    expression's match half of it.
    """
    workspace_id = attempt.workspace_id
    if workspace_id is not None and (
        _WORKSPACE_ID(workspace_id) is None
        or (workspace_id.startswith("moe_") and looks_like_key(workspace_id))
    ):
        attempt.workspace_id = None
    source = attempt.source
    if source is not None and "moe_" in source:
        attempt.source = redact_keys(source)
    agent = attempt.user_agent
    if agent is not None and (len(agent) > _MAX_AGENT or "moe_" in agent):
        attempt.user_agent = redact_keys(agent[:AGENT_KEPT])[:_MAX_AGENT]


def _clean(value: str | None, limit: int) -> str | None:
    """Fit a column: at most ``limit`` characters and no NUL (PostgreSQL refuses it in text).

    The record holds what callers sent (a workspace ID from a Basic header, a user agent); one
    unstorable value must not poison a whole batch.
    """
    if value is None or (len(value) <= limit and "\x00" not in value):
        return value  # nearly always: no copy
    return value.replace("\x00", "")[:limit]


def _row(
    attempt: Attempt, count: int = 1, agg_key: str | None = None, first: datetime | None = None
) -> AttemptRow:
    # Positional, in AttemptRow's field order: the dataclass's __init__ by keyword cost three
    # times as much (~1.2 µs of the event loop for every failed attempt, measured).
    return AttemptRow(
        first or attempt.at,  # at
        attempt.at,  # last_at
        minute_of(attempt.at),  # minute
        _clean(attempt.request_id, 32) or "",  # request_id
        _clean(attempt.workspace_id, 64),  # workspace_id
        _clean(attempt.dc, 8),  # dc
        _clean(attempt.source, 64),  # source
        _clean(attempt.outcome, 32) or "",  # outcome
        _clean(attempt.key_id, 32),  # key_id
        attempt.outcome == STALE_SUCCESS,  # stale
        _clean(attempt.client_ip, 64),  # client_ip
        _clean(attempt.user_agent, 256),  # user_agent
        count,
        _clean(agg_key, 400),  # agg_key
    )


class ConnectionRecorder:
    """Buffers attempts and writes them to ``store`` off the request path."""

    def __init__(
        self,
        store: Store,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        flush_interval: float = 0.25,
        aggregate_interval: float = 5.0,
        aggregate_rate: float = 200.0,
        batch_size: int = 1024,
        max_pending: int = 200_000,
        prune_interval: float = 3600.0,
        audit_retention: timedelta | None = DEFAULT_AUDIT_RETENTION,
    ) -> None:
        self.store = store
        self.retention = retention
        # The audit log's retention: pruned by the same task, on the same schedule.
        self.audit_retention = audit_retention
        self.flush_interval = flush_interval
        self.aggregate_interval = aggregate_interval
        self.aggregate_rate = aggregate_rate
        # Rows per transaction, and the failures that wake the writer early. Chosen when each
        # failure's row went straight to a random place in the (workspace, time) index (1,024
        # rows shared pages: ~25 % cheaper per row than 256); failures are now staged and moved
        # by the store (SQLStore.fold_attempts), and the size still bounds a transaction.
        self.batch_size = batch_size
        self.max_pending = max_pending
        # Aggregates waiting for the write of all counts: each holds ~0.5 KB until then, and
        # reaching this many brings that write forward (memory over fewer writes). Success
        # counters don't count: they are the endpoint's memo entries, bounded by the memo, and
        # with 150,000 workspaces in use counting them forced a write of all counts every few
        # seconds, a row for nearly every request.
        self.max_aggregates = max(1, max_pending // 4)
        self.prune_interval = prune_interval
        self._singles: list[Attempt] = []  # turned into rows at flush, off the request path
        self._aggregates: dict[str, _Aggregate] = {}
        # Success counters with counts to write (see count_success()).
        self._counters: deque[SuccessCounter] = deque()
        # Keys of BY_ADDRESS aggregates (429s, refusals of rows 1-4) already in the store (a
        # success's first aggregate is known by ``_seen``): only their new counts are waiting,
        # and those are written every ``aggregate_interval`` instead of every
        # ``flush_interval`` — or less often, down to once a minute, so that re-upserting them
        # costs at most about ``aggregate_rate`` rows a second: with 10,000 active workspaces,
        # re-upserting every 5 s cost the endpoint half its throughput.
        self._stored: dict[str, int] = {}
        self._fresh: list[str] = []  # keys of aggregates not yet in the store at all
        # (outcome, workspace, key, source) of successes this process has recorded: see _news().
        self._seen: set[int] = set()
        self._minute = -1  # the latest minute count_success() saw
        self._instants = Instants()  # counters' first and last times: one float per millisecond
        self._next_full = 0.0
        self._retry: list[AttemptRow] = []  # rows of a failed flush, written first next time
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._stopping = False
        self._last_drop_log = 0.0
        # Counters for metrics and tests.
        self.recorded = 0  # attempts handed to record()
        self.written = 0  # attempts the store has committed
        self.dropped = 0  # attempts lost to an overflowing buffer
        self.flush_failures = 0

    # -- the request path -----------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Rows waiting to be written (an aggregate counts once, however many attempts)."""
        return self.buffered + len(self._counters)

    @property
    def buffered(self) -> int:
        """Rows in the bounded buffer: failures, 429s, aggregates new to the store, retries.

        What ``max_pending`` bounds (success counters are bounded by the endpoint's memo): at
        ``max_pending`` new attempts are dropped; under steady load it stays about a batch
        deep while the writer keeps up (unlike :attr:`queue_depth`, which also counts a success
        counter per workspace in use, written a share at a time).
        """
        return len(self._singles) + len(self._aggregates) + len(self._retry)

    def record(self, attempt: Attempt) -> None:
        """Take one attempt: O(1), no I/O, never raises into the endpoint."""
        _scrub(attempt)
        outcome = attempt.outcome
        if outcome in _AGGREGATED:
            minute = int(attempt.at.timestamp()) // 60
            key = aggregate_key(
                outcome, attempt.workspace_id, attempt.key_id, minute, attempt.source
            )
        elif outcome in BY_ADDRESS:
            minute = int(attempt.at.timestamp()) // 60
            key = f"{minute}|{outcome}|{attempt.workspace_id or ''}|{attempt.client_ip}"
        else:
            key = ""
        if key:
            aggregate = self._aggregates.get(key)
            if aggregate is not None:
                aggregate.add(attempt)
                self.recorded += 1
                return
        if self.buffered >= self.max_pending:
            self._drop()
            return
        if key:
            aggregates = self._aggregates
            aggregates[key] = _Aggregate(attempt)
            if key not in self._stored and self._news(attempt):
                self._fresh.append(key)
            if len(aggregates) >= self.max_aggregates:
                self._next_full = 0.0  # the buffer fills: write every count at the next flush
                if self._wake is not None:
                    self._wake.set()
        else:
            self._singles.append(attempt)
        self.recorded += 1
        if self._wake is not None and len(self._singles) + len(self._fresh) >= self.batch_size:
            self._wake.set()

    def _news(self, attempt: Attempt) -> bool:
        """Whether the store should hear of this aggregate within ``flush_interval``.

        A 429's (or another refusal's aggregated by address), always. A success's, when this
        process has not yet written one of the same workspace, key, source and outcome: the
        first use of a key by a tool is what owners look for ("which tools still use the old
        key"). The same combination in a new minute waits for the next write of all counts, so
        a minute's rollover doesn't re-write a row for every active workspace at once.
        """
        if attempt.outcome not in _AGGREGATED:
            return True
        # A hash, not the tuple: a collision only delays one row to the next write of counts.
        combo = hash((attempt.outcome, attempt.workspace_id, attempt.key_id, attempt.source))
        seen = self._seen
        if combo in seen:
            return False
        if len(seen) >= _SEEN_MAX:
            seen.clear()
        seen.add(combo)
        return True

    def count_success(
        self,
        counter: SuccessCounter,
        at: float,
        request_id: KeptRequestId,
        client_ip: str | None,
        user_agent: bytes | None,
    ) -> None:
        """Count one success at epoch seconds ``at`` into ``counter``: O(1), no I/O.

        Its counts are written with the next write of all counts, never as news (see
        :meth:`_news`): the first success of a combination comes through :meth:`record`.
        """
        at = self._instants(at)
        minute = int(at) // 60
        if minute == self._minute:
            minute = self._minute  # one int object for every counter of this minute, not one each
        else:
            self._minute = minute
        self.recorded += 1
        if counter.count and minute == counter.minute:
            counter.count += 1
            if at < counter.last:
                return  # an earlier attempt than the latest counted: its details stay
        else:
            if counter.count:
                # The counts of a minute that is over wait in ``previous`` for the write (rows,
                # at once, if the minute before that is still waiting there too: rare).
                previous = counter.previous
                if previous is not None:
                    if self.buffered < self.max_pending:
                        self._retry.append(counter.row(previous))
                    else:  # the store has been away for long: as record() does, count the loss
                        self._drop(previous[0])
                counter.previous = counter.counts()
            counter.count = 1
            counter.minute = minute
            counter.first = at
            if not counter.queued:
                counter.queued = True
                self._counters.append(counter)
        counter.last = at
        counter.request_id = request_id
        counter.client_ip = client_ip
        # Cut: the counter is a memo entry, kept long (a slice of a shorter one is no copy).
        counter.agent = user_agent and user_agent[:AGENT_KEPT]

    def _drop(self, attempts: int = 1) -> None:
        self.dropped += attempts
        now = time.monotonic()
        if now - self._last_drop_log >= 10:
            self._last_drop_log = now
            log.warning(
                "connection record buffer full; dropping attempts",
                extra={"dropped_total": self.dropped, "queue_depth": self.queue_depth},
            )

    # -- the background writer ------------------------------------------------------------------

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="moeconnect-record")

    async def stop(self, attempts: int = 5) -> None:
        """Stop the writer after its current flush, then write everything left."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        for attempt in range(attempts):
            if await self.flush():
                break
            await asyncio.sleep(0.2 * (attempt + 1))
        if self.queue_depth:
            log.error(
                "connection record not fully written at shutdown",
                extra={"unwritten_rows": self.queue_depth},
            )
        else:
            log.info("connection record flushed", extra={"attempts_written": self.written})

    async def _run(self) -> None:
        assert self._wake is not None
        next_prune = time.monotonic() + min(5.0, self.prune_interval)
        backoff = self.flush_interval
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
            self._wake.clear()
            if self._stopping:
                break
            ok = await self.flush(full=False)
            backoff = self.flush_interval if ok else min(backoff * 2, 5.0)
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + self.prune_interval
                await self.prune()

    def _take(self, full: bool, everything: bool) -> tuple[list[_Pending], int]:
        """What to write now: failures, aggregates new to the store, and (when ``full``, every
        ``aggregate_interval``) the added counts of aggregates the store already has.

        A workspace/source first seen shows in the record within ``flush_interval``; its later
        successes in the same minute add up in memory and cost one upsert per interval, not one
        per request. Only references are moved here; rows are built batch by batch in
        :meth:`flush`, so no single step holds the event loop for long.
        """
        items: list[_Pending] = list(self._retry)
        self._retry = []
        through = _ALL_MINUTES
        items.extend(self._singles)
        self._singles = []
        stored = self._stored
        counters = self._counters
        if everything:
            items.extend(counters)
            counters.clear()
        else:
            # A share of the counters, so that each is visited once a period, spread evenly:
            # written all at once, 150,000 workspaces' counts took the server's core for seconds.
            # While the period is short each visit writes every count, so they show within
            # seconds; at its longest (many counters) only minutes that are over are written, one
            # row per workspace and minute instead of a partial row and then the rest.
            period = self._counter_period()
            through = current = int(time.time()) // 60
            if period >= _MAX_AGGREGATE_INTERVAL:
                through = current - 1
            share = math.ceil(len(counters) * self.flush_interval / period)
            for _ in range(min(len(counters), share)):
                counter = counters.popleft()
                if counter.previous is not None or counter.minute <= through:
                    items.append(counter)
                else:
                    counters.append(counter)
        if full:
            taken, self._aggregates = self._aggregates, {}
            # Keys of minutes that are over can't be counted into again.
            current = int(time.time()) // 60
            self._stored = {k: m for k, m in stored.items() if m >= current - 1}
            stored = self._stored
        else:
            aggregates = self._aggregates
            taken = {k: aggregates.pop(k) for k in self._fresh if k in aggregates}
        self._fresh = []
        for key, agg in taken.items():
            items.append((key, agg))
            if agg.template.outcome in BY_ADDRESS:
                stored[key] = agg.minute
        return items, through

    def _rewrite_period(self, rows: int) -> float:
        """Seconds between two writes of ``rows`` counts the store may already have rows for:
        re-writing them costs at most about ``aggregate_rate`` rows a second."""
        spread = rows / self.aggregate_rate
        return min(_MAX_AGGREGATE_INTERVAL, max(self.aggregate_interval, spread))

    def _counter_period(self) -> float:
        """Seconds between two writes of a success counter."""
        return self._rewrite_period(len(self._counters))

    def _full_interval(self) -> float:
        """Seconds until the next write of counts the store already has a row for."""
        return self._rewrite_period(len(self._aggregates))

    async def flush(self, full: bool = True) -> bool:
        """Write what is due (everything when ``full``); on a store error keep the rest."""
        lock = self._lock or asyncio.Lock()
        async with lock:
            now = time.monotonic()
            everything = self._stopping or full
            full = everything or now >= self._next_full
            if full:
                self._next_full = now + self._full_interval()
            items, through = self._take(full, everything)
            for start in range(0, len(items), self.batch_size):
                chunk: list[AttemptRow] = []
                end = min(start + self.batch_size, len(items))
                for offset in range(start, end, _BUILD_STEP):
                    if offset > start:
                        await asyncio.sleep(0)  # let requests in between slices of building
                    for item in items[offset : min(offset + _BUILD_STEP, end)]:
                        chunk.extend(self._rows_of(item, through))
                if not chunk:
                    continue
                try:
                    await self.store.add_attempts(chunk)
                except Exception as err:  # a store error, or a surprise: never lose the rows
                    self.flush_failures += 1
                    if not await self._reachable():
                        rest = [
                            row
                            for item in items[start + self.batch_size :]
                            for row in self._rows_of(item, through)
                        ]
                        self._retry = chunk + rest + self._retry
                        log.warning(
                            "connection record flush failed; will retry",
                            extra={"error": str(err)[:200], "queue_depth": self.queue_depth},
                        )
                        return False
                    # The store answers, so it refused the rows: write them one by one, and
                    # count (never silently lose) any it still refuses.
                    await self._write_one_by_one(chunk)
                    continue
                self.written += sum(r.count for r in chunk)
                # Building a batch's parameters runs on the event loop: small batches with a
                # yield between them keep each pause to a few milliseconds for the endpoint.
                await asyncio.sleep(0)
            return True

    def _rows_of(self, item: _Pending, through: int) -> list[AttemptRow]:
        rows = _build(item, through)
        if isinstance(item, SuccessCounter):
            if item.count:  # counts of a minute not yet due: it stays in the buffer
                self._counters.append(item)
            else:
                item.queued = False
        return rows

    async def _reachable(self) -> bool:
        try:
            await self.store.ping()
        except (StoreError, OSError):
            return False
        return True

    async def _write_one_by_one(self, chunk: list[AttemptRow]) -> None:
        for row in chunk:
            try:
                await self.store.add_attempts([row])
            except Exception as err:
                self.dropped += row.count
                log.error(
                    "connection record row refused by the store; dropped",
                    extra={
                        "error": str(err)[:200],
                        "request_id": row.request_id,
                        "outcome": row.outcome,
                        "attempts": row.count,
                        "dropped_total": self.dropped,
                    },
                )
            else:
                self.written += row.count

    async def prune(self) -> int:
        """Delete rows older than the retention period; returns how many went.

        Audit entries older than :attr:`audit_retention` go too: the only deletion the audit
        log knows.
        """
        if self.audit_retention is not None:
            try:
                entries = await self.store.prune_audit(datetime.now(UTC) - self.audit_retention)
            except Exception as err:  # the writer's loop must outlive any failure here
                log.warning("audit log prune failed", extra={"error": str(err)[:200]})
            else:
                if entries:
                    log.info("audit log pruned", extra={"entries": entries})
        try:
            removed = await self.store.prune_attempts(datetime.now(UTC) - self.retention)
        except Exception as err:  # the writer's loop must outlive any failure here
            log.warning("connection record prune failed", extra={"error": str(err)[:200]})
            return 0
        if removed:
            log.info("connection record pruned", extra={"rows": removed})
        return removed
