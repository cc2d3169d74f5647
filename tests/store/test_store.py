"""The store contract, on a real SQLite file and on a real PostgreSQL database alike."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from moeconnect.store import Conflict, NotFound, SQLStore, StoreUnavailable
from moeconnect.store.migrate import is_current
from moeconnect.store.schema import api_keys
from moeconnect.testing import free_port

from .conftest import with_store


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def now() -> datetime:
    return datetime.now(UTC)


def test_migrations_from_empty_reach_head_and_are_idempotent(store_url: str) -> None:
    async def body(store: SQLStore) -> list[str]:
        await store.migrate()  # the second run is a no-op
        async with store._engine.connect() as conn:
            assert await conn.run_sync(is_current)
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        return sorted(names)

    tables = with_store(store_url, body)
    for table in ("alembic_version", "api_keys", "changes", "operator_tokens", "workspaces"):
        assert table in tables


def test_workspace_crud(store_url: str) -> None:
    async def body(store: SQLStore) -> None:
        created = await store.create_workspace("ws-a", "Alpha", "01")
        assert (created.id, created.name, created.dc, created.status) == (
            "ws-a",
            "Alpha",
            "01",
            "active",
        )
        await store.create_workspace("ws-b", "Beta 100%_off", "02")
        await store.create_workspace("ws-c", "Gamma", "01")
        with pytest.raises(Conflict):
            await store.create_workspace("ws-a", "Again", "01")

        got = await store.get_workspace("ws-a")
        assert got is not None and got.name == "Alpha"
        assert await store.get_workspace("nope") is None

        assert [w.id for w in await store.list_workspaces()] == ["ws-a", "ws-b", "ws-c"]
        assert [w.id for w in await store.list_workspaces(limit=1, after="ws-a")] == ["ws-b"]
        assert [w.id for w in await store.list_workspaces(dc="01")] == ["ws-a", "ws-c"]
        assert [w.id for w in await store.list_workspaces(search="100%_")] == ["ws-b"]
        assert [w.id for w in await store.list_workspaces(search="gAmMa")] == ["ws-c"]
        assert await store.list_workspaces(search="%") == [
            w for w in await store.list_workspaces() if "%" in w.name
        ]

        renamed = await store.rename_workspace("ws-a", "Alpha 2")
        assert renamed.name == "Alpha 2" and renamed.updated_at >= created.updated_at
        assert (await store.set_workspace_status("ws-a", "suspended")).status == "suspended"
        assert (await store.set_workspace_status("ws-a", "active")).status == "active"
        with pytest.raises(NotFound):
            await store.rename_workspace("nope", "x")

        await store.store_key("ws-c", "data", digest("k"), "hint", "generated", now=now())
        await store.delete_workspace("ws-c")
        assert await store.get_workspace("ws-c") is None
        assert await store.list_keys("ws-c") == []
        assert await store.credentials("ws-c") is None
        with pytest.raises(NotFound):
            await store.delete_workspace("ws-c")

    with_store(store_url, body)


def test_rotation_replaces_the_current_key(store_url: str) -> None:
    async def body(store: SQLStore) -> None:
        await store.create_workspace("ws", "W", "01")
        first = await store.store_key("ws", "data", digest("1"), "h1", "generated", now=now())
        assert first.previous_key_id is None and first.key.state == "current"
        at = now()
        second = await store.store_key("ws", "data", digest("2"), "h2", "imported", now=at)
        assert second.previous_key_id == first.key.id
        assert second.previous_key_expires_at == at

        creds = await store.credentials("ws")
        assert creds is not None
        assert [(k.id, k.state) for k in creds.keys] == [
            (second.key.id, "current"),
            (first.key.id, "replaced"),
        ]
        assert creds.keys[0].digest == digest("2")
        keys = {k.id: k for k in await store.list_keys("ws")}
        assert keys[first.key.id].ended_how == "replaced"
        assert keys[second.key.id].origin == "imported"
        with pytest.raises(NotFound):
            await store.store_key("nope", "data", digest("x"), "h", "generated", now=now())

    with_store(store_url, body)


def test_grace_period_and_revoke(store_url: str) -> None:
    async def body(store: SQLStore) -> None:
        await store.create_workspace("ws", "W", "01")
        await store.store_key("ws", "data", digest("1"), "h1", "generated", now=now())
        at = now()
        graced = await store.store_key(
            "ws", "data", digest("2"), "h2", "generated", now=at,
            previous_expires_at=at + timedelta(hours=1),
        )  # fmt: skip
        assert graced.previous_key_expires_at == at + timedelta(hours=1)
        creds = await store.credentials("ws")
        assert creds is not None
        old = creds.keys[1]
        assert old.state == "replaced" and old.ended_at == at + timedelta(hours=1)

        # A newer rotation ends the earlier grace period at once.
        later = now()
        await store.store_key("ws", "data", digest("3"), "h3", "generated", now=later)
        creds = await store.credentials("ws")
        assert creds is not None
        assert all(k.ended_at is not None and k.ended_at <= later for k in creds.keys[1:])

        # Revoke ends the current key and any key still in grace.
        at = now()
        await store.store_key(
            "ws", "data", digest("4"), "h4", "generated", now=at,
            previous_expires_at=at + timedelta(hours=1),
        )  # fmt: skip
        assert await store.revoke_key("ws", "data", now=now()) == 2
        creds = await store.credentials("ws")
        assert creds is not None
        assert not [k for k in creds.keys if k.state == "current"]
        assert sum(k.state == "revoked" for k in creds.keys) == 2
        assert await store.revoke_key("ws", "data", now=now()) == 0
        with pytest.raises(NotFound):
            await store.revoke_key("nope", "data", now=now())
        # Scopes are independent.
        await store.store_key("ws", "data", digest("5"), "h5", "generated", now=now())
        await store.store_key("ws", "push", digest("6"), "h6", "generated", now=now())
        data = await store.credentials("ws", "data")
        push = await store.credentials("ws", "push")
        assert data is not None and push is not None
        assert data.keys[0].digest == digest("5") and push.keys[0].digest == digest("6")
        many = await store.many_credentials(["ws", "nope"])
        assert list(many) == ["ws"]

    with_store(store_url, body)


def test_one_current_key_under_concurrent_rotations(store_url: str) -> None:
    """Rotations racing on several connections never leave two current keys.

    SQLite serialises them outright; PostgreSQL may refuse a racing one with Conflict (the
    partial unique index), which the caller can retry. Either way: exactly one current key.
    """

    async def body(store: SQLStore) -> list[object]:
        await store.create_workspace("ws", "W", "01")

        async def rotate(n: int) -> object:
            try:
                return await store.store_key(
                    "ws", "data", digest(str(n)), f"h{n}", "generated", now=now()
                )
            except Conflict as err:
                return err

        results = await asyncio.gather(*(rotate(n) for n in range(12)))
        creds = await store.credentials("ws")
        assert creds is not None
        current = [k for k in creds.keys if k.state == "current"]
        assert len(current) == 1
        assert await store.check_integrity() == []
        return list(results)

    results = with_store(store_url, body)
    assert any(not isinstance(r, Conflict) for r in results)
    assert all(not isinstance(r, BaseException) or isinstance(r, Conflict) for r in results)


def test_operator_tokens(store_url: str) -> None:
    async def body(store: SQLStore) -> None:
        one = await store.create_token("ci", digest("t1"), "abcd")
        two = await store.create_token("deploy", digest("t2"), "efgh")
        await store.create_token("deploy", digest("t3"), "ijkl")
        assert [t.name for t in await store.list_tokens()] == ["ci", "deploy", "deploy"]
        found = await store.token_by_digest(digest("t1"))
        assert found is not None and found.id == one.id
        assert await store.token_by_digest(digest("none")) is None
        with pytest.raises(Conflict):
            await store.revoke_token("deploy")  # ambiguous
        revoked = await store.revoke_token(two.id)
        assert revoked.revoked_at is not None
        assert (await store.revoke_token("deploy")).name == "deploy"  # now only one active
        with pytest.raises(NotFound):
            await store.revoke_token("ci-missing")
        with pytest.raises(Conflict):
            await store.create_token("dup", digest("t1"), "abcd")

    with_store(store_url, body)


def test_change_feed_records_every_workspace_write(store_url: str) -> None:
    async def body(store: SQLStore) -> None:
        start = await store.last_change_id()
        notified: list[str] = []
        store.add_change_listener(notified.extend)
        await store.create_workspace("ws", "W", "01")
        await store.rename_workspace("ws", "W2")
        await store.set_workspace_status("ws", "suspended")
        await store.store_key("ws", "data", digest("1"), "h", "generated", now=now())
        await store.revoke_key("ws", "data", now=now())
        await store.create_token("t", digest("t"), "hint")  # not a workspace change
        await store.create_workspace("other", "O", "01")
        await store.delete_workspace("other")
        with pytest.raises(Conflict):
            await store.create_workspace("ws", "dup", "01")  # rolled back: no change, no notice

        changes = await store.changes_since(start)
        assert [wid for _, wid in changes] == ["ws"] * 5 + ["other"] * 2
        ids = [cid for cid, _ in changes]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert await store.last_change_id() == ids[-1]
        assert await store.changes_since(ids[-1]) == []
        assert await store.changes_since(ids[2]) == changes[3:]
        # Listeners hear about a change only after it committed.
        assert notified == ["ws"] * 5 + ["other"] * 2

    with_store(store_url, body)


def test_check_integrity_finds_problems(store_url: str) -> None:
    async def body(store: SQLStore) -> list[str]:
        await store.create_workspace("ws", "W", "01")
        await store.store_key("ws", "data", digest("1"), "h", "generated", now=now())
        assert await store.check_integrity() == []
        async with store._engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id="key_bad",
                    workspace_id="ws",
                    scope="data",
                    digest=digest("bad"),
                    hint="h",
                    origin="generated",
                    state="lost",
                    created_at=now(),
                )
            )
        return await store.check_integrity()

    problems = with_store(store_url, body)
    # Written behind the store's back, the row has no audit entry either (issue 23).
    assert problems == [
        "1 keys have an unknown state",
        "keys stored without an audit entry: key_bad",
    ]


def test_unreachable_backend_is_store_unavailable(store_url: str) -> None:
    """An unreachable backend raises StoreUnavailable (a 503), never an empty answer."""
    if store_url.startswith("postgresql"):
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"

        async def go() -> None:
            store = SQLStore(url)
            try:
                with pytest.raises(StoreUnavailable):
                    await store.migrate()
                with pytest.raises(StoreUnavailable):
                    await store.credentials("ws")
                with pytest.raises(StoreUnavailable):
                    await store.ping()
            finally:
                await store.close()

        asyncio.run(go())
        return

    async def body(store: SQLStore) -> None:
        await store.create_workspace("ws", "W", "01")
        assert store.db.sqlite_path is not None
        store.db.sqlite_path.unlink()  # the file vanishes under a running store
        with pytest.raises(StoreUnavailable):
            await store.credentials("ws")
        with pytest.raises(StoreUnavailable):
            await store.ping()

    with_store(store_url, body)


def test_sqlite_connections_are_tuned_for_the_record(tmp_path: object) -> None:
    """WAL, 8 KiB pages, and a checkpoint every 16,384 pages rather than 1,000 (see
    SQLITE_WAL_PAGES), on SQLAlchemy's connections and on the record's own (which would
    otherwise checkpoint the others' large WAL at nearly every commit)."""
    from moeconnect.store.sqlite_connection import (
        SQLITE_CACHE_KIB,
        SQLITE_PAGE_SIZE,
        SQLITE_WAL_PAGES,
    )

    pragmas = (
        "journal_mode",
        "wal_autocheckpoint",
        "journal_size_limit",
        "cache_size",
        "page_size",
    )

    async def body(store: SQLStore) -> tuple[dict[str, object], dict[str, object]]:
        found: dict[str, object] = {}
        async with store._engine.connect() as conn:
            for pragma in pragmas:
                found[pragma] = (await conn.exec_driver_sql(f"PRAGMA {pragma}")).scalar()
        stager = store._stager
        assert stager is not None
        record = await stager.transaction(
            lambda conn: {p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in pragmas}
        )
        return found, record

    found, record = with_store(f"sqlite:///{tmp_path}/tuned.db", body)
    assert record == found
    assert found == {
        "journal_mode": "wal",
        "wal_autocheckpoint": SQLITE_WAL_PAGES,
        "journal_size_limit": SQLITE_WAL_PAGES * SQLITE_PAGE_SIZE,
        "cache_size": -SQLITE_CACHE_KIB,
        "page_size": SQLITE_PAGE_SIZE,
    }
