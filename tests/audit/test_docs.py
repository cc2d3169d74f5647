"""docs/audit.md: every option of ``moeconnect audit`` is there, and its examples run."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
from click.testing import CliRunner

from moeconnect.cli import cli
from moeconnect.testing import MoeconnectServer

AUDIT = (Path(__file__).resolve().parents[2] / "docs" / "audit.md").read_text("utf-8")


def test_every_option_is_documented() -> None:
    command: click.Command = cli.commands["audit"]  # type: ignore[attr-defined]
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "db_url"):
            assert any(f"`{opt}" in AUDIT for opt in param.opts), param.opts
    assert "MOECONNECT_AUDIT_RETENTION" in AUDIT and "--audit-retention" in AUDIT


def test_examples_run(server: MoeconnectServer) -> None:
    wid = server.create_workspace("Docs").id
    commands = [
        line.split("#")[0].strip()
        for line in AUDIT.splitlines()
        if line.startswith("moeconnect audit")
    ]
    assert len(commands) == 4
    for line in commands:
        args = shlex.split(line.replace("WORKSPACE_ID", wid))[1:]
        result = CliRunner().invoke(cli, [*args, "--db", server.db_url], catch_exceptions=False)
        assert result.exit_code == 0, (line, result.output)
        assert result.stdout.strip(), line
