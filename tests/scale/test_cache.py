"""The credential cache: a cached success costs no query, and no entry outlives its TTL.

The app runs in this process under a real uvicorn server (requests still arrive over a socket).
Statements are counted where they really run: SQLite's own trace hook on every connection the
process opens, and PostgreSQL's own statement log.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from moeconnect.accounts import Accounts
from moeconnect.cache import CredentialCache
from moeconnect.config import Settings, load_secret
from moeconnect.invalidation import RedisInvalidation
from moeconnect.keys import generate_key
from moeconnect.records import WorkspaceCredentials
from moeconnect.store import SQLStore

from .. import services
from ..throwaway import ThrowawayPostgres, ThrowawayRedis, postgres_bin, redis_bin
from .helpers import NO_LIMITS, PATH, InProcessServer, code_of, request_kwargs

RECORD_TABLE = "connection_attempts"  # the connection record, written in background batches


def _workspace_with_key(server: InProcessServer, name: str) -> tuple[str, str]:
    """A workspace in DC 01 and its key, made through the server's own accounts (and cache)."""

    async def make() -> tuple[str, str]:
        accounts = server.app.runtime.accounts
        ws = await accounts.create_workspace(name, "01")
        return ws.id, (await accounts.generate_key(ws.id)).key

    result: tuple[str, str] = server.call(make())
    return result


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# Statements that are not a request's: the connection record's background batches and the
# transaction and connection plumbing around them.
_PLUMBING = re.compile(
    r"^\s*(BEGIN|COMMIT|ROLLBACK|SELECT 1|SELECT pg_advisory_unlock_all|CLOSE ALL|UNLISTEN|"
    r"RESET ALL|PRAGMA)\b",
    re.IGNORECASE,
)


def _request_queries(statements: list[str]) -> list[str]:
    return [s for s in statements if RECORD_TABLE not in s and not _PLUMBING.match(s)]


class SQLiteStatements:
    """Every statement any SQLite connection of this process runs (the driver's trace hook)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        original = sqlite3.connect

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = original(*args, **kwargs)
            conn.set_trace_callback(self.statements.append)
            return conn

        monkeypatch.setattr(sqlite3, "connect", connect)

    def since(self, mark: int) -> list[str]:
        return list(self.statements[mark:])

    def mark(self) -> int:
        return len(self.statements)


class PostgresStatements:
    """Every statement the PostgreSQL server executes, from its own log (log_statement=all)."""

    ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", re.MULTILINE)
    STATEMENT = re.compile(r"LOG:\s+(?:statement|execute [^:]*):\s*(.*)", re.DOTALL)

    def __init__(self, pg: ThrowawayPostgres) -> None:
        self.log = pg.log

    def _all(self) -> list[str]:
        time.sleep(0.3)  # the server writes its log asynchronously
        text = self.log.read_text("utf-8", "replace")
        starts = [m.start() for m in self.ENTRY.finditer(text)] + [len(text)]
        entries = [text[a:b] for a, b in itertools.pairwise(starts)]
        return [m.group(1).strip() for e in entries if (m := self.STATEMENT.search(e))]

    def mark(self) -> int:
        return len(self._all())

    def since(self, mark: int) -> list[str]:
        return self._all()[mark:]


@pytest.fixture(params=["sqlite", "postgresql"])
def counted(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[str, SQLiteStatements | PostgresStatements]]:
    """(database URL, statement counter): SQLite counted in the driver, PostgreSQL by the server."""
    for name, value in NO_LIMITS.items():
        monkeypatch.setenv(name, value)
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'moeconnect.db'}", SQLiteStatements(monkeypatch)
        return
    services.need_tool(
        postgres_bin() is not None,
        "needs initdb and pg_ctl for a PostgreSQL that logs every statement",
    )
    monkeypatch.setenv("MOECONNECT_SECRET", "a-shared-secret-for-the-test-only")
    with ThrowawayPostgres({"log_statement": "all"}) as pg:
        yield pg.url, PostgresStatements(pg)


def test_a_cached_success_makes_no_database_query(
    counted: tuple[str, SQLiteStatements | PostgresStatements],
) -> None:
    db_url, statements = counted
    # The change-feed poll is slowed to once an hour so it stays out of the count.
    settings = Settings(db_url=db_url, change_poll_interval=3600)
    with InProcessServer(settings) as server:
        runtime = server.app.runtime
        workspace_id, key = _workspace_with_key(server, "Cached")
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            mark = statements.mark()
            first = client.post(PATH, **request_kwargs(workspace_id, key))
            assert first.status_code == 200
            miss = _request_queries(statements.since(mark))
            assert any("api_keys" in s for s in miss), f"a miss reads the store: {miss}"

            mark = statements.mark()
            hits = runtime.cache.hits
            for _ in range(50):
                response = client.post(PATH, **request_kwargs(workspace_id, key))
                assert (response.status_code, code_of(response)) == (200, "SUCCESS")
            queries = _request_queries(statements.since(mark))
        assert runtime.cache.hits - hits == 50
        assert queries == [], f"cached requests queried the database: {queries}"


def test_a_cached_failure_asks_the_change_feed_not_the_credentials(
    counted: tuple[str, SQLiteStatements | PostgresStatements],
) -> None:
    """A refused key costs one poll of the change feed (shared by concurrent requests), and a
    key written by another process a moment ago still works at once."""
    db_url, statements = counted
    # The regular change-feed poll is slowed to once an hour: every poll seen is on demand.
    settings = Settings(db_url=db_url, change_poll_interval=3600)
    with InProcessServer(settings) as server:
        runtime = server.app.runtime
        workspace_id, key = _workspace_with_key(server, "Refused")
        wrong = generate_key("data")  # well-formed, not this workspace's
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            # The first loads the record; the second's poll meets the setup's own changes,
            # which drop that record once more.
            for _ in range(2):
                first = client.post(PATH, **request_kwargs(workspace_id, wrong))
                assert (first.status_code, code_of(first)) == (401, "KEY_MISMATCH")

            mark = statements.mark()
            polls = runtime.watcher.on_demand_polls
            for _ in range(10):
                refused = client.post(PATH, **request_kwargs(workspace_id, wrong))
                assert (refused.status_code, code_of(refused)) == (401, "KEY_MISMATCH")
            queries = _request_queries(statements.since(mark))
            assert runtime.watcher.on_demand_polls - polls == 10
            # Each poll: the feed's window, then the store's epoch and two changes' stamps by
            # primary key (is it still the same feed? see ChangeWatcher), in one hand-off.
            assert len(queries) == 2 * 10, "\n".join(queries)
            assert all("FROM changes" in q for q in queries), queries
            assert not any("api_keys" in q for q in queries), queries

            # Another process generates a new key: it works at once, without waiting for the
            # regular poll (an hour away) or the cache's TTL.
            new_key = asyncio.run(_generate_elsewhere(db_url, workspace_id))
            fresh = client.post(PATH, **request_kwargs(workspace_id, new_key))
            assert (fresh.status_code, code_of(fresh)) == (200, "SUCCESS")
            stale = client.post(PATH, **request_kwargs(workspace_id, key))
            assert (stale.status_code, code_of(stale)) == (401, "KEY_REVOKED")


def test_an_entry_outlives_its_ttl_only_while_the_change_feed_is_read() -> None:
    """The TTL bounds how far an entry can lag the store: from its read, or from the latest
    change-feed poll applied, whichever is later."""
    ttl = 0.2
    cache = CredentialCache(ttl=ttl)
    record = WorkspaceCredentials("W1", "TTL", "01", "active", ())
    cache.put(record)
    time.sleep(ttl + 0.05)
    assert cache.get("W1") is None, "no poll confirmed it: the entry's own TTL ends it"

    cache.put(record)
    deadline = time.monotonic() + 3 * ttl
    while time.monotonic() < deadline:  # the feed is read every 50 ms
        cache.confirm(time.monotonic())
        time.sleep(0.05)
    assert cache.get("W1") == (pytest.approx(deadline - 3 * ttl, abs=0.1), record)
    assert cache.holds("W1", record)

    time.sleep(ttl + 0.05)  # the feed stops answering
    assert not cache.holds("W1", record)
    assert cache.get("W1") is None


def test_concurrent_cached_failures_share_a_change_feed_poll(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'moeconnect.db'}"
    settings = Settings(db_url=db_url, change_poll_interval=3600)
    with InProcessServer(settings) as server:
        watcher = server.app.runtime.watcher

        async def many() -> tuple[list[bool], int]:
            before = watcher.on_demand_polls
            arrived = time.monotonic()
            results = await asyncio.gather(*(watcher.caught_up(arrived) for _ in range(50)))
            # Arrived after the polls above started: needs (and shares) one more.
            later = time.monotonic()
            results += await asyncio.gather(*(watcher.caught_up(later) for _ in range(50)))
            return results, watcher.on_demand_polls - before

        results, polls = server.call(many())
        assert all(results)
        assert polls == 2
        assert watcher.synced_from >= 0


async def _generate_elsewhere(db_url: str, workspace_id: str) -> str:
    """Generate a workspace's key as another process would: its own store, no shared cache."""
    store = SQLStore(db_url)
    try:
        return (await Accounts(store, load_secret(db_url)).generate_key(workspace_id)).key
    finally:
        await store.close()


@pytest.mark.redis
def test_an_entry_never_outlives_its_ttl_when_invalidations_are_lost(tmp_path: Path) -> None:
    """Redis stopped and the change-feed poll off: only the TTL can end a revoked key's entry."""
    services.need_tool(redis_bin() is not None, "needs redis-server to start and stop one")
    ttl = 1.0
    db_url = f"sqlite:///{tmp_path / 'moeconnect.db'}"
    with ThrowawayRedis() as redis:
        settings = Settings(
            db_url=db_url, cache_ttl=ttl, change_poll_interval=3600, redis_url=redis.url
        )
        with (
            InProcessServer(settings) as server,
            httpx.Client(base_url=server.base_url, timeout=10) as client,
        ):
            runtime = server.app.runtime
            invalidation = runtime.invalidation
            assert invalidation is not None
            _wait(lambda: invalidation.connected, 10, "the subscriber to connect")

            workspace_id, key = _workspace_with_key(server, "TTL")

            redis.stop()
            _wait(lambda: not invalidation.connected, 10, "the subscriber to notice")
            # Redis down never stands between a request and its answer.
            loaded = time.monotonic()
            assert client.post(PATH, **request_kwargs(workspace_id, key)).status_code == 200
            hits = runtime.cache.hits
            assert client.post(PATH, **request_kwargs(workspace_id, key)).status_code == 200
            assert runtime.cache.hits == hits + 1, "the second answer came from the cache"

            # Another instance revokes the key; its message to Redis is lost.
            started = time.monotonic()
            asyncio.run(_revoke_elsewhere(db_url, redis.url, workspace_id))
            assert time.monotonic() - started < 5, "a write waited on the absent Redis"

            answers: list[tuple[float, int, str]] = []
            while True:
                response = client.post(PATH, **request_kwargs(workspace_id, key))
                answers.append((time.monotonic() - loaded, response.status_code, code_of(response)))
                if response.status_code != 200 or answers[-1][0] > ttl + 5:
                    break
                time.sleep(0.02)
            refused_at, status, code = answers[-1]
            assert status == 401, answers
            assert code in ("KEY_REVOKED", "NO_DATA_KEY"), answers
            # Served stale from the cache until the TTL, then refused: never later.
            assert refused_at < ttl + 0.75, f"refused only {refused_at:.2f}s after caching"
            if answers[0][0] < ttl - 0.1:
                assert answers[0][1] == 200, "the lost invalidation left the entry in place"

            # Redis back: the subscriber reconnects by itself.
            redis.start()
            _wait(lambda: invalidation.connected, 10, "the subscriber to reconnect")


async def _revoke_elsewhere(db_url: str, redis_url: str, workspace_id: str) -> None:
    """Revoke as another instance would: its own store, publishing to the (dead) Redis."""
    store = SQLStore(db_url)
    publisher = RedisInvalidation(redis_url, CredentialCache())
    store.add_change_listener(publisher.on_change)
    try:
        await Accounts(store, load_secret(db_url)).revoke_key(workspace_id)
    finally:
        await publisher.stop()
        await store.close()
