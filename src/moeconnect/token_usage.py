"""``last_used_at`` of operator tokens, kept without a database write per request.

Every admin API request and dashboard page reads its token's row anyway (revocation and expiry
are checked at once, SPEC section 9), so the stored ``last_used_at`` is at hand: when it is less
than :data:`INTERVAL` old, nothing happens. Otherwise the token is noted in memory and a
background task writes all noted tokens in one statement, after the request's own work — so a
token in constant use costs one write a minute per process, and a request never waits for it.
A process also remembers what it scheduled, so a burst of requests before the write lands
schedules it once. A failed write is logged and dropped: the next use a minute on tries again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Final

from .records import OperatorToken
from .store import Store, StoreError

__all__ = ["INTERVAL", "TokenUsage"]

log = logging.getLogger("moeconnect.tokens")

INTERVAL: Final = timedelta(minutes=1)
_REMEMBERED: Final = 10_000  # tokens whose scheduled write this process remembers


class TokenUsage:
    """Notes uses of operator tokens and writes ``last_used_at`` in batches."""

    def __init__(self, store: Store, interval: timedelta = INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._pending: dict[str, datetime] = {}
        self._scheduled: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self.writes = 0  # statements issued, for tests and curiosity

    def note(self, token: OperatorToken, now: datetime) -> None:
        """``token`` was used at ``now``: schedule a write if its stored time is stale."""
        if token.last_used_at is not None and now - token.last_used_at < self.interval:
            return
        scheduled = self._scheduled.get(token.id)
        if scheduled is not None and now - scheduled < self.interval:
            return
        if len(self._scheduled) >= _REMEMBERED:
            self._scheduled.clear()  # only costs an extra write for tokens in use
        self._scheduled[token.id] = now
        self._pending[token.id] = now
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        """Write every noted use now (also called when the server stops)."""
        await asyncio.sleep(0)  # let the request that noted it go first
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                self.writes += 1
                await self.store.touch_tokens(batch)
            except StoreError as err:
                log.warning("operator token last_used_at not written: %s", err)
                return

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            await self._task
        if self._pending:
            await self.flush()
