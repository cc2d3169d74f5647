"""Must-show 6: the store unreachable mid-run answers 503 STORE_UNAVAILABLE, never 401.

A partner who reads 401 tells the customer their key is wrong; when the server can't reach its
store the credentials were simply not checked. Each test starts a server on a working SQLite
file, breaks the file while the server runs, and sends requests that would otherwise succeed or
fail on credentials.

Making the file *unreadable* with ``chmod 000`` proves nothing here: the tests run as root, and
root reads any file regardless of its mode. Removing the file and replacing it with something
that is not a database are the honest ways to take the store away.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from moeconnect.testing import MoeconnectServer

from ..openapi_check import assert_response_matches
from .wire import NO_LIMITS, assert_failure, assert_success, attempt


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    """One server for the module, its database in ``data/``; each test breaks the store and
    puts the original file back, which also shows the server recovers."""
    workdir = tmp_path_factory.mktemp("outage")
    (workdir / "data").mkdir()
    db_url = f"sqlite:///{workdir / 'data' / 'moeconnect.db'}"
    with MoeconnectServer(workdir=workdir, db_url=db_url, env=NO_LIMITS) as server:
        yield server


def _db(server: MoeconnectServer) -> Path:
    return server.workdir / "data" / "moeconnect.db"


def _assert_recovered(server: MoeconnectServer, workspace_id: str, key: str) -> None:
    assert httpx.get(server.base_url + "/readyz").status_code == 200
    assert_success(attempt(server.base_url, workspace_id, key), "Outage")
    assert server.process is not None and server.process.poll() is None


def _assert_store_unavailable(server: MoeconnectServer, requests: list[tuple[str, str]]) -> None:
    """Every request 503 STORE_UNAVAILABLE with Retry-After, and /readyz 503 too."""
    for workspace_id, key in requests:
        response = attempt(server.base_url, workspace_id, key)
        assert response.status_code != 401, response.text
        error = assert_failure(response, 503, "STORE_UNAVAILABLE")
        assert "retry in 5 seconds" in error["message"]
        assert response.headers["retry-after"] == "5"
    ready = httpx.get(server.base_url + "/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "store": "unreachable"}
    assert int(ready.headers["retry-after"]) > 0
    assert_response_matches(ready)
    health = httpx.get(server.base_url + "/healthz")  # the process itself is alive
    assert health.status_code == 200
    assert_response_matches(health)


def _requests(server: MoeconnectServer) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    """Credentials of every kind, one of them cached by the server as a failure."""
    wid, key = server.workspace_with_key("Outage")
    other_wid, other_key = server.workspace_with_key("Never asked")
    assert_failure(attempt(server.base_url, wid, "a-wrong-key"), 401, "KEY_MISMATCH")
    assert httpx.get(server.base_url + "/readyz").status_code == 200
    return [
        (other_wid, other_key),  # valid, never seen by the server
        (wid, "a-wrong-key"),  # wrong key for a workspace the server has cached
        (wid, "another-wrong-key"),
        ("NO-SUCH-WORKSPACE", "some-key-123"),  # would be WORKSPACE_NOT_FOUND
    ], (wid, key)


def test_database_file_removed(running: MoeconnectServer) -> None:
    requests, (wid, key) = _requests(running)
    db = _db(running)
    keep = db.with_name("kept.db")
    keep.hardlink_to(db)  # only so the test can put the very same file back afterwards
    db.unlink()
    _assert_store_unavailable(running, requests)
    assert not db.exists()  # the server did not quietly create an empty store in its place
    keep.rename(db)
    _assert_recovered(running, wid, key)


def _set_aside(db: Path) -> list[tuple[Path, Path]]:
    """Move the database and its -wal/-shm aside together (the WAL may hold the newest rows; a
    WAL left beside a foreign file can be reset by whoever opens it)."""
    moved = []
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if path.exists():
            kept = path.with_name("kept-" + path.name)
            path.rename(kept)
            moved.append((path, kept))
    return moved


def _put_back(moved: list[tuple[Path, Path]]) -> None:
    for path, _ in moved:
        path.unlink(missing_ok=True)
    db = moved[0][0]
    for stray in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        stray.unlink(missing_ok=True)
    for path, kept in moved:
        kept.rename(path)


def test_database_file_replaced_by_a_non_database(running: MoeconnectServer) -> None:
    requests, (wid, key) = _requests(running)
    db = _db(running)
    moved = _set_aside(db)
    garbage = db.with_name("garbage")
    garbage.write_bytes(b"this is not an SQLite database\n" * 200)
    garbage.replace(db)  # atomically, as a careless deploy script would
    _assert_store_unavailable(running, requests)
    _put_back(moved)
    _assert_recovered(running, wid, key)


def test_database_file_replaced_by_an_empty_file(running: MoeconnectServer) -> None:
    """SQLite opens an empty file as an empty database: no tables, so still no store."""
    requests, (wid, key) = _requests(running)
    db = _db(running)
    moved = _set_aside(db)
    db.touch()
    _assert_store_unavailable(running, requests)
    with sqlite3.connect(db) as conn:  # the server did not create a schema in it behind our back
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    _put_back(moved)
    _assert_recovered(running, wid, key)


def test_database_directory_removed(running: MoeconnectServer) -> None:
    requests, (wid, key) = _requests(running)
    folder = _db(running).parent
    folder.rename(folder.with_name("data-moved"))
    _assert_store_unavailable(running, requests)
    folder.with_name("data-moved").rename(folder)
    _assert_recovered(running, wid, key)
