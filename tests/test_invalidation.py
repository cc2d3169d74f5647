"""Cache invalidation: the cache's race guard (pure), and Redis pub/sub against a real Redis."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

from moeconnect.cache import CredentialCache
from moeconnect.invalidation import RedisInvalidation
from moeconnect.records import WorkspaceCredentials
from moeconnect.testing import free_port


def record(workspace_id: str) -> WorkspaceCredentials:
    return WorkspaceCredentials(workspace_id, "Name", "01", "active", ())


def test_a_read_older_than_an_invalidation_is_not_cached() -> None:
    cache = CredentialCache(ttl=30)
    started = time.monotonic()  # a read of the store begins ...
    cache.invalidate("ws")  # ... a change lands meanwhile ...
    cache.put(record("ws"), loaded=started)  # ... so what it read may be the old record
    assert cache.get("ws") is None
    cache.put(record("ws"), loaded=time.monotonic())  # a read begun after the change is fine
    assert cache.get("ws") is not None


def test_clear_refuses_reads_begun_before_it() -> None:
    cache = CredentialCache(ttl=30)
    started = time.monotonic()
    cache.clear()
    cache.put(record("ws"), loaded=started)
    assert cache.get("ws") is None


def test_entries_expire_after_the_ttl() -> None:
    cache = CredentialCache(ttl=0.05)
    cache.put(record("ws"))
    assert cache.get("ws") is not None
    time.sleep(0.06)
    assert cache.get("ws") is None


async def _until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.mark.redis
def test_a_change_published_by_one_process_empties_the_others_cache(redis_url: str) -> None:
    channel = "moeconnect:test:" + secrets.token_hex(4)

    async def go() -> None:
        here, there = CredentialCache(), CredentialCache()
        publisher = RedisInvalidation(redis_url, here, channel=channel)
        subscriber = RedisInvalidation(redis_url, there, channel=channel)
        await subscriber.start()
        try:
            assert await _until(lambda: subscriber.connected, 5)
            there.put(record("ws-1"))
            there.put(record("ws-2"))
            pending = publisher.on_change(["ws-1", "ws-1"])
            assert pending is not None  # while Redis answers, the writer waits for the publish
            await pending
            assert await _until(lambda: there.get("ws-1") is None, 1.0)
            assert there.get("ws-2") is not None
        finally:
            await publisher.stop()
            await subscriber.stop()

    asyncio.run(go())


def test_an_absent_redis_never_raises_nor_holds_up_a_write() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def go() -> None:
        cache = CredentialCache()
        invalidation = RedisInvalidation(url, cache)
        await invalidation.start()
        try:
            first = invalidation.on_change(["ws"])
            assert first is not None
            started = time.monotonic()
            await first  # fails inside, quietly
            assert time.monotonic() - started < 2
            # Once Redis is known to be away, writes don't wait on it at all.
            assert invalidation.on_change(["ws"]) is None
            await asyncio.sleep(0.2)
            assert not invalidation.connected
        finally:
            await invalidation.stop()

    asyncio.run(go())
