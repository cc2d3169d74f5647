"""``moeconnect seed``: bulk-create workspaces with Data keys, for benchmarks and load tests."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from ..accounts import Accounts
from ._common import db_option, emit_json, fail, json_option, shown, with_accounts

__all__ = ["seed"]

# Workspaces per transaction. IDs are random, so every batch touches pages all over the B-trees
# and each commit writes them all to the WAL: 100,000 a batch seeded a million in ~59 s where
# 10,000 took ~128 (same machine); a batch holds ~100 MB of the seed's memory while it is made.
BATCH = 100_000


@click.command()
@click.option("--workspaces", "count", required=True, type=click.IntRange(1, 10_000_000))
@click.option("--dc", default="01", show_default=True, help="Data center of the new workspaces.")
@click.option(
    "--credentials-out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write workspace_id,key lines here (mode 0600).",
)
@db_option
@json_option
def seed(count: int, dc: str, credentials_out: Path, db_url: str, as_json: bool) -> None:
    """Create COUNT workspaces with Data keys and write their credentials to a file."""
    try:
        fd = os.open(credentials_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as err:
        fail(f"can't write {credentials_out}: {err.strerror}", 2)
    os.fchmod(fd, 0o600)
    show_progress = sys.stdout.isatty() and not as_json

    async def action(accounts: Accounts) -> int:
        written = 0
        bar = click.progressbar(length=count, label="Seeding workspaces") if show_progress else None
        # The next batch is made (keys drawn and digested) while the store writes the last one;
        # a batch's credentials reach the file only once the store has committed it.
        writing: tuple[asyncio.Task[None], list[tuple[str, str]]] | None = None
        with os.fdopen(fd, "w", encoding="ascii") as out:

            async def committed(batch: tuple[asyncio.Task[None], list[tuple[str, str]]]) -> None:
                task, pairs = batch
                await task
                out.write("".join(f"{wid},{key}\n" for wid, key in pairs))
                if bar is not None:
                    bar.update(len(pairs))

            while written < count:
                size = min(BATCH, count - written)
                items, pairs = accounts.seed_rows(size, dc, start=written)
                if writing is not None:
                    await committed(writing)
                task = asyncio.create_task(
                    accounts.store.seed_workspaces(items, audit=accounts.audit)
                )
                writing = (task, pairs)
                written += size
            if writing is not None:
                await committed(writing)
        if bar is not None:
            bar.render_finish()
        return written

    created = with_accounts(db_url, action)
    if as_json:
        emit_json({"workspaces": created, "dc": dc, "credentials_out": str(credentials_out)})
    elif show_progress:  # quiet when not on a terminal
        click.echo(f"Created {created} workspaces; credentials in {shown(credentials_out)}.")
