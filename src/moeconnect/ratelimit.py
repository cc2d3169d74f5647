"""Abuse limits of the Test Connection endpoint (SPEC section 5), on the ``limits`` library.

Three limits, each a *fixed window* that starts at the first counted attempt:

- failed attempts per client IP (default ``30/minute``),
- failed attempts per workspace, all IPs together (``100/minute``),
- all attempts per workspace (``600/minute``).

Why a fixed window: it is one counter per key (one ``INCR`` in Redis, one integer in memory), where
a moving window keeps a timestamp per attempt — up to 600 per workspace — and the spec's own
wording ("that IP gets 429 for the rest of the window") describes a fixed window. The price, a
burst of up to twice the limit across a window boundary, is acceptable for brute-force defence.

Row 5 of the check table calls :meth:`RateLimiter.admit` (is a limit already exhausted?) and, once
the outcome is known, :meth:`RateLimiter.settle` counts the attempt and returns the
``X-RateLimit-*`` headers of the tightest limit.

The workspace limits never lock out a workspace's working integrations (SPEC sections 5 and 9):
workspace IDs are public, so anyone can spend a workspace's budgets. A client bucket (IP, or
IPv6 /64: :class:`~moeconnect.proxies.IpBuckets`) that authenticated successfully for the
workspace within ``trusted_for`` (24 hours; :class:`~moeconnect.trust.TrustedClients`) is not
refused by them; it is held to the per-IP limit like everyone. The trust is consulted only once a
workspace budget is spent, and recorded at most every few minutes per workspace and address (in
the same Redis pipeline as the counters), so the success path costs what it did. docs/limits.md
has the threat model.

A Basic username that is not a workspace ID (``WORKSPACE_ID_PATTERN``), or that is a key
(``looks_like_key``: a client swapped the fields), is counted in one shared bucket,
:data:`INVALID_WORKSPACE`: it never becomes part of a Redis key name, and no workspace can have
such an ID, so the bucket's 429s refuse only attempts that fail anyway.

Counters live in this process's memory, or in Redis when ``MOECONNECT_REDIS`` is set so every
instance shares them. When Redis can't be reached the limiter keeps answering from per-process
memory (a warning in the log, the ``moeconnect_ratelimit_fallback`` metric) and goes back to
Redis as soon as it answers a ping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, cast

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.errors import StorageError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .config import ConfigError
from .durations import format_duration, parse_duration
from .errors import STALE_SUCCESS, SUCCESS
from .instants import Instants
from .keys import WORKSPACE_ID_PATTERN, looks_like_key
from .proxies import IpBuckets
from .trust import MINUTE_MASK, TAG_SHIFT, TrustedClients

__all__ = [
    "DEFAULTS",
    "ENV",
    "INVALID_WORKSPACE",
    "SETTING_DEFAULTS",
    "SETTING_ENV",
    "Admission",
    "LimitConfig",
    "LocalWindows",
    "RateLimiter",
    "parse_limit",
    "workspace_bucket",
]

log = logging.getLogger("moeconnect.ratelimit")

FAILED_PER_IP: Final = "failed_per_ip"
FAILED_PER_WORKSPACE: Final = "failed_per_workspace"
PER_WORKSPACE: Final = "per_workspace"

DEFAULTS: Final = {
    FAILED_PER_IP: "30/minute",
    FAILED_PER_WORKSPACE: "100/minute",
    PER_WORKSPACE: "600/minute",
}
ENV: Final = {
    FAILED_PER_IP: "MOECONNECT_LIMIT_FAILED_PER_IP",
    FAILED_PER_WORKSPACE: "MOECONNECT_LIMIT_FAILED_PER_WORKSPACE",
    PER_WORKSPACE: "MOECONNECT_LIMIT_PER_WORKSPACE",
}
_DESCRIBED: Final = {
    FAILED_PER_IP: "failed attempts from this IP address",
    FAILED_PER_WORKSPACE: "failed attempts for this workspace",
    PER_WORKSPACE: "attempts for this workspace",
}
# Settings beside the three limits: how long a success keeps a client served past a spent
# workspace budget ("off" or 0: never), and the IPv6 network a client is counted by.
TRUSTED_FOR: Final = "trusted_for"
IPV6_PREFIX: Final = "ipv6_prefix"
SETTING_DEFAULTS: Final = {TRUSTED_FOR: "24h", IPV6_PREFIX: "64"}
SETTING_ENV: Final = {
    TRUSTED_FOR: "MOECONNECT_LIMIT_TRUSTED_FOR",
    IPV6_PREFIX: "MOECONNECT_LIMIT_IPV6_PREFIX",
}
# The counter of every Basic username that is not a workspace ID (never one: "#" can't be in one).
INVALID_WORKSPACE: Final = "#invalid"
_OFF: Final = frozenset({"off", "none", "disabled", "0"})
# Outcomes that are not the caller's doing are not counted: a 429 (already refused), a store
# outage and an internal error.
_NOT_COUNTED: Final = frozenset({"RATE_LIMITED", "STORE_UNAVAILABLE", "INTERNAL"})
_SUCCESSES: Final = frozenset({SUCCESS, STALE_SUCCESS})
_MAX_ID: Final = 128  # workspace IDs are at most 64 characters; longer usernames are truncated
_REDIS_TIMEOUT: Final = 0.25  # seconds; a slow Redis must not stall the endpoint
_PROBE_INTERVAL: Final = 1.0  # seconds between pings while falling back to memory
_REDIS_ERRORS: Final = (RedisError, StorageError, OSError, TimeoutError)
_TRUST_NAMESPACE: Final = "moeconnect:trusted/"  # + workspace ID: a sorted set of client buckets


def parse_limit(raw: str, name: str = "limit") -> RateLimitItem | None:
    """``"30/minute"`` → a limit item; ``"off"`` → ``None`` (disabled)."""
    text = raw.strip()
    if text.lower() in _OFF:
        return None
    try:
        item = parse(text)
    except ValueError:
        raise ConfigError(
            f"{name}: {raw!r} is not a rate limit; use e.g. 30/minute, 100/hour or off"
        ) from None
    if item.amount < 1:
        raise ConfigError(f"{name}: {raw!r} must allow at least one attempt, or be off")
    # A namespace per limit keeps their counters apart even when two have the same rate.
    return type(item)(item.amount, item.multiples, namespace=f"moeconnect:{name}")


def parse_trusted_for(raw: str, name: str = TRUSTED_FOR) -> float:
    """``"24h"`` → seconds; ``"off"`` (or 0) → 0: no client is exempt from a spent budget."""
    text = raw.strip()
    if text.lower() in _OFF:
        return 0.0
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as err:
        raise ConfigError(f"{name}: {err}, or off") from None
    if seconds < 60:
        raise ConfigError(f"{name}: {raw!r} is under a minute; use e.g. 24h, 7d, or off")
    return seconds


def parse_ipv6_prefix(raw: str, name: str = IPV6_PREFIX) -> int:
    """``"64"`` → 64: an IPv6 client is counted by its network of this prefix length."""
    try:
        prefix = int(raw.strip().lstrip("/"))
    except ValueError:
        prefix = 0
    if not 1 <= prefix <= 128:
        raise ConfigError(f"{name}: {raw!r} is not a prefix length from 1 to 128 (e.g. 64)")
    return prefix


def workspace_bucket(username: str) -> str:
    """The identifier a Basic username is counted under: itself when it is a workspace ID,
    else :data:`INVALID_WORKSPACE` (so a key sent as the username is never a Redis key name)."""
    if WORKSPACE_ID_PATTERN.match(username) is None or looks_like_key(username):
        return INVALID_WORKSPACE
    return username


@dataclass(frozen=True)
class LimitConfig:
    """The three limits (``None`` disables one), and how clients are told apart."""

    failed_per_ip: RateLimitItem | None
    failed_per_workspace: RateLimitItem | None
    per_workspace: RateLimitItem | None
    trusted_for: float = 24 * 3600.0  # seconds; 0: a spent workspace budget refuses everyone
    ipv6_prefix: int = 64

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> LimitConfig:
        def item(name: str) -> RateLimitItem | None:
            return parse_limit(values.get(name) or DEFAULTS[name], name)

        def setting(name: str) -> str:
            return values.get(name) or SETTING_DEFAULTS[name]

        return cls(
            item(FAILED_PER_IP),
            item(FAILED_PER_WORKSPACE),
            item(PER_WORKSPACE),
            parse_trusted_for(setting(TRUSTED_FOR)),
            parse_ipv6_prefix(setting(IPV6_PREFIX)),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LimitConfig:
        env = os.environ if env is None else env
        values: dict[str, str] = {}
        for name, variable in ENV.items():
            if raw := env.get(variable):
                parse_limit(raw, variable)  # the error names the variable
                values[name] = raw
        if raw := env.get(SETTING_ENV[TRUSTED_FOR]):
            parse_trusted_for(raw, SETTING_ENV[TRUSTED_FOR])
            values[TRUSTED_FOR] = raw
        if raw := env.get(SETTING_ENV[IPV6_PREFIX]):
            parse_ipv6_prefix(raw, SETTING_ENV[IPV6_PREFIX])
            values[IPV6_PREFIX] = raw
        return cls.from_strings(values)

    def describe(self) -> dict[str, str]:
        """Human-readable settings, for the startup log."""
        described = {
            name: (str(item) if item is not None else "off")
            for name, item in (
                (FAILED_PER_IP, self.failed_per_ip),
                (FAILED_PER_WORKSPACE, self.failed_per_workspace),
                (PER_WORKSPACE, self.per_workspace),
            )
        }
        described[TRUSTED_FOR] = (
            format_duration(timedelta(seconds=self.trusted_for)) if self.trusted_for else "off"
        )
        described[IPV6_PREFIX] = f"/{self.ipv6_prefix}"
        return described


class LocalWindows(Storage):
    """Fixed-window counters in this process's memory, for the ``limits`` strategies.

    ``limits``' own async memory storage rescans every key on each increment and keeps an
    ``asyncio.Lock`` per key; with a counter per workspace that is O(keys) work per request. Here
    expiry is lazy (checked on read) plus an occasional sweep, so a request costs O(1). Counters are
    plain integers touched by one event loop, so no lock is needed, and the hot path uses the
    synchronous :meth:`window` and :meth:`add` directly.

    Each limit has its own table (:meth:`table`), keyed by the identifier itself — the workspace
    ID string the credential cache already holds — rather than by a key string built per
    request: with a million workspaces a ~115-byte key per counter was ~17 MB, and building it
    was a string concatenation per request. ``limits``' flat keys live in table 0.
    """

    STORAGE_SCHEME = None
    SWEEP_EVERY: Final = 20.0  # seconds: a sweep walks every counter; expired ones cost memory

    def __init__(self) -> None:
        super().__init__()
        # table number -> identifier (or flat key) -> (count, window end)
        self._tables: list[dict[str, tuple[int, float]]] = [{}]
        self._names: dict[str, int] = {}
        # Window ends a millisecond apart share one float (the window closes that much earlier).
        self.ends = Instants()
        self._next_sweep = time.time() + self.SWEEP_EVERY

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def table(self, name: str) -> int:
        """The number of the table named ``name`` (one per limit), made on first use."""
        number = self._names.get(name)
        if number is None:
            number = self._names[name] = len(self._tables)
            self._tables.append({})
        return number

    def window(self, key: str, now: float, table: int = 0) -> tuple[int, float]:
        """(count, window end); ``(0, now)`` when no window is open."""
        entry = self._tables[table].get(key)
        if entry is None or entry[1] <= now:
            return 0, now
        return entry

    def sweep(self, now: float) -> None:
        """Forget windows that are over, every :attr:`SWEEP_EVERY` seconds at most."""
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_EVERY
            tables = self._tables
            for number, counts in enumerate(tables):
                tables[number] = {k: v for k, v in counts.items() if v[1] > now}

    def add(self, key: str, expiry: float, now: float, amount: int = 1, table: int = 0) -> int:
        """Count ``amount`` attempts; a new window opens when none is."""
        self.sweep(now)
        counts = self._tables[table]
        entry = counts.get(key)
        if entry is None or entry[1] <= now:
            entry = (amount, self.ends(now + expiry))
        else:
            entry = (entry[0] + amount, entry[1])
        counts[key] = entry
        return entry[0]

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.add(key, expiry, time.time(), amount)

    async def get(self, key: str) -> int:
        return self.window(key, time.time())[0]

    async def get_expiry(self, key: str) -> float:
        return self.window(key, time.time())[1]

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self)
        for counts in self._tables:
            counts.clear()
        return count

    async def clear(self, key: str) -> None:
        self._tables[0].pop(key, None)

    def __len__(self) -> int:
        return sum(len(counts) for counts in self._tables)


# A limit: (name, item, Redis key prefix, Redis key suffix, table number in LocalWindows).
_Limit = tuple[str, RateLimitItem, str, str, int]


class _Window:
    """One limit as it applies to one request: its counter's key and state."""

    __slots__ = ("ident", "item", "name", "prefix", "remaining", "reset", "suffix", "table")

    def __init__(self, limit: _Limit, ident: str, count: int, end: float, now: float) -> None:
        self.name, self.item, self.prefix, self.suffix, self.table = limit
        self.ident = ident
        self.remaining = max(0, self.item.amount - count)
        # An untouched counter: a window would open with this attempt.
        self.reset = end if count else now + self.item.get_expiry()

    @property
    def key(self) -> str:
        """The counter's key as ``limits`` names it (``item.key_for(ident)``): Redis's key."""
        return self.prefix + self.ident + self.suffix


class Admission:
    """Row 5's verdict for one request, carried to :meth:`RateLimiter.settle`.

    ``windows`` are the counters the attempt moves (the IP's and the workspace's); ``view`` the
    ones that decide and are shown in the headers: the same, unless the client is trusted for
    the workspace and a workspace budget is spent (then only its IP's).
    """

    __slots__ = (
        "blocked",
        "checked",
        "ip",
        "retry_after",
        "view",
        "windows",
        "workspace",
    )

    def __init__(
        self,
        windows: list[_Window],
        checked: bool,
        now: float,
        workspace: str | None = None,
        ip: str | None = None,
    ) -> None:
        self.windows = windows
        self.workspace = workspace  # a valid workspace ID, never what a client made up
        self.ip = ip  # the client's bucket
        self.checked = checked  # the request reached row 5 (it carried Basic credentials)
        self.view = windows
        self.blocked: _Window | None = None
        self.retry_after = 0
        self.decide(windows, now)

    def decide(self, view: list[_Window], now: float) -> None:
        """Judge the attempt by ``view``'s windows."""
        self.view = view
        self.blocked = None
        self.retry_after = 0
        if self.checked:
            for window in view:
                if window.remaining <= 0 and (
                    self.blocked is None or window.reset > self.blocked.reset
                ):
                    # Wait until every exhausted window is over; name the one lasting longest.
                    self.blocked = window
            if self.blocked is not None:
                self.retry_after = max(1, math.ceil(self.blocked.reset - now))

    def blocked_workspace(self) -> str | None:
        """The workspace, when a workspace limit (not the IP's) refused the attempt."""
        if self.blocked is None or self.blocked.name == FAILED_PER_IP:
            return None
        return self.workspace

    def describe(self) -> str:
        """The exhausted limit, for the RATE_LIMITED message."""
        window = self.blocked
        if window is None:
            return ""
        item = window.item
        unit = item.GRANULARITY.name
        per = unit if item.multiples == 1 else f"{item.multiples} {unit}s"
        return f"{item.amount} {_DESCRIBED[window.name]} per {per}"


class RateLimiter:
    """The three limits over local memory or Redis, with fallback to memory when Redis fails.

    With Redis, reading the counters is one pipelined round trip (``GET`` + ``TTL`` per limit)
    and counting is another (``limits``' own increment-and-expire script per limit, pipelined,
    with the trust of a success when it is due). Only while a workspace budget is spent does a
    request read the trust, in one more round trip (when this process doesn't know it).
    """

    def __init__(self, config: LimitConfig, redis_url: str | None = None) -> None:
        self.config = config
        self.redis_url = redis_url
        self.local = LocalWindows()
        self.remote: RedisStorage | None = None
        if redis_url:
            self.remote = RedisStorage(
                "async+" + redis_url,
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix="moeconnect:limits",
                socket_timeout=_REDIS_TIMEOUT,
                socket_connect_timeout=_REDIS_TIMEOUT,
                retry_on_timeout=False,
            )
        self.using_fallback = False
        self.fallbacks = 0  # times Redis failed and memory took over
        self.rejections: dict[str, int] = dict.fromkeys(ENV, 0)
        self._probe: asyncio.Task[None] | None = None
        self.buckets = IpBuckets(config.ipv6_prefix)
        # Clients that succeeded recently for a workspace: exempt from its spent budgets.
        self.trust: TrustedClients | None = None
        if config.trusted_for > 0 and (
            config.failed_per_workspace is not None or config.per_workspace is not None
        ):
            self.trust = TrustedClients(config.trusted_for)
        # Each limit: its Redis key as limits' ``item.key_for(identifier)`` builds it,
        # precomputed around the identifier (that function is the costliest step of a request),
        # and its table of counters in memory.
        limits: list[_Limit] = []
        for name, item in (
            (FAILED_PER_IP, config.failed_per_ip),
            (FAILED_PER_WORKSPACE, config.failed_per_workspace),
            (PER_WORKSPACE, config.per_workspace),
        ):
            if item is not None:
                prefix, suffix = _key_parts(item)
                limits.append((name, item, prefix, suffix, self.local.table(prefix + suffix)))
        self._by_ip = [limit for limit in limits if limit[0] == FAILED_PER_IP]
        self._by_workspace = [limit for limit in limits if limit[0] != FAILED_PER_IP]
        # For pass_known(): (by IP?, amount, window seconds, table, counts successes too?) per
        # limit, with nothing left to look up per request.
        self._known_plan = [
            (name == FAILED_PER_IP, item.amount, item.get_expiry(), table, name == PER_WORKSPACE)
            for name, item, _prefix, _suffix, table in limits
        ]
        self.enabled = any(
            item is not None
            for item in (config.failed_per_ip, config.failed_per_workspace, config.per_workspace)
        )

    @property
    def backend(self) -> str:
        if self.remote is None:
            return "memory"
        return "memory (Redis unreachable)" if self.using_fallback else "redis"

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        if self.remote is not None:
            with contextlib.suppress(*_REDIS_ERRORS):
                await cast(Redis, self._bridge().get_connection()).aclose()

    def bucket(self, ip: str) -> str:
        """The per-IP limit's identifier of a client address (an IPv6 address: its /64)."""
        return self.buckets(ip)

    # -- the hot path -----------------------------------------------------------------------

    @property
    def in_memory(self) -> bool:
        """Counting in this process's memory right now (no Redis, or Redis unreachable)."""
        return self.remote is None or self.using_fallback

    def pass_known(
        self, ip: str | None, workspace: str, failed: bool
    ) -> list[tuple[bytes, bytes]] | None:
        """Row 5 and the count, for an attempt whose outcome is already known, in memory only.

        The same arithmetic as :meth:`admit` followed by :meth:`settle`, without their objects:
        it returns the ``X-RateLimit-*`` headers, or None — having counted nothing — when a limit
        is exhausted, so the caller takes the full path, which refuses the attempt (or, for a
        trusted client, serves it). Only valid while :attr:`in_memory`.
        """
        now = time.time()
        local = self.local
        local.sweep(now)
        tables = local._tables
        if ip is not None and ":" in ip:
            ip = self.buckets(ip)
        # A success is for a workspace the store holds; a failure's username is the client's.
        workspace = workspace_bucket(workspace) if failed else workspace[:_MAX_ID]
        best: tuple[int, float, int] | None = None  # (remaining, reset, amount) of the tightest
        plan = self._known_plan
        for step in plan:
            by_ip, amount, expiry, table, on_success = step
            ident = ip if by_ip else workspace
            if not ident:
                continue
            counts = tables[table]
            entry = counts.get(ident)
            if entry is None or entry[1] <= now:
                count, end = 0, local.ends(now + expiry)  # untouched: this attempt opens it
            else:
                count, end = entry
            if count >= amount:
                self._uncount(step, ip, workspace, failed)
                return None
            if failed or on_success:
                count += 1
                counts[ident] = (count, end)
            remaining = amount - count
            if best is None or remaining < best[0] or (remaining == best[0] and end > best[1]):
                best = (remaining, end, amount)
        trust = self.trust
        if trust is not None and not failed and ip:
            # TrustedClients.due() inlined for the common case, one address a workspace (this
            # is the warm path): the entry is (hash tag, minute) packed in an int.
            if now >= trust.minute_ends:
                trust.tick(now)
            seen = trust.seen.get(workspace)
            if seen is None or (
                (
                    type(seen) is not int
                    or seen & MINUTE_MASK < trust.fresh_since
                    or seen >> TAG_SHIFT != hash(ip) & MINUTE_MASK
                )
                and trust.due(workspace, ip, now)
            ):
                trust.mark(workspace, ip, now)  # new here, or due again
        if best is None:
            return []
        return [
            (b"x-ratelimit-limit", str(best[2]).encode()),
            (b"x-ratelimit-remaining", str(best[0]).encode()),
            (b"x-ratelimit-reset", str(max(0, math.ceil(best[1] - now))).encode()),
        ]

    def _uncount(
        self, stop: tuple[bool, int, int, int, bool], ip: str | None, workspace: str, failed: bool
    ) -> None:
        """Take back what :meth:`pass_known` counted before it found ``stop`` exhausted."""
        tables = self.local._tables
        for step in self._known_plan:
            if step is stop:
                return
            by_ip, _amount, _expiry, table, on_success = step
            ident = ip if by_ip else workspace
            if ident and (failed or on_success):
                count, end = tables[table][ident]
                tables[table][ident] = (count - 1, end)

    def _applicable(self, ip: str | None, workspace: str | None) -> list[tuple[_Limit, str]]:
        """(limit, identifier) of every limit that applies to the attempt."""
        found: list[tuple[_Limit, str]] = []
        if ip:
            ip = self.buckets(ip)
            found.extend((limit, ip) for limit in self._by_ip)
        if workspace:
            workspace = workspace_bucket(workspace)
            found.extend((limit, workspace) for limit in self._by_workspace)
        return found

    async def _states(
        self, applicable: list[tuple[_Limit, str]], now: float
    ) -> list[tuple[int, float]]:
        """(count, window end) of each counter, from Redis or from memory."""
        if self.remote is not None and not self.using_fallback:
            try:
                keys = [limit[2] + ident + limit[3] for limit, ident in applicable]
                return await self._read_remote(keys, now)
            except _REDIS_ERRORS as err:
                self._fall_back(err)
        local = self.local
        return [local.window(ident, now, limit[4]) for limit, ident in applicable]

    async def admit(self, ip: str | None, workspace: str | None, *, checked: bool) -> Admission:
        """The state of every limit that applies; ``blocked`` names an exhausted one.

        ``checked`` is False for requests answered before row 5 (rows 1–4): they only get
        headers, they are never refused or counted.
        """
        applicable = self._applicable(ip, workspace)
        now = time.time()
        if not applicable:
            return Admission([], checked, now)
        states = await self._states(applicable, now)
        windows = [
            _Window(limit, ident, count, end, now)
            for (limit, ident), (count, end) in zip(applicable, states, strict=True)
        ]
        bucket = self.buckets(ip) if ip else None
        ident = workspace_bucket(workspace) if workspace else None
        valid = ident if ident != INVALID_WORKSPACE else None
        admission = Admission(windows, checked, now, valid, bucket)
        blocked = admission.blocked
        if (
            blocked is not None
            and blocked.name != FAILED_PER_IP
            and bucket is not None
            and valid is not None
        ):
            await self._trusted_view(admission, valid, bucket, now)
        if admission.blocked is not None:
            self.rejections[admission.blocked.name] += 1
        return admission

    async def _trusted_view(
        self, admission: Admission, workspace: str, bucket: str, now: float
    ) -> None:
        """A spent workspace budget: judge a client that succeeded recently by its IP's limit
        alone (asking Redis, one round trip, when this process doesn't know the client)."""
        trust = self.trust
        if trust is None:
            return
        trusted = trust.trusted(workspace, bucket, now)
        if not trusted and self.remote is not None and not self.using_fallback:
            try:
                since = await self._read_trust_remote(workspace, bucket)
            except _REDIS_ERRORS as err:
                self._fall_back(err)
            else:
                if since is not None and now - since < trust.trusted_for:
                    trusted = True
                    trust.mark(workspace, bucket, since)  # known here now, without Redis
        if trusted:
            admission.decide([w for w in admission.windows if w.name == FAILED_PER_IP], now)

    async def settle(self, admission: Admission, code: str) -> list[tuple[bytes, bytes]]:
        """Count the attempt whose outcome is ``code``; the ``X-RateLimit-*`` headers."""
        windows = admission.windows
        if not windows:
            return []
        if admission.checked and code not in _NOT_COUNTED:
            if code not in _SUCCESSES:
                await self._count(list(windows))
            else:
                await self._count_success(admission)
        return _headers(admission.view) if admission.view else []

    async def _count_success(self, admission: Admission) -> None:
        """Count a success (all attempts) and record the client's trust when it is due."""
        now = time.time()
        counted = [w for w in admission.windows if w.name == PER_WORKSPACE]
        workspace, bucket = admission.workspace, admission.ip
        mark: tuple[str, str] | None = None
        trust = self.trust
        if (
            trust is not None
            and workspace is not None
            and bucket is not None
            and trust.due(workspace, bucket, now)
        ):
            trust.mark(workspace, bucket, now)
            mark = (workspace, bucket)
        if counted or mark is not None:
            await self._count(counted, mark)

    async def _count(self, windows: list[_Window], mark: tuple[str, str] | None = None) -> None:
        now = time.time()
        counts: list[int] | None = None
        if self.remote is not None and not self.using_fallback:
            try:
                counts = await self._incr_remote(windows, mark, now)
            except _REDIS_ERRORS as err:
                self._fall_back(err)
        if counts is None:
            local = self.local
            counts = [local.add(w.ident, w.item.get_expiry(), now, table=w.table) for w in windows]
        for window, count in zip(windows, counts, strict=True):
            window.remaining = max(0, window.item.amount - count)
            if count == 1 or window.reset <= now:  # this attempt opened a new window
                window.reset = now + window.item.get_expiry()

    # -- Redis and the fallback ---------------------------------------------------------------

    def _bridge(self) -> RedispyBridge:
        assert self.remote is not None
        return cast(RedispyBridge, self.remote.bridge)

    def _trust_key(self, workspace: str) -> str:
        """The sorted set of a workspace's trusted client buckets (score: last success)."""
        return self._bridge().prefixed_key(_TRUST_NAMESPACE + workspace)

    async def _read_remote(self, keys: list[str], now: float) -> list[tuple[int, float]]:
        bridge = self._bridge()
        pipe = cast(Redis, bridge.get_connection()).pipeline(transaction=False)
        for key in keys:
            full = bridge.prefixed_key(key)
            pipe.get(full)
            pipe.ttl(full)
        replies = await pipe.execute()
        return [_state(replies[i], replies[i + 1], now) for i in range(0, len(replies), 2)]

    async def _read_trust_remote(self, workspace: str, bucket: str) -> float | None:
        """When ``bucket`` last succeeded for ``workspace``, as any instance recorded it."""
        bridge = self._bridge()
        score = await cast(Redis, bridge.get_connection()).zscore(
            self._trust_key(workspace), bucket
        )
        return float(score) if score is not None else None

    async def _incr_remote(
        self, windows: list[_Window], mark: tuple[str, str] | None, now: float
    ) -> list[int]:
        # limits' own increment-and-expire script (INCRBY, EXPIRE on a new key: works on every
        # Redis version), queued for all limits in one pipeline; the pipeline loads the script
        # into Redis when Redis doesn't know it yet. A success's trust, when due, rides along:
        # the workspace's set keeps its newest entries, and expires with the last of them.
        bridge = self._bridge()
        pipe = cast(Redis, bridge.get_connection()).pipeline(transaction=False)
        for window in windows:
            await bridge.lua_incr_expire(
                keys=[bridge.prefixed_key(window.key)],
                args=[window.item.get_expiry(), 1],
                client=pipe,  # type: ignore[arg-type]  # redis-py queues scripts in pipelines
            )
        if mark is not None and self.trust is not None:
            trust = self.trust
            key = self._trust_key(mark[0])
            pipe.zadd(key, {mark[1]: now})
            pipe.zremrangebyscore(key, "-inf", now - trust.trusted_for)
            pipe.zremrangebyrank(key, 0, -trust.per_workspace - 1)
            pipe.expire(key, math.ceil(trust.trusted_for))
        replies = await pipe.execute()
        return [int(count) for count in replies[: len(windows)]]

    def _fall_back(self, err: BaseException) -> None:
        if not self.using_fallback:
            self.using_fallback = True
            self.fallbacks += 1
            log.warning(
                "Redis is unreachable (%s); rate limits are counted per process until it "
                "answers again",
                err,
            )
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(
                self._probe_until_back(), name="moeconnect-ratelimit-probe"
            )

    async def _probe_until_back(self) -> None:
        remote = self.remote
        assert remote is not None
        while self.using_fallback:
            await asyncio.sleep(_PROBE_INTERVAL)
            try:
                healthy = await remote.check()
            except Exception:
                healthy = False
            if healthy:
                self.using_fallback = False
                log.warning("Redis answers again; rate limits are shared across instances again")

    # -- refusals made before row 5 ---------------------------------------------------------

    async def admit_refusal(self, ip: str | None) -> Admission:
        """Row 5 for a request that rows 1–4 refuse (405, 413, 415, a missing or malformed
        Authorization): only the client address's failure limit applies (SPEC section 9).

        ``blocked`` when the address is already over that limit (the endpoint then answers 429
        instead of the refusal); otherwise :meth:`settle` counts the refusal against the address
        like any failure, so a flood of malformed requests is throttled like one of wrong keys.
        """
        return await self.admit(ip, None, checked=True)


def _key_parts(item: RateLimitItem) -> tuple[str, str]:
    """``(prefix, suffix)`` with ``prefix + ident + suffix == item.key_for(ident)``."""
    marker = "\x00"
    key = item.key_for(marker)
    prefix, _, suffix = key.partition(marker)
    return prefix, suffix


def _state(count: bytes | None, ttl: int, now: float) -> tuple[int, float]:
    """(count, window end) from a counter's ``GET`` and ``TTL`` replies."""
    value = int(count or 0)
    return (value, now + ttl) if value and ttl > 0 else (0, now)


def _headers(windows: list[_Window]) -> list[tuple[bytes, bytes]]:
    """``X-RateLimit-*`` for the tightest window: fewest remaining, then the latest reset."""
    tightest = min(windows, key=lambda w: (w.remaining, -w.reset))
    reset = max(0, math.ceil(tightest.reset - time.time()))
    return [
        (b"x-ratelimit-limit", str(tightest.item.amount).encode()),
        (b"x-ratelimit-remaining", str(tightest.remaining).encode()),
        (b"x-ratelimit-reset", str(reset).encode()),
    ]
