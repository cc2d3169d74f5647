"""The audit log's vocabulary: who acts (:class:`AuditContext`), what an entry says
(:class:`AuditEntry`), the non-secret before/after of each change, and the bound on failed
dashboard sign-ins. Pure: no I/O; the store writes the entries, in the transaction of the change.

Never a key, a token or a digest: before/after hold names, statuses, IDs, hints (the last four
characters, already shown everywhere) and times. Values a client typed (a workspace name) go
through :func:`~moeconnect.keys.redact_keys` as well, in case a key was pasted into one.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from .keys import redact_keys
from .records import ApiKey, OperatorToken, Workspace

__all__ = [
    "ACTIONS",
    "CHANNELS",
    "AuditContext",
    "AuditEntry",
    "AuditPage",
    "SignInFailures",
    "describe",
    "dump",
    "key_state",
    "token_state",
    "workspace_state",
]

# Every action the log records. ``key.rotate`` is a generation that replaced a current key;
# ``workspace.seed`` one batch of ``moeconnect seed`` (one entry, not one per workspace).
ACTIONS: Final = (
    "workspace.create",
    "workspace.rename",
    "workspace.suspend",
    "workspace.resume",
    "workspace.delete",
    "workspace.seed",
    "key.generate",
    "key.import",
    "key.rotate",
    "key.revoke",
    "token.create",
    "token.revoke",
    "dashboard.sign_in",
    "dashboard.sign_in_failed",
)
CHANNELS: Final = ("cli", "admin-api", "dashboard", "secret-scanning", "library")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        return "unknown"


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who makes a change, through which channel, from where: what every write carries.

    ``actor_kind`` is ``token`` (an operator token: its ID and name), ``cli`` (a person at a
    shell: ``cli:<OS user>``), ``library`` (code calling :class:`~moeconnect.accounts.Accounts`
    directly, e.g. the pytest plugin) or ``unknown`` (a failed sign-in: no token is known).
    """

    actor_kind: str
    actor_id: str | None
    actor_name: str | None
    channel: str
    client_ip: str | None = None

    @classmethod
    def cli(cls) -> AuditContext:
        """A command typed at a shell: the OS user is the best name there is."""
        return cls("cli", None, f"cli:{_os_user()}", "cli")

    @classmethod
    def library(cls) -> AuditContext:
        """In-process callers that name nobody (tests, the pytest plugin, scripts)."""
        return cls("library", None, f"library:{_os_user()}", "library")

    @classmethod
    def token(cls, token: OperatorToken, channel: str, client_ip: str | None) -> AuditContext:
        return cls("token", token.id, token.name, channel, client_ip)

    @classmethod
    def anonymous(cls, channel: str, client_ip: str | None) -> AuditContext:
        return cls("unknown", None, None, channel, client_ip)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the audit log, as read back."""

    id: int
    at: datetime
    actor_kind: str
    actor_id: str | None
    actor_name: str | None
    channel: str
    client_ip: str | None
    action: str
    workspace_id: str | None
    target: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @property
    def actor(self) -> str:
        """How a person reads the actor: ``ops (tok_…)``, ``cli:alice``, ``unknown``."""
        if self.actor_id and self.actor_name:
            return f"{self.actor_name} ({self.actor_id})"
        return self.actor_name or self.actor_id or self.actor_kind


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Entries newest first; ``next_cursor`` fetches the following page (None: no more)."""

    items: list[AuditEntry]
    next_cursor: str | None


def dump(state: dict[str, Any] | None) -> str | None:
    """``state`` as the stored JSON text, every string checked for a pasted key."""
    if state is None:
        return None
    return redact_keys(orjson.dumps(state, option=orjson.OPT_UTC_Z).decode())


def workspace_state(ws: Workspace) -> dict[str, Any]:
    return {"name": ws.name, "dc": ws.dc, "status": ws.status}


def key_state(key: ApiKey) -> dict[str, Any]:
    return {"key_id": key.id, "scope": key.scope, "hint": key.hint, "origin": key.origin}


def token_state(token: OperatorToken) -> dict[str, Any]:
    """A token's non-secret description: who it is, what it may do, until when."""
    return {
        "token_id": token.id,
        "name": token.name,
        "hint": token.hint,
        "role": token.role,
        "workspace_ids": list(token.workspace_ids) if token.workspace_ids is not None else None,
        "expires_at": token.expires_at,
    }


class SignInFailures:
    """Which failed dashboard sign-ins get an audit entry, so nobody can grow the log at will.

    Sign-in needs no credentials, so each failure written is a row anyone can add. Per
    process and per clock minute, at most ``per_ip`` entries for one client address and
    ``per_minute`` in all; the failures beyond are counted, and the next entry written says
    how many went unrecorded before it (``after.unrecorded_before``). At most ``per_minute``
    rows a minute, for at most the retention period: a bounded table. Memory: one small
    dict of at most ``per_minute`` addresses.
    """

    def __init__(self, per_ip: int = 5, per_minute: int = 20) -> None:
        self.per_ip = per_ip
        self.per_minute = per_minute
        self._minute = -1
        self._by_ip: dict[str | None, int] = {}
        self._written = 0
        self.unrecorded = 0  # failures not written since the last entry

    def admit(self, client_ip: str | None, now: float | None = None) -> int | None:
        """None: don't write this failure; else write it, saying how many went unrecorded."""
        minute = int((time.time() if now is None else now) // 60)
        if minute != self._minute:
            self._minute, self._by_ip, self._written = minute, {}, 0
        seen = self._by_ip.get(client_ip, 0)
        if self._written >= self.per_minute or seen >= self.per_ip:
            self.unrecorded += 1
            return None
        self._by_ip[client_ip] = seen + 1
        self._written += 1
        unrecorded, self.unrecorded = self.unrecorded, 0
        return unrecorded


def describe(entry: AuditEntry) -> str:
    """One line a person reads on the dashboard's Audit page: what changed, before → after."""
    before, after = entry.before or {}, entry.after or {}
    action = entry.action
    if action == "workspace.create":
        return f"Created “{after.get('name')}” in DC {after.get('dc')}"
    if action == "workspace.rename":
        return f"Renamed “{before.get('name')}” → “{after.get('name')}”"
    if action in ("workspace.suspend", "workspace.resume"):
        return f"Status {before.get('status')} → {after.get('status')}"
    if action == "workspace.delete":
        return f"Deleted “{before.get('name')}” and its {before.get('keys', 0)} key(s)"
    if action in ("key.generate", "key.import", "key.rotate"):
        verb = {"key.generate": "Generated", "key.import": "Imported", "key.rotate": "Rotated"}
        text = f"{verb[action]} {after.get('scope')} key …{after.get('hint')} ({entry.target})"
        if before.get("key_id"):
            text += f"; replaced …{before.get('hint')} ({before.get('key_id')})"
            ends = after.get("previous_key_expires_at")
            if ends:
                text += f", which works until {_readable(ends)}"
        return text
    if action == "key.revoke":
        keys = before.get("keys") or []
        if not keys:
            return f"Revoked the {entry.target} key: there was none"
        named = ", ".join(f"…{k.get('hint')} ({k.get('key_id')})" for k in keys)
        return f"Revoked {entry.target} key(s) {named}"
    if action in ("token.create", "token.revoke"):
        name = after.get("name") or before.get("name")
        return f"{'Created' if action == 'token.create' else 'Revoked'} token “{name}”"
    if action == "dashboard.sign_in_failed" and after.get("unrecorded_before"):
        return f"{after['unrecorded_before']} earlier failures were not recorded"
    return ""


def _readable(moment: object) -> str:
    """An ISO time from before/after as people read it: ``05 Jan 2026, 10:00 UTC``."""
    try:
        parsed = datetime.fromisoformat(str(moment).replace("Z", "+00:00"))
    except ValueError:
        return str(moment)
    return parsed.strftime("%d %b %Y, %H:%M UTC")
