"""The store interface every backend implements, and the errors it raises.

Exceptions::

    StoreError
    ├── StoreUnavailable   the backend can't be reached or failed: answer 503, never 401
    ├── NotFound           the workspace, key or token named does not exist
    └── Conflict           the write would break a rule (duplicate ID, ...)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from ..records import (
    ApiKey,
    OperatorToken,
    RotationResult,
    Workspace,
    WorkspaceCredentials,
)

__all__ = ["Change", "Conflict", "NotFound", "Store", "StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """Base class of the store's errors."""


class StoreUnavailable(StoreError):
    """The backend could not answer. Never a statement about credentials."""


class NotFound(StoreError):
    """The thing named does not exist."""


class Conflict(StoreError):
    """The write conflicts with what is stored."""


Change = tuple[int, str]  # (change id, workspace id)


class Store(Protocol):
    """Persistent state: workspaces, keys (as digests), operator tokens, the change feed."""

    url: str

    async def migrate(self) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...

    # Workspaces
    async def create_workspace(self, workspace_id: str, name: str, dc: str) -> Workspace: ...
    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...
    async def list_workspaces(
        self,
        *,
        limit: int = 100,
        after: str | None = None,
        dc: str | None = None,
        search: str | None = None,
    ) -> list[Workspace]: ...
    async def rename_workspace(self, workspace_id: str, name: str) -> Workspace: ...
    async def set_workspace_status(self, workspace_id: str, status: str) -> Workspace: ...
    async def delete_workspace(self, workspace_id: str) -> None: ...

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
    ) -> RotationResult: ...
    async def revoke_key(self, workspace_id: str, scope: str, *, now: datetime) -> int: ...
    async def list_keys(self, workspace_id: str) -> list[ApiKey]: ...
    async def credentials(
        self, workspace_id: str, scope: str = "data"
    ) -> WorkspaceCredentials | None: ...
    async def many_credentials(
        self, workspace_ids: Sequence[str], scope: str = "data"
    ) -> dict[str, WorkspaceCredentials]: ...

    # Operator tokens
    async def create_token(self, name: str, digest: bytes, hint: str) -> OperatorToken: ...
    async def list_tokens(self) -> list[OperatorToken]: ...
    async def revoke_token(self, token_id_or_name: str) -> OperatorToken: ...
    async def token_by_digest(self, digest: bytes) -> OperatorToken | None: ...

    # Change feed
    async def changes_since(self, after_id: int) -> list[Change]: ...
    async def last_change_id(self) -> int: ...

    # Maintenance
    async def check_integrity(self) -> list[str]: ...
