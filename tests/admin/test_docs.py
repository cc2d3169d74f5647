"""docs/admin-api.md and docs/connection-record.md: the examples run, and nothing is left out."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from moeconnect.cli import cli
from moeconnect.testing import MoeconnectServer

from .helpers import connect, operator_token
from .test_auth import ROUTES

DOCS = Path(__file__).resolve().parents[2] / "docs"
ADMIN = (DOCS / "admin-api.md").read_text("utf-8")
RECORD = (DOCS / "connection-record.md").read_text("utf-8")
RUNNABLE = re.compile(r"<!-- runnable -->\n```python\n(.*?)```", re.DOTALL)


def test_every_route_is_documented() -> None:
    for method, path, _ in ROUTES:
        assert f"`{method} {path.replace('{wid}', '{workspace_id}')}" in ADMIN, (method, path)


@pytest.mark.parametrize("name", ["log", "sources"])
def test_every_cli_option_is_documented(name: str) -> None:
    command: click.Command = cli.commands[name]  # type: ignore[attr-defined]
    assert f"moeconnect {name} WORKSPACE_ID" in RECORD
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert any(f"`{opt}" in RECORD for opt in param.opts), (name, param.opts)


def test_examples_run(server: MoeconnectServer, capsys: pytest.CaptureFixture[str]) -> None:
    wid, key = server.workspace_with_key("Docs")
    connect(server, wid, key, "hightouch")
    connect(server, wid, "wrong-key-value", "hightouch")
    token = operator_token(server)
    examples = RUNNABLE.findall(ADMIN) + RUNNABLE.findall(RECORD)
    assert len(examples) >= 3
    deadline = time.monotonic() + 15  # let the record flush
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < deadline:
        url = f"{server.base_url}/admin/v1/workspaces/{wid}/sources"
        if sum(s["total"] for s in httpx.get(url, headers=headers).json()["sources"]) == 2:
            break
        time.sleep(0.1)
    for source in examples:
        namespace = {"BASE_URL": server.base_url, "TOKEN": token, "WORKSPACE_ID": wid}
        exec(compile(source, "docs", "exec"), namespace)  # noqa: S102 - our own documentation
        out = capsys.readouterr().out
        assert out.strip(), source
    assert "hightouch" in out and "KEY_MISMATCH" in out

    commands = [
        line.split("#")[0].strip()
        for line in RECORD.splitlines()
        if line.startswith(("moeconnect log ", "moeconnect sources "))
    ]
    assert len(commands) == 4
    for line in commands:
        args = shlex.split(line.replace("WORKSPACE_ID", wid))[1:]
        result = CliRunner().invoke(cli, [*args, "--db", server.db_url], catch_exceptions=False)
        assert result.exit_code == 0, (line, result.stderr)
    assert httpx.get(server.base_url + "/openapi.json").json()["paths"].keys() >= {
        "/admin/v1/workspaces",
        "/admin/v1/workspaces/{workspace_id}/sources",
    }
