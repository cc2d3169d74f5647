"""Migrations 0002-0005 make exactly the connection record's tables that ``schema.py`` defines."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from moeconnect.store import open_store
from moeconnect.store.schema import metadata
from moeconnect.store.urls import DatabaseURL


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


def test_migrated_table_matches_schema(db_url: str) -> None:
    def inspect(conn: sa.Connection) -> tuple[list[Any], set[str], list[Any]]:
        diff: list[Any] = compare_metadata(MigrationContext.configure(conn), metadata)
        inspector = sa.inspect(conn)
        indexes = {str(i["name"]) for i in inspector.get_indexes("connection_attempts")}
        staged = [
            *inspector.get_indexes("connection_attempts_staged"),
            *inspector.get_unique_constraints("connection_attempts_staged"),
        ]
        return diff, indexes, staged

    async def go() -> tuple[list[Any], set[str], list[Any]]:
        store = open_store(db_url)
        await store.migrate()
        await store.close()
        engine = create_async_engine(DatabaseURL.parse(db_url).async_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(inspect)
        finally:
            await engine.dispose()

    diff, indexes, staged = asyncio.run(go())
    assert [d for d in diff if "connection_attempts" in repr(d)] == []
    # One index only: every failed attempt pays for each one (migrations 0003 and 0005).
    named = {i for i in indexes if i.startswith("ix_")}
    assert named == {"ix_attempts_workspace_time"}
    # Failed attempts are staged in a table with none at all (migration 0004).
    assert staged == []


def test_downgrade_below_staging_keeps_the_staged_rows(db_url: str) -> None:
    """Migration 0004 undone: failed attempts still staged move into the record first."""
    from alembic import command

    from moeconnect.store.base import AttemptRow
    from moeconnect.store.migrate import alembic_config

    at = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    staged = [
        AttemptRow(
            at,
            at,
            at,
            f"req{i}",
            "W1",
            "01",
            "tool",
            "KEY_MISMATCH",
            None,
            False,
            "10.0.0.1",
            "pytest",
            1,
            None,
        )
        for i in range(3)
    ]

    async def go() -> tuple[int, bool]:
        store = open_store(db_url)
        await store.migrate()
        await store.add_attempts(staged)
        store._staged = 0  # type: ignore[attr-defined]  # as if staged by another process:
        await store.close()  # close() leaves them staged
        engine = create_async_engine(DatabaseURL.parse(db_url).async_url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0003"))
            async with engine.connect() as conn:
                count = sa.text("SELECT count(*) FROM connection_attempts")
                kept = (await conn.execute(count)).scalar()
                tables = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        finally:
            await engine.dispose()
        return int(kept or 0), "connection_attempts_staged" in tables

    assert asyncio.run(go()) == (3, False)
