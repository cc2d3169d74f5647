"""Issue 22 item 10: an error message never echoes a client's input whole.

A value of any length (a 100 KB workspace ID, MOE-APPKEY, app_id, data center, field name,
scope or duration) gets an answer of bounded size, over the wire from a real server and from the
CLI; what a message quotes is at most 64 characters, with its control characters escaped.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys

import httpx
import pytest

from moeconnect.testing import ENDPOINT_PATH, MoeconnectServer

BOUND = 1024


def _connect(
    client: httpx.Client, username: str, appkey: str, app_id: str, region: str = "01"
) -> httpx.Response:
    credentials = base64.b64encode(f"{username}:moe_data_wrong".encode()).decode()
    return client.post(
        ENDPOINT_PATH,
        headers={"Authorization": f"Basic {credentials}", "MOE-APPKEY": appkey},
        json={"app_id": app_id, "app_secret": "moe_data_wrong", "source": "s", "region": region},
    )


def _get(server: MoeconnectServer, path: str, token: str) -> httpx.Response:
    """A GET with a path longer than httpx sends (64 KiB)."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=20)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        answer = connection.getresponse()
        return httpx.Response(answer.status, content=answer.read())
    finally:
        connection.close()


def test_no_answer_echoes_a_long_input(server: MoeconnectServer) -> None:
    wid = server.create_workspace("Acme").id
    token = server.run(lambda a: a.create_token("ops")).token
    huge, big = "W" * 100_000, "W" * 20_000
    answers: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=server.base_url, timeout=20) as client:
        # The endpoint: a 100 KB value anywhere (refused before the checks: 431, 413) and the
        # largest that reach the check table.
        answers["100 KB ID everywhere"] = _connect(client, huge, huge, huge)
        answers["100 KB app_id"] = _connect(client, wid, wid, huge)
        answers["20 KB ID everywhere"] = _connect(client, big, big, big)
        answers["60 KB MOE-APPKEY"] = _connect(client, wid, "W" * 60_000, wid)
        answers["60 KB app_id"] = _connect(client, wid, wid, "W" * 60_000)
        answers["60 KB region"] = _connect(client, wid, wid, wid, region="W" * 60_000)
    admin = httpx.Client(
        base_url=server.base_url + "/admin/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )
    value = "W" * 60_000
    with admin:
        answers["admin: 100 KB workspace ID"] = _get(server, f"/admin/v1/workspaces/{huge}", token)
        answers["admin: 50 KB workspace ID"] = admin.get(f"/workspaces/{value[:50_000]}")
        answers["admin: 60 KB dc"] = admin.post("/workspaces", json={"name": "x", "dc": value})
        answers["admin: 60 KB field"] = admin.post("/workspaces", json={"name": "x", value: 1})
        answers["admin: 60 KB name"] = admin.post("/workspaces", json={"name": value})
        answers["admin: 60 KB scope"] = admin.post(f"/workspaces/{wid}/keys", json={"scope": value})
        answers["admin: 60 KB grace"] = admin.post(f"/workspaces/{wid}/keys", json={"grace": value})
        answers["admin: ESC in a field name"] = admin.post(
            "/workspaces", json={"name": "x", "\x1b[2J\x07" + value: 1}
        )
    sizes = {what: (r.status_code, len(r.content)) for what, r in answers.items()}
    print(sizes)
    assert all(400 <= status < 500 for status, _ in sizes.values()), sizes
    assert all(size < BOUND for _, size in sizes.values()), sizes
    for response in answers.values():
        message = response.json()["error"]["message"]
        assert "W" * 65 not in message, message
        assert "\x1b" not in message and "\x07" not in message, message
    escaped = answers["admin: ESC in a field name"].json()["error"]["message"]
    assert escaped.startswith("Unknown field '\\x1b[2J\\x07WWW"), escaped


@pytest.mark.parametrize(
    "args",
    [
        ["workspace", "create", "--name", "x", "--dc", "W" * 100_000],
        ["key", "generate", "WID", "--grace", "W" * 100_000],
        ["log", "WID", "--since", "W" * 100_000],
    ],
)
def test_cli_errors_do_not_echo_a_long_argument(sqlite_url: str, args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "moeconnect", *args, "--db", sqlite_url],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[:500]
    assert result.stdout == b""
    assert len(result.stderr) < BOUND, result.stderr[:500]
    assert b"(100000 characters)" in result.stderr, result.stderr


def test_endpoint_messages_stay_json_and_short(server: MoeconnectServer) -> None:
    # Sanity: a normal refusal is still the catalogue's sentence.
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        answer = _connect(client, "abc", "abc", "abc", region="\x1b[2J")
    assert answer.status_code == 400
    assert json.loads(answer.content)["error"]["message"].startswith(
        "The region '\\x1b[2J' is not a known data center"
    )
