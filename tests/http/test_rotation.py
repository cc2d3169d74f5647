"""Must-show 4: rotation with the CLI while the server runs the whole time.

``moeconnect key generate`` on a workspace that already has a key: the old key answers
KEY_REVOKED with the date it was replaced, the new key succeeds. The CLI is a separate process
writing the same SQLite store; the server learns of the change through the store's change feed
(and re-reads the store on any failure), so the tests poll with a short deadline instead of
sleeping.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest

from moeconnect.testing import MoeconnectServer

from .wire import NO_LIMITS, assert_failure, assert_success, attempt, eventually


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    with MoeconnectServer(workdir=tmp_path_factory.mktemp("rotation"), env=NO_LIMITS) as running:
        yield running


def _cli_ok(srv: MoeconnectServer, *args: str, input: str | None = None) -> str:
    result = srv.cli(*args, input=input)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_key_generate_rotates_at_once_on_a_running_server(srv: MoeconnectServer) -> None:
    pid = srv.process.pid if srv.process else None
    wid, old = srv.workspace_with_key("Rotating")
    assert_success(eventually(lambda: attempt(srv.base_url, wid, old), 200), "Rotating")
    for _ in range(3):  # the old key is now in the server's cache as a success
        assert_success(attempt(srv.base_url, wid, old), "Rotating")

    before = datetime.now(UTC)
    rotated = orjson.loads(_cli_ok(srv, "key", "generate", wid, "--json"))
    new = rotated["key"]
    assert new != old
    assert rotated["previous_key_expires_at"] is not None  # the old key ended, just now

    response = eventually(lambda: attempt(srv.base_url, wid, old), 401, within=3.0)
    error = assert_failure(response, 401, "KEY_REVOKED")
    stamp = re.search(r"replaced on (\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC", error["message"])
    assert stamp, error["message"]
    replaced_at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert abs((replaced_at - before).total_seconds()) < 120
    assert "use the current key" in error["message"]
    assert_success(attempt(srv.base_url, wid, new), "Rotating")

    # The old key keeps failing (it never comes back from a cache), the new one keeps working.
    for _ in range(5):
        assert_failure(attempt(srv.base_url, wid, old), 401, "KEY_REVOKED")
        assert_success(attempt(srv.base_url, wid, new), "Rotating")
    assert srv.process is not None and srv.process.poll() is None and srv.process.pid == pid


def test_a_key_two_rotations_ago_is_still_reported_as_replaced(srv: MoeconnectServer) -> None:
    wid, first = srv.workspace_with_key("Twice")
    srv.generate_key(wid)
    third = _cli_ok(srv, "key", "generate", wid).strip()
    assert_failure(attempt(srv.base_url, wid, first), 401, "KEY_REVOKED")
    assert_success(attempt(srv.base_url, wid, third), "Twice")


def test_cli_revoke_on_a_running_server(srv: MoeconnectServer) -> None:
    wid, key = srv.workspace_with_key("Revoking")
    assert_success(attempt(srv.base_url, wid, key), "Revoking")
    _cli_ok(srv, "key", "revoke", wid)
    response = eventually(lambda: attempt(srv.base_url, wid, key), 401, within=3.0)
    assert_failure(response, 401, "NO_DATA_KEY")
    srv.import_key(wid, "imported-fixture-key-1")
    assert_success(attempt(srv.base_url, wid, "imported-fixture-key-1"), "Revoking")
    error = assert_failure(attempt(srv.base_url, wid, key), 401, "KEY_REVOKED")
    assert "revoked on" in error["message"]
