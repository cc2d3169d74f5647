"""docs/client.md: its runnable examples run, and it documents every option of ``check``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from moeconnect.cli.check import EXIT_CODES, check
from moeconnect.testing import WorkspaceKey

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
RUNNABLE = re.compile(r"<!-- runnable -->\n```python\n(.*?)```", re.DOTALL)
EXAMPLES = RUNNABLE.findall(DOC.read_text("utf-8"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_runnable_example(
    source: str, moeconnect_workspace: WorkspaceKey, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = moeconnect_workspace
    namespace = {"WORKSPACE_ID": ws.workspace_id, "DATA_API_KEY": ws.key, "BASE_URL": ws.base_url}
    exec(compile(source, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    assert capsys.readouterr().out


def test_every_check_option_and_exit_code_is_documented() -> None:
    text = DOC.read_text("utf-8")
    for param in check.params:
        for opt in param.opts:
            assert f"`{opt}`" in text, opt
    for code in EXIT_CODES:
        assert f"| {code} |" in text, code
