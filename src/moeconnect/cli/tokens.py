"""``moeconnect token ...``: operator tokens for the admin API and the dashboard."""

from __future__ import annotations

import click

from ..accounts import Accounts, NewToken
from ..records import OperatorToken
from ._common import db_option, emit_json, iso, json_option, print_table, with_accounts

__all__ = ["token"]


def token_json(item: OperatorToken) -> dict[str, object]:
    return {
        "token_id": item.id,
        "name": item.name,
        "hint": item.hint,
        "created_at": iso(item.created_at),
        "revoked_at": iso(item.revoked_at),
        "active": item.revoked_at is None,
    }


@click.group()
def token() -> None:
    """Create, list and revoke operator tokens."""


@token.command("create")
@click.option("--name", required=True, help="Who or what the token is for.")
@db_option
@json_option
def create(name: str, db_url: str, as_json: bool) -> None:
    """Create an operator token and print it once."""

    async def action(accounts: Accounts) -> NewToken:
        return await accounts.create_token(name)

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
    print_table(
        ["TOKEN ID", "NAME", "HINT", "CREATED", "REVOKED"],
        [(t.id, t.name, "…" + t.hint, iso(t.created_at), iso(t.revoked_at)) for t in items],
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
        click.echo(f"Revoked token {item.id} ({item.name}).")
