"""What every command shares: ``--db``, ``--json``, running the store, and friendly errors.

Everything a command prints that came from the store or a client (names, sources, user agents,
messages) goes through :func:`moeconnect.text.printable` (human output) or
:func:`moeconnect.text.json_printable` (``--json``), here in :func:`fail`, :func:`emit_json` and
:func:`print_table`, and via :func:`shown` for the rest: a value never writes ESC, BEL or any
other control character to the operator's terminal, nor breaks a table row with a newline.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol, TypeVar

import click
import orjson

from ..accounts import Accounts, InvalidInput
from ..audit import AuditContext
from ..config import DEFAULT_DB, ConfigError, load_secret
from ..durations import parse_duration
from ..record_views import iso
from ..store import Conflict, NotFound, Store, StoreUnavailable, open_store
from ..text import json_printable, printable

__all__ = [
    "collect_pages",
    "db_option",
    "emit_json",
    "fail",
    "iso",
    "json_option",
    "print_table",
    "read_secret",
    "run",
    "shown",
    "since_moment",
    "with_accounts",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

PAGE_SIZE = 1000  # rows asked of the store at a time when a command collects a long list


class Page(Protocol[T_co]):
    """A page of a store listing (:class:`~moeconnect.store.base.AttemptPage`, an audit page)."""

    @property
    def items(self) -> Sequence[T_co]: ...
    @property
    def next_cursor(self) -> str | None: ...


async def collect_pages(
    fetch: Callable[[int, str | None], Awaitable[Page[T]]], limit: int
) -> list[T]:
    """Up to ``limit`` items of a paginated listing: ``fetch(size, cursor)`` reads one page."""
    rows: list[T] = []
    cursor = None
    while len(rows) < limit:
        page = await fetch(min(PAGE_SIZE, limit - len(rows)), cursor)
        rows += page.items
        if (cursor := page.next_cursor) is None:
            break
    return rows


def since_moment(since: str | None) -> datetime | None:
    """``--since 24h`` as the moment it names; a bad duration exits 2 naming the option."""
    if since is None:
        return None
    try:
        return datetime.now(UTC) - parse_duration(since)
    except (ValueError, OverflowError) as err:
        fail(f"--since: {err}", 2)


db_option = click.option(
    "--db",
    "db_url",
    envvar="MOECONNECT_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="Database URL: sqlite:///path.db or postgresql://user@host/db (env MOECONNECT_DB).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout, nothing else."
)


def shown(value: object) -> str:
    """``value`` as text for a terminal: control and format characters escaped."""
    return printable("" if value is None else str(value))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``Error: message`` to stderr (escaped: it may quote a stored name) and exit."""
    click.echo(f"Error: {printable(message)}", err=True)
    sys.exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning store and input errors into one sentence on stderr."""
    try:
        return asyncio.run(coro)
    except InvalidInput as err:
        fail(str(err), 2)
    except NotFound as err:
        fail(f"{err}; check the ID with `moeconnect workspace list`.", 1)
    except Conflict as err:
        fail(str(err), 1)
    except StoreUnavailable as err:
        fail(f"the database can't be reached ({err}); check --db or MOECONNECT_DB.", 3)
    except ConfigError as err:
        fail(str(err), 2)
    except OSError as err:  # e.g. the SQLite file or its .secret can't be created
        where = f" {err.filename}" if err.filename else ""
        fail(f"can't use{where} ({err.strerror or err}); check --db or MOECONNECT_DB.", 3)
    raise AssertionError("unreachable")


async def _with_store(
    db_url: str, action: Callable[[Accounts], Awaitable[T]], migrate: bool = True
) -> T:
    try:
        store: Store = open_store(db_url)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        if migrate:
            await store.migrate()
        # Every change a command makes is recorded as ``cli:<OS user>`` (channel cli).
        accounts = Accounts(store, load_secret(db_url), audit=AuditContext.cli())
        return await action(accounts)
    finally:
        await store.close()


def with_accounts(db_url: str, action: Callable[[Accounts], Awaitable[T]]) -> T:
    """Open the store at ``db_url`` (migrating it), run ``action``, close it."""
    return run(_with_store(db_url, action))


def emit_json(document: Any) -> None:
    """One JSON document; DEL, C1 and bidi controls escaped too (orjson escapes only C0)."""
    click.echo(json_printable(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Aligned columns; every cell escaped, so a newline in a value can't start a new row."""
    table = [[str(h) for h in headers]] + [[shown(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for i, row in enumerate(table):
        click.echo("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


def read_secret(what: str, env_var: str | None = None) -> str:
    """A secret from ``env_var``, piped stdin, or a hidden prompt — never from argv."""
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    if not sys.stdin.isatty():
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            fail(f'no {what} on standard input; pipe it in, e.g. `printf %s "$KEY" | ...`', 2)
        return value
    value = click.prompt(what.capitalize(), hide_input=True, err=True)
    return str(value)
