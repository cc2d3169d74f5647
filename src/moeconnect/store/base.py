"""The store interface every backend implements, and the errors it raises.

Exceptions::

    StoreError
    ├── StoreUnavailable   the backend can't be reached or failed: answer 503, never 401
    ├── NotFound           the workspace, key or token named does not exist
    └── Conflict           the write would break a rule (duplicate ID, ...)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..audit import AuditContext, AuditPage
from ..records import (
    ApiKey,
    OperatorToken,
    RotationResult,
    Workspace,
    WorkspaceCredentials,
)

__all__ = [
    "AttemptBucket",
    "AttemptPage",
    "AttemptRow",
    "Change",
    "Conflict",
    "FeedPage",
    "NotFound",
    "SourceSummary",
    "Store",
    "StoreError",
    "StoreUnavailable",
]


# Most changes one changes_since() call returns: a full page means more are waiting.
CHANGES_PAGE = 10_000


class StoreError(Exception):
    """Base class of the store's errors."""


class StoreUnavailable(StoreError):
    """The backend could not answer. Never a statement about credentials."""


class NotFound(StoreError):
    """The thing named does not exist."""


class Conflict(StoreError):
    """The write conflicts with what is stored."""


Change = tuple[int, str]  # (change id, workspace id)


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One read of the change feed, and what tells this store's feed from another's.

    ``epoch`` is the store's identity (``store_identity``: random, written when the store was
    created; None if that row is missing). ``changes`` are as :meth:`Store.changes_since`
    returns them. ``anchor`` is the stamp of the change asked about (None: there is no such
    change), ``last`` that of the last change in ``changes``. A stamp is the change's ``at`` as
    the driver returns it: the same row read twice gives equal stamps, so a change that now has
    another stamp is another change under a reused ID (a restored backup). Compare stamps only
    for equality, within one process.
    """

    epoch: str | None
    changes: list[Change]
    anchor: object
    last: object


# -- connection record (issue 3) -----------------------------------------------------------------


@dataclass(slots=True)
class AttemptRow:
    """One row of the connection record: a single attempt, or an aggregate of ``count``.

    ``agg_key`` is set on aggregates (successes per workspace/source/key/outcome/minute, 429s
    per workspace/client IP/minute): rows with the same one add up, in one batch or across
    batches and processes. ``id`` is set on rows read back from the store. Not frozen, though
    nothing changes one: the recorder builds one per failed attempt, and a frozen dataclass's
    ``__init__`` costs three times as much.
    """

    at: datetime
    last_at: datetime
    minute: datetime
    request_id: str
    workspace_id: str | None
    dc: str | None
    source: str | None
    outcome: str
    key_id: str | None
    stale: bool
    client_ip: str | None
    user_agent: str | None
    count: int = 1
    agg_key: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class AttemptPage:
    """Rows newest first; ``next_cursor`` fetches the following page (None: no more)."""

    items: list[AttemptRow]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class SourceSummary:
    """What one source did against one workspace, over the retained record."""

    source: str | None
    first_seen: datetime
    last_seen: datetime
    last_success: datetime | None
    last_failure: datetime | None
    last_failure_code: str | None
    counts: dict[str, int]  # outcome code -> attempts
    total: int
    # Its latest success used a key that is no longer current (replaced or revoked since).
    uses_replaced_key: bool
    replaced_key_id: str | None
    replaced_key_ends_at: datetime | None  # end of that key's grace (or when it stopped)


@dataclass(frozen=True, slots=True)
class AttemptBucket:
    """Attempts with one outcome in the time bucket starting at ``start``."""

    start: datetime
    outcome: str
    count: int


# -- end connection record -----------------------------------------------------------------------


class Store(Protocol):
    """Persistent state: workspaces, keys (as digests), operator tokens, the change feed."""

    url: str

    async def migrate(self) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...
    def add_change_listener(
        self, listener: Callable[[Sequence[str]], Awaitable[None] | None]
    ) -> None:
        """``listener(workspace_ids)`` runs after each commit that appended to the change feed."""

    # Every write takes ``audit`` (who, through which channel, from where) and appends its
    # audit-log entry in its own transaction; None records it as AuditContext.library().

    # Workspaces
    async def create_workspace(
        self, workspace_id: str, name: str, dc: str, *, audit: AuditContext | None = None
    ) -> Workspace: ...
    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...
    async def list_workspaces(
        self,
        *,
        limit: int = 100,
        after: str | None = None,
        dc: str | None = None,
        search: str | None = None,
        only: Collection[str] | None = None,
    ) -> list[Workspace]:
        """Workspaces by ID; ``only``: just these IDs (a restricted operator token's)."""
        ...

    async def rename_workspace(
        self, workspace_id: str, name: str, *, audit: AuditContext | None = None
    ) -> Workspace: ...
    async def set_workspace_status(
        self, workspace_id: str, status: str, *, audit: AuditContext | None = None
    ) -> Workspace: ...
    async def delete_workspace(
        self, workspace_id: str, *, audit: AuditContext | None = None
    ) -> None: ...

    # Keys
    async def store_key(
        self,
        workspace_id: str,
        scope: str,
        digest: bytes,
        hint: str,
        origin: str,
        *,
        now: datetime,
        previous_expires_at: datetime | None = None,
        audit: AuditContext | None = None,
    ) -> RotationResult: ...
    async def revoke_key(
        self,
        workspace_id: str,
        scope: str,
        *,
        now: datetime,
        audit: AuditContext | None = None,
    ) -> int: ...
    async def list_keys(self, workspace_id: str) -> list[ApiKey]: ...
    async def credentials(
        self, workspace_id: str, scope: str = "data"
    ) -> WorkspaceCredentials | None: ...
    async def many_credentials(
        self, workspace_ids: Sequence[str], scope: str = "data"
    ) -> dict[str, WorkspaceCredentials]: ...

    # Operator tokens
    async def create_token(
        self,
        name: str,
        digest: bytes,
        hint: str,
        *,
        role: str = "admin",
        workspace_ids: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        audit: AuditContext | None = None,
    ) -> OperatorToken: ...
    async def list_tokens(self) -> list[OperatorToken]: ...
    async def revoke_token(
        self, token_id_or_name: str, *, audit: AuditContext | None = None
    ) -> OperatorToken: ...
    async def token_by_digest(self, digest: bytes) -> OperatorToken | None: ...
    async def token_by_id(self, token_id: str) -> OperatorToken | None: ...
    async def touch_tokens(self, used: Mapping[str, datetime]) -> None:
        """Set ``last_used_at`` (batched by :class:`~moeconnect.token_usage.TokenUsage`)."""
        ...

    # Change feed
    async def changes_since(self, after_id: int) -> list[Change]:
        """The oldest changes after ``after_id``, in ID order, at most :data:`CHANGES_PAGE`."""
        ...

    async def read_feed(self, after_id: int, anchor_id: int) -> FeedPage:
        """The oldest changes after ``after_id`` (as :meth:`changes_since`), the store's epoch,
        and the stamps of change ``anchor_id`` and of the last change read: what
        :class:`~moeconnect.cache.ChangeWatcher` polls."""
        ...

    async def last_change_id(self) -> int: ...

    # -- connection record (issue 3) -----------------------------------------------------------
    async def add_attempts(self, batch: Sequence[AttemptRow]) -> None: ...
    async def list_attempts(
        self,
        workspace_id: str,
        *,
        source: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> AttemptPage: ...
    async def source_summary(self, workspace_id: str) -> list[SourceSummary]: ...
    async def attempt_counts(
        self, workspace_id: str, since: datetime, bucket_seconds: int = 3600
    ) -> list[AttemptBucket]: ...
    async def prune_attempts(self, before: datetime) -> int: ...

    # -- end connection record -------------------------------------------------------------------

    # -- audit log (issue 23): append-only; only retention (prune_audit) deletes --------------
    async def add_audit(
        self,
        audit: AuditContext,
        action: str,
        *,
        workspace_id: str | None = None,
        target: str | None = None,
        after: dict[str, Any] | None = None,
    ) -> None: ...
    async def list_audit(
        self,
        *,
        workspace_id: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> AuditPage: ...
    async def prune_audit(self, before: datetime) -> int: ...

    # Maintenance
    async def check_integrity(self) -> list[str]: ...
    async def seed_workspaces(
        self,
        items: Sequence[tuple[Workspace, ApiKey, bytes]],
        *,
        audit: AuditContext | None = None,
    ) -> None: ...
