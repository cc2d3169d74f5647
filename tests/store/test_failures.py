"""Connection-level database errors are StoreUnavailable (503), whatever class SQLAlchemy gives.

asyncpg's errors for a server that refuses or drops connections arrive as SQLAlchemy's plain
``DBAPIError`` (not ``OperationalError``), and a connection lost mid-transaction then raises
``PendingRollbackError``: both once escaped the store as 500s (issue 22, item 7). These tests make
PostgreSQL itself raise them, on a database of the shared server.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from moeconnect.store import Conflict, SQLStore, StoreUnavailable
from moeconnect.store.failures import describe, sqlstate, store_error

pytestmark = pytest.mark.postgres


async def _admin(url: str, sql: str) -> None:
    """Run ``sql`` on the server's maintenance database (the one the fixture came from)."""
    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database="postgres"
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_a_database_refusing_connections_is_unavailable(pg_url: str) -> None:
    """A refusal at connect time (here SQLSTATE 55000, "not currently accepting connections";
    while PostgreSQL starts up, 57P03) is a plain DBAPIError: StoreUnavailable, then recovery."""
    name = make_url(pg_url).database

    async def go() -> None:
        store = SQLStore(pg_url)
        try:
            await store.migrate()
            await store.create_workspace("ws", "W", "01")
            await store._engine.dispose()  # the next operation must connect
            await _admin(pg_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                with pytest.raises(StoreUnavailable) as caught:
                    await store.get_workspace("ws")
                assert "SQLSTATE 55000" in str(caught.value)
                with pytest.raises(StoreUnavailable):
                    await store.create_workspace("ws2", "W2", "01")
            finally:
                await _admin(pg_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            workspace = await store.get_workspace("ws")
            assert workspace is not None and workspace.name == "W"
        finally:
            await store.close()

    asyncio.run(go())


def test_a_connection_terminated_mid_transaction_is_unavailable(pg_url: str) -> None:
    """``AdminShutdown`` (57P01, what ``pg_ctl stop -m fast`` sends every backend) inside a
    write: StoreUnavailable, the transaction's change never announced, the store usable after."""

    async def go() -> None:
        store = SQLStore(pg_url)
        announced: list[str] = []
        store.add_change_listener(announced.extend)
        try:
            await store.migrate()
            with pytest.raises(StoreUnavailable):
                async with store._conn(write=True) as conn:
                    await store._record_change(conn, "ws", datetime.now(UTC))
                    await conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
            assert announced == []
            await store.create_workspace("ws", "W", "01")
            assert announced == ["ws"]
        finally:
            await store.close()

    asyncio.run(go())


def test_store_error_maps_by_class() -> None:
    """Every DBAPIError but a broken constraint is unavailable; a bug is let through."""
    refused = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    wrapped = sa_exc.DBAPIError("SELECT 1", None, refused)
    mapped = store_error(wrapped)
    assert isinstance(mapped, StoreUnavailable)
    assert sqlstate(wrapped) == "57P03"
    assert "57P03" in describe(wrapped) and "starting up" in describe(wrapped)
    assert isinstance(
        store_error(sa_exc.IntegrityError("INSERT", None, ValueError("dup"))), Conflict
    )
    assert isinstance(store_error(sa_exc.PendingRollbackError("rollback first")), StoreUnavailable)
    assert isinstance(store_error(sa_exc.TimeoutError("pool")), StoreUnavailable)
    assert isinstance(store_error(ConnectionRefusedError(111, "refused")), StoreUnavailable)
    assert isinstance(store_error(asyncpg.exceptions.AdminShutdownError("bye")), StoreUnavailable)
    assert store_error(ValueError("a bug")) is None
    assert store_error(StoreUnavailable("already")) is None
