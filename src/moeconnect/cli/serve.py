"""``moeconnect serve``: the API, admin API and dashboard under uvicorn."""

from __future__ import annotations

import os

import click

from ..config import ConfigError
from ..dcs import DEFAULT_DCS, parse_dc_list
from ..http.connections import ENV as CONNECTION_ENV
from ..http.connections import ConnectionLimits as _ConnectionLimits
from ..ratelimit import DEFAULTS as LIMIT_DEFAULTS
from ..ratelimit import ENV as LIMIT_ENV
from ..ratelimit import SETTING_DEFAULTS as LIMIT_SETTING_DEFAULTS
from ..ratelimit import SETTING_ENV as LIMIT_SETTING_ENV
from ..ratelimit import LimitConfig
from ..record import parse_audit_retention, parse_retention
from ..store import open_store
from ._common import db_option, fail, run

__all__ = ["serve"]

CONNECTION_DEFAULTS = _ConnectionLimits()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--dc",
    default="01",
    show_default=True,
    help="Data center(s) served, e.g. 01 or 01,02 (then chosen by the api-XX. Host header).",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    help="Address or network of a proxy whose X-Forwarded-For is believed (repeatable).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--redis",
    "redis_url",
    envvar="MOECONNECT_REDIS",
    default=None,
    help="Redis URL shared by every instance (cache invalidations, rate limits); "
    "env MOECONNECT_REDIS. Without it, changes still reach every worker by polling the database.",
)
@click.option(
    "--cache-ttl",
    type=click.FloatRange(0, 3600),
    envvar="MOECONNECT_CACHE_TTL",
    default=30.0,
    show_default=True,
    help="Longest a cached credential is trusted, in seconds, should invalidations be lost "
    "(0 disables the cache).",
)
@click.option(
    "--record-retention",
    envvar="MOECONNECT_RECORD_RETENTION",
    default="30d",
    show_default=True,
    help="How long the connection record keeps attempts (e.g. 7d, 90d); older ones are pruned.",
)
@click.option(
    "--audit-retention",
    envvar="MOECONNECT_AUDIT_RETENTION",
    default="365d",
    show_default=True,
    help="How long the audit log keeps entries (at least 1d); older ones are pruned. "
    "env MOECONNECT_AUDIT_RETENTION.",
)
@click.option(
    "--limit-failed-per-ip",
    envvar=LIMIT_ENV["failed_per_ip"],
    default=LIMIT_DEFAULTS["failed_per_ip"],
    show_default=True,
    help="Failed attempts allowed per client IP (e.g. 30/minute, or off); "
    "env MOECONNECT_LIMIT_FAILED_PER_IP.",
)
@click.option(
    "--limit-failed-per-workspace",
    envvar=LIMIT_ENV["failed_per_workspace"],
    default=LIMIT_DEFAULTS["failed_per_workspace"],
    show_default=True,
    help="Failed attempts allowed per workspace, all IPs together; "
    "env MOECONNECT_LIMIT_FAILED_PER_WORKSPACE.",
)
@click.option(
    "--limit-per-workspace",
    envvar=LIMIT_ENV["per_workspace"],
    default=LIMIT_DEFAULTS["per_workspace"],
    show_default=True,
    help="All attempts allowed per workspace; env MOECONNECT_LIMIT_PER_WORKSPACE.",
)
@click.option(
    "--limit-trusted-for",
    envvar=LIMIT_SETTING_ENV["trusted_for"],
    default=LIMIT_SETTING_DEFAULTS["trusted_for"],
    show_default=True,
    help="How long a success keeps an IP served past a workspace's spent limits (e.g. 24h, 7d, "
    "or off); env MOECONNECT_LIMIT_TRUSTED_FOR.",
)
@click.option(
    "--limit-ipv6-prefix",
    envvar=LIMIT_SETTING_ENV["ipv6_prefix"],
    default=LIMIT_SETTING_DEFAULTS["ipv6_prefix"],
    show_default=True,
    help="IPv6 clients are counted per network of this prefix length; "
    "env MOECONNECT_LIMIT_IPV6_PREFIX.",
)
@click.option(
    "--head-timeout",
    type=click.FloatRange(0, 3600, min_open=True),
    envvar=CONNECTION_ENV["head_timeout"],
    default=CONNECTION_DEFAULTS.head_timeout,
    show_default=True,
    help="Seconds a client has to send a request's line and headers, from the connection's "
    "start or the previous response; then 408 and the connection is closed. "
    "Env MOECONNECT_HEAD_TIMEOUT.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0, 3600, min_open=True),
    envvar=CONNECTION_ENV["idle_timeout"],
    default=CONNECTION_DEFAULTS.idle_timeout,
    show_default=True,
    help="Seconds a kept-alive connection may stay idle between requests. "
    "Env MOECONNECT_IDLE_TIMEOUT.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    envvar=CONNECTION_ENV["max_connections"],
    default=CONNECTION_DEFAULTS.max_connections,
    show_default=True,
    help="Open connections per worker process; more are answered 503 and closed at once. "
    "Env MOECONNECT_MAX_CONNECTIONS.",
)
@db_option
def serve(
    host: str,
    port: int,
    dc: str,
    workers: int,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    trusted_proxies: tuple[str, ...],
    log_level: str,
    redis_url: str | None,
    cache_ttl: float,
    record_retention: str,
    audit_retention: str,
    limit_failed_per_ip: str,
    limit_failed_per_workspace: str,
    limit_per_workspace: str,
    limit_trusted_for: str,
    limit_ipv6_prefix: str,
    head_timeout: float,
    idle_timeout: float,
    max_connections: int,
    db_url: str,
) -> None:
    """Run the Test Connection API, the admin API and the dashboard."""
    import uvicorn

    try:
        dcs = parse_dc_list(dc, DEFAULT_DCS)
    except ValueError as err:
        fail(f"--dc: {err}", 2)
    if bool(ssl_certfile) != bool(ssl_keyfile):
        fail("give both --ssl-certfile and --ssl-keyfile, or neither", 2)
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        fail(f"--redis must be a redis://, rediss:// or unix:// URL, not {redis_url!r}", 2)

    async def migrate() -> None:
        store = open_store(db_url)
        try:
            await store.migrate()
        finally:
            await store.close()

    try:
        run(migrate())  # once, before any worker starts
    except ValueError as err:
        fail(str(err), 2)
    # Workers build their app from the environment, so every one sees the same settings.
    os.environ["MOECONNECT_DB"] = db_url
    os.environ["MOECONNECT_DC"] = ",".join(dcs)
    os.environ["MOECONNECT_LOG_LEVEL"] = log_level
    try:
        parse_retention(record_retention)
    except ConfigError as err:
        fail(f"--record-retention: {err}", 2)
    os.environ["MOECONNECT_RECORD_RETENTION"] = record_retention
    try:
        parse_audit_retention(audit_retention)
    except ConfigError as err:
        fail(f"--audit-retention: {err}", 2)
    os.environ["MOECONNECT_AUDIT_RETENTION"] = audit_retention
    os.environ["MOECONNECT_CACHE_TTL"] = repr(cache_ttl)
    limits = {
        "failed_per_ip": limit_failed_per_ip,
        "failed_per_workspace": limit_failed_per_workspace,
        "per_workspace": limit_per_workspace,
        "trusted_for": limit_trusted_for,
        "ipv6_prefix": limit_ipv6_prefix,
    }
    try:
        LimitConfig.from_strings(limits)
    except ConfigError as err:
        fail(f"--limit-{str(err).replace('_', '-')}", 2)
    for name, value in limits.items():
        os.environ[{**LIMIT_ENV, **LIMIT_SETTING_ENV}[name]] = value
    if redis_url:
        os.environ["MOECONNECT_REDIS"] = redis_url
    if trusted_proxies:
        os.environ["MOECONNECT_TRUSTED_PROXIES"] = ",".join(trusted_proxies)
    from ..http.connections import ConnectionLimits, fit_descriptor_limit
    from ..http.server import uvicorn_options
    from ..logs import configure_logging

    configure_logging(log_level)
    # Here, before any worker starts: workers inherit the raised descriptor limit and the cap.
    connection_limits = ConnectionLimits(
        head_timeout=head_timeout,
        idle_timeout=idle_timeout,
        max_connections=fit_descriptor_limit(max_connections),
    )
    os.environ.update(connection_limits.to_env())
    uvicorn.run(
        "moeconnect.http.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        **uvicorn_options(),
    )
