"""The connection record's store methods, on real SQLite files and real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from moeconnect.accounts import Accounts
from moeconnect.store import Store, open_store
from moeconnect.store.base import AttemptRow
from moeconnect.store.sql import _statement_sizes

SECRET = b"s" * 32
T0 = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)


def row(
    outcome: str,
    at: datetime,
    *,
    source: str | None = "tool-a",
    workspace_id: str = "W1",
    key_id: str | None = None,
    count: int = 1,
    agg: bool = False,
    request_id: str = "req00000",
) -> AttemptRow:
    minute = at.replace(second=0, microsecond=0)
    return AttemptRow(
        at=at,
        last_at=at,
        minute=minute,
        request_id=request_id,
        workspace_id=workspace_id,
        dc="01",
        source=source,
        outcome=outcome,
        key_id=key_id,
        stale=outcome == "SUCCESS_STALE_KEY",
        client_ip="10.0.0.1",
        user_agent="pytest",
        count=count,
        agg_key=f"{outcome}|{workspace_id}|{source}|{key_id}|{minute.isoformat()}" if agg else None,
    )


def with_store(url: str, action: Callable[[Store], Awaitable[None]]) -> None:
    async def go() -> None:
        store = open_store(url)
        try:
            await store.migrate()
            await action(store)
        finally:
            await store.close()

    asyncio.run(go())


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


def test_aggregates_add_up_across_batches(db_url: str) -> None:
    async def action(store: Store) -> None:
        batch = [row("SUCCESS", T0 + timedelta(seconds=i), key_id="k1", agg=True) for i in range(3)]
        await store.add_attempts(batch)
        await store.add_attempts(
            [row("SUCCESS", T0 + timedelta(seconds=30), key_id="k1", count=4, agg=True)]
        )
        await store.add_attempts([row("KEY_MISMATCH", T0 + timedelta(seconds=5))] * 2)
        page = await store.list_attempts("W1")
        success = [r for r in page.items if r.outcome == "SUCCESS"]
        assert len(success) == 1 and success[0].count == 7
        assert success[0].at == T0 and success[0].last_at == T0 + timedelta(seconds=30)
        assert sum(r.count for r in page.items) == 9
        summary = await store.source_summary("W1")
        assert len(summary) == 1
        assert summary[0].counts == {"SUCCESS": 7, "KEY_MISMATCH": 2}
        assert summary[0].total == 9
        assert summary[0].last_failure_code == "KEY_MISMATCH"
        assert summary[0].last_success == T0 + timedelta(seconds=30)
        assert summary[0].first_seen == T0

    with_store(db_url, action)


def test_every_column_reads_back_as_written(db_url: str) -> None:
    """Each field lands in its own column, on both backends: the rows are bound by position."""
    single = dataclasses.replace(
        row("KEY_MISMATCH", T0 + timedelta(microseconds=123456), source="tool-b"),
        dc="02",
        key_id="key1",
        client_ip="10.0.0.9",
        user_agent="agent/1.0",
    )
    later = T0 + timedelta(minutes=2, seconds=5)
    aggregate = dataclasses.replace(
        row("SUCCESS_STALE_KEY", later, key_id="key0", count=3, agg=True, request_id="req00001"),
        at=T0 + timedelta(minutes=2),
    )

    async def action(store: Store) -> None:
        await store.add_attempts([single, aggregate])
        page = await store.list_attempts("W1")
        got = {r.request_id: dataclasses.replace(r, id=None) for r in page.items}
        assert got == {"req00000": single, "req00001": aggregate}

    with_store(db_url, action)


def test_list_filters_and_pages(db_url: str) -> None:
    async def action(store: Store) -> None:
        rows = [
            row(
                "KEY_MISMATCH" if i % 2 else "NO_DATA_KEY",
                T0 + timedelta(minutes=i),
                source=f"s{i % 3}",
                request_id=f"req{i:05d}",
            )
            for i in range(25)
        ]
        await store.add_attempts(rows)
        await store.add_attempts([row("KEY_MISMATCH", T0, workspace_id="OTHER")])
        seen: list[str] = []
        cursor = None
        while True:
            page = await store.list_attempts("W1", limit=10, cursor=cursor)
            seen += [r.request_id for r in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [f"req{i:05d}" for i in reversed(range(25))]
        by_source = await store.list_attempts("W1", source="s1", outcome="KEY_MISMATCH")
        assert {r.request_id for r in by_source.items} == {
            f"req{i:05d}" for i in range(25) if i % 3 == 1 and i % 2
        }
        window = await store.list_attempts(
            "W1", since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=9)
        )
        assert len(window.items) == 5
        with pytest.raises(ValueError):
            await store.list_attempts("W1", cursor="not-a-cursor")

    with_store(db_url, action)


def test_uses_replaced_key_and_counts_and_prune(db_url: str) -> None:
    async def action(store: Store) -> None:
        accounts = Accounts(store, SECRET)
        ws = await accounts.create_workspace("Prod")
        first = await accounts.generate_key(ws.id)
        second = await accounts.generate_key(ws.id, grace=timedelta(hours=1))
        old_id, new_id = first.rotation.key.id, second.rotation.key.id
        await store.add_attempts(
            [
                row("SUCCESS", T0, workspace_id=ws.id, source="old-tool", key_id=old_id, agg=True),
                row(
                    "SUCCESS_STALE_KEY",
                    T0 + timedelta(minutes=1),
                    workspace_id=ws.id,
                    source="old-tool",
                    key_id=old_id,
                    agg=True,
                ),
                row("SUCCESS", T0, workspace_id=ws.id, source="new-tool", key_id=new_id, agg=True),
            ]
        )
        summary = {s.source: s for s in await store.source_summary(ws.id)}
        assert summary["old-tool"].uses_replaced_key
        assert summary["old-tool"].replaced_key_id == old_id
        assert summary["old-tool"].replaced_key_ends_at == second.rotation.previous_key_expires_at
        assert not summary["new-tool"].uses_replaced_key
        assert summary["new-tool"].last_failure is None

        buckets = await store.attempt_counts(ws.id, T0 - timedelta(hours=1), 3600)
        assert [(b.start, b.outcome, b.count) for b in buckets] == [
            (T0, "SUCCESS", 2),
            (T0, "SUCCESS_STALE_KEY", 1),
        ]
        pruned = await store.prune_attempts(T0 + timedelta(seconds=30))
        assert pruned == 2
        assert [s.source for s in await store.source_summary(ws.id)] == ["old-tool"]

    with_store(db_url, action)


def test_prune_walks_every_workspace_in_slices(db_url: str) -> None:
    """Pruning finds old rows through the workspace index (there is no index on ``last_at``,
    migration 0005): every workspace's, the empty ID's and the rows without a workspace, across
    several pages of workspaces and several delete transactions per workspace, and nothing newer
    than the cutoff."""
    cutoff = T0 + timedelta(hours=1)
    workspaces = ["", "W0", "W1", "W2", "W3", "W4", "W5", "W6"]
    rows: list[AttemptRow] = []
    expected_old = 0
    for n, wid in enumerate(workspaces):
        for i in range(n % 6):  # 0 to 5 old rows: some workspaces need two slices of 3
            rows.append(row("KEY_MISMATCH", T0 + timedelta(minutes=i), workspace_id=wid))
            expected_old += 1
        rows.append(row("KEY_MISMATCH", cutoff + timedelta(minutes=n), workspace_id=wid))
        rows.append(row("SUCCESS", cutoff, workspace_id=wid, agg=True))
    old_success = row("SUCCESS", T0, workspace_id="W3", agg=True)
    rows.append(old_success)
    expected_old += 1
    nowhere = [row("MALFORMED", T0 + timedelta(seconds=i), workspace_id="W9") for i in range(4)]
    for item in nowhere:
        item.workspace_id = None
    rows.extend(nowhere)
    expected_old += len(nowhere)
    rows.append(dataclasses.replace(nowhere[0], at=cutoff, last_at=cutoff))

    async def action(store: Store) -> None:
        store.prune_workspaces = 2  # type: ignore[attr-defined]  # four pages of workspaces
        store.prune_rows = 3  # type: ignore[attr-defined]
        await store.add_attempts(rows)
        assert await store.prune_attempts(cutoff) == expected_old
        for wid in workspaces:
            page = await store.list_attempts(wid, limit=100)
            assert sorted(r.outcome for r in page.items) == ["KEY_MISMATCH", "SUCCESS"], wid
            assert all(r.last_at >= cutoff for r in page.items)
        assert await store.prune_attempts(cutoff) == 0
        engine = store._engine  # type: ignore[attr-defined]
        async with engine.connect() as conn:
            query = "SELECT count(*) FROM connection_attempts WHERE workspace_id IS NULL"
            assert (await conn.execute(sa.text(query))).scalar() == 1

    with_store(db_url, action)


def test_sqlite_batches_of_any_size_use_few_statement_shapes() -> None:
    """The driver keeps every statement it prepared, and a multi-row INSERT costs SQLite
    ~1.4 KB of memory per row: batches of every size must not each bring a shape of their own
    (they made the server's SQLite memory 20-60 MB)."""
    shapes: set[int] = set()
    for size in range(1, 3000):
        sizes = _statement_sizes(size)
        assert sum(sizes) == size
        assert all(0 < s <= 256 for s in sizes)
        shapes.update(sizes)
    assert len(shapes) <= 9, sorted(shapes)


def test_sqlite_stages_batches_of_any_size_whole(sqlite_url: str) -> None:
    """Every row of every batch size lands, in statements of those few shapes, through the
    record's own SQLite connection."""

    async def action(store: Store) -> None:
        shapes: set[int] = set()

        def seen(statement: str) -> None:
            if statement.startswith("INSERT INTO connection_attempts_staged"):
                shapes.add(statement.count("), (") + 1)

        stager = store._stager  # type: ignore[attr-defined]
        await stager.transaction(lambda conn: conn.set_trace_callback(seen))
        total = 0
        for size in range(1, 700, 7):
            start = T0 + timedelta(minutes=total)
            await store.add_attempts(
                [row("KEY_MISMATCH", start + timedelta(seconds=i % 50)) for i in range(size)]
            )
            total += size
        page = await store.source_summary("W1")
        assert sum(s.total for s in page) == total
        assert 1 < len(shapes) <= 9, sorted(shapes)

    with_store(sqlite_url, action)


async def _table_counts(store: Store) -> tuple[int, int]:
    """Rows in (the staging table, the record), read directly: what no reader method shows."""
    engine = store._engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        staged = (
            await conn.execute(sa.text("SELECT count(*) FROM connection_attempts_staged"))
        ).scalar()
        kept = (await conn.execute(sa.text("SELECT count(*) FROM connection_attempts"))).scalar()
    return int(staged), int(kept)


def test_failures_wait_unindexed_and_move_in_workspace_order_before_any_read(db_url: str) -> None:
    """Single rows are staged (no index to update one by one); every reader moves them first,
    sorted by workspace so that one workspace's rows are neighbours in the index."""

    async def action(store: Store) -> None:
        store.fold_rows = 1_000  # type: ignore[attr-defined]
        await store.add_attempts(
            [
                row(
                    "KEY_MISMATCH",
                    T0 + timedelta(seconds=i),
                    workspace_id=f"W{3 - i % 3}",
                    request_id=f"req{i:05d}",
                )
                for i in range(9)
            ]
        )
        assert await _table_counts(store) == (9, 0)
        page = await store.list_attempts("W2")
        assert await _table_counts(store) == (0, 9)
        assert [r.request_id for r in page.items] == ["req00007", "req00004", "req00001"]
        by_id = []
        for workspace in ("W1", "W2", "W3"):
            by_id += sorted(
                (r.id, r.workspace_id) for r in (await store.list_attempts(workspace)).items
            )
        assert sorted(by_id) == by_id  # ids given in workspace order, then time

        for read in (
            lambda: store.source_summary("W1"),
            lambda: store.attempt_counts("W1", T0),
            lambda: store.prune_attempts(T0 - timedelta(days=1)),
        ):
            await store.add_attempts([row("KEY_MISMATCH", T0 + timedelta(minutes=5))])
            assert (await _table_counts(store))[0] == 1
            await read()
            assert (await _table_counts(store))[0] == 0

    with_store(db_url, action)


def test_staged_rows_move_once_enough_have_gathered(db_url: str) -> None:
    async def action(store: Store) -> None:
        store.fold_rows = 5  # type: ignore[attr-defined]
        await store.add_attempts([row("KEY_MISMATCH", T0 + timedelta(seconds=i)) for i in range(3)])
        assert await _table_counts(store) == (3, 0)
        # SQLite stages aggregates too; PostgreSQL upserts them at once (and they don't count
        # towards a move there).
        await store.add_attempts([row("SUCCESS", T0, key_id="k1", agg=True)])
        sqlite = db_url.startswith("sqlite")
        assert await _table_counts(store) == ((4, 0) if sqlite else (3, 1))
        more = 1 if sqlite else 2
        await store.add_attempts(
            [row("KEY_MISMATCH", T0 + timedelta(seconds=i)) for i in range(more)]
        )
        assert await _table_counts(store) == ((0, 5) if sqlite else (0, 6))

    with_store(db_url, action)


def test_close_moves_what_was_staged(db_url: str) -> None:
    """Whoever reads the tables directly after a shutdown finds the whole record."""

    async def stage(store: Store) -> None:
        await store.add_attempts([row("KEY_MISMATCH", T0 + timedelta(seconds=i)) for i in range(4)])
        assert await _table_counts(store) == (4, 0)

    async def check(store: Store) -> None:
        assert await _table_counts(store) == (0, 4)

    with_store(db_url, stage)
    with_store(db_url, check)


def test_writers_and_moves_at_once_lose_and_double_nothing(db_url: str) -> None:
    """Two stores (two processes' worth) stage rows and move them at the same time, every
    batch: each row ends in the record exactly once. (On PostgreSQL a move that deleted what
    it had not copied would lose the rows staged between its two halves.)"""

    async def action(store: Store) -> None:
        other = open_store(db_url)
        try:
            for each in (store, other):
                each.fold_rows = 1  # type: ignore[attr-defined]

            async def write(each: Store, name: str) -> None:
                for b in range(25):
                    await each.add_attempts(
                        [
                            row(
                                "KEY_MISMATCH",
                                T0 + timedelta(milliseconds=b * 40 + i),
                                request_id=f"{name}{b:03d}{i:03d}",
                            )
                            for i in range(40)
                        ]
                    )

            await asyncio.gather(write(store, "a"), write(other, "b"), write(store, "c"))
        finally:
            await other.close()
        ids: list[str] = []
        page = await store.list_attempts("W1", limit=500)
        while True:
            ids += [r.request_id for r in page.items]
            if page.next_cursor is None:
                break
            page = await store.list_attempts("W1", limit=500, cursor=page.next_cursor)
        assert len(ids) == 3 * 25 * 40
        assert len(set(ids)) == len(ids)
        assert await _table_counts(store) == (0, 3 * 25 * 40)

    with_store(db_url, action)


def test_aggregates_of_one_key_staged_apart_add_up_in_any_order(db_url: str) -> None:
    """Batches of one aggregate may arrive late (a retry, another process): whatever order
    they are staged and moved in, counts add up and the latest attempt's details win."""
    later = dataclasses.replace(
        row("SUCCESS", T0 + timedelta(seconds=40), key_id="k1", agg=True, request_id="late0001"),
        at=T0 + timedelta(seconds=30),
        count=2,
    )
    earlier = dataclasses.replace(
        row("SUCCESS", T0 + timedelta(seconds=20), key_id="k1", agg=True, request_id="early001"),
        at=T0 + timedelta(seconds=10),
        count=3,
    )

    async def action(store: Store) -> None:
        await store.add_attempts([later])
        await store.add_attempts([earlier])
        await store.add_attempts([dataclasses.replace(later, count=1, request_id="late0002")])
        (got,) = (await store.list_attempts("W1")).items
        assert got.count == 6
        assert (got.at, got.last_at) == (T0 + timedelta(seconds=10), T0 + timedelta(seconds=40))
        assert got.request_id in ("late0001", "late0002")  # the two share the latest time

    with_store(db_url, action)


def test_staged_rows_move_once_the_first_has_waited_long_enough(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Few rows (a quiet server) still move within FOLD_SECONDS of the first being staged."""
    from moeconnect.store import sql

    async def action(store: Store) -> None:
        await store.add_attempts([row("KEY_MISMATCH", T0)])
        assert await _table_counts(store) == (1, 0)
        monkeypatch.setattr(sql, "FOLD_SECONDS", 0.0)
        await store.add_attempts([row("KEY_MISMATCH", T0 + timedelta(seconds=1))])
        assert await _table_counts(store) == (0, 2)

    with_store(db_url, action)
