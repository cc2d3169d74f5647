"""The connection record keeps two indexes instead of five.

Every failed attempt is a row, and every row updated each index: with one index per filter of the
admin API (source, outcome, minute) a failure cost about 200 µs of the endpoint's single core in
page writes. Lookups of one workspace's rows now go through ``ix_attempts_workspace_time``
(workspace, last_at) and filter source, outcome or minute within that range; pruning uses
``ix_attempts_last_at``.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_DROPPED = {
    "ix_attempts_workspace_source": ["workspace_id", "source", "last_at"],
    "ix_attempts_workspace_outcome": ["workspace_id", "outcome", "last_at"],
    "ix_attempts_workspace_minute": ["workspace_id", "minute"],
}


def upgrade() -> None:
    for name in _DROPPED:
        op.drop_index(name, table_name="connection_attempts")


def downgrade() -> None:
    for name, columns in _DROPPED.items():
        op.create_index(name, "connection_attempts", columns)
