"""Plain records shared by the core, the store and the shells.

Frozen dataclasses with slots: cheap to build, safe to cache, no ORM behind them. None holds a
plaintext key or token, only digests and hints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from .keys import WORKSPACE_ID_PATTERN, looks_like_key

__all__ = [
    "ApiKey",
    "Attempt",
    "CredentialKey",
    "KeyState",
    "OperatorToken",
    "RotationResult",
    "Workspace",
    "WorkspaceCredentials",
    "could_be_workspace_id",
]

KeyState = Literal["current", "replaced", "revoked"]


def could_be_workspace_id(value: str) -> bool:
    """Whether ``value`` has a workspace ID's form (1-64 of ``[A-Za-z0-9_-]``) and is not a key.

    A client's value that fails this names no workspace (accounts refuse such IDs), so it is
    neither looked up, remembered nor stored: a 27 KB Basic username, or a key sent in its
    place, would otherwise be kept as it came.
    """
    # fullmatch: the pattern's "$" alone would also accept a trailing newline.
    return WORKSPACE_ID_PATTERN.fullmatch(value) is not None and not looks_like_key(value)


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    name: str
    dc: str
    status: str  # "active" | "suspended"
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """Metadata of one key, as listed to owners (never the key itself)."""

    id: str
    workspace_id: str
    scope: str
    hint: str
    origin: str  # "generated" | "imported"
    state: KeyState
    created_at: datetime
    ended_at: datetime | None  # when it stopped (or, in a grace period, stops) working
    ended_how: str | None  # "replaced" | "revoked"


@dataclass(frozen=True, slots=True)
class CredentialKey:
    """What the hot path needs of one key: its digest and whether and until when it works."""

    id: str
    digest: bytes
    state: KeyState
    ended_at: datetime | None
    ended_how: str | None


@dataclass(frozen=True, slots=True)
class WorkspaceCredentials:
    """One workspace and its Data keys, current first: the unit the credential cache holds."""

    workspace_id: str
    name: str
    dc: str
    status: str
    keys: tuple[CredentialKey, ...]


@dataclass(frozen=True, slots=True)
class OperatorToken:
    """An operator token's record; :mod:`moeconnect.roles` says what its role allows."""

    id: str
    name: str
    hint: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    role: str = "admin"  # "admin" | "keys" | "read"
    workspace_ids: tuple[str, ...] | None = None  # None: every workspace
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RotationResult:
    """A key just stored, and when the key it replaced stops working (if there was one)."""

    key: ApiKey
    previous_key_id: str | None
    previous_key_expires_at: datetime | None


@dataclass(slots=True)
class Attempt:
    """One call of the Test Connection endpoint, as the connection record keeps it.

    Not frozen, though nothing changes one: a frozen dataclass's ``__init__`` costs three times
    as much, and the endpoint builds one for every failed attempt.
    """

    at: datetime
    request_id: str
    workspace_id: str | None
    dc: str | None
    source: str | None
    outcome: str  # an error code, SUCCESS or SUCCESS_STALE_KEY
    key_id: str | None
    client_ip: str | None
    user_agent: str | None
