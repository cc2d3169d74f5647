"""The SQLite store's files are private: the database, its -wal and -shm are created 0600.

They hold key digests, operator-token digests and the connection record (client addresses):
nothing another local user should read. Under the usual umask (022) they were created 0644.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from moeconnect.store import SQLStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_files_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "data" / "moeconnect.db"

    async def go() -> dict[str, int]:
        store = SQLStore(f"sqlite:///{path}")
        try:
            await store.migrate()
            await store.create_workspace("ws", "W", "01")
            # While connections are open, the WAL and the shared-memory index exist.
            return {p.name: _mode(p) for p in path.parent.iterdir()}
        finally:
            await store.close()

    previous = os.umask(0o022)
    try:
        modes = asyncio.run(go())
    finally:
        os.umask(previous)
    assert {"moeconnect.db", "moeconnect.db-wal", "moeconnect.db-shm"} <= set(modes), modes
    assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    """The operator's choice stands: only a file the store creates is made 0600."""
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    path.chmod(0o640)

    async def go() -> None:
        store = SQLStore(f"sqlite:///{path}")
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(go())
    assert _mode(path) == 0o640
