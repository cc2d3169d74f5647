"""The record through a real server: CLI output, trusted-proxy client IPs, aggregated 429s."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner, Result

from moeconnect.accounts import Accounts
from moeconnect.cli import cli
from moeconnect.record_views import attempt_json
from moeconnect.testing import MoeconnectServer

ENDPOINT = "/v1/integrations/authentication"


def attempt(
    server: MoeconnectServer,
    workspace_id: str,
    key: str,
    source: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.post(
        server.base_url + ENDPOINT,
        auth=(workspace_id, key),
        headers={"MOE-APPKEY": workspace_id, "User-Agent": "record-test/1.0", **(headers or {})},
        json={"app_id": workspace_id, "app_secret": key, "source": source, "region": "01"},
        timeout=10,
    )


def run_cli(server: MoeconnectServer, *args: str) -> Result:
    """The command in-process (a subprocess pays seconds of imports on a busy machine)."""
    return CliRunner().invoke(cli, [*args, "--db", server.db_url], catch_exceptions=False)


def cli_json(server: MoeconnectServer, *args: str) -> Any:
    result = run_cli(server, *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def wait_attempts(server: MoeconnectServer, workspace_id: str, total: int) -> list[dict[str, Any]]:
    """The workspace's record once ``total`` attempts are in it (read in-process: no CLI)."""

    async def read(accounts: Accounts) -> list[dict[str, Any]]:
        page = await accounts.store.list_attempts(workspace_id, limit=1000)
        return [attempt_json(r) for r in page.items]

    deadline = time.monotonic() + 15
    while True:
        rows = server.run(read)
        if sum(r["count"] for r in rows) >= total or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_log_and_sources_cli(server: MoeconnectServer) -> None:
    wid, key = server.workspace_with_key("CLI")
    for _ in range(3):
        assert attempt(server, wid, key, "etl").status_code == 200
    bad = attempt(server, wid, "wrong-key-value", "etl")
    assert bad.status_code == 401
    server.generate_key(wid)  # replaces the key etl used
    wait_attempts(server, wid, 4)
    rows = cli_json(server, "log", wid)["attempts"]
    assert [(r["outcome"], r["count"]) for r in rows] == [("KEY_MISMATCH", 1), ("SUCCESS", 3)]
    assert rows[0]["request_id"] == bad.headers["x-request-id"]
    assert rows[0]["user_agent"] == "record-test/1.0" and rows[0]["client_ip"] == "127.0.0.1"

    only = cli_json(server, "log", wid, "--outcome", "key_mismatch", "--since", "1h")["attempts"]
    assert [r["outcome"] for r in only] == ["KEY_MISMATCH"]

    summary = cli_json(server, "sources", wid)["sources"]
    assert len(summary) == 1
    etl = summary[0]
    assert etl["source"] == "etl" and etl["total"] == 4
    assert etl["counts"] == {"KEY_MISMATCH": 1, "SUCCESS": 3}
    assert etl["last_failure_code"] == "KEY_MISMATCH"
    assert etl["uses_replaced_key"] is True

    # Once as a real process, as people run it: the table on stdout, the warning on stderr.
    table = server.cli("sources", wid)
    assert table.returncode == 0 and "etl" in table.stdout and "KEY_MISMATCH" in table.stdout
    assert "still uses replaced key" in table.stderr
    assert "SUCCESS" in run_cli(server, "log", wid).stdout
    missing = run_cli(server, "log", "NO_SUCH_WORKSPACE")
    assert missing.exit_code == 1 and "no workspace has ID" in missing.stderr
    assert run_cli(server, "log", wid, "--since", "whenever").exit_code == 2


def test_client_ip_from_forwarded_for_only_behind_trusted_proxy(
    server: MoeconnectServer, tmp_path: Path
) -> None:
    spoof = {"X-Forwarded-For": "203.0.113.7"}
    wid, _ = server.workspace_with_key("Direct")
    attempt(server, wid, "wrong-key-value", "direct", spoof)
    rows = wait_attempts(server, wid, 1)
    assert rows[0]["client_ip"] == "127.0.0.1"  # nobody trusted: the header is ignored

    (tmp_path / "proxied").mkdir()
    with MoeconnectServer(
        workdir=tmp_path / "proxied", args=["--trusted-proxy", "127.0.0.1/32"]
    ) as proxied:
        wid, _ = proxied.workspace_with_key("Behind a proxy")
        attempt(proxied, wid, "wrong-key-value", "a", spoof)
        attempt(
            proxied, wid, "wrong-key-value", "b", {"X-Forwarded-For": "198.51.100.9, 127.0.0.1"}
        )
        attempt(proxied, wid, "wrong-key-value", "c", {"X-Forwarded-For": "not-an-ip"})
        rows = wait_attempts(proxied, wid, 3)
        by_source = {r["source"]: r["client_ip"] for r in rows}
        assert by_source == {"a": "203.0.113.7", "b": "198.51.100.9", "c": "unknown"}


def test_rate_limited_attempts_aggregate_per_ip_and_minute(tmp_path: Path) -> None:
    args = ["--limit-failed-per-workspace", "5/minute", "--limit-failed-per-ip", "off"]
    with MoeconnectServer(workdir=tmp_path, args=args) as server:
        wid, _ = server.workspace_with_key("Limited")
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            body = {"app_id": wid, "app_secret": "wrong-key-value", "source": "brute"}
            codes = [
                client.post(
                    ENDPOINT,
                    auth=(wid, "wrong-key-value"),
                    headers={"MOE-APPKEY": wid},
                    json={**body, "region": "01"},
                ).json()["error"]["code"]
                for _ in range(20)
            ]
        limited = codes.count("RATE_LIMITED")
        assert limited >= 10 and codes.count("KEY_MISMATCH") == 20 - limited
        rows = wait_attempts(server, wid, 20)
        rate_rows = [r for r in rows if r["outcome"] == "RATE_LIMITED"]
        assert sum(r["count"] for r in rate_rows) == limited
        assert 1 <= len(rate_rows) <= 2  # one per minute (the run may straddle a minute)
        assert all(r["aggregated"] and r["client_ip"] == "127.0.0.1" for r in rate_rows)
        mismatches = [r for r in rows if r["outcome"] == "KEY_MISMATCH"]
        assert len(mismatches) == 20 - limited and all(r["count"] == 1 for r in mismatches)


def test_record_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    env = {"MOECONNECT_SECRET": "a-shared-secret-for-this-test-only"}
    with MoeconnectServer(workdir=tmp_path, db_url=pg_url, env=env) as server:
        wid, key = server.workspace_with_key("On PostgreSQL")
        for i in range(12):
            attempt(server, wid, key if i % 3 else "wrong-key-value", f"tool-{i % 2}")
        token = server.run(lambda a: a.create_token("ops")).token
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 15
        while True:
            sources = httpx.get(
                f"{server.base_url}/admin/v1/workspaces/{wid}/sources", headers=headers
            ).json()["sources"]
            if sum(s["total"] for s in sources) == 12 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        counts = {s["source"]: s["counts"] for s in sources}
        assert counts == {
            "tool-0": {"SUCCESS": 4, "KEY_MISMATCH": 2},
            "tool-1": {"SUCCESS": 4, "KEY_MISMATCH": 2},
        }
