"""Apply the Alembic migrations shipped in ``migrations/`` to a live connection."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

__all__ = ["alembic_config", "is_current", "upgrade"]

_HERE = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection) -> None:
    """Bring the schema on ``connection`` to the newest revision (a no-op when it is)."""
    if is_current(connection):
        return
    command.upgrade(alembic_config(connection), "head")


def is_current(connection: Connection) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    context = MigrationContext.configure(connection)
    return set(context.get_current_heads()) == set(script.get_heads())
