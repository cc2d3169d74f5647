"""The store's identity: one row with a random ``epoch``, written when the store is created.

A server's change watcher remembers the epoch (and the last change it applied) and drops every
cached credential when either no longer matches what it reads: the store was recreated (a new
epoch), another store's backup was restored into it (its epoch), or a backup of this very store
was (the change the watcher saw last is gone, or another row has its ID). Without it, a restored
feed reused change IDs the watcher had already seen, and revocations made after the restore
never reached a running server's cache (issue 22, item 8).

Revision ID: 0006
Revises: 0005
"""

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from moeconnect.store.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "store_identity",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.bulk_insert(
        table, [{"id": 1, "epoch": secrets.token_hex(16), "created_at": datetime.now(UTC)}]
    )


def downgrade() -> None:
    op.drop_table("store_identity")
