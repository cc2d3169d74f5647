"""Operator tokens gain a role, a workspace restriction and an expiry (issue 23).

Every existing token becomes ``admin``: it could do everything before, and a migration that
quietly took rights away would break running scripts. ``workspace_ids`` is a JSON array of
workspace IDs, NULL meaning every workspace; ``expires_at`` NULL means never.

Revision ID: 0007
Revises: 0006
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from moeconnect.store.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both backends (SQLite allows it with a constant default): no table copy.
    op.add_column(
        "operator_tokens",
        sa.Column("role", sa.String(8), nullable=False, server_default="admin"),
    )
    op.add_column("operator_tokens", sa.Column("workspace_ids", sa.Text(), nullable=True))
    op.add_column("operator_tokens", sa.Column("expires_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    # Without these columns every token can do everything for ever: revoke the ones that were
    # limited, so going back never widens a token.
    now = datetime.now(UTC).replace(tzinfo=None)  # stored as naive UTC, like UTCDateTime
    op.get_bind().execute(
        sa.text(
            "UPDATE operator_tokens SET revoked_at = :now WHERE revoked_at IS NULL "
            "AND (role <> 'admin' OR workspace_ids IS NOT NULL OR expires_at IS NOT NULL)"
        ),
        {"now": now},
    )
    with op.batch_alter_table("operator_tokens") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("workspace_ids")
        batch.drop_column("role")
