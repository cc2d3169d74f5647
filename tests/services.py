"""Where the tests find PostgreSQL and Redis.

The machine's own services (127.0.0.1:5432 database ``test``, 127.0.0.1:6379) are used when they
answer. When they don't but the binaries are installed (``initdb``/``pg_ctl``, ``redis-server``),
a throwaway one is started for the session (``MOECONNECT_TEST_THROWAWAY=0`` turns that off).
Otherwise tests that need them are skipped with a reason, or fail when
``MOECONNECT_REQUIRE_SERVICES=1`` (as in CI): a missing service must never look like a pass.
"""

from __future__ import annotations

import atexit
import os
import socket
from urllib.parse import urlsplit

import pytest

PG_URL = os.environ.get("MOECONNECT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MOECONNECT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def required() -> bool:
    return os.environ.get("MOECONNECT_REQUIRE_SERVICES") == "1"


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def need(name: str, host: str, port: int) -> None:
    """Skip (or, when services are required, fail) unless ``host:port`` answers."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if required():
        pytest.fail(f"{message}, and MOECONNECT_REQUIRE_SERVICES=1 requires it")
    pytest.skip(f"{message}; start it to run this test")


def need_tool(present: bool, message: str) -> None:
    """Skip (or, when services are required, fail) with ``message`` unless ``present``: for a
    test that starts a program of its own (a throwaway PostgreSQL or Redis, pg_dump, Chromium)."""
    if present:
        return
    if required():
        pytest.fail(f"{message}, and MOECONNECT_REQUIRE_SERVICES=1 requires it")
    pytest.skip(message)


_started: dict[str, str] = {}


def _url_service(name: str, url: str, start: str) -> str:
    """``url`` if its server answers, else a throwaway one's URL, else skip (or fail)."""
    if name in _started:
        return _started[name]
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 0
    if reachable(host, port):
        return url
    from . import throwaway

    if os.environ.get("MOECONNECT_TEST_THROWAWAY") == "0":
        need(name, host, port)
    try:
        server = getattr(throwaway, start)()
        server.start()
    except (RuntimeError, OSError, TimeoutError):
        need(name, host, port)  # skips, or fails when services are required
        raise
    atexit.register(server.close)
    _started[name] = server.url
    return str(server.url)


def postgres_url() -> str:
    """A PostgreSQL URL whose database may be used to create and drop test databases."""
    return _url_service("PostgreSQL", PG_URL, "ThrowawayPostgres")


def redis_url() -> str:
    return _url_service("Redis", REDIS_URL, "ThrowawayRedis")
