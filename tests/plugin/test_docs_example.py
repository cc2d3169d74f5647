"""The example in docs/testing-your-integration.md, run exactly as a partner would run it.

The file is extracted from the markdown, written to a temporary directory outside the repository,
and run with ``python -m pytest`` in a subprocess whose working directory is that directory: the
plugin is found through the installed package's ``pytest11`` entry point, never through this
repository's conftest or source tree.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing-your-integration.md"
REPO = DOC.parents[1]
NOT_A_PARTNERS = ("-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:anyio")
EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```python\n(.*?)```", re.DOTALL)


def extract() -> tuple[str, str]:
    found = EXAMPLE.findall(DOC.read_text("utf-8"))
    assert len(found) == 1, "the doc should hold exactly one marked example"
    name, source = found[0]
    return name, source


def partner_env() -> dict[str, str]:
    """A partner's shell: nothing from this repository's settings or test configuration."""
    drop = ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_PLUGINS")
    return {
        k: v
        for k, v in os.environ.items()
        if k not in drop
        and not k.startswith(("MOECONNECT_", "MOE_", "PYTEST_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")  # 127.0.0.1 must be direct
    }


def test_the_documented_example_passes_as_a_partner_runs_it(tmp_path: Path) -> None:
    name, source = extract()
    assert "pytest_plugins" not in source and "moeconnect.testing" not in source
    partner = tmp_path / "partner-project"
    partner.mkdir()
    assert REPO not in partner.parents
    (partner / name).write_text(source, "utf-8")
    expected = len(re.findall(r"^def test_", source, re.MULTILINE))
    assert expected >= 6

    run = subprocess.run(
        # This project's dev-only plugins (seconds of start-up each) are not in a partner's
        # environment; everything else, moeconnect's plugin included, loads on its own.
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *NOT_A_PARTNERS],
        cwd=partner,
        env=partner_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert re.search(rf"\b{expected} passed\b", output), output
    assert not re.search(
        r"\b(failed|error|skipped|xfailed)\b", output.split("short test summary")[-1]
    )
    # Loaded as an installed plugin (pytest lists entry-point plugins by distribution name).
    assert re.search(r"^plugins: .*\bmoeconnect-\d", output, re.MULTILINE), output
    assert f"rootdir: {partner}" in output


def test_the_installed_package_is_what_the_partner_imports(tmp_path: Path) -> None:
    """From an unrelated directory ``moeconnect`` resolves through the installed distribution."""
    probe = (
        "import importlib.metadata as m, moeconnect.testing as t;"
        "eps=[e.value for e in m.entry_points(group='pytest11') if e.name=='moeconnect'];"
        "print(eps[0], m.version('moeconnect'), t.__name__)"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=partner_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert run.stdout.split() == ["moeconnect.testing", "0.1.0", "moeconnect.testing"]
