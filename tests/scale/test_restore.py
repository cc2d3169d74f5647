"""A store restored from a backup, or recreated, under a running server: revocations still arrive.

The change watcher once remembered only the highest change ID it had applied. A restored backup
hands out lower IDs again, so a key revoked after the restore got an ID the watcher had already
applied (or one below its window), and the server kept accepting the key from its cache for
ever: 200 at +60 s (issue 22, item 8). SPEC section 9: the feed survives a restored or recreated
store, and a revocation after it reaches every instance within 1 s.

Each test runs a real server (a subprocess) and changes its store from outside, as an operator
would: SQLite's online backup API, ``pg_dump``/``pg_restore``, deleting the file and running
``moeconnect db upgrade``.
"""

from __future__ import annotations

import glob
import secrets
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from moeconnect.testing import MoeconnectServer

from .. import services
from .helpers import NO_LIMITS, PATH, code_of, request_kwargs

pytestmark = pytest.mark.slow

DEADLINE = 1.0  # SPEC section 9: a revocation after a restore reaches every instance within 1 s
WAIT = 5.0  # how long a test waits for the refusal at most (the old code never refuses)
POLLS = 0.25  # the change watcher's default poll interval
# How the endpoint refuses a key just revoked: the workspace has no Data key left.
REVOKED = ("KEY_REVOKED", "NO_DATA_KEY")


def _env() -> dict[str, str]:
    # A secret of its own, not the file beside the database: a recreated store keeps it.
    return {"MOECONNECT_SECRET": secrets.token_urlsafe(32), **NO_LIMITS}


def _answer(client: httpx.Client, workspace_id: str, key: str) -> tuple[int, str]:
    response = client.post(PATH, **request_kwargs(workspace_id, key))
    return response.status_code, code_of(response)


def _time_to(client: httpx.Client, workspace_id: str, key: str, *wanted: str) -> float:
    """Seconds until the server refuses ``(workspace_id, key)`` with 401 and one of the codes
    ``wanted``; inf if it doesn't within :data:`WAIT`."""
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < WAIT:
        status, code = _answer(client, workspace_id, key)
        if status == 401 and code in wanted:
            return elapsed
        time.sleep(0.02)
    return float("inf")


def _sqlite_copy(source: Path, target: Path) -> None:
    """Copy one SQLite database into another with the online backup API (what ``sqlite3
    .backup``/``.restore`` do): the target file is written in place, under its open
    connections."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _cached_and_applied(client: httpx.Client, *pairs: tuple[str, str]) -> None:
    """Each pair answers 200 (so the server caches it), and the watcher had time to apply
    every change made so far."""
    for workspace_id, key in pairs:
        assert _answer(client, workspace_id, key) == (200, "SUCCESS")
    time.sleep(4 * POLLS)


def test_sqlite_backup_restored_under_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        MoeconnectServer(workdir=tmp_path, env=_env()) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as client,
    ):
        live = Path(server.db_url.removeprefix("sqlite:///"))
        kept = server.workspace_with_key("In the backup")
        backup = tmp_path / "backup.db"
        _sqlite_copy(live, backup)
        # Made after the backup, applied by the server: the restore hands their IDs out again.
        lost = server.workspace_with_key("Not in the backup")
        for i in range(3):
            server.workspace_with_key(f"Also not in the backup {i}")
        _cached_and_applied(client, kept, lost)

        _sqlite_copy(backup, live)
        server.revoke_key(kept[0])
        revoked = _time_to(client, *kept, *REVOKED)
        # What the restore took away is gone from the cache too.
        gone = _time_to(client, *lost, "WORKSPACE_NOT_FOUND")
        with capsys.disabled():
            print(f"\n[restore sqlite] revoked key refused after {revoked:.2f} s, "
                  f"workspace not in the backup refused after {gone:.2f} s")  # fmt: skip
        assert revoked <= DEADLINE, server.logs()[-3000:]
        assert gone <= DEADLINE
        assert "every cached credential dropped" in server.logs()


def test_sqlite_file_deleted_and_recreated_under_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        MoeconnectServer(workdir=tmp_path, env=_env()) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as client,
    ):
        live = Path(server.db_url.removeprefix("sqlite:///"))
        workspace_id, key = server.workspace_with_key("Recreated")
        for i in range(3):
            server.workspace_with_key(f"Other {i}")
        _cached_and_applied(client, (workspace_id, key))

        for path in (live, live.with_name(live.name + "-wal"), live.with_name(live.name + "-shm")):
            path.unlink(missing_ok=True)
        upgraded = server.cli("db", "upgrade", "--db", server.db_url)
        assert upgraded.returncode == 0, upgraded.stderr
        # The same workspace and key again, in the new store: change IDs 1 and 2.
        server.create_workspace("Recreated", workspace_id=workspace_id)
        server.import_key(workspace_id, key)
        time.sleep(2 * POLLS)
        assert _answer(client, workspace_id, key) == (200, "SUCCESS")
        server.revoke_key(workspace_id)
        revoked = _time_to(client, workspace_id, key, *REVOKED)
        with capsys.disabled():
            print(f"\n[recreate sqlite] revoked key refused after {revoked:.2f} s")
        assert revoked <= DEADLINE, server.logs()[-3000:]


def _pg_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


@pytest.mark.postgres
def test_postgres_pg_restore_under_a_running_server(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump, restore = _pg_tool("pg_dump"), _pg_tool("pg_restore")
    services.need_tool(dump is not None and restore is not None, "needs pg_dump and pg_restore")

    def run(*args: str) -> None:
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr

    with (
        MoeconnectServer(db_url=pg_url, workdir=tmp_path, env=_env()) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as client,
    ):
        kept = server.workspace_with_key("In the backup")
        backup = tmp_path / "backup.dump"
        run(dump, "--format=custom", f"--file={backup}", pg_url)
        lost = server.workspace_with_key("Not in the backup")
        for i in range(3):
            server.workspace_with_key(f"Also not in the backup {i}")
        _cached_and_applied(client, kept, lost)

        # The documented restore (docs/operations.md): one transaction, tables dropped and made
        # again, sequences set back to the backup's values.
        run(restore, "--clean", "--if-exists", "--single-transaction", "--no-owner",
            f"--dbname={pg_url}", str(backup))  # fmt: skip
        server.revoke_key(kept[0])
        revoked = _time_to(client, *kept, *REVOKED)
        gone = _time_to(client, *lost, "WORKSPACE_NOT_FOUND")
        with capsys.disabled():
            print(f"\n[restore postgres] revoked key refused after {revoked:.2f} s, "
                  f"workspace not in the backup refused after {gone:.2f} s")  # fmt: skip
        assert revoked <= DEADLINE, server.logs()[-3000:]
        assert gone <= DEADLINE
