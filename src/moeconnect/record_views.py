"""JSON shapes of the connection record and of accounts, shared by the CLI and the admin API.

One definition, so ``moeconnect log --json`` and ``GET /admin/v1/.../attempts`` print the same
fields under the same names. Times are ISO 8601 UTC with a ``Z``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .records import ApiKey, Workspace
from .store.base import AttemptRow, SourceSummary

__all__ = ["attempt_json", "iso", "key_json", "summary_json", "workspace_json"]


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def workspace_json(ws: Workspace) -> dict[str, Any]:
    return {
        "workspace_id": ws.id,
        "name": ws.name,
        "dc": ws.dc,
        "status": ws.status,
        "created_at": iso(ws.created_at),
        "updated_at": iso(ws.updated_at),
    }


def key_json(item: ApiKey) -> dict[str, Any]:
    return {
        "key_id": item.id,
        "workspace_id": item.workspace_id,
        "scope": item.scope,
        "hint": item.hint,
        "origin": item.origin,
        "state": item.state,
        "created_at": iso(item.created_at),
        "ended_at": iso(item.ended_at),
        "ended_how": item.ended_how,
    }


def attempt_json(row: AttemptRow) -> dict[str, Any]:
    """One row: a single attempt (``count`` 1) or an aggregate over ``first_at``..``at``."""
    return {
        "id": str(row.id),
        "at": iso(row.last_at),
        "first_at": iso(row.at),
        "minute": iso(row.minute),
        "request_id": row.request_id,
        "workspace_id": row.workspace_id,
        "dc": row.dc,
        "source": row.source,
        "outcome": row.outcome,
        "key_id": row.key_id,
        "stale": row.stale,
        "client_ip": row.client_ip,
        "user_agent": row.user_agent,
        "count": row.count,
        "aggregated": row.agg_key is not None,
    }


def summary_json(item: SourceSummary) -> dict[str, Any]:
    return {
        "source": item.source,
        "first_seen": iso(item.first_seen),
        "last_seen": iso(item.last_seen),
        "last_success": iso(item.last_success),
        "last_failure": iso(item.last_failure),
        "last_failure_code": item.last_failure_code,
        "counts": dict(sorted(item.counts.items())),
        "total": item.total,
        "uses_replaced_key": item.uses_replaced_key,
        "replaced_key_id": item.replaced_key_id,
        "replaced_key_ends_at": iso(item.replaced_key_ends_at),
    }
