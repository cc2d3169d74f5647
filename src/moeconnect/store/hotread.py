"""The hot path's reads, straight from the driver: credentials in batches, and the change feed.

A cache miss on the Test Connection endpoint must cost little. Going through SQLAlchemy's async
layer costs several thread hops per query on SQLite and a few hundred microseconds of Python;
here one query fetches every workspace the endpoint is waiting for at that moment (concurrent
misses coalesce into one ``IN (...)``), on SQLite in one dedicated reader thread with its own
connection, on PostgreSQL through a small asyncpg pool. The change feed's poll, which a refused
key waits for (see ``ChangeWatcher.caught_up``), takes the same road. Failures surface as
:class:`StoreUnavailable`, never as "no such workspace".
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from sys import intern
from typing import Any, Protocol, cast

from ..records import CredentialKey, KeyState, WorkspaceCredentials
from .base import FeedPage, StoreUnavailable
from .sqlite_connection import SQLiteThread
from .urls import DatabaseURL

__all__ = ["CredentialReader", "open_reader"]

MAX_BATCH = 500

_COLUMNS = (
    "w.id, w.name, w.dc, w.status, k.id, k.digest, k.state, k.ended_at, k.ended_how, k.created_at"
)
_CHANGES = "SELECT id, workspace_id FROM changes WHERE id > {after} ORDER BY id LIMIT {limit}"
# After a poll's _CHANGES: the store's epoch and the stamps (``at``) of two changes, each a
# primary-key lookup (~20 us on SQLite; reading ``at`` with every row of the poll's window, or
# the epoch in the same statement, made a poll 2.5 times as long). Always one row.
_IDENTITY = (
    "SELECT (SELECT epoch FROM store_identity WHERE id = 1), "
    "(SELECT at FROM changes WHERE id = {anchor}), (SELECT at FROM changes WHERE id = {last})"
)
_FROM = (
    "FROM workspaces w LEFT JOIN api_keys k ON k.workspace_id = w.id AND k.scope = {scope} "
    "WHERE w.id IN ({ids})"
)

Row = Sequence[Any]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    moment: datetime = value.replace(tzinfo=UTC)
    return moment


def group(rows: Iterable[Row], asked: Iterable[str] = ()) -> dict[str, WorkspaceCredentials]:
    """Rows of (workspace..., key...) into one record per workspace, current key first.

    A record's workspace ID is the very string in ``asked`` that names it, when there is one:
    the request's own, which the rate limiter's counter is already keyed by, so the counter,
    the cache, the memo and the record share one copy (~70 bytes per workspace in use).
    """
    same = {wid: wid for wid in asked}
    heads: dict[str, Row] = {}
    keys: dict[str, list[Row]] = {}
    for row in rows:
        heads.setdefault(row[0], row)
        bucket = keys.setdefault(row[0], [])
        if row[4] is not None:
            bucket.append(row)
    result: dict[str, WorkspaceCredentials] = {}
    for wid, head in heads.items():
        found = keys[wid]
        current = [r for r in found if r[6] == "current"]
        # Newest first among the earlier keys.
        created = {r[4]: _utc(r[9]) or _EPOCH for r in found}
        earlier = sorted((r for r in found if r[6] != "current"), key=lambda r: created[r[4]])
        earlier.reverse()
        # Interned: a cache of many workspaces holds one copy of "01", "active", "current".
        result[wid] = WorkspaceCredentials(
            same.get(wid, wid),
            head[1],
            intern(head[2]),
            intern(head[3]),
            tuple(
                CredentialKey(
                    r[4],
                    bytes(r[5]),
                    cast(KeyState, intern(r[6])),
                    _utc(r[7]),
                    intern(r[8]) if r[8] else None,
                )
                for r in (*current, *earlier)
            ),
        )
    return result


class _Fetcher(Protocol):
    async def __call__(self, ids: list[str], scope: str) -> list[Row]: ...
    async def changes(self, after_id: int, limit: int) -> list[Row]: ...
    async def feed(self, after_id: int, limit: int, anchor_id: int) -> tuple[list[Row], Row]: ...


class CredentialReader:
    """Coalesces concurrent lookups into batched reads by ``fetcher``."""

    def __init__(self, fetcher: _Fetcher) -> None:
        self._fetch_many = fetcher
        self._pending: dict[tuple[str, str], list[asyncio.Future[WorkspaceCredentials | None]]] = {}
        self._running = False

    async def changes_since(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        """(change ID, workspace ID) of the oldest ``limit`` changes after ``after_id``."""
        return [(int(r[0]), str(r[1])) for r in await self._fetch_many.changes(after_id, limit)]

    async def read_feed(self, after_id: int, anchor_id: int, limit: int) -> FeedPage:
        """The oldest ``limit`` changes after ``after_id``, then the store's epoch and the
        stamps of change ``anchor_id`` and of the last change read (see :class:`FeedPage`)."""
        rows, (epoch, anchor, last) = await self._fetch_many.feed(after_id, limit, anchor_id)
        changes = [(int(r[0]), str(r[1])) for r in rows]
        return FeedPage(None if epoch is None else str(epoch), changes, anchor, last)

    async def credentials(
        self, workspace_id: str, scope: str = "data"
    ) -> WorkspaceCredentials | None:
        future: asyncio.Future[WorkspaceCredentials | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending.setdefault((workspace_id, scope), []).append(future)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch: dict[tuple[str, str], list[asyncio.Future[WorkspaceCredentials | None]]]
                batch = {}
                for item in list(self._pending)[:MAX_BATCH]:
                    batch[item] = self._pending.pop(item)
                by_scope: dict[str, list[str]] = {}
                for wid, scope in batch:
                    by_scope.setdefault(scope, []).append(wid)
                for scope, ids in by_scope.items():
                    found: dict[str, WorkspaceCredentials] = {}
                    error: BaseException | None = None
                    try:
                        rows = await self._fetch_many(ids, scope)
                    except StoreUnavailable as err:
                        error = err
                    except Exception as err:  # the backend failed: say so, never "not found"
                        error = StoreUnavailable(f"{type(err).__name__}: {err}")
                    else:
                        try:
                            found = group(rows, ids)
                        except Exception as err:  # corrupt data: unexpected, not an outage
                            error = err
                    for wid in ids:
                        for future in batch[(wid, scope)]:
                            if future.done():
                                continue
                            if error is not None:
                                future.set_exception(error)
                            else:
                                future.set_result(found.get(wid))
        finally:
            self._running = False


class _SQLiteFetcher:
    """One thread, one read-only-by-use connection, re-opened if the file is replaced."""

    def __init__(self, db: DatabaseURL) -> None:
        self._thread = SQLiteThread(db, "moeconnect-read", read_only=True)

    async def __call__(self, ids: list[str], scope: str) -> list[Row]:
        sql = f"SELECT {_COLUMNS} " + _FROM.format(scope="?", ids=", ".join("?" * len(ids)))
        return await self._thread.query(sql, [scope, *ids])

    async def changes(self, after_id: int, limit: int) -> list[Row]:
        return await self._thread.query(_CHANGES.format(after="?", limit="?"), (after_id, limit))

    async def feed(self, after_id: int, limit: int, anchor_id: int) -> tuple[list[Row], Row]:
        changes = _CHANGES.format(after="?", limit="?")
        identity = _IDENTITY.format(anchor="?", last="?")

        def read(conn: sqlite3.Connection) -> tuple[list[Row], Row]:
            rows = conn.execute(changes, (after_id, limit)).fetchall()
            last = rows[-1][0] if rows else 0
            row: Row = conn.execute(identity, (anchor_id, last)).fetchone()
            return rows, row

        return await self._thread.call(read)

    async def close(self) -> None:
        await self._thread.close()


class _PostgresFetcher:
    """A small asyncpg pool and one prepared query."""

    SQL = f"SELECT {_COLUMNS} " + _FROM.format(scope="$1", ids="SELECT unnest($2::text[])")
    CHANGES = _CHANGES.format(after="$1", limit="$2")
    IDENTITY = _IDENTITY.format(anchor="$1", last="$2")

    def __init__(self, db: DatabaseURL) -> None:
        self.dsn = db.sync_url
        self._pool: Any = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(
                        self.dsn, min_size=1, max_size=4, timeout=3, command_timeout=5
                    )
        return self._pool

    async def _run(self, sql: str, *args: Any) -> list[Row]:
        """Run one query on a pooled connection; every failure means "unavailable"."""
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=3) as conn:
                rows: list[Row] = await conn.fetch(sql, *args)
                return rows
        except Exception as err:  # connection, timeout or server error: all mean "unavailable"
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from None

    async def __call__(self, ids: list[str], scope: str) -> list[Row]:
        return await self._run(self.SQL, scope, ids)

    async def changes(self, after_id: int, limit: int) -> list[Row]:
        return await self._run(self.CHANGES, after_id, limit)

    async def feed(self, after_id: int, limit: int, anchor_id: int) -> tuple[list[Row], Row]:
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=3) as conn:
                rows: list[Row] = await conn.fetch(self.CHANGES, after_id, limit)
                last = rows[-1][0] if rows else 0
                row: Row = await conn.fetchrow(self.IDENTITY, anchor_id, last)
                return rows, row
        except Exception as err:  # as _run: every failure means "unavailable"
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


def open_reader(db: DatabaseURL) -> tuple[CredentialReader, Callable[[], Awaitable[None]]]:
    """The batched reader for ``db`` and the coroutine function that closes it."""
    fetcher: _SQLiteFetcher | _PostgresFetcher
    fetcher = _SQLiteFetcher(db) if db.kind == "sqlite" else _PostgresFetcher(db)
    return CredentialReader(fetcher), fetcher.close
