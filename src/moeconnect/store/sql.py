"""The store on SQLAlchemy Core: SQLite (aiosqlite, WAL) and PostgreSQL (asyncpg).

One implementation for both backends; dialect differences are confined to :func:`_engine_for`
and the SQLite file guard. Every backend failure surfaces as :class:`StoreUnavailable`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import replace
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..audit import AuditContext, AuditEntry, AuditPage, key_state, token_state
from ..errors import STALE_SUCCESS, SUCCESS
from ..keys import new_id
from ..records import (
    ApiKey,
    CredentialKey,
    OperatorToken,
    RotationResult,
    Workspace,
    WorkspaceCredentials,
)
from ..roles import ROLES
from ..timestamps import sqlite_text
from . import audit as audit_sql
from .base import (
    CHANGES_PAGE,
    AttemptBucket,
    AttemptPage,
    AttemptRow,
    Change,
    Conflict,
    FeedPage,
    NotFound,
    SourceSummary,
    StoreUnavailable,
)
from .failures import store_error
from .hotread import open_reader
from .schema import (
    api_keys,
    changes,
    connection_attempts,
    connection_attempts_staged,
    operator_tokens,
    workspaces,
)
from .sqlite_connection import SQLiteThread, apply_pragmas
from .urls import DatabaseURL

__all__ = ["SQLStore"]

log = logging.getLogger("moeconnect.store")
# The workspaces the write transaction under way (in this task) changed: see SQLStore._conn.
_CHANGED: ContextVar[list[str] | None] = ContextVar("moeconnect_changed", default=None)
# Who a write is recorded as when its caller names nobody (see AuditContext.library).
_LIBRARY = AuditContext.library()


def _now() -> datetime:
    return datetime.now(UTC)


def _engine_for(db: DatabaseURL) -> AsyncEngine:
    if db.kind == "sqlite":
        engine = create_async_engine(
            db.async_url,
            connect_args={"timeout": 5, "check_same_thread": False},
            pool_pre_ping=False,
            # Last in, first out: the connection used last has the hottest page cache (each
            # grows to SQLITE_CACHE_KIB), and the others stay small instead of all warming up.
            pool_use_lifo=True,
        )

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            apply_pragmas(cursor)
            cursor.close()

        return engine
    return create_async_engine(
        db.async_url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        pool_timeout=3,
        connect_args={"timeout": 3, "command_timeout": 5},
    )


def _workspace(row: Any) -> Workspace:
    return Workspace(row.id, row.name, row.dc, row.status, row.created_at, row.updated_at)


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        row.id,
        row.workspace_id,
        row.scope,
        row.hint,
        row.origin,
        row.state,
        row.created_at,
        row.ended_at,
        row.ended_how,
    )


def _token(row: Any) -> OperatorToken:
    ids = orjson.loads(row.workspace_ids) if row.workspace_ids is not None else None
    return OperatorToken(
        row.id,
        row.name,
        row.hint,
        row.created_at,
        row.revoked_at,
        row.last_used_at,
        row.role,
        tuple(ids) if ids is not None else None,
        row.expires_at,
    )


# -- connection record helpers (issue 3) ---------------------------------------------------------

_SUCCESSES = (SUCCESS, STALE_SUCCESS)


_ATTEMPT_SQL: dict[tuple[str, bool], str] = {}

# Rows wait in ``connection_attempts_staged`` until this many have been staged (by this process)
# or the first of them has waited this long, then move into the indexed record in sorted
# statements (see SQLStore.fold_attempts). Measured on a record of 1.5 million rows, a failure
# cost the writer 18.9 µs staged one by one, 10.5 µs moved 100,000 at a time, 12.2 at 50,000:
# the more rows a move holds, the more of them share a page of the index. Not more than
# 100,000: a move holds SQLite's only write lock throughout, and under a flood of refusals one of
# 300,000 took 5.5 s (against ~2.3 s), past the 5-s busy timeout of every other writer — a key
# generated with the CLI or the admin API would fail — for ~3 µs less of the writer per
# refusal. (Moving 300,000 a workspace range at a time, ~100,000 a transaction, saved the writer
# as much but cost the loop as much again: no gain.) A minute, not less: with 150,000
# workspaces in use their success counts (~2,500 rows a second) moved every 10 s cost the
# writer 1.9 µs per request, every 60 s 0.9 µs.
FOLD_ROWS = 100_000
FOLD_SECONDS = 60.0

# A prune (SQLStore.prune_attempts) lists this many workspaces of the record per query, and
# deletes at most this many rows per transaction.
PRUNE_WORKSPACES = 500
PRUNE_ROWS = 20_000


def _next_workspaces(after: str | None, limit: int) -> sa.Select[Any]:
    """The next ``limit`` distinct workspace IDs of the record after ``after`` (from the first
    when ``after`` is None), in order: a *loose index scan* of ``ix_attempts_workspace_time``,
    one seek per workspace however many rows each has (a recursive query, which SQLite and
    PostgreSQL both run; neither skips through an index this way by itself)."""
    c = connection_attempts.c

    def first(condition: Any) -> Any:
        found = sa.select(c.workspace_id).where(condition).order_by(c.workspace_id).limit(1)
        return found.scalar_subquery()

    start = c.workspace_id.is_not(None) if after is None else c.workspace_id > after
    ws = sa.select(first(start).label("id"), sa.literal(1).label("n")).cte("ws", recursive=True)
    step = sa.select(first(c.workspace_id > ws.c.id), ws.c.n + 1).where(
        ws.c.id.is_not(None), ws.c.n < limit
    )
    ws = ws.union_all(step)
    return sa.select(ws.c.id).where(ws.c.id.is_not(None))


def _naive_utc(moment: datetime) -> datetime:
    """What asyncpg takes for a ``timestamp without time zone`` column."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _driver_datetime(dialect: sa.Dialect) -> Callable[[datetime], Any]:
    """How an aware datetime is bound at the driver level on ``dialect`` (SQLAlchemy's own
    conversion bypassed): SQLite's stored text, or a naive UTC datetime for asyncpg."""
    return sqlite_text if dialect.name == "sqlite" else _naive_utc


# The record's columns in AttemptRow's field order: the table's, less ``id``.
_ATTEMPT_COLUMNS = (
    "at",
    "last_at",
    "minute",
    "request_id",
    "workspace_id",
    "dc",
    "source",
    "outcome",
    "key_id",
    "stale",
    "client_ip",
    "user_agent",
    "count",
    "agg_key",
)


def _attempt_driver_rows(dialect: sa.Dialect, rows: Iterable[AttemptRow]) -> list[tuple[Any, ...]]:
    """Parameter tuples for ``rows`` in :data:`_ATTEMPT_COLUMNS` order, in the driver's
    representation of each type.

    Runs on the event loop for every row of the connection record, so it does the least: one
    tuple per row, the timestamps converted once each (``at`` and ``last_at`` are often the
    same object, and a batch's rows share a few minutes). Booleans need nothing: both drivers
    bind ``bool``.
    """
    convert = _driver_datetime(dialect)
    minutes: dict[datetime, Any] = {}
    out: list[tuple[Any, ...]] = []
    append = out.append
    for row in rows:
        at = row.at
        at_value = convert(at)
        last_value = at_value if row.last_at is at else convert(row.last_at)
        minute = row.minute
        minute_value = minutes.get(minute)
        if minute_value is None:
            minute_value = minutes[minute] = convert(minute)
        append(
            (
                at_value,
                last_value,
                minute_value,
                row.request_id,
                row.workspace_id,
                row.dc,
                row.source,
                row.outcome,
                row.key_id,
                row.stale,
                row.client_ip,
                row.user_agent,
                row.count,
                row.agg_key,
            )
        )
    return out


_SQLITE = sqlite_dialect.dialect()
# SQLite's default limit of bound parameters per statement (since 3.32).
_SQLITE_MAX_PARAMS = 32766
# Rows per statement (SQLite) or per executemany (asyncpg), at most: see _statement_sizes and
# _insert_many.
_ROWS_PER_STATEMENT = 256


def _upsert(insert: Any) -> Any:
    """``insert`` (SQLite's or PostgreSQL's) adding each aggregate onto the stored row with its
    ``agg_key``: counts add up, the earliest ``at`` and the latest attempt's details stay."""
    new, old = insert.excluded, connection_attempts.c
    later = new.last_at > old.last_at
    return insert.on_conflict_do_update(
        index_elements=[old.agg_key],
        set_={
            "count": old.count + new.count,
            "at": sa.case((new.at < old.at, new.at), else_=old.at),
            "last_at": sa.case((later, new.last_at), else_=old.last_at),
            "request_id": sa.case((later, new.request_id), else_=old.request_id),
            "user_agent": sa.case((later, new.user_agent), else_=old.user_agent),
            "client_ip": sa.case((later, new.client_ip), else_=old.client_ip),
        },
    )


def _fold_statements(dialect: str) -> list[sa.Executable]:
    """Statements moving every staged row into the record, sorted so that consecutive rows
    share index pages; the last one's row count is the number of rows moved.

    SQLite stages aggregates too, and runs the statements in one transaction under its single
    writer lock: nothing can be staged between them, and an upsert may meet the same
    ``agg_key`` twice (it adds them one after the other). Aggregates go in ``agg_key`` order:
    keys start with their minute, so a minute's rows fill the end of that index in order.
    PostgreSQL admits concurrent writers, and one upsert may not touch a row twice: it stages
    single rows only, and the rows deleted are exactly the rows inserted, in one statement.
    """
    staged = connection_attempts_staged
    names = [c.name for c in staged.columns]
    if dialect == "sqlite":
        singles = (
            sa.select(*staged.c)
            .where(staged.c.agg_key.is_(None))
            .order_by(staged.c.workspace_id, staged.c.last_at)
        )
        aggregates = (
            sa.select(*staged.c)
            .where(staged.c.agg_key.is_not(None))
            .order_by(staged.c.agg_key, staged.c.last_at)
        )
        return [
            connection_attempts.insert().from_select(names, singles),
            _upsert(sqlite_insert(connection_attempts).from_select(names, aggregates)),
            staged.delete(),
        ]
    moved = staged.delete().returning(*staged.c).cte("moved")
    rows = sa.select(*moved.c).order_by(moved.c.workspace_id, moved.c.last_at)
    return [connection_attempts.insert().from_select(names, rows)]


def _attempt_statement(dialect: sa.Dialect, *, upsert: bool) -> str:
    """The upsert of aggregates into the record (PostgreSQL) or the INSERT of rows into its
    staging table for ``dialect`` as driver SQL, binding the columns in
    :data:`_ATTEMPT_COLUMNS` order (what :func:`_attempt_driver_rows` builds)."""
    cache_key = (dialect.name, upsert)
    found = _ATTEMPT_SQL.get(cache_key)
    if found is None:
        statement = (
            _upsert(pg_insert(connection_attempts))
            if upsert
            else connection_attempts_staged.insert()
        )
        compiled = statement.values(
            {name: sa.bindparam(name) for name in _ATTEMPT_COLUMNS}
        ).compile(dialect=dialect)
        order = tuple(compiled.positiontup or ())
        if order != _ATTEMPT_COLUMNS:  # the table or SQLAlchemy changed: never mis-bind
            raise RuntimeError(f"the record's INSERT binds {order}, not {_ATTEMPT_COLUMNS}")
        found = _ATTEMPT_SQL[cache_key] = str(compiled)
    return found


def _statement_sizes(rows: int) -> list[int]:
    """How many rows each multi-row ``INSERT`` of a batch of ``rows`` holds on SQLite.

    Few shapes: up to :data:`_ROWS_PER_STATEMENT` rows, the rest in chunks of a power of two.
    The driver keeps every statement it prepared (128 per connection), and a prepared statement
    costs SQLite ~1.4 KB per row: with one shape per batch size, the statements cached were
    20-60 MB of the server's memory (one of 2,000 rows was 3 MB). Now at most nine shapes, ~0.7
    MB in all; 256 rows per statement inserts as fast as 2,000 (3.3 us per row either way,
    measured on an in-memory table).
    """
    per = min(_ROWS_PER_STATEMENT, max(1, _SQLITE_MAX_PARAMS // len(_ATTEMPT_COLUMNS)))
    sizes = []
    while rows:
        size = per if rows >= per else 1 << (rows.bit_length() - 1)
        sizes.append(size)
        rows -= size
    return sizes


def _stage_sqlite(conn: sqlite3.Connection, sql: str, rows: Sequence[AttemptRow]) -> None:
    """``sql`` (one ``VALUES (...)`` row of :data:`_ATTEMPT_COLUMNS`) for every row of ``rows``,
    as multi-row statements (:func:`_statement_sizes`), on the record's own SQLite thread.

    Multi-row, not ``executemany``: that releases and re-takes the GIL around every row's
    ``sqlite3_step``, and each re-take waits for the event loop's thread to yield it, which
    under load cost the endpoint far more than the insert itself.
    """
    group = "(" + ", ".join(["?"] * len(_ATTEMPT_COLUMNS)) + ")"
    start = 0
    for size in _statement_sizes(len(rows)):
        params = _attempt_driver_rows(_SQLITE, rows[start : start + size])
        start += size
        statement = sql.replace(group, ", ".join([group] * size), 1)
        conn.execute(statement, tuple(chain.from_iterable(params)))


async def _insert_many(conn: AsyncConnection, sql: str, rows: Sequence[AttemptRow]) -> None:
    """``sql`` for every row of ``rows`` with asyncpg's ``executemany``, which pipelines well,
    each slice's driver parameters built just before it is sent (the event loop is held for one
    slice's worth, never for a whole batch)."""
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        params = _attempt_driver_rows(conn.dialect, rows[start : start + _ROWS_PER_STATEMENT])
        await conn.exec_driver_sql(sql, params if len(params) > 1 else params[0])


def _merge_attempts(a: AttemptRow, b: AttemptRow) -> AttemptRow:
    """Two aggregates of the same key as one: counts add, the later attempt's details win."""
    last = b if a.last_at <= b.last_at else a
    return replace(last, at=min(a.at, b.at), count=a.count + b.count, id=None)


def _cursor(row: AttemptRow) -> str:
    """Where the next page starts: the last row's time (µs since the epoch) and ID."""
    return f"{round(row.last_at.timestamp() * 1_000_000)}_{row.id}"


def _parse_cursor(cursor: str) -> tuple[datetime, int]:
    micros, _, row_id = cursor.partition("_")
    if not (micros.isdigit() and row_id.isdigit() and len(micros) <= 17 and len(row_id) <= 19):
        raise ValueError("the cursor is not one this API returned")
    return datetime.fromtimestamp(int(micros) / 1_000_000, UTC), int(row_id)


def _attempt_row(row: Any) -> AttemptRow:
    return AttemptRow(
        at=row.at,
        last_at=row.last_at,
        minute=row.minute,
        request_id=row.request_id,
        workspace_id=row.workspace_id,
        dc=row.dc,
        source=row.source,
        outcome=row.outcome,
        key_id=row.key_id,
        stale=bool(row.stale),
        client_ip=row.client_ip,
        user_agent=row.user_agent,
        count=int(row.count),
        agg_key=row.agg_key,
        id=int(row.id),
    )


class SQLStore:
    """:class:`~moeconnect.store.base.Store` on a SQLAlchemy async engine."""

    def __init__(self, url: str) -> None:
        self.db = DatabaseURL.parse(url)
        self.url = self.db.display
        if self.db.kind == "sqlite":
            self.db.ensure_sqlite_file()
            self._file_id: tuple[int, int] | None = self.db.sqlite_file_id()
        self._engine = _engine_for(self.db)
        # The endpoint's cache misses take a leaner road than SQLAlchemy (see hotread.py).
        self._reader, self._close_reader = open_reader(self.db)
        self._listeners: list[Callable[[Sequence[str]], Awaitable[None] | None]] = []
        # Rows this process staged since the last move, and when the first was.
        self.fold_rows = FOLD_ROWS
        self.prune_workspaces = PRUNE_WORKSPACES
        self.prune_rows = PRUNE_ROWS
        self._staged = 0
        self._staged_since = 0.0
        # SQLite's record rows, aggregates too, are staged through their own thread.
        self._stager = (
            SQLiteThread(self.db, "moeconnect-record") if self.db.kind == "sqlite" else None
        )
        # Built once: every read of the record runs them first.
        self._fold = _fold_statements(self.db.kind)

    def add_change_listener(
        self, listener: Callable[[Sequence[str]], Awaitable[None] | None]
    ) -> None:
        """Call ``listener(workspace_ids)`` after each commit that appended to the change feed.

        This is how a server tells its own cache and the other instances at once, instead of
        waiting for their next poll. A listener must not raise; if it returns an awaitable, the
        write returns once it is done, so a caller told "done" knows the others were told too.
        """
        self._listeners.append(listener)

    async def _notify(self, changed: Sequence[str]) -> None:
        for listener in self._listeners:
            try:
                pending = listener(changed)
                if pending is not None:
                    await pending
            except Exception:
                log.exception("change listener failed")

    # -- plumbing -------------------------------------------------------------------------

    async def _check_sqlite_file(self) -> None:
        """Refuse to run on a database file that was removed or replaced under us.

        SQLite keeps serving an unlinked file through open connections; a store whose file is
        gone must say so (503), not answer from a ghost.
        """
        current = self.db.sqlite_file_id()
        if current != self._file_id:
            await self._engine.dispose()
            if current is None:
                raise StoreUnavailable(f"the database file {self.db.sqlite_path} is missing")
            self._file_id = current

    @asynccontextmanager
    async def _conn(self, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection (``write``: in a transaction, committed at the end); every database
        failure inside surfaces as a :class:`StoreError` (see :func:`.failures.store_error`)."""
        changed: list[str] = []
        # Where _record_change puts the workspaces this transaction changed: a context variable,
        # not ``conn.info``, which a connection lost mid-transaction refuses to hand out.
        token = _CHANGED.set(changed) if write else None
        try:
            try:
                if self.db.kind == "sqlite":
                    await self._check_sqlite_file()
                if write:
                    async with self._engine.begin() as conn:
                        yield conn
                else:
                    async with self._engine.connect() as conn:
                        yield conn
            finally:
                if token is not None:
                    _CHANGED.reset(token)
        except Exception as err:
            mapped = store_error(err)
            if mapped is None:
                raise
            raise mapped from None
        if changed:
            await self._notify(changed)

    async def _record_change(self, conn: AsyncConnection, workspace_id: str, now: datetime) -> None:
        await conn.execute(changes.insert().values(workspace_id=workspace_id, at=now))
        pending = _CHANGED.get()
        if pending is not None:  # None: a transaction not opened by _conn; the poll covers it
            pending.append(workspace_id)

    async def migrate(self) -> None:
        from .migrate import upgrade

        try:
            if self.db.kind == "sqlite":
                await self._check_sqlite_file()
            async with self._engine.begin() as conn:
                await conn.run_sync(upgrade)
        except Exception as err:
            mapped = store_error(err)
            if mapped is None:
                raise
            raise mapped from None

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.execute(sa.select(sa.func.count()).select_from(workspaces).limit(1))

    async def close(self) -> None:
        if self._staged:  # leave the record whole for whoever reads the tables directly
            try:
                await self.fold_attempts()
            except StoreUnavailable as err:
                log.warning("staged attempts not moved at close: %s", err)
        await self._close_reader()
        if self._stager is not None:
            await self._stager.close()
        await self._engine.dispose()

    # -- workspaces -------------------------------------------------------------------------

    async def create_workspace(
        self, workspace_id: str, name: str, dc: str, *, audit: AuditContext | None = None
    ) -> Workspace:
        now = _now()
        created = Workspace(workspace_id, name, dc, "active", now, now)
        try:
            async with self._conn(write=True) as conn:
                await conn.execute(
                    workspaces.insert().values(
                        id=workspace_id,
                        name=name,
                        dc=dc,
                        status="active",
                        created_at=now,
                        updated_at=now,
                    )
                )
                await self._record_change(conn, workspace_id, now)
                await audit_sql.append(
                    conn,
                    audit or _LIBRARY,
                    "workspace.create",
                    at=now,
                    workspace_id=workspace_id,
                    target=workspace_id,
                    after={"name": name, "dc": dc, "status": "active"},
                )
        except Conflict:
            raise Conflict(f"a workspace with ID {workspace_id} already exists") from None
        return created

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        async with self._conn() as conn:
            row = (
                await conn.execute(workspaces.select().where(workspaces.c.id == workspace_id))
            ).first()
        return _workspace(row) if row else None

    async def list_workspaces(
        self,
        *,
        limit: int = 100,
        after: str | None = None,
        dc: str | None = None,
        search: str | None = None,
        only: Collection[str] | None = None,
    ) -> list[Workspace]:
        query = workspaces.select().order_by(workspaces.c.id).limit(limit)
        if only is not None:  # a restricted operator token's workspaces (a short list)
            query = query.where(workspaces.c.id.in_(sorted(only)))
        if after:
            query = query.where(workspaces.c.id > after)
        if dc:
            query = query.where(workspaces.c.dc == dc)
        if search:
            pattern = (
                "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            )
            query = query.where(
                sa.or_(
                    workspaces.c.id.ilike(pattern, escape="\\"),
                    workspaces.c.name.ilike(pattern, escape="\\"),
                )
            )
        async with self._conn() as conn:
            rows = (await conn.execute(query)).all()
        return [_workspace(r) for r in rows]

    async def _update_workspace(
        self, workspace_id: str, action: str, audit: AuditContext | None, **values: Any
    ) -> Workspace:
        now = _now()
        async with self._conn(write=True) as conn:
            # The row is locked (and on SQLite the write lock taken) by this first UPDATE, so
            # the values read next are the ones this change replaces.
            old = (
                await conn.execute(
                    workspaces.update()
                    .where(workspaces.c.id == workspace_id)
                    .values(updated_at=now)
                    .returning(*workspaces.c)
                )
            ).first()
            if old is None:
                raise NotFound(f"no workspace has ID {workspace_id}")
            row = (
                await conn.execute(
                    workspaces.update()
                    .where(workspaces.c.id == workspace_id)
                    .values(**values)
                    .returning(*workspaces.c)
                )
            ).one()
            await self._record_change(conn, workspace_id, now)
            await audit_sql.append(
                conn,
                audit or _LIBRARY,
                action,
                at=now,
                workspace_id=workspace_id,
                target=workspace_id,
                before={name: getattr(old, name) for name in values},
                after=dict(values),
            )
        return _workspace(row)

    async def rename_workspace(
        self, workspace_id: str, name: str, *, audit: AuditContext | None = None
    ) -> Workspace:
        return await self._update_workspace(workspace_id, "workspace.rename", audit, name=name)

    async def set_workspace_status(
        self, workspace_id: str, status: str, *, audit: AuditContext | None = None
    ) -> Workspace:
        if status not in ("active", "suspended"):
            raise ValueError(f"unknown workspace status {status!r}")
        action = "workspace.suspend" if status == "suspended" else "workspace.resume"
        return await self._update_workspace(workspace_id, action, audit, status=status)

    async def delete_workspace(
        self, workspace_id: str, *, audit: AuditContext | None = None
    ) -> None:
        now = _now()
        async with self._conn(write=True) as conn:
            keys = await conn.execute(
                api_keys.delete().where(api_keys.c.workspace_id == workspace_id)
            )
            row = (
                await conn.execute(
                    workspaces.delete()
                    .where(workspaces.c.id == workspace_id)
                    .returning(*workspaces.c)
                )
            ).first()
            if row is None:
                raise NotFound(f"no workspace has ID {workspace_id}")
            await self._record_change(conn, workspace_id, now)
            await audit_sql.append(
                conn,
                audit or _LIBRARY,
                "workspace.delete",
                at=now,
                workspace_id=workspace_id,
                target=workspace_id,
                before={
                    "name": row.name,
                    "dc": row.dc,
                    "status": row.status,
                    "keys": int(keys.rowcount or 0),
                },
            )

    # -- keys -------------------------------------------------------------------------------

    async def store_key(
        self,
        workspace_id: str,
        scope: str,
        digest: bytes,
        hint: str,
        origin: str,
        *,
        now: datetime,
        previous_expires_at: datetime | None = None,
        audit: AuditContext | None = None,
    ) -> RotationResult:
        """Make a new current key; the previous one ends now, or at ``previous_expires_at``.

        The UPDATE comes first so the write lock is taken before anything is read: two
        concurrent rotations serialise, and the partial unique index guarantees one current key.
        """
        key_id = new_id("key")
        ends = previous_expires_at or now
        async with self._conn(write=True) as conn:
            exists = (
                await conn.execute(
                    # The workspace row is the lock that serialises key changes on PostgreSQL
                    # (READ COMMITTED would let two rotations both insert a current key);
                    # SQLite serialises writers itself and renders no FOR UPDATE.
                    sa.select(workspaces.c.id)
                    .where(workspaces.c.id == workspace_id)
                    .with_for_update()
                )
            ).first()
            if exists is None:
                raise NotFound(f"no workspace has ID {workspace_id}")
            previous = (
                await conn.execute(
                    api_keys.update()
                    .where(
                        api_keys.c.workspace_id == workspace_id,
                        api_keys.c.scope == scope,
                        api_keys.c.state == "current",
                    )
                    .values(state="replaced", ended_at=ends, ended_how="replaced")
                    .returning(api_keys.c.id, api_keys.c.hint)
                )
            ).first()
            # Keys still in an earlier grace period end when a newer rotation ends the grace.
            cut = await conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.workspace_id == workspace_id,
                    api_keys.c.scope == scope,
                    api_keys.c.state == "replaced",
                    api_keys.c.ended_at > now,
                    api_keys.c.id != (previous.id if previous else ""),
                )
                .values(ended_at=now)
                .returning(api_keys.c.id)
            )
            grace_ended = [r.id for r in cut.all()]
            await conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    workspace_id=workspace_id,
                    scope=scope,
                    digest=digest,
                    hint=hint,
                    origin=origin,
                    state="current",
                    created_at=now,
                )
            )
            await self._record_change(conn, workspace_id, now)
            key = ApiKey(key_id, workspace_id, scope, hint, origin, "current", now, None, None)
            action = (
                "key.import"
                if origin == "imported"
                else ("key.rotate" if previous else "key.generate")
            )
            before = None
            after: dict[str, Any] = key_state(key)
            if previous is not None:
                before = {"key_id": previous.id, "hint": previous.hint}
                after["previous_key_expires_at"] = ends
            if grace_ended:
                after["grace_ended"] = grace_ended
            await audit_sql.append(
                conn,
                audit or _LIBRARY,
                action,
                at=now,
                workspace_id=workspace_id,
                target=key_id,
                before=before,
                after=after,
            )
        return RotationResult(
            key,
            previous.id if previous else None,
            ends if previous else None,
        )

    async def revoke_key(
        self,
        workspace_id: str,
        scope: str,
        *,
        now: datetime,
        audit: AuditContext | None = None,
    ) -> int:
        """End the current key and any key in a grace period; returns how many were ended."""
        async with self._conn(write=True) as conn:
            exists = (
                await conn.execute(
                    # The workspace row is the lock that serialises key changes on PostgreSQL
                    # (READ COMMITTED would let two rotations both insert a current key);
                    # SQLite serialises writers itself and renders no FOR UPDATE.
                    sa.select(workspaces.c.id)
                    .where(workspaces.c.id == workspace_id)
                    .with_for_update()
                )
            ).first()
            if exists is None:
                raise NotFound(f"no workspace has ID {workspace_id}")
            current = await conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.workspace_id == workspace_id,
                    api_keys.c.scope == scope,
                    api_keys.c.state == "current",
                )
                .values(state="revoked", ended_at=now, ended_how="revoked")
                .returning(api_keys.c.id, api_keys.c.hint)
            )
            graced = await conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.workspace_id == workspace_id,
                    api_keys.c.scope == scope,
                    api_keys.c.state == "replaced",
                    api_keys.c.ended_at > now,
                )
                .values(state="revoked", ended_at=now, ended_how="revoked")
                .returning(api_keys.c.id, api_keys.c.hint)
            )
            ended = [
                {"key_id": r.id, "hint": r.hint, "was": was}
                for was, rows in (("current", current.all()), ("in grace", graced.all()))
                for r in rows
            ]
            await self._record_change(conn, workspace_id, now)
            await audit_sql.append(
                conn,
                audit or _LIBRARY,
                "key.revoke",
                at=now,
                workspace_id=workspace_id,
                target=scope,
                before={"keys": ended},
                after={"revoked": len(ended)},
            )
        return len(ended)

    async def list_keys(self, workspace_id: str) -> list[ApiKey]:
        async with self._conn() as conn:
            rows = (
                await conn.execute(
                    api_keys.select()
                    .where(api_keys.c.workspace_id == workspace_id)
                    .order_by(api_keys.c.scope, api_keys.c.created_at.desc())
                )
            ).all()
        return [_api_key(r) for r in rows]

    _CRED_COLUMNS = (
        workspaces.c.id,
        workspaces.c.name,
        workspaces.c.dc,
        workspaces.c.status,
        api_keys.c.id.label("key_id"),
        api_keys.c.digest,
        api_keys.c.state,
        api_keys.c.ended_at,
        api_keys.c.ended_how,
        api_keys.c.created_at,
    )

    def _credentials_query(self, scope: str) -> sa.Select[Any]:
        join = workspaces.outerjoin(
            api_keys,
            sa.and_(api_keys.c.workspace_id == workspaces.c.id, api_keys.c.scope == scope),
        )
        return sa.select(*self._CRED_COLUMNS).select_from(join)

    @staticmethod
    def _group_credentials(rows: Sequence[Any]) -> dict[str, WorkspaceCredentials]:
        grouped: dict[str, tuple[Any, list[Any]]] = {}
        for row in rows:
            entry = grouped.setdefault(row.id, (row, []))
            if row.key_id is not None:
                entry[1].append(row)
        result: dict[str, WorkspaceCredentials] = {}
        for wid, (head, key_rows) in grouped.items():
            # Current key first, then newest first.
            key_rows.sort(key=lambda r: (r.state != "current", -r.created_at.timestamp()))
            keys = tuple(
                CredentialKey(r.key_id, bytes(r.digest), r.state, r.ended_at, r.ended_how)
                for r in key_rows
            )
            result[wid] = WorkspaceCredentials(wid, head.name, head.dc, head.status, keys)
        return result

    async def credentials(
        self, workspace_id: str, scope: str = "data"
    ) -> WorkspaceCredentials | None:
        """One workspace's credentials: the endpoint's cache-miss read, batched with others."""
        return await self._reader.credentials(workspace_id, scope)

    async def many_credentials(
        self, workspace_ids: Sequence[str], scope: str = "data"
    ) -> dict[str, WorkspaceCredentials]:
        if not workspace_ids:
            return {}
        query = self._credentials_query(scope).where(workspaces.c.id.in_(list(workspace_ids)))
        async with self._conn() as conn:
            rows = (await conn.execute(query)).all()
        return self._group_credentials(rows)

    # -- operator tokens ----------------------------------------------------------------------

    async def create_token(
        self,
        name: str,
        digest: bytes,
        hint: str,
        *,
        role: str = "admin",
        workspace_ids: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        audit: AuditContext | None = None,
    ) -> OperatorToken:
        token_id = new_id("tok")
        now = _now()
        ids = tuple(workspace_ids) if workspace_ids is not None else None
        token = OperatorToken(token_id, name, hint, now, None, None, role, ids, expires_at)
        async with self._conn(write=True) as conn:
            await conn.execute(
                operator_tokens.insert().values(
                    id=token_id,
                    name=name,
                    digest=digest,
                    hint=hint,
                    created_at=now,
                    role=role,
                    workspace_ids=orjson.dumps(ids).decode() if ids is not None else None,
                    expires_at=expires_at,
                )
            )
            await audit_sql.append(
                conn,
                audit or _LIBRARY,
                "token.create",
                at=now,
                target=token_id,
                after=token_state(token),
            )
        return token

    async def list_tokens(self) -> list[OperatorToken]:
        async with self._conn() as conn:
            rows = (
                await conn.execute(operator_tokens.select().order_by(operator_tokens.c.created_at))
            ).all()
        return [_token(r) for r in rows]

    async def revoke_token(
        self, token_id_or_name: str, *, audit: AuditContext | None = None
    ) -> OperatorToken:
        now = _now()
        async with self._conn(write=True) as conn:
            rows = (
                await conn.execute(
                    operator_tokens.select().where(
                        sa.or_(
                            operator_tokens.c.id == token_id_or_name,
                            operator_tokens.c.name == token_id_or_name,
                        ),
                        operator_tokens.c.revoked_at.is_(None),
                    )
                )
            ).all()
            if not rows:
                raise NotFound(f"no active operator token has ID or name {token_id_or_name}")
            if len(rows) > 1:
                raise Conflict(
                    f"{len(rows)} active tokens are named {token_id_or_name}; revoke one by ID"
                )
            done = await conn.execute(
                operator_tokens.update()
                .where(operator_tokens.c.id == rows[0].id, operator_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if not done.rowcount:  # revoked by someone else since it was read
                raise NotFound(f"no active operator token has ID or name {token_id_or_name}")
            token = _token(rows[0])
            await audit_sql.append(
                conn,
                audit or _LIBRARY,
                "token.revoke",
                at=now,
                target=token.id,
                before={**token_state(token), "revoked_at": None},
                after={"revoked_at": now},
            )
        return replace(token, revoked_at=now)

    async def token_by_digest(self, digest: bytes) -> OperatorToken | None:
        async with self._conn() as conn:
            row = (
                await conn.execute(
                    operator_tokens.select().where(operator_tokens.c.digest == digest)
                )
            ).first()
        return _token(row) if row else None

    async def token_by_id(self, token_id: str) -> OperatorToken | None:
        async with self._conn() as conn:
            row = (
                await conn.execute(operator_tokens.select().where(operator_tokens.c.id == token_id))
            ).first()
        return _token(row) if row else None

    async def touch_tokens(self, used: Mapping[str, datetime]) -> None:
        """Set ``last_used_at`` of each token to its time, never moving it back."""
        if not used:
            return
        c = operator_tokens.c
        statement = (
            operator_tokens.update()
            .where(
                c.id == sa.bindparam("token_id"),
                sa.or_(c.last_used_at.is_(None), c.last_used_at < sa.bindparam("used_at")),
            )
            .values(last_used_at=sa.bindparam("used_at"))
        )
        async with self._conn(write=True) as conn:
            await conn.execute(
                statement, [{"token_id": k, "used_at": v} for k, v in sorted(used.items())]
            )

    # -- change feed --------------------------------------------------------------------------

    async def changes_since(self, after_id: int) -> list[Change]:
        # Polled often (and on demand, by refused keys): the hot reader's lean road, which also
        # refuses a replaced or missing SQLite file.
        return await self._reader.changes_since(after_id, CHANGES_PAGE)

    async def read_feed(self, after_id: int, anchor_id: int) -> FeedPage:
        # The watcher's poll: the hot reader's road, like changes_since.
        return await self._reader.read_feed(after_id, anchor_id, CHANGES_PAGE)

    async def last_change_id(self) -> int:
        async with self._conn() as conn:
            value = (await conn.execute(sa.select(sa.func.max(changes.c.id)))).scalar()
        return int(value or 0)

    # -- connection record (issue 3) ------------------------------------------------------------

    async def add_attempts(self, batch: Sequence[AttemptRow]) -> None:
        """Stage single rows, and add aggregates onto their stored row (upsert on ``agg_key``).

        One transaction per batch. Aggregates sharing an ``agg_key`` are merged first: one
        statement may not touch the same row twice. Staged rows move into the record when
        enough have gathered (:meth:`fold_attempts`), and before anything reads it; on SQLite
        aggregates are staged too and added on when they move.
        """
        singles: list[AttemptRow] = []
        aggregates: dict[str, AttemptRow] = {}
        for row in batch:
            if row.agg_key is None:
                singles.append(row)
            else:
                prev = aggregates.get(row.agg_key)
                aggregates[row.agg_key] = row if prev is None else _merge_attempts(prev, row)
        if not singles and not aggregates:
            return
        if self._stager is not None:
            # SQLite: aggregates are staged with the single rows (see _fold_statements), on the
            # record's own thread, off SQLAlchemy.
            staged = [*singles, *aggregates.values()]
            sql = _attempt_statement(_SQLITE, upsert=False)
            await self._stager.transaction(lambda conn: _stage_sqlite(conn, sql, staged))
        else:
            staged = singles
            async with self._conn(write=True) as conn:
                # Driver-level executemany: SQLAlchemy's per-row parameter processing runs on
                # the event loop and would cost the endpoint more than the write itself.
                if staged:
                    sql = _attempt_statement(conn.dialect, upsert=False)
                    await _insert_many(conn, sql, staged)
                if aggregates:
                    sql = _attempt_statement(conn.dialect, upsert=True)
                    await _insert_many(conn, sql, list(aggregates.values()))
        if staged:
            now = time.monotonic()
            if not self._staged:
                self._staged_since = now
            self._staged += len(staged)
            if self._staged >= self.fold_rows or now - self._staged_since >= FOLD_SECONDS:
                await self.fold_attempts()

    async def fold_attempts(self) -> int:
        """Move every staged row into the record; returns how many moved.

        Each new row gets its ``id`` here. Sorted by workspace (or ``agg_key``), the rows of one
        move that belong to the same workspace go to the same few pages of each index, which
        are written once per move instead of once per row.
        """
        self._staged = 0
        moved = 0
        async with self._conn(write=True) as conn:
            for statement in self._fold:
                moved = (await conn.execute(statement)).rowcount
        return int(moved or 0)

    async def list_attempts(
        self,
        workspace_id: str,
        *,
        source: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> AttemptPage:
        """Rows of one workspace, newest first; ``cursor`` is the opaque ``next_cursor``."""
        await self.fold_attempts()
        c = connection_attempts.c
        query = connection_attempts.select().where(c.workspace_id == workspace_id)
        if source is not None:
            query = query.where(c.source == source)
        if outcome is not None:
            query = query.where(c.outcome == outcome)
        if since is not None:
            query = query.where(c.last_at >= since)
        if until is not None:
            query = query.where(c.at <= until)
        if cursor is not None:
            at, after_id = _parse_cursor(cursor)
            query = query.where(sa.or_(c.last_at < at, sa.and_(c.last_at == at, c.id < after_id)))
        limit = max(1, limit)
        query = query.order_by(c.last_at.desc(), c.id.desc()).limit(limit + 1)
        async with self._conn() as conn:
            rows = (await conn.execute(query)).all()
        items = [_attempt_row(r) for r in rows[:limit]]
        more = len(rows) > limit and items
        return AttemptPage(items, _cursor(items[-1]) if more else None)

    async def source_summary(self, workspace_id: str) -> list[SourceSummary]:
        """Per source: first/last seen, last success, last failure and its code, counts by
        outcome, and whether its latest success used a key that is no longer current."""
        await self.fold_attempts()
        c = connection_attempts.c
        ok = c.outcome.in_(_SUCCESSES)
        totals = (
            sa.select(
                c.source,
                c.outcome,
                sa.func.min(c.at).label("first"),
                sa.func.max(c.last_at).label("last"),
                sa.func.sum(c.count).label("n"),
            )
            .where(c.workspace_id == workspace_id)
            .group_by(c.source, c.outcome)
        )

        def latest(condition: Any) -> Any:
            ranked = (
                sa.select(
                    c.source,
                    c.outcome,
                    c.last_at,
                    c.key_id,
                    c.stale,
                    sa.func.row_number()
                    .over(partition_by=c.source, order_by=(c.last_at.desc(), c.id.desc()))
                    .label("rank"),
                )
                .where(c.workspace_id == workspace_id, condition)
                .subquery()
            )
            return ranked

        failures = latest(sa.not_(ok))
        successes = latest(ok)
        last_failures = sa.select(failures).where(failures.c.rank == 1)
        last_successes = (
            sa.select(
                successes.c.source,
                successes.c.key_id,
                successes.c.stale,
                api_keys.c.state,
                api_keys.c.ended_at,
            )
            .select_from(successes.outerjoin(api_keys, api_keys.c.id == successes.c.key_id))
            .where(successes.c.rank == 1)
        )
        async with self._conn() as conn:
            total_rows = (await conn.execute(totals)).all()
            failure_rows = (await conn.execute(last_failures)).all()
            success_rows = (await conn.execute(last_successes)).all()
        failure_by = {r.source: r for r in failure_rows}
        success_by = {r.source: r for r in success_rows}
        grouped: dict[str | None, list[Any]] = {}
        for row in total_rows:
            grouped.setdefault(row.source, []).append(row)
        result: list[SourceSummary] = []
        for source, rows in grouped.items():
            counts = {r.outcome: int(r.n) for r in rows}
            success_times = [r.last for r in rows if r.outcome in _SUCCESSES]
            fail = failure_by.get(source)
            good = success_by.get(source)
            replaced = good is not None and (
                bool(good.stale) or (good.state is not None and good.state != "current")
            )
            result.append(
                SourceSummary(
                    source=source,
                    first_seen=min(r.first for r in rows),
                    last_seen=max(r.last for r in rows),
                    last_success=max(success_times) if success_times else None,
                    last_failure=fail.last_at if fail is not None else None,
                    last_failure_code=fail.outcome if fail is not None else None,
                    counts=counts,
                    total=sum(counts.values()),
                    uses_replaced_key=replaced,
                    replaced_key_id=good.key_id if replaced and good is not None else None,
                    replaced_key_ends_at=good.ended_at if replaced and good is not None else None,
                )
            )
        result.sort(key=lambda s: s.last_seen, reverse=True)
        return result

    async def attempt_counts(
        self, workspace_id: str, since: datetime, bucket_seconds: int = 3600
    ) -> list[AttemptBucket]:
        """Attempts by outcome per ``bucket_seconds`` bucket (minute resolution), oldest first."""
        if bucket_seconds < 60 or bucket_seconds % 60:
            raise ValueError("bucket_seconds must be a whole number of minutes")
        await self.fold_attempts()
        c = connection_attempts.c
        start = since.replace(second=0, microsecond=0)
        query = (
            sa.select(c.minute, c.outcome, sa.func.sum(c.count).label("n"))
            .where(c.workspace_id == workspace_id, c.minute >= start)
            .group_by(c.minute, c.outcome)
        )
        async with self._conn() as conn:
            rows = (await conn.execute(query)).all()
        buckets: dict[tuple[int, str], int] = {}
        for row in rows:
            epoch = int(row.minute.timestamp())
            key = (epoch - epoch % bucket_seconds, row.outcome)
            buckets[key] = buckets.get(key, 0) + int(row.n)
        return [
            AttemptBucket(datetime.fromtimestamp(epoch, UTC), outcome, count)
            for (epoch, outcome), count in sorted(buckets.items())
        ]

    async def prune_attempts(self, before: datetime) -> int:
        """Delete rows whose last attempt is older than ``before``; returns how many.

        The record has no index on ``last_at`` alone (migration 0005: every failed attempt paid
        for it, and only this used it), so this walks ``ix_attempts_workspace_time``: the
        workspaces that have rows, a few hundred at a time (:func:`_next_workspaces`, one index
        seek each), then each one's rows older than ``before`` (a range of that index), in
        slices of at most :attr:`prune_rows` rows, so no transaction holds SQLite's write lock
        for long.
        """
        await self.fold_attempts()
        c = connection_attempts.c
        removed = await self._delete_attempts(c.workspace_id.is_(None) & (c.last_at < before))
        after: str | None = None
        while True:
            async with self._conn() as conn:
                result = await conn.execute(_next_workspaces(after, self.prune_workspaces))
                found = [str(w) for w in result.scalars()]
            if found:
                condition = c.workspace_id.in_(found) & (c.last_at < before)
                removed += await self._delete_attempts(condition)
            if len(found) < self.prune_workspaces:
                return removed
            after = found[-1]

    async def _delete_attempts(self, condition: Any) -> int:
        """Delete the record's rows matching ``condition``, :attr:`prune_rows` a transaction."""
        c = connection_attempts.c
        removed = 0
        while True:
            doomed = sa.select(c.id).where(condition).limit(self.prune_rows)
            async with self._conn(write=True) as conn:
                result = await conn.execute(connection_attempts.delete().where(c.id.in_(doomed)))
            count = int(result.rowcount or 0)
            removed += count
            if count < self.prune_rows:
                return removed

    # -- end connection record --------------------------------------------------------------------

    # -- audit log (issue 23) ------------------------------------------------------------------

    async def add_audit(
        self,
        audit: AuditContext,
        action: str,
        *,
        workspace_id: str | None = None,
        target: str | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """An entry that is its own change (a dashboard sign-in, a failed one)."""
        async with self._conn(write=True) as conn:
            await audit_sql.append(
                conn,
                audit,
                action,
                at=_now(),
                workspace_id=workspace_id,
                target=target,
                after=after,
            )

    async def list_audit(
        self,
        *,
        workspace_id: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> AuditPage:
        """Entries newest first; ``cursor`` is the opaque ``next_cursor`` of the last page."""
        limit = max(1, limit)
        query = audit_sql.list_query(
            workspace_id=workspace_id, action=action, since=since, cursor=cursor, limit=limit + 1
        )
        async with self._conn() as conn:
            rows = (await conn.execute(query)).all()
        items: list[AuditEntry] = [audit_sql.entry_of(r) for r in rows[:limit]]
        more = len(rows) > limit and items
        return AuditPage(items, audit_sql.cursor_of(items[-1]) if more else None)

    async def prune_audit(self, before: datetime) -> int:
        """Delete entries older than ``before`` (retention: the only deletion there is)."""
        removed = 0
        while True:
            async with self._conn(write=True) as conn:
                result = await conn.execute(audit_sql.prune_query(before, self.prune_rows))
            count = int(result.rowcount or 0)
            removed += count
            if count < self.prune_rows:
                return removed

    # -- maintenance ----------------------------------------------------------------------------

    async def check_integrity(self) -> list[str]:
        """Problems found in the store; an empty list means it is sound."""
        problems: list[str] = []
        async with self._conn() as conn:
            if self.db.kind == "sqlite":
                rows = (await conn.execute(sa.text("PRAGMA integrity_check"))).all()
                problems += [f"sqlite: {r[0]}" for r in rows if r[0] != "ok"]
                rows = (await conn.execute(sa.text("PRAGMA foreign_key_check"))).all()
                problems += [f"foreign key broken in {r[0]} row {r[1]}" for r in rows]
            doubles = (
                await conn.execute(
                    sa.select(api_keys.c.workspace_id, api_keys.c.scope, sa.func.count())
                    .where(api_keys.c.state == "current")
                    .group_by(api_keys.c.workspace_id, api_keys.c.scope)
                    .having(sa.func.count() > 1)
                )
            ).all()
            problems += [
                f"workspace {r[0]} has {r[2]} current {r[1]} keys (at most one allowed)"
                for r in doubles
            ]
            orphans = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(api_keys.outerjoin(workspaces))
                    .where(workspaces.c.id.is_(None))
                )
            ).scalar()
            if orphans:
                problems.append(f"{orphans} keys belong to no workspace")
            bad_state = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(api_keys)
                    .where(api_keys.c.state.not_in(("current", "replaced", "revoked")))
                )
            ).scalar()
            if bad_state:
                problems.append(f"{bad_state} keys have an unknown state")
            bad_role = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(operator_tokens)
                    .where(operator_tokens.c.role.not_in(ROLES))
                )
            ).scalar()
            if bad_role:
                problems.append(f"{bad_role} operator tokens have an unknown role")
            problems += await audit_sql.check(conn)
        return problems

    # -- bulk seeding (benchmarks, load tests) -----------------------------------------------

    async def seed_workspaces(
        self,
        items: Sequence[tuple[Workspace, ApiKey, bytes]],
        *,
        audit: AuditContext | None = None,
    ) -> None:
        """Insert workspaces, each with its current key, in one transaction.

        For ``moeconnect seed``: no change-feed rows, since no server can have cached a
        workspace that did not exist. Plain driver-level ``executemany`` because per-row
        SQLAlchemy type processing would dominate at a million rows. One audit entry per
        batch (``workspace.seed``, at the batch's creation time), not one per workspace.
        """
        if not items:
            return
        async with self._conn(write=True) as conn:
            dialect = conn.dialect
            mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
            marks = [f"${i}" for i in range(1, 9)] if mark is None else [mark] * 8
            if dialect.name == "sqlite":
                # Random IDs touch pages all over the B-trees; a bigger page cache for this
                # connection keeps a million-row seed from thrashing the disk.
                await conn.exec_driver_sql("PRAGMA cache_size=-262144")

            converted: dict[datetime, Any] = {}  # a batch shares a handful of timestamps
            convert = _driver_datetime(dialect)

            def when(moment: datetime) -> Any:
                found = converted.get(moment)
                if found is None:
                    found = converted[moment] = convert(moment)
                return found

            # Only placeholders are interpolated into these statements.
            ws_cols = "id, name, dc, status, created_at, updated_at"
            key_cols = "id, workspace_id, scope, digest, hint, origin, state, created_at"
            ws_vals, key_vals = ", ".join(marks[:6]), ", ".join(marks[:8])
            insert_workspaces = f"INSERT INTO workspaces ({ws_cols}) VALUES ({ws_vals})"  # noqa: S608
            insert_keys = f"INSERT INTO api_keys ({key_cols}) VALUES ({key_vals})"  # noqa: S608
            await conn.exec_driver_sql(
                insert_workspaces,
                [
                    (ws.id, ws.name, ws.dc, ws.status, when(ws.created_at), when(ws.updated_at))
                    for ws, _, _ in items
                ],
            )
            await conn.exec_driver_sql(
                insert_keys,
                [
                    (
                        key.id,
                        key.workspace_id,
                        key.scope,
                        digest,
                        key.hint,
                        key.origin,
                        "current",
                        when(key.created_at),
                    )
                    for _, key, digest in items
                ],
            )
            first = items[0][0]
            await audit_sql.append(
                conn,
                audit or _LIBRARY,
                "workspace.seed",
                at=first.created_at,
                after={"workspaces": len(items), "dc": first.dc, "first": first.id},
            )
