"""``moeconnect workspace ...``: create, list, show, rename, suspend, resume, delete."""

from __future__ import annotations

import sys

import click

from ..accounts import Accounts
from ..record_views import workspace_json
from ..records import Workspace
from ._common import (
    db_option,
    emit_json,
    fail,
    iso,
    json_option,
    print_table,
    shown,
    with_accounts,
)

__all__ = ["workspace", "workspace_json"]


def _show(ws: Workspace, as_json: bool) -> None:
    if as_json:
        emit_json(workspace_json(ws))
        return
    for label, value in (
        ("Workspace ID", ws.id),
        ("Name", ws.name),
        ("Data center", ws.dc),
        ("Status", ws.status),
        ("Created", iso(ws.created_at)),
    ):
        click.echo(f"{label + ':':14} {shown(value)}")


@click.group()
def workspace() -> None:
    """Create and manage workspaces."""


@workspace.command("create")
@click.option("--name", required=True, help="Workspace name (the app_name returned on success).")
@click.option("--dc", default="01", show_default=True, help="Data center of the workspace.")
@click.option("--id", "workspace_id", default=None, help="Use this ID instead of a generated one.")
@db_option
@json_option
def create(name: str, dc: str, workspace_id: str | None, db_url: str, as_json: bool) -> None:
    """Create a workspace."""

    async def action(accounts: Accounts) -> Workspace:
        return await accounts.create_workspace(name, dc, workspace_id)

    ws = with_accounts(db_url, action)
    if as_json:
        emit_json({"workspace_id": ws.id, "name": ws.name, "dc": ws.dc, "status": ws.status})
    else:
        click.echo(shown(ws.id))


@workspace.command("list")
@click.option("--dc", default=None, help="Only workspaces in this data center.")
@click.option("--search", default=None, help="Only workspaces whose ID or name contains this.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100000))
@db_option
@json_option
def list_(dc: str | None, search: str | None, limit: int, db_url: str, as_json: bool) -> None:
    """List workspaces."""

    async def action(accounts: Accounts) -> list[Workspace]:
        return await accounts.store.list_workspaces(
            limit=limit, dc=accounts.check_dc(dc) if dc else None, search=search
        )

    items = with_accounts(db_url, action)
    if as_json:
        emit_json({"workspaces": [workspace_json(w) for w in items]})
    else:
        print_table(
            ["ID", "NAME", "DC", "STATUS", "CREATED"],
            [(w.id, w.name, w.dc, w.status, iso(w.created_at)) for w in items],
        )


@workspace.command("show")
@click.argument("workspace_id")
@db_option
@json_option
def show(workspace_id: str, db_url: str, as_json: bool) -> None:
    """Show one workspace."""

    async def action(accounts: Accounts) -> Workspace | None:
        return await accounts.store.get_workspace(workspace_id)

    ws = with_accounts(db_url, action)
    if ws is None:
        fail(f"no workspace has ID {workspace_id}; list them with `moeconnect workspace list`.")
        return
    _show(ws, as_json)


@workspace.command("rename")
@click.argument("workspace_id")
@click.argument("name")
@db_option
@json_option
def rename(workspace_id: str, name: str, db_url: str, as_json: bool) -> None:
    """Rename a workspace."""

    async def action(accounts: Accounts) -> Workspace:
        return await accounts.rename_workspace(workspace_id, name)

    _show(with_accounts(db_url, action), as_json)


def _status_command(command_name: str, status: str, doc: str) -> None:
    @workspace.command(command_name, help=doc)
    @click.argument("workspace_id")
    @db_option
    @json_option
    def command(workspace_id: str, db_url: str, as_json: bool) -> None:
        async def action(accounts: Accounts) -> Workspace:
            return await accounts.set_workspace_status(workspace_id, status)

        _show(with_accounts(db_url, action), as_json)


_status_command("suspend", "suspended", "Suspend a workspace: its keys stop working (403).")
_status_command("resume", "active", "Resume a suspended workspace.")


@workspace.command("delete")
@click.argument("workspace_id")
@click.option("--yes", is_flag=True, help="Don't ask for confirmation.")
@db_option
@json_option
def delete(workspace_id: str, yes: bool, db_url: str, as_json: bool) -> None:
    """Delete a workspace and all its keys."""
    if not yes and sys.stdin.isatty():
        click.confirm(
            f"Delete workspace {shown(workspace_id)} and all its keys?", abort=True, err=True
        )

    async def action(accounts: Accounts) -> None:
        await accounts.delete_workspace(workspace_id)

    with_accounts(db_url, action)
    if as_json:
        emit_json({"workspace_id": workspace_id, "deleted": True})
    else:
        click.echo(f"Deleted workspace {shown(workspace_id)}.")
