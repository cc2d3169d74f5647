"""The connection record drops ``ix_attempts_last_at``: pruning walks the workspace index.

Only pruning used it, once an hour, and every failed attempt paid for it: a B-tree insert per row,
~1.2-1.9 µs of the record writer's time per refusal under a flood of wrong keys (docs/
benchmarks.md), out of ~50 µs for the whole refusal. ``SQLStore.prune_attempts`` now finds old rows
through ``ix_attempts_workspace_time`` (workspace, last_at, id), one workspace at a time.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_attempts_last_at", table_name="connection_attempts")


def downgrade() -> None:
    op.create_index("ix_attempts_last_at", "connection_attempts", ["last_at"])
