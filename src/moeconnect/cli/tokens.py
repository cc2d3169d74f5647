"""``moeconnect token ...``: operator tokens for the admin API and the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from ..accounts import Accounts, NewToken
from ..durations import parse_duration
from ..records import OperatorToken
from ..roles import DEFAULT_ROLE, ROLES, is_usable
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

__all__ = ["token"]


def token_json(item: OperatorToken) -> dict[str, object]:
    return {
        "token_id": item.id,
        "name": item.name,
        "hint": item.hint,
        "role": item.role,
        "workspaces": list(item.workspace_ids) if item.workspace_ids is not None else None,
        "created_at": iso(item.created_at),
        "expires_at": iso(item.expires_at),
        "revoked_at": iso(item.revoked_at),
        "last_used_at": iso(item.last_used_at),
        "state": _state(item, datetime.now(UTC)),
        "active": is_usable(item, datetime.now(UTC)),
    }


def _state(item: OperatorToken, now: datetime) -> str:
    if item.revoked_at is not None:
        return "revoked"
    if item.expires_at is not None and item.expires_at <= now:
        return "expired"
    return "active"


def _expires(value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        fail(f"--expires: {err}", 2)
    raise AssertionError("unreachable")


@click.group()
def token() -> None:
    """Create, list and revoke operator tokens."""


@token.command("create")
@click.option("--name", required=True, help="Who or what the token is for.")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default=DEFAULT_ROLE,
    show_default=True,
    help="admin: everything; keys: workspaces and keys, not tokens; read: read only.",
)
@click.option(
    "--workspace",
    "workspaces",
    multiple=True,
    metavar="ID",
    help="Restrict the token to this workspace; repeat for more. Default: every workspace.",
)
@click.option(
    "--expires",
    metavar="DURATION",
    help="Expire this long after creation, e.g. 90d or 12h. Default: never.",
)
@db_option
@json_option
def create(
    name: str,
    role: str,
    workspaces: tuple[str, ...],
    expires: str | None,
    db_url: str,
    as_json: bool,
) -> None:
    """Create an operator token and print it once."""
    expires_in = _expires(expires)

    async def action(accounts: Accounts) -> NewToken:
        return await accounts.create_token(
            name, role=role, workspace_ids=workspaces or None, expires_in=expires_in
        )

    new = with_accounts(db_url, action)
    if as_json:
        emit_json({"token": new.token, **token_json(new.record)})
        return
    click.echo(new.token)
    click.echo("This token is shown once; store it now.", err=True)


@token.command("list")
@db_option
@json_option
def list_(db_url: str, as_json: bool) -> None:
    """List operator tokens (never the tokens themselves)."""

    async def action(accounts: Accounts) -> list[OperatorToken]:
        return await accounts.store.list_tokens()

    items = with_accounts(db_url, action)
    if as_json:
        emit_json({"tokens": [token_json(t) for t in items]})
        return
    now = datetime.now(UTC)
    print_table(
        ["TOKEN ID", "NAME", "HINT", "ROLE", "WORKSPACES", "STATE", "EXPIRES", "LAST USED"],
        [
            (
                t.id,
                t.name,
                "…" + t.hint,
                t.role,
                ",".join(t.workspace_ids) if t.workspace_ids is not None else "all",
                _state(t, now),
                iso(t.expires_at) or "never",
                iso(t.last_used_at) or "never",
            )
            for t in items
        ],
    )


@token.command("revoke")
@click.argument("token_id_or_name")
@db_option
@json_option
def revoke(token_id_or_name: str, db_url: str, as_json: bool) -> None:
    """Revoke an operator token by its ID or name."""

    async def action(accounts: Accounts) -> OperatorToken:
        return await accounts.revoke_token(token_id_or_name)

    item = with_accounts(db_url, action)
    if as_json:
        emit_json(token_json(item))
    else:
        click.echo(f"Revoked token {item.id} ({shown(item.name)}).")
