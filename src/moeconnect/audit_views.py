"""The JSON shape of an audit-log entry, shared by ``moeconnect audit --json`` and
``GET /admin/v1/audit``: one definition, the same fields under the same names."""

from __future__ import annotations

from typing import Any

from .audit import AuditEntry
from .record_views import iso

__all__ = ["audit_json"]


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": iso(entry.at),
        "actor": {"kind": entry.actor_kind, "id": entry.actor_id, "name": entry.actor_name},
        "channel": entry.channel,
        "client_ip": entry.client_ip,
        "action": entry.action,
        "workspace_id": entry.workspace_id,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
    }
