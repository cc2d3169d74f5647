"""Issue 23, must-show 2: every change made through the CLI, the admin API and the dashboard is
in the audit log with the right actor, channel and client IP — behind a trusted proxy the address
it forwards, from anyone else the peer's — and no key or token plaintext is in the database.

One real server trusts 127.0.0.1 as its proxy; requests sent from 127.0.0.2 (loopback too) come
from an untrusted peer whose X-Forwarded-For must be ignored.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from pathlib import Path
from secrets import token_urlsafe
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from moeconnect.audit import AuditEntry
from moeconnect.cli import cli
from moeconnect.config import load_secret
from moeconnect.digests import token_digest
from moeconnect.testing import MoeconnectServer

from ..dashboard.conftest import csrf_of
from ..test_no_plaintext import _leaks

PROXIED = "198.51.100.9"  # what the trusted proxy (127.0.0.1) says the client is
SPOOFED = "203.0.113.66"  # what an untrusted peer (127.0.0.2) claims to be


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    workdir = tmp_path_factory.mktemp("audit")
    with MoeconnectServer(workdir=workdir, args=["--trusted-proxy", "127.0.0.1/32"]) as server:
        yield server


def entries(server: MoeconnectServer, **filters: Any) -> list[AuditEntry]:
    """The whole log (or a filtered part), oldest first."""
    page = server.run(lambda a: a.store.list_audit(limit=10_000, **filters))
    return list(reversed(page.items))


def client(server: MoeconnectServer, *, local: str = "127.0.0.1", **kwargs: Any) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=local)
    return httpx.Client(base_url=server.base_url, transport=transport, timeout=15, **kwargs)


def run_cli(server: MoeconnectServer, *args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(cli, [*args, "--db", server.db_url], input=input)
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


def test_cli_changes_are_recorded_as_the_os_user(srv: MoeconnectServer) -> None:
    start = len(entries(srv))
    pasted = "stdin-" + token_urlsafe(16)
    wid = run_cli(srv, "workspace", "create", "--name", "Shell Shop").strip()
    run_cli(srv, "workspace", "rename", wid, "Shell Shop 2")
    run_cli(srv, "workspace", "suspend", wid)
    run_cli(srv, "workspace", "resume", wid)
    first = run_cli(srv, "key", "generate", wid).strip()
    second = orjson.loads(run_cli(srv, "key", "generate", wid, "--grace", "1h", "--json"))
    run_cli(srv, "key", "import", wid, "--scope", "push", input=pasted + "\n")
    run_cli(srv, "key", "revoke", wid)
    token = run_cli(srv, "token", "create", "--name", "shell-made").strip()
    run_cli(srv, "token", "revoke", "shell-made")
    run_cli(srv, "workspace", "delete", wid, "--yes")

    made = entries(srv)[start:]
    assert [e.action for e in made] == [
        "workspace.create",
        "workspace.rename",
        "workspace.suspend",
        "workspace.resume",
        "key.generate",
        "key.rotate",
        "key.import",
        "key.revoke",
        "token.create",
        "token.revoke",
        "workspace.delete",
    ]
    user = getpass.getuser()
    for e in made:
        who = (e.actor_kind, e.actor_id, e.actor_name, e.channel, e.client_ip)
        assert who == ("cli", None, f"cli:{user}", "cli", None), e
    create, rename, suspend, _, generate, rotate, imported, revoke, tok, untok, delete = made
    assert create.after == {"name": "Shell Shop", "dc": "01", "status": "active"}
    assert (rename.before, rename.after) == ({"name": "Shell Shop"}, {"name": "Shell Shop 2"})
    assert (suspend.before, suspend.after) == ({"status": "active"}, {"status": "suspended"})
    assert generate.after is not None and generate.after["hint"] == first[-4:]
    assert rotate.before == {"key_id": generate.target, "hint": first[-4:]}
    assert rotate.target == second["key_id"] and rotate.after is not None
    assert rotate.after["previous_key_expires_at"] == second["previous_key_expires_at"]
    assert imported.after is not None and imported.after["scope"] == "push"
    assert revoke.target == "data" and revoke.after == {"revoked": 2}  # current + in grace
    assert tok.after is not None and tok.after["name"] == "shell-made"
    assert untok.target == tok.target
    assert delete.before == {"name": "Shell Shop 2", "dc": "01", "status": "active", "keys": 3}
    assert all(e.workspace_id == wid for e in made if not e.action.startswith("token."))

    # And the CLI reads it back.
    shown = orjson.loads(run_cli(srv, "audit", "--workspace", wid, "--json"))["entries"]
    assert [e["action"] for e in shown] == [e.action for e in reversed(made) if e.workspace_id]
    assert shown[0]["actor"] == {"kind": "cli", "id": None, "name": f"cli:{user}"}
    table = run_cli(srv, "audit", "--since", "1h", "--action", "token")
    assert "token.create" in table and "token.revoke" in table and "key." not in table
    assert re.search(r"Renamed “Shell Shop” → “Shell Shop 2”", run_cli(srv, "audit"))
    assert "ERROR" not in table
    secrets = [first, second["key"], pasted, token]
    assert_no_plaintext(srv, secrets)


def test_admin_api_changes_carry_token_and_forwarded_address(srv: MoeconnectServer) -> None:
    token = srv.run(lambda a: a.create_token("api-robot"))
    headers = {"Authorization": f"Bearer {token.token}", "X-Forwarded-For": PROXIED}
    start = len(entries(srv))
    pasted = "api-" + token_urlsafe(16)
    with client(srv, headers=headers) as api:

        def call(method: str, path: str, body: Any = None) -> httpx.Response:
            response = api.request(method, "/admin/v1" + path, json=body)
            assert response.status_code < 300, (path, response.text)
            return response

        wid = call("POST", "/workspaces", {"name": "API Shop"}).json()["workspace_id"]
        call("PATCH", f"/workspaces/{wid}", {"name": "API Shop 2"})
        call("POST", f"/workspaces/{wid}/suspend")
        call("POST", f"/workspaces/{wid}/resume")
        key = call("POST", f"/workspaces/{wid}/keys").json()["key"]
        rotated = call("POST", f"/workspaces/{wid}/keys", {"grace": "1h"}).json()["key"]
        call("POST", f"/workspaces/{wid}/keys/import", {"key": pasted, "scope": "push"})
        call("POST", f"/workspaces/{wid}/keys/revoke", {})
        call("DELETE", f"/workspaces/{wid}")
        # Read back through the API, two at a time: the pages join up, newest first.
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"workspace_id": wid, "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = api.get("/admin/v1/audit", params=params).json()
            seen += page["items"]
            if (cursor := page["next_cursor"]) is None:
                break
        assert api.get("/admin/v1/audit", params={"action": "nonsense!"}).status_code == 400
        assert api.delete("/admin/v1/audit").status_code == 405  # append-only: no deletion
    # From an untrusted peer the header is a claim like any other: the peer is recorded.
    spoof = {"Authorization": f"Bearer {token.token}", "X-Forwarded-For": SPOOFED}
    with client(srv, local="127.0.0.2", headers=spoof) as api:
        assert api.post("/admin/v1/workspaces", json={"name": "Spoofed"}).status_code == 201

    made = entries(srv)[start:]
    assert [e.action for e in made] == [
        "workspace.create",
        "workspace.rename",
        "workspace.suspend",
        "workspace.resume",
        "key.generate",
        "key.rotate",
        "key.import",
        "key.revoke",
        "workspace.delete",
        "workspace.create",
    ]
    for e in made[:-1]:
        who = (e.actor_kind, e.actor_id, e.actor_name, e.channel, e.client_ip)
        assert who == ("token", token.record.id, "api-robot", "admin-api", PROXIED), e
    assert made[-1].client_ip == "127.0.0.2" and made[-1].channel == "admin-api"
    assert [e["id"] for e in seen] == [e.id for e in reversed(made[:-1])]
    assert seen[0]["actor"] == {"kind": "token", "id": token.record.id, "name": "api-robot"}
    assert seen[0]["client_ip"] == PROXIED and seen[0]["channel"] == "admin-api"
    assert_no_plaintext(srv, [token.token, key, rotated, pasted])


def test_dashboard_changes_and_sign_ins(srv: MoeconnectServer) -> None:
    token = srv.run(lambda a: a.create_token("web-person"))
    start = len(entries(srv))
    wrong = "moeop_" + token_urlsafe(30)  # a failed sign-in: its text must never be stored
    with client(srv, headers={"X-Forwarded-For": PROXIED}) as web:
        page = web.get("/dashboard/sign-in")
        failed = web.post("/dashboard/sign-in", data={"csrf": csrf_of(page.text), "token": wrong})
        assert failed.status_code == 401
        done = web.post(
            "/dashboard/sign-in", data={"csrf": csrf_of(failed.text), "token": token.token}
        )
        assert done.status_code == 303, done.text
        form = web.get("/dashboard/workspaces/new")
        created = web.post(
            "/dashboard/workspaces/new",
            data={"csrf": csrf_of(form.text), "name": "Web Shop", "dc": "01"},
        )
        wid = created.headers["location"].split("/")[3].split("?")[0]
        base = f"/dashboard/workspaces/{wid}/keys/data"
        form = web.get(base + "/generate")
        shown = web.post(
            base + "/generate",
            data={"csrf": csrf_of(form.text), "grace": "none", "replaces": "none"},
        )
        key = re.search(r'value="(moe_data_[^"]+)"', shown.text)
        assert key, shown.text
        form = web.get(base + "/revoke")
        assert web.post(base + "/revoke", data={"csrf": csrf_of(form.text)}).status_code == 303
        audit_page = web.get(f"/dashboard/workspaces/{wid}/audit")
        assert audit_page.status_code == 200
        assert (
            f'href="/dashboard/workspaces/{wid}/audit"'
            in web.get(f"/dashboard/workspaces/{wid}").text
        )

    made = entries(srv)[start:]
    assert [e.action for e in made] == [
        "dashboard.sign_in_failed",
        "dashboard.sign_in",
        "workspace.create",
        "key.generate",
        "key.revoke",
    ]
    failed_entry = made[0]
    assert (failed_entry.actor_kind, failed_entry.actor_id, failed_entry.actor_name) == (
        "unknown",
        None,
        None,
    )
    assert failed_entry.client_ip == PROXIED and failed_entry.channel == "dashboard"
    for e in made[1:]:
        who = (e.actor_kind, e.actor_id, e.actor_name, e.channel, e.client_ip)
        assert who == ("token", token.record.id, "web-person", "dashboard", PROXIED), e
    # The Audit page shows the workspace's entries, with who and from where.
    html = audit_page.text
    for text in ("workspace.create", "key.generate", "key.revoke", "web-person", PROXIED):
        assert text in html, text
    assert "dashboard.sign_in" not in html  # not a change to this workspace
    assert_no_plaintext(srv, [token.token, key.group(1), wrong])


def test_failed_sign_ins_are_bounded(srv: MoeconnectServer) -> None:
    """Sign-in needs no credentials: 40 failures from one address add at most 5 entries, and 40
    more from as many addresses at most 20 in all (per process and minute, SignInFailures)."""
    before = len(entries(srv, action="dashboard.sign_in_failed"))
    with client(srv, headers={"X-Forwarded-For": "192.0.2.1"}) as web:
        page = web.get("/dashboard/sign-in")
        csrf = csrf_of(page.text)
        for _ in range(40):
            assert (
                web.post("/dashboard/sign-in", data={"csrf": csrf, "token": "x"}).status_code == 401
            )
        for n in range(40):
            web.headers["X-Forwarded-For"] = f"192.0.2.{n + 10}"
            assert (
                web.post("/dashboard/sign-in", data={"csrf": csrf, "token": "x"}).status_code == 401
            )
    failures = entries(srv, action="dashboard.sign_in_failed")[before:]
    from_one = [e for e in failures if e.client_ip == "192.0.2.1"]
    # The minute may turn during the loop: at most two windows' worth.
    assert 1 <= len(from_one) <= 10, len(from_one)
    assert len(failures) <= 40, len(failures)
    print(f"80 failed sign-ins wrote {len(failures)} audit entries ({len(from_one)} for one IP)")


def assert_no_plaintext(server: MoeconnectServer, secrets: list[str]) -> None:
    """No secret, nor any 8-character piece of one, in the database files (as
    tests/test_no_plaintext.py checks); the digests are there, so the bytes are the right ones."""
    db = Path(server.workdir) / "moeconnect.db"
    stored = b"".join(
        p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()
    )
    tokens = [s for s in secrets if s.startswith("moeop_") and len(s) > 30]
    for token in tokens[:1]:
        assert token_digest(load_secret(server.db_url, server.env), token) in stored
    assert _leaks(stored, secrets) == [], "plaintext in the database file"
