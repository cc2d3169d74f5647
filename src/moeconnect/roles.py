"""Operator-token roles and workspace restrictions: what a token may do, decided in one place.

Pure: no store, no I/O. The admin API and the dashboard ask :func:`allows` before a handler runs
and :func:`sees` before a workspace is read or changed, so the two can't disagree.

Roles (SPEC section 9):

- ``admin``: everything, operator tokens included (no route manages tokens yet; the CLI does,
  with the database's own credentials, and the audit log's token entries are for admins).
- ``keys``: workspaces and keys (create, rename, suspend, resume, delete; generate, import,
  rotate, revoke) and every read; not tokens.
- ``read``: reads only.

A token may also be restricted to a list of workspace IDs: it then sees and changes only those
(others are answered as if they did not exist) and can't create workspaces, since a new one
would be outside its list.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Final

from .keys import WORKSPACE_ID_PATTERN
from .records import OperatorToken

__all__ = [
    "DEFAULT_ROLE",
    "ROLES",
    "Permission",
    "allows",
    "check_role",
    "check_workspace_ids",
    "is_usable",
    "refusal",
    "role_summary",
    "roles_allowing",
    "sees",
]


class Permission(StrEnum):
    """What a request needs of its token."""

    READ = "read"
    WORKSPACES = "workspaces"  # create, rename, suspend, resume, delete
    KEYS = "keys"  # generate, import, rotate, revoke
    TOKENS = "tokens"  # create, revoke, list operator tokens; the audit log's token entries


ROLES: Final = ("admin", "keys", "read")
DEFAULT_ROLE: Final = "admin"  # what `token create` made before roles existed; kept for scripts

_GRANTS: Final[dict[str, frozenset[Permission]]] = {
    "admin": frozenset(Permission),
    "keys": frozenset({Permission.READ, Permission.WORKSPACES, Permission.KEYS}),
    "read": frozenset({Permission.READ}),
}

_DESCRIPTIONS: Final = {
    "admin": "everything",
    "keys": "workspaces and keys, not tokens",
    "read": "read only",
}


def allows(role: str, permission: Permission) -> bool:
    """Whether ``role`` may do what needs ``permission``; an unknown role may do nothing."""
    grants = _GRANTS.get(role)
    return grants is not None and permission in grants


def roles_allowing(permission: Permission) -> tuple[str, ...]:
    """The roles that may do what needs ``permission``, in :data:`ROLES` order."""
    return tuple(role for role in ROLES if permission in _GRANTS[role])


def refusal(role: str, permission: Permission) -> str:
    """The sentence a refused request gets: what the token is, and what would do."""
    needed = " or ".join(roles_allowing(permission))
    return (
        f"This operator token has the role {role} ({role_summary(role)}); "
        f"this needs the role {needed}."
    )


def role_summary(role: str) -> str:
    """A few words on what the role may do, for error messages and listings."""
    return _DESCRIPTIONS.get(role, "nothing (unknown role)")


def sees(token: OperatorToken, workspace_id: str) -> bool:
    """Whether ``token`` may read or change the workspace (restriction only, not the role)."""
    return token.workspace_ids is None or workspace_id in token.workspace_ids


def is_usable(token: OperatorToken, now: datetime) -> bool:
    """Not revoked and not expired at ``now``."""
    if token.revoked_at is not None:
        return False
    return token.expires_at is None or now < token.expires_at


def check_role(role: str) -> str:
    """``role`` when it is one of :data:`ROLES`, else ``ValueError`` saying which are."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    return role


def check_workspace_ids(ids: Iterable[str]) -> tuple[str, ...]:
    """The IDs of a restriction, without duplicates, in the order given; ``ValueError`` when
    one is not a workspace ID or there is none."""
    seen: dict[str, None] = {}
    for value in ids:
        value = value.strip()
        if not WORKSPACE_ID_PATTERN.fullmatch(value):
            raise ValueError(
                f"{value[:64]!r} is not a workspace ID (1 to 64 letters, digits, '_' and '-')"
            )
        seen[value] = None
    if not seen:
        raise ValueError("a workspace restriction needs at least one workspace ID")
    return tuple(seen)
