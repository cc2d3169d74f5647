"""Every store test runs against both backends: a SQLite file and a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from moeconnect.store import SQLStore

T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database on each backend in turn."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


def with_store(url: str, body: Callable[[SQLStore], Awaitable[T]]) -> T:
    """Run ``body(store)`` on a migrated store in one event loop, then close the store."""

    async def go() -> T:
        store = SQLStore(url)
        try:
            await store.migrate()
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(go())
