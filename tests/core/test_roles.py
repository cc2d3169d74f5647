"""The role table of issue 23 (SPEC section 9), pure: who may do what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from moeconnect.records import OperatorToken
from moeconnect.roles import (
    ROLES,
    Permission,
    allows,
    check_role,
    check_workspace_ids,
    is_usable,
    refusal,
    roles_allowing,
    sees,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def token(**fields: object) -> OperatorToken:
    base: dict[str, object] = {
        "id": "tok_1",
        "name": "t",
        "hint": "abcd",
        "created_at": NOW - timedelta(days=1),
        "revoked_at": None,
        "last_used_at": None,
    }
    return OperatorToken(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("role", "granted"),
    [
        ("admin", {"read", "workspaces", "keys", "tokens"}),
        ("keys", {"read", "workspaces", "keys"}),
        ("read", {"read"}),
        ("root", set()),  # an unknown role (a hand-edited row) may do nothing
        ("", set()),
    ],
)
def test_each_role_grants_exactly(role: str, granted: set[str]) -> None:
    assert {p.value for p in Permission if allows(role, p)} == granted


def test_roles_allowing_and_the_refusal_say_what_would_do() -> None:
    assert roles_allowing(Permission.TOKENS) == ("admin",)
    assert roles_allowing(Permission.KEYS) == ("admin", "keys")
    assert roles_allowing(Permission.READ) == ROLES
    message = refusal("read", Permission.KEYS)
    assert "role read (read only)" in message and "admin or keys" in message


def test_restriction_and_usability() -> None:
    assert sees(token(), "ANY")
    narrow = token(workspace_ids=("A", "B"))
    assert sees(narrow, "A") and not sees(narrow, "C")
    assert not sees(token(workspace_ids=()), "A")  # an empty list is nothing, never everything
    assert is_usable(token(), NOW)
    assert not is_usable(token(revoked_at=NOW), NOW)
    assert is_usable(token(expires_at=NOW + timedelta(seconds=1)), NOW)
    assert not is_usable(token(expires_at=NOW), NOW)  # expired at that very instant


def test_input_checks() -> None:
    assert check_role("keys") == "keys"
    with pytest.raises(ValueError, match="admin, keys, read"):
        check_role("owner")
    assert check_workspace_ids([" A ", "B", "A"]) == ("A", "B")
    with pytest.raises(ValueError, match="not a workspace ID"):
        check_workspace_ids(["ok", "bad id"])
    with pytest.raises(ValueError, match="at least one"):
        check_workspace_ids([])
