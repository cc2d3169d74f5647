"""``moeconnect audit``: read the audit log — who changed what, when, through which channel."""

from __future__ import annotations

import click

from ..accounts import Accounts
from ..audit import AuditEntry, describe
from ..audit_views import audit_json
from ._common import (
    collect_pages,
    db_option,
    emit_json,
    fail,
    iso,
    json_option,
    print_table,
    since_moment,
    with_accounts,
)

__all__ = ["audit"]


@click.command()
@click.option("--workspace", "workspace_id", default=None, help="Only entries of this workspace.")
@click.option("--since", default=None, help="Only entries in this last stretch, e.g. 24h, 7d.")
@click.option(
    "--action",
    default=None,
    help="Only this action (key.revoke) or family of actions (key, workspace, token, dashboard).",
)
@click.option(
    "--limit", default=100, show_default=True, type=click.IntRange(1, 100_000), help="Most rows."
)
@db_option
@json_option
def audit(
    workspace_id: str | None,
    since: str | None,
    action: str | None,
    limit: int,
    db_url: str,
    as_json: bool,
) -> None:
    """The audit log, newest first: every change, its actor, channel and client IP."""
    since_at = since_moment(since)
    if action is not None and "." not in action and not action.isalpha():
        fail(f"--action: {action!r} is not an action or a family of actions", 2)

    async def read(accounts: Accounts) -> list[AuditEntry]:
        return await collect_pages(
            lambda size, cursor: accounts.store.list_audit(
                workspace_id=workspace_id, action=action, since=since_at, limit=size, cursor=cursor
            ),
            limit,
        )

    rows = with_accounts(db_url, read)
    if as_json:
        emit_json({"entries": [audit_json(e) for e in rows]})
        return
    if not rows:
        click.echo("No audit entries with these filters.")
        return
    print_table(
        ["TIME", "ACTION", "ACTOR", "CHANNEL", "CLIENT IP", "WORKSPACE", "WHAT"],
        [
            (
                iso(e.at),
                e.action,
                e.actor,
                e.channel,
                e.client_ip or "-",
                e.workspace_id or "-",
                describe(e) or e.target or "",
            )
            for e in rows
        ],
    )
