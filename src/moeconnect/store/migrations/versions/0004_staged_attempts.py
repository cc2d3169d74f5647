"""Failed attempts are staged in an unindexed table and moved into the record in batches.

Each failed attempt is a row of ``connection_attempts``, and each row took a place in
``ix_attempts_workspace_time`` at random (requests spread over workspaces): about one page write
per row. Written here first and moved tens of thousands at a time in workspace order, rows that
share a page share its write (see ``SQLStore.fold_attempts``). Same columns as the record, less
``id`` (given when a row moves) and the uniqueness of ``agg_key`` (on SQLite aggregates are staged
too, and several rows of one key add up when they move).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from moeconnect.store.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connection_attempts_staged",
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
        sa.Column("agg_key", sa.String(400), nullable=True),
    )


def downgrade() -> None:
    # Rows still staged are moved first: a downgrade must not lose attempts.
    found = sa.inspect(op.get_bind()).get_columns("connection_attempts_staged")
    columns = [str(c["name"]) for c in found]
    staged = sa.table("connection_attempts_staged", *(sa.column(c) for c in columns))
    record = sa.table("connection_attempts", *(sa.column(c) for c in columns))
    op.execute(record.insert().from_select(columns, sa.select(*staged.c)))
    op.drop_table("connection_attempts_staged")
