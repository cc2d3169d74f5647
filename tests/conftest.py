"""Shared fixtures: a clean environment, real servers on free ports, throwaway databases."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from moeconnect.testing import MoeconnectServer

from . import services


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials or settings in a developer's shell must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("MOECONNECT_") and name not in (
            "MOECONNECT_REQUIRE_SERVICES",
            "MOECONNECT_TEST_PG",
            "MOECONNECT_TEST_REDIS",
            "MOECONNECT_TEST_THROWAWAY",
        ):
            monkeypatch.delenv(name)
        if name == "MOE_DATA_API_KEY":
            monkeypatch.delenv(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'moeconnect.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(services.postgres_url())
    name = "moeconnect_" + secrets.token_hex(6)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(
            host=base.host, port=base.port, user=base.username, database=base.database
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_url() -> str:
    return services.redis_url()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MoeconnectServer]:
    """A real moeconnect server (DC 01) on a free port with its own SQLite database."""
    with MoeconnectServer(workdir=tmp_path) as running:
        yield running
