"""Migrations 0002 and 0003 make exactly the ``connection_attempts`` table ``schema.py`` defines."""

from __future__ import annotations

import asyncio
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
    def inspect(conn: sa.Connection) -> tuple[list[Any], set[str]]:
        diff: list[Any] = compare_metadata(MigrationContext.configure(conn), metadata)
        indexes = {str(i["name"]) for i in sa.inspect(conn).get_indexes("connection_attempts")}
        return diff, indexes

    async def go() -> tuple[list[Any], set[str]]:
        store = open_store(db_url)
        await store.migrate()
        await store.close()
        engine = create_async_engine(DatabaseURL.parse(db_url).async_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(inspect)
        finally:
            await engine.dispose()

    diff, indexes = asyncio.run(go())
    assert [d for d in diff if "connection_attempts" in repr(d)] == []
    # Two indexes only: every failed attempt pays for each one (migration 0003).
    named = {i for i in indexes if i.startswith("ix_")}
    assert named == {"ix_attempts_workspace_time", "ix_attempts_last_at"}
