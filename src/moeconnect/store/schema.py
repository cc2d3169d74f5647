"""The store's tables, in SQLAlchemy Core: one definition for SQLite and PostgreSQL.

Alembic migrations in ``migrations/versions`` create exactly these; ``tests/store`` checks the two
agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    text,
)

__all__ = [
    "UTCDateTime",
    "api_keys",
    "audit_log",
    "changes",
    "connection_attempts",
    "connection_attempts_staged",
    "metadata",
    "operator_tokens",
    "store_identity",
    "workspaces",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC, returned timezone-aware, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        result: datetime = value.replace(tzinfo=UTC)
        return result


metadata = MetaData()

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("dc", String(8), nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "workspace_id",
        String(64),
        ForeignKey("workspaces.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("scope", String(16), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("hint", String(8), nullable=False),
    Column("origin", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("ended_at", UTCDateTime(), nullable=True),
    Column("ended_how", String(16), nullable=True),
    Index("ix_api_keys_workspace_scope", "workspace_id", "scope", "created_at"),
    Index(
        "uq_api_keys_one_current",
        "workspace_id",
        "scope",
        unique=True,
        sqlite_where=text("state = 'current'"),
        postgresql_where=text("state = 'current'"),
    ),
)

operator_tokens = Table(
    "operator_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("digest", LargeBinary(32), nullable=False, unique=True),
    Column("hint", String(8), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
    # Migration 0007 (issue 23). ``workspace_ids``: a JSON array of the workspace IDs the token
    # is restricted to, NULL for every workspace. A column, not a child table: it comes with the
    # row authentication reads anyway (no second query per request), and deleting a workspace
    # can't empty the list and so silently widen the token to every workspace.
    Column("role", String(8), nullable=False, server_default="admin"),
    Column("workspace_ids", Text(), nullable=True),
    Column("expires_at", UTCDateTime(), nullable=True),
)

# Every write that can change what the Test Connection endpoint answers appends a row here, in
# the same transaction. Servers poll it to drop stale cache entries, whichever process (another
# worker, another instance, the CLI) made the change.
changes = Table(
    "changes",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("workspace_id", String(64), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
)

# One row: a random ``epoch`` written when the store was created (migration 0006). A server's
# change watcher reads it with every poll of ``changes``: a new value means the store under it was
# recreated or replaced, and every cache is dropped (``ChangeWatcher``, docs/operations.md).
store_identity = Table(
    "store_identity",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("epoch", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

# -- connection record (issue 3) ---------------------------------------------------------------
# One row per failed attempt, or one row per aggregate: successes per (workspace, source, key,
# outcome, minute) and 429s per (workspace, client IP, minute), identified by ``agg_key`` so a
# later batch adds to the same row. ``count`` is exact; ``at``/``last_at`` span the row.
# No foreign key: the record is history and outlives (or precedes) the workspace it names.


def _attempt_columns() -> list[Column[Any]]:
    """The record's columns after ``id`` but ``agg_key``: the same for both of its tables."""
    return [
        Column("at", UTCDateTime(), nullable=False),
        Column("last_at", UTCDateTime(), nullable=False),
        Column("minute", UTCDateTime(), nullable=False),
        Column("request_id", String(32), nullable=False),
        Column("workspace_id", String(64), nullable=True),
        Column("dc", String(8), nullable=True),
        Column("source", String(64), nullable=True),
        Column("outcome", String(32), nullable=False),
        Column("key_id", String(32), nullable=True),
        Column("stale", Boolean(), nullable=False, server_default=false()),
        Column("client_ip", String(64), nullable=True),
        Column("user_agent", String(256), nullable=True),
        Column("count", Integer(), nullable=False, server_default="1"),
    ]


connection_attempts = Table(
    "connection_attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    *_attempt_columns(),
    Column("agg_key", String(400), nullable=True, unique=True),
    # One index on purpose: each costs every failed attempt a B-tree insert (migrations 0003
    # and 0005). Pruning walks this one too (SQLStore.prune_attempts).
    Index("ix_attempts_workspace_time", "workspace_id", "last_at", "id"),
)

# Failed attempts (and on SQLite the aggregates) land here first, unindexed, and move into
# ``connection_attempts`` in large sorted batches (migration 0004): one at a time, each took its
# own page write in ``ix_attempts_workspace_time`` — most of what a failure cost the store.
# Every reader of the record moves them first, so none sees this table.
connection_attempts_staged = Table(
    "connection_attempts_staged",
    metadata,
    *_attempt_columns(),
    Column("agg_key", String(400), nullable=True),
)

# -- audit log (issue 23) ------------------------------------------------------------------------
# One row per change (and per dashboard sign-in), written in the transaction of the change by
# store/audit.py. Append-only: nothing deletes a row but retention. ``before``/``after`` are
# JSON text of non-secret state (moeconnect.audit). No foreign key: the log outlives what it
# names. (workspace_id, at, id) serves a workspace's page and ``db check``; (at, id) the
# whole log's pages and pruning.
audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor_kind", String(16), nullable=False),
    Column("actor_id", String(32), nullable=True),
    Column("actor_name", String(200), nullable=True),
    Column("channel", String(24), nullable=False),
    Column("client_ip", String(64), nullable=True),
    Column("action", String(40), nullable=False),
    Column("workspace_id", String(64), nullable=True),
    Column("target", String(128), nullable=True),
    Column("before", Text(), nullable=True),
    Column("after", Text(), nullable=True),
    Index("ix_audit_workspace_time", "workspace_id", "at", "id"),
    Index("ix_audit_time", "at", "id"),
)
