"""The audit log: one row per change, written in the change's own transaction (issue 23).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from moeconnect.store.schema import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(32), nullable=True),
        sa.Column("actor_name", sa.String(200), nullable=True),
        sa.Column("channel", sa.String(24), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=True),
        sa.Column("target", sa.String(128), nullable=True),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
    )
    op.create_index("ix_audit_workspace_time", "audit_log", ["workspace_id", "at", "id"])
    op.create_index("ix_audit_time", "audit_log", ["at", "id"])


def downgrade() -> None:
    op.drop_table("audit_log")
