"""How the store's SQLite connections are set up, and threads with a connection of their own.

Every connection that writes to the store's file (SQLAlchemy's pool, the record's) gets the same
settings (:func:`apply_pragmas`): one that checkpointed at SQLite's default of 1,000 pages would
checkpoint on nearly every commit of the others' large WAL. The hot reader's only reads.

:class:`SQLiteThread` runs queries or transactions on one dedicated thread with one connection,
re-opened if the file is replaced: the hot reader's (``hotread.py``) and the record's. The
record stages every failed attempt through it (``SQLStore.add_attempts``): one hand-off per
batch, where SQLAlchemy's async layer took one per statement (BEGIN, each INSERT, COMMIT) plus
its own Python around each, ~2-3 µs per row of the server's only core in all (measured
standalone: 11.1-14.0 against 8.8-9.9 µs per row).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .base import Conflict, StoreUnavailable
from .urls import DatabaseURL

__all__ = [
    "SQLITE_CACHE_KIB",
    "SQLITE_PAGE_SIZE",
    "SQLITE_WAL_PAGES",
    "SQLiteThread",
    "apply_pragmas",
]

SQLITE_CACHE_KIB = 8 * 1024  # per connection (grown only as pages are read): RSS adds up
SQLITE_PAGE_SIZE = 8192  # bytes, for files this creates
SQLITE_WAL_PAGES = 16_384  # WAL frames between automatic checkpoints (128 MB of 8 KiB pages)

T = TypeVar("T")


def apply_pragmas(cursor: Any) -> None:
    """The settings of every connection to the store's file (a DB-API cursor)."""
    # Only a new, empty file takes it (before WAL mode is set; an existing store keeps its page
    # size, see docs/operations.md): each failed attempt's move rewrites a page of the record's
    # workspace index per workspace, and 8 KiB pages, holding twice the rows, cost the writer
    # 11.6-12.2 µs per refusal against 13.9-15.0 with 4 KiB.
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    # 8 MB of page cache (default 2 MB): the record's indexes outgrow 2 MB quickly, and every
    # page read past the cache is a pread() system call under load.
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    # Checkpoint after 16,384 pages (64 MB of 4 KiB pages, 128 MB of 8 KiB), not SQLite's 1,000:
    # each aggregate row of the record dirties ~4 pages at random places in its indexes, so a
    # 250-row batch filled the default WAL and every commit paid a checkpoint (random writes +
    # fsync). With 150,000 workspaces in use a row cost ~100 µs of the writer thread; with 64
    # MB, ~68 (a page rewritten many times is checkpointed once). The file is cut back after a
    # checkpoint, so it never holds more than that on disk for long.
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_PAGES}")
    cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_PAGES * SQLITE_PAGE_SIZE}")


class SQLiteThread:
    """One thread and one connection to the store's SQLite file: the hot reader's (``read_only``,
    for :meth:`query`) or the record's (for :meth:`transaction`)."""

    def __init__(self, db: DatabaseURL, name: str, *, read_only: bool = False) -> None:
        assert db.sqlite_path is not None
        self.db = db
        self.read_only = read_only
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name
        )
        self._conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None

    def _connection(self) -> sqlite3.Connection:
        current = self.db.sqlite_file_id()
        if current is None:
            self._close()
            raise StoreUnavailable(f"the database file {self.db.sqlite_path} is missing")
        if self._conn is None or current != self._file_id:
            self._close()
            conn = sqlite3.connect(
                f"file:{self.db.sqlite_path}?mode=rw",
                uri=True,
                timeout=5,
                isolation_level=None,  # transactions are this class's own BEGIN and COMMIT
                check_same_thread=False,
            )
            if self.read_only:
                conn.execute("PRAGMA busy_timeout=5000")
                conn.execute("PRAGMA query_only=ON")
            else:
                apply_pragmas(conn)
            self._conn, self._file_id = conn, current
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` in one write transaction, in this thread."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")  # the write lock now: never a deadlock later
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
        except sqlite3.IntegrityError as err:
            raise Conflict(str(err)) from None
        except (sqlite3.Error, OSError) as err:  # locked, I/O, a file gone bad: "unavailable"
            self._close()
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from None
        return result

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except (sqlite3.Error, OSError) as err:
            self._close()
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from None

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return work(self._connection())
        except (sqlite3.Error, OSError) as err:
            self._close()
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from None

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` on this thread, outside any transaction (several reads in one
        hand-off); errors mean "unavailable"."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    async def query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """The rows of one query, run on this thread; errors mean "unavailable"."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._query, sql, params)

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` in one write transaction on this thread; a failure rolls
        it back and surfaces as :class:`StoreUnavailable` (or :class:`Conflict`)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, work)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)
