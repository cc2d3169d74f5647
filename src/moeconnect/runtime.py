"""One server process's moving parts, started and stopped together.

The HTTP app, the admin API and the dashboard all reach the store, the cache and the account
operations through one :class:`Runtime`.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from .accounts import Accounts
from .cache import ChangeWatcher, CredentialCache
from .config import Settings, load_secret
from .invalidation import RedisInvalidation, redis_client
from .metrics import Metrics
from .proxies import ClientAddress
from .ratelimit import LimitConfig, RateLimiter
from .record import ConnectionRecorder, parse_audit_retention, parse_retention
from .store import Store, open_store

__all__ = ["Runtime"]

log = logging.getLogger("moeconnect.runtime")


class Runtime:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.secret = load_secret(settings.db_url)
        self.store = store or open_store(settings.db_url)
        self.accounts = Accounts(self.store, self.secret, settings.known_dcs)
        self.cache = CredentialCache(ttl=settings.cache_ttl)
        self.watcher = ChangeWatcher(self.store, self.cache, settings.change_poll_interval)
        # A write made here is seen here at once, and (with Redis) by every other process.
        self.store.add_change_listener(self.cache.invalidate_many)
        # One shared client per process (invalidations, rate limits); None without Redis.
        self.redis: Redis | None = None
        self.invalidation: RedisInvalidation | None = None
        if settings.redis_url:
            self.redis = redis_client(settings.redis_url)
            self.invalidation = RedisInvalidation(
                settings.redis_url, self.cache, publisher=self.redis
            )
            self.store.add_change_listener(self.invalidation.on_change)
        self.client_address = ClientAddress(settings.trusted_proxies)
        # The connection record: record() is O(1); a background task writes in batches.
        # Its hourly prune also applies the audit log's retention.
        self.recorder = ConnectionRecorder(
            self.store,
            retention=parse_retention(settings.record_retention),
            audit_retention=parse_audit_retention(settings.audit_retention),
        )
        # Abuse limits (SPEC 5): in Redis when configured (own short-timeout pool, so a slow
        # Redis falls back to memory quickly), else in this process's memory.
        self.limiter = RateLimiter(LimitConfig.from_env(), settings.redis_url)
        self.metrics = Metrics(
            self.cache,
            self.limiter,
            lambda: self.recorder.queue_depth,
            lambda: self.recorder.buffered,
        )

    async def start(self) -> None:
        await self.store.migrate()
        await self.recorder.start()
        await self.watcher.start()
        if self.invalidation is not None:
            await self.invalidation.start()
        log.info(
            "moeconnect ready",
            extra={
                "db": self.store.url,
                "dcs": list(self.settings.dcs),
                "limits": self.limiter.config.describe(),
                "limits_backend": self.limiter.backend,
            },
        )

    async def stop(self) -> None:
        # First, so a failure below can't cost the record's final flush.
        await self.recorder.stop()
        if self.invalidation is not None:
            await self.invalidation.stop()
        if self.redis is not None:
            await self.redis.aclose()
        await self.limiter.close()
        await self.watcher.stop()
        await self.accounts.token_usage.close()  # the last minute's last_used_at
        await self.store.close()
