"""Docs that can't drift: every issue-2 command and option, and every error code, is documented."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from moeconnect.cli import cli

from .core.test_errors import SPEC_TABLE

DOCS = Path(__file__).resolve().parents[1] / "docs"
COMMANDS = [
    ("serve",),
    ("workspace", "create"),
    ("workspace", "list"),
    ("workspace", "show"),
    ("workspace", "rename"),
    ("workspace", "suspend"),
    ("workspace", "resume"),
    ("workspace", "delete"),
    ("key", "generate"),
    ("key", "import"),
    ("key", "revoke"),
    ("key", "list"),
    ("token", "create"),
    ("token", "list"),
    ("token", "revoke"),
    ("db", "upgrade"),
    ("db", "check"),
    ("audit",),
]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_and_option_is_in_cli_md(path: tuple[str, ...]) -> None:
    text = (DOCS / "cli.md").read_text("utf-8")
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert "moeconnect " + " ".join(path) in text
    for param in command.params:
        if isinstance(param, click.Option):
            assert any(opt in text for opt in param.opts), (path, param.opts)


@pytest.mark.parametrize("code", [code for _, _, code in SPEC_TABLE])
def test_every_error_code_is_in_api_md(code: str) -> None:
    assert f"`{code}`" in (DOCS / "api.md").read_text("utf-8")


def test_docs_link_to_files_that_exist() -> None:
    import re

    pages = [DOCS / "index.md", DOCS / "api.md", DOCS / "cli.md", DOCS.parent / "README.md"]
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text("utf-8")):
            assert (page.parent / target).exists(), (page.name, target)
