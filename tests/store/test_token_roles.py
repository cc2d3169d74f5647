"""Operator tokens' role, restriction, expiry and ``last_used_at`` in the store (issue 23), on
SQLite and PostgreSQL; migration 0007 makes every existing token ``admin``."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from moeconnect.accounts import Accounts
from moeconnect.store import SQLStore
from moeconnect.store.migrate import alembic_config
from moeconnect.store.schema import metadata
from moeconnect.store.urls import DatabaseURL
from moeconnect.token_usage import TokenUsage

from .conftest import with_store


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def test_role_restriction_and_expiry_round_trip(store_url: str) -> None:
    expires = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)

    async def body(store: SQLStore) -> None:
        plain = await store.create_token("plain", digest("p"), "aaaa")
        narrow = await store.create_token(
            "narrow",
            digest("n"),
            "bbbb",
            role="read",
            workspace_ids=["W1", "W2"],
            expires_at=expires,
        )
        assert (plain.role, plain.workspace_ids, plain.expires_at) == ("admin", None, None)
        for found in (await store.token_by_id(narrow.id), await store.token_by_digest(digest("n"))):
            assert found == narrow
        assert found is not None and found.workspace_ids == ("W1", "W2")
        assert found.expires_at == expires and found.role == "read"
        assert await store.token_by_id("tok_missing") is None
        revoked = await store.revoke_token("narrow")
        assert (revoked.role, revoked.workspace_ids) == ("read", ("W1", "W2"))
        for wid in ("W1", "W2", "W3"):
            await store.create_workspace(wid, wid, "01")
        listed = await store.list_workspaces(only=("W3", "W1", "GONE"))
        assert [w.id for w in listed] == ["W1", "W3"]
        assert await store.list_workspaces(only=()) == []
        assert await store.check_integrity() == []
        async with store._engine.begin() as conn:  # a hand-edited row: `db check` says so
            await conn.execute(sa.text("UPDATE operator_tokens SET role = 'root'"))
        assert "2 operator tokens have an unknown role" in await store.check_integrity()

    with_store(store_url, body)


def test_last_used_at_never_moves_back_and_is_batched(store_url: str) -> None:
    async def body(store: SQLStore) -> None:
        token = await store.create_token("busy", digest("b"), "cccc")
        t0 = datetime.now(UTC)
        await store.touch_tokens({token.id: t0})
        await store.touch_tokens({token.id: t0 - timedelta(minutes=5)})  # a late batch
        stored = await store.token_by_id(token.id)
        assert stored is not None and stored.last_used_at == t0

        usage = TokenUsage(store)
        for i in range(200):  # 200 requests within the minute: one write
            usage.note(stored, t0 + timedelta(minutes=2, seconds=i / 10))
        await usage.close()
        assert usage.writes == 1
        after = await store.token_by_id(token.id)
        assert after is not None and after.last_used_at == t0 + timedelta(minutes=2)
        usage.note(after, t0 + timedelta(minutes=2, seconds=59))  # stored one is fresh
        assert usage.writes == 1
        usage.note(after, t0 + timedelta(minutes=3, seconds=1))  # a minute on: written again
        await usage.close()
        assert usage.writes == 2

    with_store(store_url, body)


def test_expired_and_revoked_tokens_do_not_authenticate(store_url: str) -> None:
    async def body(store: SQLStore) -> None:
        accounts = Accounts(store, b"s" * 32)
        live = await accounts.create_token("live", role="keys", expires_in=timedelta(hours=1))
        short = await accounts.create_token("short", expires_in=timedelta(milliseconds=300))
        assert await accounts.authenticate_token(live.token) is not None
        assert await accounts.operator(live.record.id) is not None
        await asyncio.sleep(0.4)
        assert await accounts.authenticate_token(short.token) is None
        assert await accounts.operator(short.record.id) is None
        await store.revoke_token("live")
        assert await accounts.authenticate_token(live.token) is None
        assert await accounts.operator(live.record.id) is None
        await accounts.token_usage.close()

    with_store(store_url, body)


def test_migration_0007_makes_existing_tokens_admin_and_matches_the_schema(store_url: str) -> None:
    """A store at 0005 with a token, upgraded: the token is ``admin``, unrestricted, never
    expiring; the migrated table is exactly schema.py's; going back revokes limited tokens."""
    when = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)

    async def go() -> tuple[Any, list[Any], list[Any]]:
        await SQLStore(store_url).close()  # creates the SQLite file, migrates nothing
        engine = create_async_engine(DatabaseURL.parse(store_url).async_url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0005"))
                await conn.execute(
                    sa.text(
                        "INSERT INTO operator_tokens (id, name, digest, hint, created_at) "
                        "VALUES ('tok_old', 'old', :d, 'dddd', :t)"
                    ),
                    {"d": digest("old"), "t": when},
                )
                await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0007"))
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        sa.text("SELECT role, workspace_ids, expires_at FROM operator_tokens")
                    )
                ).one()
                diff = await conn.run_sync(
                    lambda c: compare_metadata(MigrationContext.configure(c), metadata)
                )
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO operator_tokens (id, name, digest, hint, created_at, role) "
                        "VALUES ('tok_ro', 'ro', :d, 'eeee', :t, 'read')"
                    ),
                    {"d": digest("ro"), "t": when},
                )
                await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0005"))
            async with engine.connect() as conn:
                after = (
                    await conn.execute(
                        sa.text("SELECT id, revoked_at FROM operator_tokens ORDER BY id")
                    )
                ).all()
        finally:
            await engine.dispose()
        return tuple(row), [d for d in diff if "operator_tokens" in repr(d)], list(after)

    row, diff, after = asyncio.run(go())
    assert row == ("admin", None, None)
    assert diff == []
    assert [(r[0], r[1] is not None) for r in after] == [("tok_old", False), ("tok_ro", True)]
