"""The audit log's SQL: append an entry inside a change's transaction, read, prune, check.

Kept beside :mod:`moeconnect.store.sql` rather than in it: the store's write methods call
:func:`append` on the connection of their own transaction, so a change and its entry commit
together or not at all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..audit import AuditContext, AuditEntry, dump
from .schema import api_keys, audit_log, changes, operator_tokens, workspaces

__all__ = ["append", "check", "entry_of", "list_query", "parse_cursor", "prune_query"]

_KEY_MADE = ("key.generate", "key.import", "key.rotate")
_WORKSPACE_UPDATES = ("workspace.rename", "workspace.suspend", "workspace.resume")
_SHOWN = 5  # example IDs a problem names


async def append(
    conn: AsyncConnection,
    context: AuditContext,
    action: str,
    *,
    at: datetime,
    workspace_id: str | None = None,
    target: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Add one entry on ``conn``: inside the transaction of the change it describes."""
    await conn.execute(
        audit_log.insert().values(
            at=at,
            actor_kind=context.actor_kind,
            actor_id=context.actor_id,
            actor_name=(context.actor_name or "")[:200] or None,
            channel=context.channel,
            client_ip=(context.client_ip or "")[:64] or None,
            action=action,
            workspace_id=workspace_id,
            target=target[:128] if target else None,
            before=dump(before),
            after=dump(after),
        )
    )


def _json(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def entry_of(row: Any) -> AuditEntry:
    return AuditEntry(
        id=int(row.id),
        at=row.at,
        actor_kind=row.actor_kind,
        actor_id=row.actor_id,
        actor_name=row.actor_name,
        channel=row.channel,
        client_ip=row.client_ip,
        action=row.action,
        workspace_id=row.workspace_id,
        target=row.target,
        before=_json(row.before),
        after=_json(row.after),
    )


def cursor_of(entry: AuditEntry) -> str:
    """Where the next page starts: the last entry's time (µs since the epoch) and ID."""
    return f"{round(entry.at.timestamp() * 1_000_000)}_{entry.id}"


def parse_cursor(cursor: str) -> tuple[datetime, int]:
    micros, _, row_id = cursor.partition("_")
    if not (micros.isdigit() and row_id.isdigit() and len(micros) <= 17 and len(row_id) <= 19):
        raise ValueError("the cursor is not one this API returned")
    return datetime.fromtimestamp(int(micros) / 1_000_000, UTC), int(row_id)


def list_query(
    *,
    workspace_id: str | None,
    action: str | None,
    since: datetime | None,
    cursor: str | None,
    limit: int,
) -> sa.Select[Any]:
    """Entries newest first, ``limit`` of them; ``action`` without a dot is a family (``key``)."""
    c = audit_log.c
    query = sa.select(audit_log)
    if workspace_id is not None:
        query = query.where(c.workspace_id == workspace_id)
    if action:
        if "." in action:
            query = query.where(c.action == action)
        elif action.isalpha():  # a family: every action that starts with it
            query = query.where(c.action.like(action + ".%"))
        else:
            raise ValueError(f"{action!r} is not an action or a family of actions")
    if since is not None:
        query = query.where(c.at >= since)
    if cursor is not None:
        at, after_id = parse_cursor(cursor)
        query = query.where(sa.or_(c.at < at, sa.and_(c.at == at, c.id < after_id)))
    return query.order_by(c.at.desc(), c.id.desc()).limit(limit)


def prune_query(before: datetime, rows: int) -> sa.Delete:
    """Delete up to ``rows`` of the entries older than ``before`` (through ``ix_audit_time``)."""
    c = audit_log.c
    doomed = sa.select(c.id).where(c.at < before).order_by(c.at).limit(rows)
    return audit_log.delete().where(c.id.in_(doomed))


async def check(conn: AsyncConnection) -> list[str]:
    """What ``moeconnect db check`` says about the audit log: every change has its entry.

    Checkable from the rows that remain, over the window the log covers (from its oldest entry;
    older entries were pruned, or the database predates the log):

    - every workspace, key and operator token created in the window has its creation entry at
      the instant of its ``created_at`` (or, for ``moeconnect seed``, the batch's entry);
    - every workspace's latest rename/suspend/resume, every key revocation and every token
      revocation in the window has its entry at that instant;
    - every row of the change feed in the window (which every workspace and key change writes,
      deletions included) has an entry for that workspace at that instant;
    - and the other way: every workspace or key entry has its row in the change feed, and
      every token entry its token (an entry whose change was never made).
    """
    c = audit_log.c
    start = (await conn.execute(sa.select(sa.func.min(c.at)))).scalar()
    if start is None:
        return []
    problems: list[str] = []

    def entry(*conditions: Any) -> Any:
        return sa.exists(sa.select(c.id).where(*conditions))

    async def report(query: Any, text: str) -> None:
        rows = (await conn.execute(query)).all()
        if rows:
            shown = ", ".join(str(r[0]) for r in rows[:_SHOWN])
            more = f" and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else ""
            problems.append(f"{text}: {shown}{more}")

    w, k, t, ch = workspaces.c, api_keys.c, operator_tokens.c, changes.c
    await report(
        sa.select(w.id).where(
            w.created_at >= start,
            ~entry(c.workspace_id == w.id, c.at == w.created_at, c.action == "workspace.create"),
            ~sa.exists(
                sa.select(c.id).where(
                    c.action == "workspace.seed",
                    c.workspace_id.is_(None),
                    c.at == w.created_at,
                )
            ),
        ),
        "workspaces created without an audit entry",
    )
    await report(
        sa.select(w.id).where(
            w.updated_at >= start,
            w.updated_at > w.created_at,
            ~entry(
                c.workspace_id == w.id,
                c.at == w.updated_at,
                c.action.in_(_WORKSPACE_UPDATES),
            ),
        ),
        "workspaces changed without an audit entry",
    )
    await report(
        sa.select(k.id).where(
            k.created_at >= start,
            ~entry(
                c.workspace_id == k.workspace_id,
                c.at == k.created_at,
                c.target == k.id,
                c.action.in_(_KEY_MADE),
            ),
            ~sa.exists(
                sa.select(c.id).where(
                    c.action == "workspace.seed",
                    c.workspace_id.is_(None),
                    c.at == k.created_at,
                )
            ),
        ),
        "keys stored without an audit entry",
    )
    await report(
        sa.select(k.id).where(
            k.ended_how == "revoked",
            k.ended_at >= start,
            ~entry(c.workspace_id == k.workspace_id, c.at == k.ended_at, c.action == "key.revoke"),
        ),
        "keys revoked without an audit entry",
    )
    await report(
        sa.select(t.id).where(
            t.created_at >= start,
            ~entry(
                c.workspace_id.is_(None),
                c.target == t.id,
                c.at == t.created_at,
                c.action == "token.create",
            ),
        ),
        "operator tokens created without an audit entry",
    )
    await report(
        sa.select(t.id).where(
            t.revoked_at >= start,
            ~entry(
                c.workspace_id.is_(None),
                c.target == t.id,
                c.at == t.revoked_at,
                c.action == "token.revoke",
            ),
        ),
        "operator tokens revoked without an audit entry",
    )
    await report(
        sa.select(ch.id).where(
            ch.at >= start,
            ~entry(c.workspace_id == ch.workspace_id, c.at == ch.at),
        ),
        "changes (by change-feed ID) without an audit entry",
    )
    # The other way: an entry whose change is not there.
    # An outer join, not NOT EXISTS: the change feed has no index on (workspace_id, at), and
    # SQLite builds a temporary one for a join, not for the subquery (quadratic: 14 s for
    # 20,000 entries).
    feed = audit_log.outerjoin(changes, (ch.workspace_id == c.workspace_id) & (ch.at == c.at))
    await report(
        sa.select(c.id)
        .select_from(feed)
        .where(
            c.workspace_id.is_not(None),
            c.action.like("workspace.%") | c.action.like("key.%"),
            ch.id.is_(None),
        ),
        "audit entries (by ID) whose change is not in the change feed",
    )
    await report(
        sa.select(c.id).where(
            c.action.in_(("token.create", "token.revoke")),
            ~sa.exists(sa.select(t.id).where(t.id == c.target)),
        ),
        "audit entries (by ID) naming an operator token that does not exist",
    )
    return problems
