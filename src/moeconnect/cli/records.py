"""``moeconnect log`` and ``moeconnect sources``: read the connection record of a workspace."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ..accounts import Accounts
from ..record_views import attempt_json, summary_json
from ..store import NotFound
from ..store.base import AttemptRow, SourceSummary
from ._common import (
    collect_pages,
    db_option,
    emit_json,
    iso,
    json_option,
    print_table,
    shown,
    since_moment,
    with_accounts,
)

__all__ = ["log", "sources"]


async def _require_workspace(accounts: Accounts, workspace_id: str) -> None:
    if await accounts.store.get_workspace(workspace_id) is None:
        raise NotFound(f"no workspace has ID {workspace_id}")


@click.command()
@click.argument("workspace_id")
@click.option(
    "--since", default=None, help="Only attempts in this last stretch, e.g. 15m, 24h, 7d."
)
@click.option("--source", default=None, help="Only attempts from this source (exact name).")
@click.option(
    "--outcome", default=None, help="Only this outcome code, e.g. KEY_REVOKED or SUCCESS."
)
@click.option(
    "--limit", default=100, show_default=True, type=click.IntRange(1, 100_000), help="Most rows."
)
@db_option
@json_option
def log(
    workspace_id: str,
    since: str | None,
    source: str | None,
    outcome: str | None,
    limit: int,
    db_url: str,
    as_json: bool,
) -> None:
    """The connection attempts of a workspace, newest first.

    Successes are shown per source, key and minute with their exact COUNT; failures one by one.
    """
    since_at = since_moment(since)

    async def action(accounts: Accounts) -> list[AttemptRow]:
        await _require_workspace(accounts, workspace_id)
        return await collect_pages(
            lambda size, cursor: accounts.store.list_attempts(
                workspace_id,
                source=source,
                outcome=outcome.upper() if outcome else None,
                since=since_at,
                limit=size,
                cursor=cursor,
            ),
            limit,
        )

    rows = with_accounts(db_url, action)
    if as_json:
        emit_json({"workspace_id": workspace_id, "attempts": [attempt_json(r) for r in rows]})
        return
    if not rows:
        click.echo(f"No connection attempts recorded for {shown(workspace_id)} with these filters.")
        return
    print_table(
        ["TIME", "SOURCE", "OUTCOME", "COUNT", "KEY ID", "CLIENT IP", "REQUEST ID"],
        [
            (
                iso(r.last_at),
                r.source or "-",
                r.outcome,
                r.count,
                r.key_id or "-",
                r.client_ip or "-",
                r.request_id if r.count == 1 else f"{r.request_id} (latest)",
            )
            for r in rows
        ],
    )


@click.command()
@click.argument("workspace_id")
@db_option
@json_option
def sources(workspace_id: str, db_url: str, as_json: bool) -> None:
    """Per source: last success, last failure and its code, counts, and replaced-key warnings."""

    async def action(accounts: Accounts) -> list[SourceSummary]:
        await _require_workspace(accounts, workspace_id)
        return await accounts.store.source_summary(workspace_id)

    items = with_accounts(db_url, action)
    if as_json:
        emit_json({"workspace_id": workspace_id, "sources": [summary_json(s) for s in items]})
        return
    if not items:
        click.echo(f"No connection attempts recorded for {shown(workspace_id)} yet.")
        return
    print_table(
        ["SOURCE", "LAST SEEN", "LAST SUCCESS", "LAST FAILURE", "ATTEMPTS", "BY OUTCOME"],
        [
            (
                s.source or "(none)",
                iso(s.last_seen),
                iso(s.last_success) or "never",
                f"{iso(s.last_failure)} {s.last_failure_code}" if s.last_failure else "never",
                s.total,
                ", ".join(f"{code}={n}" for code, n in sorted(s.counts.items())),
            )
            for s in items
        ],
    )
    for s in items:
        if s.uses_replaced_key:
            ends = s.replaced_key_ends_at
            when = (
                f"stops working at {iso(ends)}"
                if ends and ends > datetime.now(UTC)
                else f"stopped working at {iso(ends)}"
            )
            click.echo(
                f"Warning: {shown(s.source or '(none)')} still uses replaced key "
                f"{shown(s.replaced_key_id)}, "
                f"which {when}; give it the current key.",
                err=True,
            )
