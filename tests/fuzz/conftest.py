"""One real server for the fuzz tests, with the rate limits off so inputs reach every row."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moeconnect.testing import MoeconnectServer


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[MoeconnectServer]:
    # Fuzzing sends thousands of failures from 127.0.0.1, many for the same workspace; with the
    # limits on, most would stop at row 5. The limits have their own tests in tests/abuse.
    off = {
        "MOECONNECT_LIMIT_FAILED_PER_IP": "off",
        "MOECONNECT_LIMIT_FAILED_PER_WORKSPACE": "off",
        "MOECONNECT_LIMIT_PER_WORKSPACE": "off",
    }
    with MoeconnectServer(env=off) as server:
        yield server
