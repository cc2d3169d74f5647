"""The credential cache: a cached success costs no query, and no entry outlives its TTL.

The app runs in this process under a real uvicorn server (requests still arrive over a socket),
so the test can count every statement the store's engine sends to the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from moeconnect.accounts import Accounts
from moeconnect.cache import CredentialCache
from moeconnect.config import Settings, load_secret
from moeconnect.invalidation import RedisInvalidation
from moeconnect.store import SQLStore

from ..throwaway import ThrowawayRedis, redis_bin
from .helpers import NO_LIMITS, PATH, InProcessServer, code_of, request_kwargs

RECORD_TABLE = "connection_attempts"  # the connection record, written in background batches


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str:
    for name, value in NO_LIMITS.items():
        monkeypatch.setenv(name, value)
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'moeconnect.db'}"
    monkeypatch.setenv("MOECONNECT_SECRET", "a-shared-secret-for-the-test-only")
    url: str = request.getfixturevalue("pg_url")
    return url


def test_a_cached_success_makes_no_database_query(backend_url: str) -> None:
    # The change-feed poll is slowed to once an hour so every statement seen is the requests'.
    settings = Settings(db_url=backend_url, change_poll_interval=3600)
    with InProcessServer(settings) as server:
        runtime = server.app.runtime

        async def setup() -> tuple[str, str]:
            ws = await runtime.accounts.create_workspace("Cached", "01")
            return ws.id, (await runtime.accounts.generate_key(ws.id)).key

        workspace_id, key = server.call(setup())
        statements: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        engine = runtime.store._engine.sync_engine  # type: ignore[attr-defined]
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            with httpx.Client(base_url=server.base_url, timeout=10) as client:
                first = client.post(PATH, **request_kwargs(workspace_id, key))
                assert first.status_code == 200
                assert any("api_keys" in s for s in statements), "the first request read the store"
                statements.clear()
                hits = runtime.cache.hits
                for _ in range(50):
                    response = client.post(PATH, **request_kwargs(workspace_id, key))
                    assert (response.status_code, code_of(response)) == (200, "SUCCESS")
                queries = [s for s in statements if RECORD_TABLE not in s]
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
        assert runtime.cache.hits - hits == 50
        assert queries == [], f"cached requests queried the database: {queries}"


@pytest.mark.redis
@pytest.mark.skipif(redis_bin() is None, reason="needs redis-server to start and stop one")
def test_an_entry_never_outlives_its_ttl_when_invalidations_are_lost(tmp_path: Path) -> None:
    """Redis stopped and the change-feed poll off: only the TTL can end a revoked key's entry."""
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

            async def setup() -> tuple[str, str]:
                ws = await runtime.accounts.create_workspace("TTL", "01")
                return ws.id, (await runtime.accounts.generate_key(ws.id)).key

            workspace_id, key = server.call(setup())

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
