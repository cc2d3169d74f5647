"""A new SQLite store is created with 8 KiB pages; an older one keeps its own and still works."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from moeconnect.store import SQLStore
from moeconnect.store.sqlite_connection import SQLITE_PAGE_SIZE

from .conftest import with_store


def _page_size(url: str) -> int:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])


def test_a_new_store_has_8_kib_pages(sqlite_url: str) -> None:
    async def body(store: SQLStore) -> None:
        await store.create_workspace("w1", "One", "01")

    with_store(sqlite_url, body)
    assert SQLITE_PAGE_SIZE == 8192
    assert _page_size(sqlite_url) == 8192


def test_a_store_made_with_4_kib_pages_keeps_them_and_works(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
    url = f"sqlite:///{path}"

    async def body(store: SQLStore) -> str:
        await store.create_workspace("w1", "One", "01")
        found = await store.get_workspace("w1")
        assert found is not None
        return found.name

    assert with_store(url, body) == "One"
    assert _page_size(url) == 4096
