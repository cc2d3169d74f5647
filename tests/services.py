"""Where the tests find PostgreSQL and Redis.

The machine's own services (127.0.0.1:5432 database ``test``, 127.0.0.1:6379) are used when they
answer. When they don't, tests that need them are skipped with a reason, or fail when
``MOECONNECT_REQUIRE_SERVICES=1`` (as in CI): a missing service must never look like a pass.
"""

from __future__ import annotations

import os
import socket

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
