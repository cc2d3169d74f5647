"""What a failure of the database means for the store's callers: one mapping, used by every
store operation (``SQLStore._conn`` and ``SQLStore.migrate``).

A database that stops, starts, crashes or runs out of connections raises many things: asyncpg's
``CannotConnectNowError`` ("the database system is starting up", SQLSTATE 57P03) and
``AdminShutdown`` (57P01) arrive as SQLAlchemy's plain ``DBAPIError``; a connection lost in the
middle of a transaction as ``InterfaceError`` or ``InternalError``, and then, on the next use of
that connection, as ``PendingRollbackError``, which is no ``DBAPIError`` at all; a full pool as
SQLAlchemy's ``TimeoutError``; a refused socket as ``OSError``. Each of them is
:class:`StoreUnavailable` (answered 503, never 500, never 401: SPEC section 9), decided by the
exception's class, never by its message. Only a broken constraint is something else
(:class:`Conflict`).
"""

from __future__ import annotations

import asyncio
import sqlite3

from sqlalchemy import exc as sa_exc

from .base import Conflict, StoreError, StoreUnavailable

__all__ = ["describe", "sqlstate", "store_error"]

# Every DBAPIError, and SQLAlchemy's own errors that only a database failure raises: a pool
# with no free connection, a connection invalidated mid-transaction (used again before it was
# rolled back), one that was closed under the caller.
_SQLALCHEMY_FAILURES = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    sa_exc.PendingRollbackError,
    sa_exc.DisconnectionError,
    sa_exc.ResourceClosedError,
)


def sqlstate(err: BaseException) -> str | None:
    """The SQLSTATE PostgreSQL gave for ``err`` (e.g. ``57P03``), when it gave one."""
    for candidate in (getattr(err, "orig", None), err.__cause__, err):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str) and code:
            return code
    return None


def describe(err: BaseException) -> str:
    """One line for the log: the driver's exception (not SQLAlchemy's wrapper), its SQLSTATE,
    its message. Never the statement's parameters."""
    inner = getattr(err, "orig", None) or err
    if isinstance(err, sa_exc.DBAPIError) and err.__cause__ is not None:
        inner = err.__cause__.__cause__ or err.__cause__  # the driver's own, under the adapter's
    code = sqlstate(err)
    text = str(inner)
    name = type(inner).__name__ + (f" (SQLSTATE {code})" if code else "")
    return f"{name}: {text}".splitlines()[0][:300]


def _from_driver(err: BaseException) -> bool:
    """A driver's exception that escaped SQLAlchemy's wrapping (asyncpg's, sqlite3's)."""
    if isinstance(err, sqlite3.Error):
        return True
    return any(cls.__module__.startswith("asyncpg") for cls in type(err).__mro__)


def store_error(err: BaseException) -> StoreError | None:
    """The :class:`StoreError` that ``err``, raised while using the database, stands for; None
    when it is not a database failure (a bug in the caller, a cancellation: let it through).

    Every ``DBAPIError`` but a broken constraint is :class:`StoreUnavailable`: the connection-
    level ones (SQLSTATE classes 08, 53, 57, 58, and the driver's own errors, which have none)
    and, as before, any other the database raised.
    """
    if isinstance(err, StoreError):
        return None
    if isinstance(err, sa_exc.IntegrityError):
        return Conflict(str(err.orig))
    if isinstance(err, _SQLALCHEMY_FAILURES):
        return StoreUnavailable(describe(err))
    if isinstance(err, (OSError, asyncio.TimeoutError)) or _from_driver(err):
        return StoreUnavailable(describe(err))
    return None
