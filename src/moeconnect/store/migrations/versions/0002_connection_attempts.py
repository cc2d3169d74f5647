"""The connection record: every attempt of the Test Connection endpoint.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from moeconnect.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connection_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("last_at", UTCDateTime(), nullable=False),
        sa.Column("minute", UTCDateTime(), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=True),
        sa.Column("dc", sa.String(8), nullable=True),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("stale", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(256), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("agg_key", sa.String(400), nullable=True, unique=True),
    )
    op.create_index(
        "ix_attempts_workspace_time", "connection_attempts", ["workspace_id", "last_at", "id"]
    )
    op.create_index(
        "ix_attempts_workspace_source", "connection_attempts", ["workspace_id", "source", "last_at"]
    )
    op.create_index(
        "ix_attempts_workspace_outcome",
        "connection_attempts",
        ["workspace_id", "outcome", "last_at"],
    )
    op.create_index(
        "ix_attempts_workspace_minute", "connection_attempts", ["workspace_id", "minute"]
    )
    op.create_index("ix_attempts_last_at", "connection_attempts", ["last_at"])


def downgrade() -> None:
    for name in (
        "ix_attempts_last_at",
        "ix_attempts_workspace_minute",
        "ix_attempts_workspace_outcome",
        "ix_attempts_workspace_source",
        "ix_attempts_workspace_time",
    ):
        op.drop_index(name, "connection_attempts")
    op.drop_table("connection_attempts")
