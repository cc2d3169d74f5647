"""``moeconnect key ...``: generate (rotate), import, revoke, list."""

from __future__ import annotations

from datetime import timedelta

import click

from ..accounts import Accounts, NewKey
from ..durations import parse_duration
from ..keys import SCOPES
from ..record_views import key_json
from ..records import ApiKey, RotationResult
from ._common import (
    db_option,
    emit_json,
    fail,
    iso,
    json_option,
    print_table,
    read_secret,
    shown,
    with_accounts,
)

__all__ = ["key", "key_json"]

scope_option = click.option(
    "--scope", default="data", show_default=True, type=click.Choice(SCOPES), help="Key scope."
)
grace_option = click.option(
    "--grace",
    default=None,
    help="Keep the previous key working this long (e.g. 24h, at most 30d); default: it stops now.",
)


def _grace(value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        fail(str(err), 2)
    raise AssertionError("unreachable")


def _rotation_text(result: RotationResult) -> str | None:
    if result.previous_key_id is None:
        return None
    expires = result.previous_key_expires_at
    if expires is not None and expires > result.key.created_at:
        return f"The previous key keeps working until {iso(expires)}."
    return "The previous key stopped working now."


@click.group()
def key() -> None:
    """Generate, import, revoke and list API keys."""


@key.command("generate")
@click.argument("workspace_id")
@scope_option
@grace_option
@db_option
@json_option
def generate(workspace_id: str, scope: str, grace: str | None, db_url: str, as_json: bool) -> None:
    """Generate a key (rotating any current one) and print it once."""
    grace_delta = _grace(grace)

    async def action(accounts: Accounts) -> NewKey:
        return await accounts.generate_key(workspace_id, scope, grace_delta)

    new = with_accounts(db_url, action)
    rotation = new.rotation
    if as_json:
        emit_json(
            {
                "key": new.key,
                "key_id": rotation.key.id,
                "scope": rotation.key.scope,
                "hint": rotation.key.hint,
                "previous_key_expires_at": iso(rotation.previous_key_expires_at),
            }
        )
        return
    click.echo(new.key)
    click.echo("This key is shown once; store it now.", err=True)
    if note := _rotation_text(rotation):
        click.echo(note, err=True)


@key.command("import")
@click.argument("workspace_id")
@scope_option
@grace_option
@db_option
@json_option
def import_(workspace_id: str, scope: str, grace: str | None, db_url: str, as_json: bool) -> None:
    """Import a key read from standard input (8–256 printable ASCII characters)."""
    grace_delta = _grace(grace)
    value = read_secret("key to import")

    async def action(accounts: Accounts) -> RotationResult:
        return await accounts.import_key(workspace_id, value, scope, grace_delta)

    rotation = with_accounts(db_url, action)
    if as_json:
        emit_json(
            {
                "key_id": rotation.key.id,
                "scope": rotation.key.scope,
                "hint": rotation.key.hint,
                "previous_key_expires_at": iso(rotation.previous_key_expires_at),
            }
        )
        return
    click.echo(f"Imported {scope} key …{shown(rotation.key.hint)} as {rotation.key.id}.")
    if note := _rotation_text(rotation):
        click.echo(note)


@key.command("revoke")
@click.argument("workspace_id")
@scope_option
@db_option
@json_option
def revoke(workspace_id: str, scope: str, db_url: str, as_json: bool) -> None:
    """Revoke the current key of a scope (and any key still in a grace period)."""

    async def action(accounts: Accounts) -> int:
        return await accounts.revoke_key(workspace_id, scope)

    count = with_accounts(db_url, action)
    if as_json:
        emit_json({"workspace_id": workspace_id, "scope": scope, "revoked": count})
    elif count:
        click.echo(f"Revoked {count} {scope} key(s) of {shown(workspace_id)}.")
    else:
        click.echo(f"{shown(workspace_id)} had no working {scope} key; nothing to revoke.")


@key.command("list")
@click.argument("workspace_id")
@db_option
@json_option
def list_(workspace_id: str, db_url: str, as_json: bool) -> None:
    """List a workspace's keys (metadata only; keys are never shown again)."""

    async def action(accounts: Accounts) -> list[ApiKey]:
        if await accounts.store.get_workspace(workspace_id) is None:
            from ..store import NotFound

            raise NotFound(f"no workspace has ID {workspace_id}")
        return await accounts.list_keys(workspace_id)

    items = with_accounts(db_url, action)
    if as_json:
        emit_json({"workspace_id": workspace_id, "keys": [key_json(k) for k in items]})
        return
    print_table(
        ["KEY ID", "SCOPE", "HINT", "STATE", "ORIGIN", "CREATED", "ENDED"],
        [
            (k.id, k.scope, "…" + k.hint, k.state, k.origin, iso(k.created_at), iso(k.ended_at))
            for k in items
        ],
    )
