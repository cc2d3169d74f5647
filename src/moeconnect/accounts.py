"""Workspaces, keys and operator tokens: the operations the CLI, admin API and dashboard share.

Validation lives here, once; the shells only translate input and render output. Plaintext keys
and tokens exist only in the return value of the call that made them. Every change takes an
``audit`` context (who, which channel, which client address) that the store records in the
change's own transaction; without one, the context the Accounts was made with is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .audit import AuditContext
from .dcs import DEFAULT_DCS, normalise_region
from .digests import key_digest, token_digest
from .durations import MAX_GRACE, format_duration
from .keys import (
    SCOPES,
    WORKSPACE_ID_PATTERN,
    generate_key,
    generate_keys,
    generate_token,
    key_hint,
    looks_like_key,
    new_ids,
    new_workspace_id,
    new_workspace_ids,
    validate_imported_key,
)
from .records import ApiKey, OperatorToken, RotationResult, Workspace
from .roles import DEFAULT_ROLE, check_role, check_workspace_ids, is_usable
from .store import Store
from .text import excerpt, first_unsafe
from .token_usage import TokenUsage

__all__ = ["Accounts", "InvalidInput", "NewKey", "NewToken", "check_name"]


class InvalidInput(ValueError):
    """Input that can't be accepted; the message says what would be."""


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just generated: the plaintext is here and nowhere else, ever."""

    key: str
    rotation: RotationResult

    def __repr__(self) -> str:
        return f"NewKey(key='…{self.rotation.key.hint}', key_id={self.rotation.key.id!r})"


@dataclass(frozen=True, slots=True)
class NewToken:
    token: str
    record: OperatorToken

    def __repr__(self) -> str:
        return f"NewToken(token='…{self.record.hint}', id={self.record.id!r})"


def _check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise InvalidInput(f"unknown scope {excerpt(scope)}; use one of {', '.join(SCOPES)}")
    return scope


def check_name(name: str, what: str = "workspace") -> str:
    """A name as stored: trimmed, 1 to 100 characters, and nothing a terminal would act on.

    Names are printed by the CLI, shown in the dashboard and returned as ``app_name``; control
    and format characters (ESC, BEL, newlines, bidi overrides; :mod:`moeconnect.text`) are
    refused rather than stripped, so what the operator typed is what is stored.
    """
    if (found := first_unsafe(name)) is not None:
        position, char = found
        raise InvalidInput(
            f"a {what} name may not contain control characters "
            f"(U+{ord(char):04X} at position {position + 1})"
        )
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidInput(f"a {what} name must be 1 to 100 characters long")
    return name


class Accounts:
    """The account operations over one store and one server secret."""

    def __init__(
        self,
        store: Store,
        secret: bytes,
        known_dcs: tuple[str, ...] = DEFAULT_DCS,
        audit: AuditContext | None = None,
    ) -> None:
        self.store = store
        self._secret = secret
        self.known_dcs = known_dcs
        self.token_usage = TokenUsage(store)
        # Who changes are recorded as when a call names nobody: the CLI makes its Accounts
        # with AuditContext.cli(); the server's shells pass each request's own context.
        self.audit = audit or AuditContext.library()

    def _who(self, audit: AuditContext | None) -> AuditContext:
        return audit or self.audit

    def digest(self, key: str) -> bytes:
        return key_digest(self._secret, key)

    # -- workspaces -----------------------------------------------------------------------

    def check_dc(self, dc: str) -> str:
        canonical = normalise_region(dc, self.known_dcs)
        if canonical is None:
            raise InvalidInput(
                f"unknown data center {excerpt(dc)}; use one of {', '.join(self.known_dcs)}"
            )
        return canonical

    async def create_workspace(
        self,
        name: str,
        dc: str = "01",
        workspace_id: str | None = None,
        *,
        audit: AuditContext | None = None,
    ) -> Workspace:
        if workspace_id is not None and not WORKSPACE_ID_PATTERN.match(workspace_id):
            raise InvalidInput(
                "a workspace ID must be 1 to 64 characters of letters, digits, '_' and '-'"
            )
        if workspace_id is not None and looks_like_key(workspace_id):
            # An ID is public and stored in plaintext everywhere; a key never may be.
            raise InvalidInput("that workspace ID is an API key; choose another ID")
        return await self.store.create_workspace(
            workspace_id or new_workspace_id(),
            check_name(name),
            self.check_dc(dc),
            audit=self._who(audit),
        )

    async def rename_workspace(
        self, workspace_id: str, name: str, *, audit: AuditContext | None = None
    ) -> Workspace:
        return await self.store.rename_workspace(
            workspace_id, check_name(name), audit=self._who(audit)
        )

    async def set_workspace_status(
        self, workspace_id: str, status: str, *, audit: AuditContext | None = None
    ) -> Workspace:
        """Suspend (``suspended``) or resume (``active``) a workspace."""
        if status not in ("active", "suspended"):
            raise InvalidInput(f"unknown workspace status {status!r}; use active or suspended")
        return await self.store.set_workspace_status(workspace_id, status, audit=self._who(audit))

    async def delete_workspace(
        self, workspace_id: str, *, audit: AuditContext | None = None
    ) -> None:
        await self.store.delete_workspace(workspace_id, audit=self._who(audit))

    # -- keys -----------------------------------------------------------------------------

    @staticmethod
    def check_grace(grace: timedelta | None) -> timedelta | None:
        if grace is None or grace <= timedelta(0):
            return None
        if grace > MAX_GRACE:
            raise InvalidInput(
                f"a grace period can be at most {format_duration(MAX_GRACE)}, "
                f"not {format_duration(grace)}"
            )
        return grace

    async def generate_key(
        self,
        workspace_id: str,
        scope: str = "data",
        grace: timedelta | None = None,
        *,
        audit: AuditContext | None = None,
    ) -> NewKey:
        """Generate a key; a previous one ends now, or after ``grace``."""
        key = generate_key(_check_scope(scope))
        stored = await self._store(workspace_id, scope, key, "generated", grace, audit)
        return NewKey(key, stored)

    async def import_key(
        self,
        workspace_id: str,
        key: str,
        scope: str = "data",
        grace: timedelta | None = None,
        *,
        audit: AuditContext | None = None,
    ) -> RotationResult:
        """Store a key made elsewhere (fixtures, migrations); the caller already has it."""
        _check_scope(scope)
        if problem := validate_imported_key(key):
            raise InvalidInput(problem)
        return await self._store(workspace_id, scope, key, "imported", grace, audit)

    async def _store(
        self,
        workspace_id: str,
        scope: str,
        key: str,
        origin: str,
        grace: timedelta | None,
        audit: AuditContext | None,
    ) -> RotationResult:
        grace = self.check_grace(grace)
        now = datetime.now(UTC)
        return await self.store.store_key(
            workspace_id,
            scope,
            self.digest(key),
            key_hint(key),
            origin,
            now=now,
            previous_expires_at=now + grace if grace else None,
            audit=self._who(audit),
        )

    async def revoke_key(
        self, workspace_id: str, scope: str = "data", *, audit: AuditContext | None = None
    ) -> int:
        return await self.store.revoke_key(
            workspace_id, _check_scope(scope), now=datetime.now(UTC), audit=self._who(audit)
        )

    async def list_keys(self, workspace_id: str) -> list[ApiKey]:
        return await self.store.list_keys(workspace_id)

    # -- operator tokens ----------------------------------------------------------------------

    async def create_token(
        self,
        name: str,
        *,
        role: str = DEFAULT_ROLE,
        workspace_ids: Sequence[str] | None = None,
        expires_in: timedelta | None = None,
        audit: AuditContext | None = None,
    ) -> NewToken:
        """A new operator token with ``role``, optionally restricted to ``workspace_ids`` (which
        need not exist yet) and expiring ``expires_in`` from now."""
        name = check_name(name, "token")
        try:
            check_role(role)
            ids = check_workspace_ids(workspace_ids) if workspace_ids is not None else None
        except ValueError as err:
            raise InvalidInput(str(err)) from None
        expires_at = None
        if expires_in is not None:
            if expires_in <= timedelta(0):
                raise InvalidInput("a token's expiry must be a positive duration, such as 90d")
            try:
                expires_at = datetime.now(UTC) + expires_in
            except OverflowError:
                raise InvalidInput("that expiry is too far in the future") from None
        token = generate_token()
        record = await self.store.create_token(
            name,
            token_digest(self._secret, token),
            key_hint(token),
            role=role,
            workspace_ids=ids,
            expires_at=expires_at,
            audit=self._who(audit),
        )
        return NewToken(token, record)

    async def revoke_token(
        self, token_id_or_name: str, *, audit: AuditContext | None = None
    ) -> OperatorToken:
        return await self.store.revoke_token(token_id_or_name, audit=self._who(audit))

    async def authenticate_token(self, token: str) -> OperatorToken | None:
        """The usable (not revoked, not expired) operator token matching ``token``, looked up by
        its keyed digest; the use is noted for ``last_used_at``."""
        if not token or len(token) > 256:
            return None
        record = await self.store.token_by_digest(token_digest(self._secret, token))
        return self._usable(record)

    async def operator(self, token_id: str) -> OperatorToken | None:
        """The usable operator token with this ID: a dashboard session re-checks it on every
        request, so a revoked or expired token ends its sessions at once."""
        return self._usable(await self.store.token_by_id(token_id))

    def _usable(self, record: OperatorToken | None) -> OperatorToken | None:
        now = datetime.now(UTC)
        if record is None or not is_usable(record, now):
            return None
        self.token_usage.note(record, now)
        return record

    # -- bulk seeding ---------------------------------------------------------------------

    async def seed_batch(self, count: int, dc: str = "01", start: int = 0) -> list[tuple[str, str]]:
        """Create ``count`` workspaces, each with a Data key; returns ``(workspace_id, key)``."""
        items, credentials = self.seed_rows(count, dc, start)
        await self.store.seed_workspaces(items, audit=self.audit)
        return credentials

    def seed_rows(
        self, count: int, dc: str = "01", start: int = 0
    ) -> tuple[list[tuple[Workspace, ApiKey, bytes]], list[tuple[str, str]]]:
        """What :meth:`seed_batch` writes, and the credentials it returns, without writing.

        ``moeconnect seed`` makes the next batch while the store writes the last one.
        """
        dc = self.check_dc(dc)
        now = datetime.now(UTC)
        items = []
        credentials = []
        keys = generate_keys("data", count)
        for number, workspace_id, key, key_id in zip(
            range(start, start + count),
            new_workspace_ids(count),
            keys,
            new_ids("key", count),
            strict=True,
        ):
            ws = Workspace(workspace_id, f"Seed workspace {number}", dc, "active", now, now)
            record = ApiKey(
                key_id, workspace_id, "data", key_hint(key), "generated", "current", now, None, None
            )
            items.append((ws, record, self.digest(key)))
            credentials.append((workspace_id, key))
        return items, credentials
