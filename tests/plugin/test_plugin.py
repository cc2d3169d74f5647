"""The pytest plugin's fixtures and helpers, used from this suite as a partner's suite would."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx

import moeconnect.testing as testing
from moeconnect.client import Client
from moeconnect.testing import MoeconnectServer, ServerFactory, WorkspaceKey


def call(ws: WorkspaceKey, key: str | None = None, dc: str = "01") -> tuple[int, str]:
    """Status and outcome code of one Test Connection call with ``ws``'s (or another) key."""
    with Client(max_attempts=1) as client:
        result = client.test_connection(ws.workspace_id, key or ws.key, dc=dc, base_url=ws.base_url)
    return result.status or 0, result.code


def test_importing_the_plugin_is_cheap() -> None:
    """It loads in every pytest run of anyone who installs moeconnect: no store, no httpx."""
    probe = (
        "import sys, pytest; before = set(sys.modules); import moeconnect.testing;"
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(run.stdout.split())
    assert loaded <= {"moeconnect", "moeconnect.testing"}, loaded


def test_exports_are_sorted() -> None:
    assert testing.__all__ == sorted(testing.__all__, key=lambda n: (not n.isupper(), n))


def test_the_class_keeps_its_earlier_api() -> None:
    """The team's own tests use these names: the plugin work only adds to them."""
    server = MoeconnectServer(dc="01")
    try:
        for name in [
            *("start", "stop", "close", "logs", "run", "wait_ready", "command", "cli"),
            *("create_workspace", "generate_key", "import_key", "revoke_key"),
            *("suspend", "resume", "workspace_with_key"),
            *("base_url", "env", "db_url", "dc", "host", "port", "workdir", "log_path"),
        ]:
            assert hasattr(server, name), name
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert server.process is None
    finally:
        server.close()
    assert callable(testing.free_port)


def test_workspace_fixture_is_fresh_and_hides_its_key(
    moeconnect_server: MoeconnectServer, moeconnect_workspace: WorkspaceKey
) -> None:
    ws = moeconnect_workspace
    assert ws.key not in repr(ws)
    assert ws.name == "test_workspace_fixture_is_fresh_and_hides_its_key"
    assert ws.base_url == moeconnect_server.base_url
    assert ws.endpoint == moeconnect_server.endpoint
    assert call(ws) == (200, "SUCCESS")
    other = moeconnect_server.new_workspace()
    assert other.workspace_id != ws.workspace_id


def test_the_session_server_is_shared(moeconnect_server: MoeconnectServer) -> None:
    response = httpx.get(moeconnect_server.base_url + "/healthz")
    assert response.status_code == 200


def test_rotate_with_grace_then_without(
    moeconnect_server: MoeconnectServer, moeconnect_workspace: WorkspaceKey
) -> None:
    ws = moeconnect_workspace
    second = moeconnect_server.rotate_key(ws.workspace_id, grace=timedelta(hours=1))
    assert call(ws) == (200, "SUCCESS")  # still in its grace period
    assert call(ws, second) == (200, "SUCCESS")
    third = moeconnect_server.rotate_key(ws.workspace_id, grace=0)
    assert call(ws, second) == (401, "KEY_REVOKED")
    assert call(ws, third) == (200, "SUCCESS")


def test_revoke_suspend_resume_and_imported_keys(moeconnect_server: MoeconnectServer) -> None:
    ws = moeconnect_server.new_workspace("Imported", key="fixture-key-0001")
    assert ws.key == "fixture-key-0001"
    assert call(ws) == (200, "SUCCESS")
    moeconnect_server.suspend(ws.workspace_id)
    assert call(ws) == (403, "WORKSPACE_SUSPENDED")
    moeconnect_server.resume(ws.workspace_id)
    assert call(ws) == (200, "SUCCESS")
    moeconnect_server.revoke_key(ws.workspace_id)
    assert call(ws) == (401, "NO_DATA_KEY")


def test_factory_starts_one_server_per_setting(moeconnect_server_factory: ServerFactory) -> None:
    factory = moeconnect_server_factory
    both = factory(dc="01,02")
    assert factory(dc="01,02") is both
    eu = both.create_workspace("EU", dc="02")
    key = both.generate_key(eu.id, grace="1h")
    ws = WorkspaceKey(eu.id, key, eu.name, eu.dc, both.base_url)
    # No api-02 Host header: the server serves its first DC, and says where the workspace lives.
    status, code = call(ws, dc="01")
    assert (status, code) == (401, "WORKSPACE_IN_OTHER_DC")


def test_every_fixture_and_helper_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "testing-your-integration.md").read_text()
    for fixture in ("moeconnect_server", "moeconnect_workspace", "moeconnect_server_factory"):
        assert f"`{fixture}`" in doc, fixture
    for helper in (
        "new_workspace",
        "create_workspace",
        "generate_key",
        "rotate_key",
        "import_key",
        "revoke_key",
        "suspend",
        "resume",
        "cli",
    ):
        assert f"`{helper}(" in doc, helper
