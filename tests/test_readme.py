"""The README's promises: it opens with the two set-up commands, and its quickstart works.

The ``readme-quickstart`` shell block is run as written against a real server, with only the
server's address (``127.0.0.1:8080`` → a free port) and the CLI's path swapped in.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from moeconnect.testing import MoeconnectServer

from .http.wire import NO_LIMITS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text("utf-8")


def test_readme_opens_with_make_serve_and_make_test() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    assert README.index("```sh") < README.index("\n## ")  # before any section
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make serve", "make test"]


def test_readme_quickstart_runs(tmp_path: Path) -> None:
    block = re.search(r"<!-- readme-quickstart[^>]*-->\n```sh\n(.*?)```", README, re.S)
    assert block is not None
    script = block.group(1)
    with MoeconnectServer(workdir=tmp_path, env=NO_LIMITS) as server:
        script = script.replace("http://127.0.0.1:8080", server.base_url)
        script = script.replace(
            ".venv/bin/moeconnect", str(Path(sys.executable).parent / "moeconnect")
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOECONNECT_")}
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,  # the same directory as the server: the default ./moeconnect.db
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"status":"success","app_name":"PI-Prod-DC01"}'
