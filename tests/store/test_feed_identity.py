"""The change watcher tells a rewritten feed from the one it follows, and only then starts over.

Real stores on SQLite files, a real cache and watcher, polled by hand. The server-level proofs
(a backup restored under a running server, a file recreated, pg_restore) are in
tests/scale/test_restore.py; these pin the cases between them: a restored change that reuses
the very ID the watcher applied last, another store's feed, and no false alarm on a long feed.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from moeconnect.cache import ChangeWatcher, CredentialCache
from moeconnect.records import WorkspaceCredentials
from moeconnect.store import SQLStore


def _copy(source: Path, target: Path) -> None:
    """SQLite's online backup API, into a file other connections have open."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _cached(cache: CredentialCache, workspace_id: str) -> None:
    cache.put(WorkspaceCredentials(workspace_id, "W", "01", "active", ()))


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


async def _store(path: Path) -> SQLStore:
    store = SQLStore(f"sqlite:///{path}")
    await store.migrate()
    return store


def test_a_restored_change_under_the_id_applied_last_is_seen(tmp_path: Path) -> None:
    """The backup ends at change 3; the watcher applied 1-4; after the restore, a revocation
    gets ID 4 again. Same epoch, the same ID: only its stamp tells it apart."""
    live, backup = tmp_path / "live.db", tmp_path / "backup.db"

    async def body() -> None:
        store = await _store(live)
        try:
            for wid in ("a", "b", "c"):
                await store.create_workspace(wid, wid.upper(), "01")
            _copy(live, backup)
            await store.create_workspace("d", "D", "01")
            cache = CredentialCache()
            watcher = ChangeWatcher(store, cache)
            await watcher.poll_once()
            assert watcher.last_id == 4 and watcher.epoch is not None
            _cached(cache, "a")
            _copy(backup, live)
            await store.rename_workspace("a", "A again")  # change 4, a second time
            assert await store.last_change_id() == 4
            await watcher.poll_once()
            assert watcher.restarts == 1
            assert cache.get("a") is None
            # Followed afresh: the next change is applied as usual, with no further restart.
            _cached(cache, "b")
            await store.rename_workspace("b", "B again")
            assert await watcher.poll_once() == 1
            assert cache.get("b") is None and watcher.restarts == 1
        finally:
            await store.close()

    _run(body)


def test_another_stores_feed_is_told_by_its_epoch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another store copied over this one: a new epoch, whatever its change IDs."""
    live, other = tmp_path / "live.db", tmp_path / "other.db"

    async def body() -> None:
        store = await _store(live)
        second = await _store(other)
        try:
            await store.create_workspace("a", "A", "01")
            for wid in ("x", "y", "z"):
                await second.create_workspace(wid, wid.upper(), "01")
            cache = CredentialCache()
            watcher = ChangeWatcher(store, cache)
            await watcher.poll_once()
            epoch = watcher.epoch
            _cached(cache, "a")
            _copy(other, live)
            with caplog.at_level(logging.WARNING, "moeconnect.cache"):
                await watcher.poll_once()
            assert watcher.restarts == 1 and watcher.epoch not in (None, epoch)
            assert cache.get("a") is None
            assert "epoch changed" in caplog.text
        finally:
            await second.close()
            await store.close()

    _run(body)


def test_a_long_feed_read_in_pages_and_windows_never_looks_rewritten(tmp_path: Path) -> None:
    """Hundreds of changes between polls, more than the re-read window, some polls with
    nothing new: never a restart, every change applied."""
    path = tmp_path / "live.db"

    async def body() -> None:
        store = await _store(path)
        try:
            await store.create_workspace("w", "W", "01")
            cache = CredentialCache()
            watcher = ChangeWatcher(store, cache)
            watcher.WINDOW = 16  # a small window: the bursts below outrun it without hundreds
            await watcher.start()
            await watcher.stop()  # polled by hand below; start() read the feed's end
            for burst in (1, watcher.WINDOW + 10, 0, 3, 3 * watcher.WINDOW):
                for i in range(burst):
                    await store.rename_workspace("w", f"W {i}")
                _cached(cache, "w")
                await watcher.poll_once()
                assert (cache.get("w") is None) == (burst > 0)
                assert watcher.last_id == await store.last_change_id()
            assert watcher.restarts == 0
        finally:
            await store.close()

    _run(body)


def test_every_store_has_its_own_epoch(tmp_path: Path) -> None:
    async def body() -> None:
        epochs = set()
        for name in ("one.db", "two.db"):
            store = await _store(tmp_path / name)
            try:
                await store.migrate()  # again: a no-op, the epoch stays
                page = await store.read_feed(0, 0)
                assert page.epoch and page.changes == []
                assert page.anchor is None and page.last is None
                epochs.add(page.epoch)
                assert (await store.read_feed(0, 0)).epoch == page.epoch
                await store.create_workspace("w", "W", "01")
                page = await store.read_feed(0, 1)
                assert page.changes == [(1, "w")]
                assert page.last is not None and page.anchor == page.last
                assert (await store.read_feed(0, 2)).anchor is None  # no change 2
            finally:
                await store.close()
        assert len(epochs) == 2

    _run(body)


def test_reads_after_a_start_over_are_cached_again(tmp_path: Path) -> None:
    """The clear refuses only reads begun before it: a read after the restart is cached."""
    live, backup = tmp_path / "live.db", tmp_path / "backup.db"

    async def body() -> None:
        store = await _store(live)
        try:
            await store.create_workspace("a", "A", "01")
            _copy(live, backup)
            await store.create_workspace("b", "B", "01")
            cache = CredentialCache()
            watcher = ChangeWatcher(store, cache)
            await watcher.poll_once()
            _copy(backup, live)
            await watcher.poll_once()
            assert watcher.restarts == 1
            record = await store.credentials("a")
            assert record is not None
            cache.put(record)
            assert cache.get("a") is not None
            assert await store.credentials("b") is None  # the restored store has no b
        finally:
            await store.close()

    _run(body)


def test_stamps_are_the_changes_own(tmp_path: Path) -> None:
    """Two changes made a moment apart have different stamps (what the check relies on)."""

    async def body() -> None:
        store = await _store(tmp_path / "s.db")
        try:
            await store.create_workspace("w", "W", "01")
            await store.rename_workspace("w", "W2")
            stamps = [(await store.read_feed(0, i)).anchor for i in (1, 2)]
            assert len(set(map(str, stamps))) == 2
            assert all(str(datetime.now(UTC).year) in str(s) for s in stamps)
        finally:
            await store.close()

    _run(body)
