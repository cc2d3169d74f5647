"""Issue 22 item 6: nothing a client sends, nor any stored name, reaches the operator's terminal
raw; names refuse control characters wherever they are made (CLI, admin API, dashboard).

The record is filled the way an attacker would: unauthenticated requests over the wire to a real
server, with ESC/BEL/CR/NUL, DEL, C1 and bidi controls in ``source`` and in ``User-Agent`` (what
the HTTP parser lets through; the rest written straight into the store, as an older server or a
proxy might have left it). Names get the same through SQL, as an old database might hold them.
The CLI then runs as the operator would run it: as subprocesses, human and ``--json``.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from moeconnect.cli import cli
from moeconnect.store.base import AttemptRow
from moeconnect.testing import ENDPOINT_PATH, MoeconnectServer

# Everything a terminal acts on: C0 but newline (the CLI's own line ends), DEL, C1, the line and
# paragraph separators and the bidi controls.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Sets the window title, rings the bell, clears the screen, returns the cursor; then C1 CSI,
# DEL, a right-to-left override and a line separator.
EVIL = "a\x1b]0;pwned\x07\x1b[2J\r\x00\n\tz\x7f\x9b2J\u202eevil\u2028x"
EVIL_UA = "ua\x1b]0;pwned\x07\x1b[2J\r\x00\n" + "\x9b\u202e"


def _sqlite_path(db_url: str) -> str:
    return db_url.removeprefix("sqlite:///")


def _raw_request(server: MoeconnectServer, workspace_id: str, key: str, user_agent: bytes) -> int:
    """One Test Connection request, head written byte for byte (no client library sanitises it)."""
    body = json.dumps(
        {"app_id": workspace_id, "app_secret": key, "source": EVIL, "region": "01"}
    ).encode()
    auth = base64.b64encode(f"{workspace_id}:{key}".encode())
    head = (
        f"POST {ENDPOINT_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        f"MOE-APPKEY: {workspace_id}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode()
    head += b"Authorization: Basic " + auth + b"\r\nUser-Agent: " + user_agent + b"\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def _run_all(server: MoeconnectServer, commands: list[list[str]]) -> list[bytes]:
    """Run the CLI commands at once (each a ``python -m moeconnect`` process); their stdout and
    stderr, each checked for success."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "moeconnect", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=server.env,
            cwd=server.workdir,
        )
        for args in commands
    ]
    outputs = []
    for args, process in zip(commands, processes, strict=True):
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, (args, stdout, stderr)
        outputs.append(stdout + stderr)
    return outputs


def test_cli_prints_no_control_character_a_client_or_the_store_holds(
    server: MoeconnectServer,
) -> None:
    wid, key = server.workspace_with_key("Acme")
    server.run(lambda a: a.create_token("ops"))
    # An old database: names from before they were checked.
    with sqlite3.connect(_sqlite_path(server.db_url)) as db:
        db.execute("UPDATE workspaces SET name = ? WHERE id = ?", (EVIL, wid))
        db.execute("UPDATE operator_tokens SET name = ?", (EVIL,))

    # Unauthenticated requests (a wrong key) and the owner's own, all with a hostile source; the
    # User-Agent carries what the parser lets through: bytes 0x80-0xff (read as Latin-1, so
    # 0x9b is C1 CSI) and UTF-8 for U+009B and U+202E.
    user_agent = b"ua \x9b2J \xc2\x9b \xe2\x80\xae"
    assert _raw_request(server, wid, "wrong-key-" * 3, user_agent) == 401
    assert _raw_request(server, wid, key, user_agent) == 200
    # What the wire refuses (ESC, BEL, CR, NUL in a header) straight into the store.
    now = datetime.now(UTC)
    row = AttemptRow(
        now, now, now.replace(second=0, microsecond=0), "req-evil-ua", wid, "01", EVIL,
        "KEY_MISMATCH", None, False, "127.0.0.1", EVIL_UA,
    )  # fmt: skip
    server.run(lambda a: a.store.add_attempts([row]))

    async def recorded(a: Any) -> int:
        return len((await a.store.list_attempts(wid, limit=10)).items)

    started = time.monotonic()
    while server.run(recorded) < 3 and time.monotonic() < started + 30:
        time.sleep(0.2)
    assert server.run(recorded) == 3, server.logs()
    print(f"recorded in {time.monotonic() - started:.1f} s")

    commands = [
        ["log", wid],
        ["sources", wid],
        ["workspace", "list"],
        ["workspace", "show", wid],
    ]
    started = time.monotonic()
    outputs = _run_all(server, [*commands, *([*c, "--json"] for c in commands)])
    print(f"{len(outputs)} CLI processes in {time.monotonic() - started:.1f} s")
    human, as_json = outputs[: len(commands)], outputs[len(commands) :]
    for args, output in zip(commands * 2, outputs, strict=True):
        text = output.decode("utf-8")
        raw = sorted({f"U+{ord(c):04X}" for c in RAW.findall(text)})
        assert not raw, f"`moeconnect {' '.join(args)}` printed {raw} raw:\n{text!r}"
    # The values are there, escaped: readable in a table on one line each ...
    log_lines = human[0].decode().splitlines()
    assert len(log_lines) == 2 + 3, log_lines  # header, rule, one line per row
    assert r"a\x1b]0;pwned\x07\x1b[2J\r\x00\n\tz\x7f\x9b2J\u202eevil\u2028x" in human[0].decode()
    assert r"\x1b]0;pwned" in human[2].decode() and r"\x1b]0;pwned" in human[3].decode()
    # ... and exactly as stored in JSON, once decoded (the recorder may drop the NUL of a
    # request's source: PostgreSQL text can't hold one).
    attempts = json.loads(as_json[0])["attempts"]
    sources = {a["source"].replace("\x00", "") for a in attempts}
    assert sources == {EVIL.replace("\x00", "")}
    agents = {a["user_agent"] for a in attempts}
    assert EVIL_UA in agents and "ua \x9b2J \xc2\x9b \xe2\x80\xae" in agents, agents
    assert json.loads(as_json[3])["name"] == EVIL
    # The rest in-process (each process costs a second of imports): the same code and checks.
    for args in (["token", "list"], ["key", "list", wid]):
        for extra in ([], ["--json"]):
            result = CliRunner().invoke(cli, [*args, *extra, "--db", server.db_url])
            assert result.exit_code == 0, result.output
            assert not RAW.findall(result.stdout + result.stderr), result.stdout
    tokens = CliRunner().invoke(cli, ["token", "list", "--json", "--db", server.db_url])
    assert json.loads(tokens.stdout)["tokens"][0]["name"] == EVIL


# -- names refuse control characters -----------------------------------------------------------

BAD_NAMES = [
    ("Ac\x1bme", "U+001B at position 3"),
    ("Ac\x07me", "U+0007 at position 3"),
    ("Acme\r", "U+000D at position 5"),
    ("Ac\nme", "U+000A at position 3"),
    ("\x00Acme", "U+0000 at position 1"),
    ("Ac\x7fme", "U+007F at position 3"),
    ("Ac\x9bme", "U+009B at position 3"),
    ("Ac\u202eme", "U+202E at position 3"),
    ("Ac\u2028me", "U+2028 at position 3"),
]


@pytest.mark.parametrize(("name", "position"), BAD_NAMES)
def test_the_cli_refuses_control_characters_in_names(
    sqlite_url: str, name: str, position: str
) -> None:
    # In-process: a NUL can't travel in a real argv.
    def moe(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, "--db", sqlite_url], catch_exceptions=False)

    for args in (
        ("workspace", "create", "--name", name),
        ("workspace", "rename", moe("workspace", "create", "--name", "ok").stdout.strip(), name),
        ("token", "create", "--name", name),
    ):
        result = moe(*args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr == (
            f"Error: a {args[0]} name may not contain control characters ({position})\n"
        )


def test_names_with_emoji_joiners_and_other_scripts_are_fine(sqlite_url: str) -> None:
    name = "Ünïcödé 日本 👩\u200d💻 می\u200cخواهم"
    result = CliRunner().invoke(
        cli, ["workspace", "create", "--name", name, "--json", "--db", sqlite_url]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["name"] == name


def test_the_admin_api_and_the_dashboard_refuse_control_characters_in_names(
    server: MoeconnectServer,
) -> None:
    token = server.run(lambda a: a.create_token("ops")).token
    wid = server.create_workspace("Acme").id
    admin = httpx.Client(
        base_url=server.base_url + "/admin/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    with admin:
        for name, position in BAD_NAMES:
            for response in (
                admin.post("/workspaces", json={"name": name}),
                admin.patch(f"/workspaces/{wid}", json={"name": name}),
            ):
                assert response.status_code == 400, response.text
                error = response.json()["error"]
                assert error["code"] == "VALIDATION_ERROR"
                assert f"may not contain control characters ({position})" in error["message"]
        assert admin.get(f"/workspaces/{wid}").json()["name"] == "Acme"
        assert [w["name"] for w in admin.get("/workspaces").json()["items"]] == ["Acme"]

    with httpx.Client(base_url=server.base_url, timeout=10) as browser:
        csrf = re.compile(r'name="csrf" value="([^"]*)"')
        page = browser.get("/dashboard/sign-in").text
        signed_in = browser.post(
            "/dashboard/sign-in", data={"csrf": csrf.findall(page)[0], "token": token}
        )
        assert signed_in.status_code == 303, signed_in.text
        page = browser.get("/dashboard/workspaces/new").text
        refused = browser.post(
            "/dashboard/workspaces/new",
            data={"csrf": csrf.findall(page)[0], "name": "Ac\x1b]0;x\x07me", "dc": "01"},
        )
        assert refused.status_code == 400
        assert "may not contain control characters (U+001B at position 3)" in refused.text


# -- moeconnect check: what a server answers is shown escaped ------------------------------------


class _Hostile(BaseHTTPRequestHandler):
    """A "Test Connection API" whose answer carries terminal escapes in its code and message."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps(
            {"status": "fail", "error": {"code": "X\x1b[2J", "message": EVIL, "type": "t"}}
        ).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_check_escapes_what_the_server_answers() -> None:
    hostile = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=hostile.serve_forever, daemon=True)
    thread.start()
    try:
        base_url = f"http://127.0.0.1:{hostile.server_address[1]}"
        for extra in ([], ["--json"]):
            result = CliRunner().invoke(
                cli,
                [
                    "check",
                    "--workspace-id",
                    "W1",
                    "--base-url",
                    base_url,
                    "--timeout",
                    "10",
                    *extra,
                ],
                env={"MOE_DATA_API_KEY": "not-a-generated-key"},
            )
            assert result.exit_code == 2, result.output
            raw = sorted({f"U+{ord(c):04X}" for c in RAW.findall(result.stdout + result.stderr)})
            assert not raw, (raw, result.stdout)
            assert r"\x1b]0;pwned" in result.stdout or "\\u001b]0;pwned" in result.stdout
    finally:
        hostile.shutdown()
        hostile.server_close()
        thread.join(10)
