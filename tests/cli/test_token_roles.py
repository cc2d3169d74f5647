"""``moeconnect token create --role … --workspace … --expires …`` and what ``token list`` shows
(issue 23)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .test_cli import Moe, moe  # noqa: F401 - the fixture


def test_token_create_with_role_restriction_and_expiry(moe: Moe) -> None:  # noqa: F811
    created = moe.json(
        "token", "create", "--name", "ci", "--role", "read",
        "--workspace", "W1", "--workspace", "W2", "--expires", "90d",
    )  # fmt: skip
    assert created["role"] == "read" and created["workspaces"] == ["W1", "W2"]
    expires = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    assert created["state"] == "active" and created["last_used_at"] is None
    plain = moe.json("token", "create", "--name", "ops")
    assert (plain["role"], plain["workspaces"], plain["expires_at"]) == ("admin", None, None)

    listed = {t["name"]: t for t in moe.json("token", "list")["tokens"]}
    assert listed["ci"]["role"] == "read" and listed["ci"]["workspaces"] == ["W1", "W2"]
    assert created["token"] not in str(listed)
    table = moe("token", "list").stdout
    header = table.splitlines()[0].split()
    assert header[4:] == ["ROLE", "WORKSPACES", "STATE", "EXPIRES", "LAST", "USED"]
    ci_row = next(line for line in table.splitlines() if " ci " in line)
    assert "read" in ci_row and "W1,W2" in ci_row and created["expires_at"][:10] in ci_row
    assert ci_row.rstrip().endswith("never")  # not used yet
    ops_row = next(line for line in table.splitlines() if " ops " in line)
    assert "admin" in ops_row and " all " in ops_row


def test_token_create_refuses_bad_input(moe: Moe) -> None:  # noqa: F811
    refused = moe("token", "create", "--name", "x", "--role", "owner", ok=False)
    assert refused.exit_code == 2 and "'owner' is not one of" in refused.stderr
    assert "--expires" in moe.error("token", "create", "--name", "x", "--expires", "soon", status=2)
    assert "positive" in moe.error("token", "create", "--name", "x", "--expires", "0s", status=2)
    message = moe.error("token", "create", "--name", "x", "--workspace", "no spaces", status=2)
    assert "not a workspace ID" in message
    assert moe.json("token", "list")["tokens"] == []
