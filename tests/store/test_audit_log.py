"""The audit log in the store, on both backends: filters and pages, retention (the only
deletion), seeding, and what ``check_integrity`` can and can't hold against the log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from moeconnect.accounts import Accounts
from moeconnect.audit import AuditContext
from moeconnect.record import ConnectionRecorder
from moeconnect.store import SQLStore
from moeconnect.store.schema import audit_log, workspaces

from .conftest import with_store

ROBOT = AuditContext("token", "tok_1", "robot", "admin-api", "192.0.2.7")


def test_filters_and_pages(store_url: str) -> None:
    async def body(store: SQLStore) -> None:
        accounts = Accounts(store, b"s" * 32)
        a = await accounts.create_workspace("A", workspace_id="ws-a", audit=ROBOT)
        await accounts.create_workspace("B", workspace_id="ws-b")
        for _ in range(3):
            await accounts.generate_key(a.id, audit=ROBOT)
        await accounts.revoke_key(a.id, audit=ROBOT)
        await accounts.create_token("t")

        everything = (await store.list_audit()).items
        assert [e.action for e in everything] == [
            "token.create",
            "key.revoke",
            "key.rotate",
            "key.rotate",
            "key.generate",
            "workspace.create",
            "workspace.create",
        ]
        assert everything[-2].actor_kind == "library"  # ws-b: a call that names nobody
        keys = (await store.list_audit(workspace_id="ws-a", action="key")).items
        assert [e.action for e in keys] == [
            "key.revoke",
            "key.rotate",
            "key.rotate",
            "key.generate",
        ]
        assert {(e.actor_name, e.client_ip) for e in keys} == {("robot", "192.0.2.7")}
        assert (await store.list_audit(action="key.rotate", limit=1)).next_cursor is not None
        future = datetime.now(UTC) + timedelta(minutes=1)
        assert (await store.list_audit(since=future)).items == []
        with pytest.raises(ValueError):
            await store.list_audit(action="k%")
        with pytest.raises(ValueError):
            await store.list_audit(cursor="not-a-cursor")

        paged, cursor = [], None
        while True:
            page = await store.list_audit(limit=2, cursor=cursor)
            paged += page.items
            if (cursor := page.next_cursor) is None:
                break
        assert paged == everything
        assert await store.check_integrity() == []

    with_store(store_url, body)


def test_retention_prunes_only_old_entries(store_url: str) -> None:
    async def body(store: SQLStore) -> None:
        await store.create_workspace("ws", "W", "01", audit=ROBOT)
        old = datetime.now(UTC) - timedelta(days=400)
        async with store._engine.begin() as conn:
            for days in (400, 366):
                await conn.execute(
                    audit_log.insert().values(
                        at=datetime.now(UTC) - timedelta(days=days),
                        actor_kind="cli",
                        actor_name="cli:old",
                        channel="cli",
                        action="dashboard.sign_in",
                    )
                )
        assert len((await store.list_audit()).items) == 3
        # The record's hourly prune applies the audit log's retention too.
        recorder = ConnectionRecorder(store, audit_retention=timedelta(days=365))
        await recorder.prune()
        left = (await store.list_audit()).items
        assert [e.action for e in left] == ["workspace.create"] and left[0].at > old
        assert await store.prune_audit(datetime.now(UTC) - timedelta(days=1)) == 0

    with_store(store_url, body)


def test_seed_batches_and_rows_older_than_the_log(store_url: str) -> None:
    async def body(store: SQLStore) -> None:
        # A workspace from before the log existed (an upgraded database): nothing to check.
        async with store._engine.begin() as conn:
            long_ago = datetime.now(UTC) - timedelta(days=30)
            await conn.execute(
                workspaces.insert().values(
                    id="ws-old",
                    name="Old",
                    dc="01",
                    status="active",
                    created_at=long_ago,
                    updated_at=long_ago,
                )
            )
        accounts = Accounts(store, b"s" * 32, audit=AuditContext.cli())
        await accounts.seed_batch(50)
        seeded = (await store.list_audit()).items
        assert [(e.action, e.channel) for e in seeded] == [("workspace.seed", "cli")]
        assert seeded[0].after is not None and seeded[0].after["workspaces"] == 50
        assert await store.check_integrity() == []
        # A workspace written behind the store's back after the log began is reported.
        async with store._engine.begin() as conn:
            now = datetime.now(UTC)
            await conn.execute(
                workspaces.insert().values(
                    id="ws-sneaky",
                    name="S",
                    dc="01",
                    status="active",
                    created_at=now,
                    updated_at=now,
                )
            )
            count = await conn.execute(sa.select(sa.func.count()).select_from(audit_log))
            assert count.scalar() == 1
        assert await store.check_integrity() == [
            "workspaces created without an audit entry: ws-sneaky"
        ]

    with_store(store_url, body)
