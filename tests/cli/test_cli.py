"""Every command of issue 2's CLI: output, ``--json``, ``--db``, errors and secrets.

Most tests run the click commands in-process (fast: the same code, real SQLite files); a few run
``python -m moeconnect`` and the ``moeconnect`` script as subprocesses, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from moeconnect.cli import cli
from moeconnect.keys import generate_key

KEY_FORMAT = re.compile(r"^moe_(data|push|inform|campaign|personalize)_[0-9A-Za-z]{38}$")


class Moe:
    """``moeconnect ... --db <this test's database>``, in-process."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    def __call__(self, *args: str, input: str | None = None, ok: bool = True) -> Result:
        result = CliRunner().invoke(
            cli, [*args, "--db", self.db_url], input=input, catch_exceptions=False
        )
        if ok:
            assert result.exit_code == 0, (result.stdout, result.stderr)
        return result

    def json(self, *args: str, input: str | None = None) -> Any:
        """Run with ``--json``: stdout must be exactly one JSON document."""
        result = self(*args, "--json", input=input)
        return json.loads(result.stdout)

    def error(self, *args: str, input: str | None = None, status: int | None = None) -> str:
        """Run expecting failure: non-zero exit, nothing on stdout, one sentence on stderr."""
        result = self(*args, input=input, ok=False)
        assert result.exit_code != 0
        if status is not None:
            assert result.exit_code == status, result.stderr
        assert result.stdout == ""
        message = result.stderr.strip()
        assert message.startswith("Error: ") and "\n" not in message, message
        assert "Traceback" not in message
        return message


@pytest.fixture
def moe(sqlite_url: str) -> Moe:
    return Moe(sqlite_url)


# -- workspaces ------------------------------------------------------------------------------------


def test_workspace_create_prints_the_id_or_exact_json(moe: Moe) -> None:
    text = moe("workspace", "create", "--name", "Acme").stdout
    assert re.fullmatch(r"[A-Z0-9]{21}\n", text)
    created = moe.json(
        "workspace", "create", "--name", "PI-Prod-DC02", "--dc", "dc-2", "--id", "pi_prod-2"
    )
    assert created == {
        "workspace_id": "pi_prod-2",
        "name": "PI-Prod-DC02",
        "dc": "02",
        "status": "active",
    }


def test_workspace_create_errors(moe: Moe) -> None:
    moe("workspace", "create", "--name", "A", "--id", "TAKEN")
    assert "already exists" in moe.error("workspace", "create", "--name", "B", "--id", "TAKEN")
    assert "unknown data center '09'" in moe.error(
        "workspace", "create", "--name", "A", "--dc", "09"
    )
    assert "1 to 100" in moe.error("workspace", "create", "--name", "x" * 101)
    assert "1 to 100" in moe.error("workspace", "create", "--name", "  ")
    assert "letters, digits" in moe.error("workspace", "create", "--name", "A", "--id", "no spaces")
    assert "letters, digits" in moe.error("workspace", "create", "--name", "A", "--id", "ID\n")
    key = generate_key("data")  # IDs are public and stored as they are: never a key
    assert "is an API key" in moe.error("workspace", "create", "--name", "A", "--id", key)


def test_workspace_list_show_rename_suspend_resume_delete(moe: Moe) -> None:
    moe("workspace", "create", "--name", "Alpha", "--id", "ALPHA")
    moe("workspace", "create", "--name", "Beta", "--id", "BETA", "--dc", "02")
    listed = moe.json("workspace", "list")["workspaces"]
    assert [(w["workspace_id"], w["name"], w["dc"], w["status"]) for w in listed] == [
        ("ALPHA", "Alpha", "01", "active"),
        ("BETA", "Beta", "02", "active"),
    ]
    assert [
        w["workspace_id"] for w in moe.json("workspace", "list", "--dc", "2")["workspaces"]
    ] == ["BETA"]
    assert [w["name"] for w in moe.json("workspace", "list", "--search", "alp")["workspaces"]] == [
        "Alpha"
    ]
    table = moe("workspace", "list").stdout
    assert "ALPHA" in table and "Beta" in table and table.startswith("ID")

    shown = moe.json("workspace", "show", "ALPHA")
    assert shown["workspace_id"] == "ALPHA" and shown["created_at"].endswith("Z")
    assert "Alpha" in moe("workspace", "show", "ALPHA").stdout

    assert moe.json("workspace", "rename", "ALPHA", "Alpha Prod")["name"] == "Alpha Prod"
    assert moe.json("workspace", "suspend", "ALPHA")["status"] == "suspended"
    assert moe.json("workspace", "resume", "ALPHA")["status"] == "active"

    assert moe.json("workspace", "delete", "ALPHA") == {"workspace_id": "ALPHA", "deleted": True}
    assert "workspace list" in moe.error("workspace", "show", "ALPHA", status=1)
    for command in ("rename", "suspend", "resume", "delete"):
        args = ("ALPHA", "New name") if command == "rename" else ("ALPHA",)
        assert "no workspace has ID ALPHA" in moe.error("workspace", command, *args)


# -- keys ------------------------------------------------------------------------------------------


def test_key_generate_prints_the_key_once_on_stdout(moe: Moe) -> None:
    moe("workspace", "create", "--name", "K", "--id", "K")
    result = moe("key", "generate", "K")
    key = result.stdout.strip()
    assert KEY_FORMAT.match(key) and key.startswith("moe_data_")
    assert result.stdout == key + "\n"
    assert "shown once" in result.stderr and key not in result.stderr
    rotated = moe("key", "generate", "K")
    assert "stopped working now" in rotated.stderr


def test_key_generate_json_scope_and_grace(moe: Moe) -> None:
    moe("workspace", "create", "--name", "K", "--id", "K")
    first = moe.json("key", "generate", "K", "--scope", "push")
    assert set(first) == {"key", "key_id", "scope", "hint", "previous_key_expires_at"}
    assert first["scope"] == "push" and first["key"].startswith("moe_push_")
    assert first["hint"] == first["key"][-4:] and first["previous_key_expires_at"] is None
    second = moe.json("key", "generate", "K", "--scope", "push", "--grace", "24h")
    expires = datetime.fromisoformat(second["previous_key_expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=5)
    assert "at most 30d" in moe.error("key", "generate", "K", "--grace", "31d")
    assert "write it like" in moe.error("key", "generate", "K", "--grace", "soon")
    assert "no workspace has ID NOPE" in moe.error("key", "generate", "NOPE")
    usage = moe("key", "generate", "K", "--scope", "admin", ok=False)  # click's usage error
    assert usage.exit_code == 2 and "Invalid value for '--scope'" in usage.stderr


def test_key_import_reads_stdin(moe: Moe) -> None:
    moe("workspace", "create", "--name", "K", "--id", "K")
    imported = moe.json("key", "import", "K", input="legacy key ~ 1234\n")
    assert imported["hint"] == "1234" and imported["scope"] == "data"
    assert "key" not in imported
    text = moe("key", "import", "K", "--scope", "inform", input="another-legacy-key\n").stdout
    assert "…-key" in text and "another-legacy-key" not in text
    assert "8 to 256" in moe.error("key", "import", "K", input="short\n", status=2)
    assert "standard input" in moe.error("key", "import", "K", input="", status=2)
    assert "checksum" in moe.error("key", "import", "K", input="moe_data_" + "A" * 38 + "\n")


def test_secrets_are_never_command_line_arguments(moe: Moe) -> None:
    moe("workspace", "create", "--name", "K", "--id", "K")
    refused = moe("key", "import", "K", "my-secret-key-123", ok=False)
    assert refused.exit_code == 2 and "unexpected extra argument" in refused.stderr.lower()
    assert moe.json("key", "list", "K")["keys"] == []

    def walk(command: click.Command, path: str) -> None:
        for param in command.params:
            assert param.name not in {"key", "token", "secret", "password", "api_key"}, (
                path,
                param,
            )
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(cli, "moeconnect")


def test_key_revoke_and_list(moe: Moe) -> None:
    moe("workspace", "create", "--name", "K", "--id", "K")
    first = moe.json("key", "generate", "K")
    second = moe.json("key", "generate", "K")
    assert moe.json("key", "revoke", "K") == {"workspace_id": "K", "scope": "data", "revoked": 1}
    assert "nothing to revoke" in moe("key", "revoke", "K").stdout
    listed = moe.json("key", "list", "K")
    assert listed["workspace_id"] == "K"
    states = {k["key_id"]: (k["state"], k["ended_how"]) for k in listed["keys"]}
    assert states == {
        first["key_id"]: ("replaced", "replaced"),
        second["key_id"]: ("revoked", "revoked"),
    }
    flat = json.dumps(listed)
    assert first["key"] not in flat and second["key"] not in flat and "digest" not in flat
    assert "…" + second["hint"] in moe("key", "list", "K").stdout
    assert "no workspace has ID NOPE" in moe.error("key", "list", "NOPE")
    assert "no workspace has ID NOPE" in moe.error("key", "revoke", "NOPE")


# -- seed ------------------------------------------------------------------------------------------


def test_seed_writes_working_credentials_batch_after_batch(
    moe: Moe, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 7: the next batch is made while the store writes the last, and every line of
    the file is a workspace the store has, with the key its digest was made from."""
    import asyncio
    import importlib

    from moeconnect.config import load_secret
    from moeconnect.digests import key_digest
    from moeconnect.store import open_store

    # The module, not the click command of the same name that moeconnect.cli exports.
    monkeypatch.setattr(importlib.import_module("moeconnect.cli.seed"), "BATCH", 7)
    out = tmp_path / "creds.csv"
    assert moe.json("seed", "--workspaces", "20", "--credentials-out", str(out)) == {
        "workspaces": 20,
        "dc": "01",
        "credentials_out": str(out),
    }
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pairs = [line.split(",") for line in out.read_text().splitlines()]
    assert len(pairs) == 20 and len({wid for wid, _ in pairs}) == 20
    assert all(KEY_FORMAT.match(key) for _, key in pairs)
    secret = load_secret(sqlite_url)

    async def stored() -> list[bytes | None]:
        store = open_store(sqlite_url)
        try:
            found = []
            for wid, _ in pairs:
                record = await store.credentials(wid)
                found.append(record.keys[0].digest if record else None)
            return found
        finally:
            await store.close()

    assert asyncio.run(stored()) == [key_digest(secret, key) for _, key in pairs]


# -- operator tokens -------------------------------------------------------------------------------


def test_tokens(moe: Moe) -> None:
    result = moe("token", "create", "--name", "ops")
    token = result.stdout.strip()
    assert token.startswith("moeop_") and "shown once" in result.stderr
    created = moe.json("token", "create", "--name", "ci")
    assert created["token"].startswith("moeop_") and created["active"] is True
    listed = moe.json("token", "list")["tokens"]
    assert [t["name"] for t in listed] == ["ops", "ci"]
    assert token not in json.dumps(listed) and created["token"] not in json.dumps(listed)
    assert moe.json("token", "revoke", created["token_id"])["active"] is False
    assert "Revoked token" in moe("token", "revoke", "ops").stdout
    assert all(not t["active"] for t in moe.json("token", "list")["tokens"])
    assert "no active operator token" in moe.error("token", "revoke", "ops")


# -- database ------------------------------------------------------------------------------------


def test_db_upgrade_and_check(moe: Moe, tmp_path: Path) -> None:
    assert moe.json("db", "upgrade")["migrated"] is True
    assert "up to date" in moe("db", "upgrade").stdout
    assert moe.json("db", "check") == {"ok": True, "problems": []}
    assert "sound" in moe("db", "check").stdout
    secret = tmp_path / "moeconnect.db.secret"
    moe("workspace", "list")  # the first command that needs the server secret creates it
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_db_check_reports_a_broken_store(moe: Moe, tmp_path: Path) -> None:
    import sqlite3

    moe("workspace", "create", "--name", "K", "--id", "K")
    moe("key", "generate", "K")
    with sqlite3.connect(tmp_path / "moeconnect.db") as db:  # a second current key, by hand
        for (index,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND sql LIKE '%current%'"
        ).fetchall():
            db.execute(f'DROP INDEX "{index}"')
        db.execute(
            "INSERT INTO api_keys (id, workspace_id, scope, digest, hint, origin, state,"
            " created_at) SELECT 'key_dup', workspace_id, scope, digest, hint, origin, state,"
            " created_at"
            " FROM api_keys"
        )
    result = moe("db", "check", ok=False)
    assert result.exit_code == 1 and "2 current data keys" in result.stderr
    assert moe("db", "check", "--json", ok=False).stdout.count("current data keys") == 1


def test_unusable_database_urls_say_what_to_do(moe: Moe, tmp_path: Path) -> None:
    (tmp_path / "a-file").touch()
    for url, hint in (
        (f"sqlite:///{tmp_path / 'a-file' / 'x.db'}", "check --db"),
        ("mysql://localhost/x", "use sqlite:/// or postgresql://"),
        ("sqlite://", "give a file path"),
        ("postgresql://postgres@127.0.0.1:1/x", "check --db"),
    ):
        assert hint in Moe(url).error("workspace", "list"), url


def test_db_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    runner = CliRunner()
    created = runner.invoke(
        cli, ["workspace", "create", "--name", "E", "--json"], env={"MOECONNECT_DB": url}
    )
    assert created.exit_code == 0, created.stderr
    assert (tmp_path / "from-env.db").exists()
    assert Moe(url).json("workspace", "list")["workspaces"][0]["name"] == "E"


def test_every_json_command_prints_exactly_one_document(moe: Moe) -> None:
    docs = [
        moe.json("workspace", "create", "--name", "J", "--id", "J"),
        moe.json("workspace", "list"),
        moe.json("workspace", "show", "J"),
        moe.json("workspace", "rename", "J", "Jay"),
        moe.json("workspace", "suspend", "J"),
        moe.json("workspace", "resume", "J"),
        moe.json("key", "generate", "J"),
        moe.json("key", "import", "J", "--scope", "push", input="imported-key-1\n"),
        moe.json("key", "list", "J"),
        moe.json("key", "revoke", "J"),
        moe.json("token", "create", "--name", "t"),
        moe.json("token", "list"),
        moe.json("token", "revoke", "t"),
        moe.json("db", "upgrade"),
        moe.json("db", "check"),
        moe.json("workspace", "delete", "J"),
    ]
    assert all(isinstance(doc, dict) for doc in docs)


# -- as a user runs it -----------------------------------------------------------------------------


def _run(
    args: list[str], db_url: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOECONNECT_")}
    return subprocess.run(
        [*args, "--db", db_url],
        input=input,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_python_dash_m_and_the_console_script(sqlite_url: str) -> None:
    created = _run(
        [sys.executable, "-m", "moeconnect", "workspace", "create", "--name", "Sub", "--json"],
        sqlite_url,
    )
    assert created.returncode == 0, created.stderr
    workspace_id = json.loads(created.stdout)["workspace_id"]
    script = shutil.which("moeconnect", path=str(Path(sys.executable).parent))
    assert script, "the moeconnect console script is not installed beside this Python"
    imported = _run([script, "key", "import", workspace_id], sqlite_url, input="piped-in-key-42\n")
    assert imported.returncode == 0, imported.stderr
    assert "piped-in-key-42" not in imported.stdout + imported.stderr
    missing = _run([script, "workspace", "show", "NOPE"], sqlite_url)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == (
        "Error: no workspace has ID NOPE; list them with `moeconnect workspace list`."
    )


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for command in ("serve", "workspace", "key", "token", "db"):
        assert command in result.stdout
    for group, commands in {
        "workspace": ("create", "list", "show", "rename", "suspend", "resume", "delete"),
        "key": ("generate", "import", "revoke", "list"),
        "token": ("create", "list", "revoke"),
        "db": ("upgrade", "check"),
    }.items():
        text = CliRunner().invoke(cli, [group, "--help"]).stdout
        assert all(c in text for c in commands), group
