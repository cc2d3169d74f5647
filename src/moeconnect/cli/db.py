"""``moeconnect db ...``: apply migrations and check the store's integrity."""

from __future__ import annotations

import sys

import click

from ..store import Store, open_store
from ._common import db_option, emit_json, json_option, run, shown

__all__ = ["db"]


@click.group()
def db() -> None:
    """Maintain the database."""


@db.command("upgrade")
@db_option
@json_option
def upgrade(db_url: str, as_json: bool) -> None:
    """Create the schema or apply pending migrations."""

    async def action() -> str:
        store: Store = open_store(db_url)
        try:
            await store.migrate()
        finally:
            await store.close()
        return store.url

    url = run(action())
    if as_json:
        emit_json({"db": url, "migrated": True})
    else:
        click.echo(f"{shown(url)} is up to date.")


@db.command("check")
@db_option
@json_option
def check(db_url: str, as_json: bool) -> None:
    """Check the store's integrity; exit 1 if anything is wrong."""

    async def action() -> list[str]:
        store: Store = open_store(db_url)
        try:
            await store.migrate()
            return await store.check_integrity()
        finally:
            await store.close()

    problems = run(action())
    if as_json:
        emit_json({"ok": not problems, "problems": problems})
    elif problems:
        for problem in problems:
            click.echo(f"problem: {shown(problem)}", err=True)
    else:
        click.echo("The store is sound.")
    if problems:
        sys.exit(1)
