"""A missing PostgreSQL or Redis skips its tests on a laptop and fails them in CI.

Runs pytest in a subprocess on the real ``pg_url``/``redis_url`` fixtures, pointed at a port
nobody listens on, with the throwaway fallback turned off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moeconnect.testing import free_port

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
def test_needs_postgres(pg_url):
    pass

def test_needs_redis(redis_url):
    pass
"""


def _run(tmp_path: Path, required: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOECONNECT_")}
    env.update(
        MOECONNECT_TEST_PG=f"postgresql://postgres@127.0.0.1:{free_port()}/test",
        MOECONNECT_TEST_REDIS=f"redis://127.0.0.1:{free_port()}/0",
        MOECONNECT_TEST_THROWAWAY="0",
        PYTHONPATH=str(ROOT),
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",  # the probe needs no plugin; start fast
    )
    if required:
        env["MOECONNECT_REQUIRE_SERVICES"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("required", [False, True], ids=["laptop", "ci"])
def test_missing_services_skip_or_fail(tmp_path: Path, required: bool) -> None:
    result = _run(tmp_path, required)
    output = result.stdout + result.stderr
    if required:
        assert result.returncode == 1, output
        assert "2 errors" in output, output  # a fixture that fails is an error, not a skip
        assert "MOECONNECT_REQUIRE_SERVICES=1 requires it" in output
    else:
        assert result.returncode == 0, output
        assert "2 skipped" in output, output
    assert "PostgreSQL is not reachable" in output and "Redis is not reachable" in output
