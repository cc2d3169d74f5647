"""Cache invalidations between workers and instances, over Redis pub/sub.

Three layers keep a cached credential honest, fastest first:

1. **Pub/sub** (here). A write made by a server process (admin API, dashboard) drops the entry
   from its own cache and publishes the workspace ID on :data:`CHANNEL`; every worker of every
   instance subscribed to the same Redis drops it within milliseconds.
2. **The change feed** (:class:`~moeconnect.cache.ChangeWatcher`). Every write appends to the
   store's ``changes`` table in the same transaction, whoever made it; the poll covers writers
   that don't publish (the CLI writing to the database directly) and messages lost while Redis
   was away, and drops the whole cache when the store was restored or recreated under it.
3. **The TTL** of each cache entry bounds whatever slips past both.

Redis never stands between a request and its answer: publishing is fire-and-forget with a short
timeout, the subscriber reconnects in the background, and an outage is logged once (and its end
once). Why Redis and not PostgreSQL ``LISTEN/NOTIFY``: see ``docs/deploy.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .cache import CredentialCache

__all__ = ["CHANNEL", "RedisInvalidation", "redis_client"]

log = logging.getLogger("moeconnect.invalidation")

CHANNEL = "moeconnect:invalidate"
_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


def redis_client(url: str) -> Redis:
    """A Redis client that fails fast: a slow or absent Redis must not hold anything up."""
    return Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=1.0,
        health_check_interval=5,
    )


class RedisInvalidation:
    """Publishes this process's changes and applies everyone's to the local cache."""

    def __init__(
        self,
        url: str,
        cache: CredentialCache,
        *,
        publisher: Redis | None = None,
        channel: str = CHANNEL,
        publish_timeout: float = 1.0,
        max_backoff: float = 2.0,
    ) -> None:
        self.redis = publisher or redis_client(url)
        self.cache = cache
        self.channel = channel
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self.connected = False
        self.received = 0
        self._publish_ok = True
        self._lost = False
        self._pending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        # The subscriber holds a connection open for good: give it its own client, so it never
        # takes one from the pool that publishing and rate limits share.
        self._subscriber = redis_client(url)

    # -- publishing -----------------------------------------------------------------------------

    def on_change(self, workspace_ids: Sequence[str]) -> asyncio.Task[None] | None:
        """Store change listener: tell every other worker and instance.

        While Redis answers, the write waits for the publish (at most ``publish_timeout``), so
        an admin call that returned has told everyone. While it doesn't, the write doesn't wait.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        task = loop.create_task(self._publish("\n".join(dict.fromkeys(workspace_ids))))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task if self._publish_ok else None

    async def _publish(self, payload: str) -> None:
        try:
            await asyncio.wait_for(self.redis.publish(self.channel, payload), self.publish_timeout)
        except _FAILURES as err:
            if self._publish_ok:
                log.warning(
                    "can't publish cache invalidations to Redis (%s); other instances will "
                    "see the change at their next change-feed poll",
                    _describe(err),
                )
            self._publish_ok = False
            return
        if not self._publish_ok:
            log.info("publishing cache invalidations to Redis again")
        self._publish_ok = True

    # -- subscribing -----------------------------------------------------------------------------

    def _apply(self, data: bytes | str) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        for workspace_id in text.split("\n"):
            if workspace_id:
                self.cache.invalidate(workspace_id)
        self.received += 1

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if self._lost:
                    # Whatever was published while we were away is gone: start afresh.
                    self.cache.clear()
                    log.info("Redis reachable again: cache invalidations resume")
                self._lost = False
                self.connected = True
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._apply(message["data"])
            except _FAILURES as err:
                self.connected = False
                if not self._lost:
                    log.warning(
                        "Redis unreachable (%s): cache invalidations fall back to the "
                        "change-feed poll and the cache TTL until it is back",
                        _describe(err),
                    )
                self._lost = True
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="moeconnect-invalidation")

    async def stop(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=self.publish_timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._subscriber.aclose()


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]
