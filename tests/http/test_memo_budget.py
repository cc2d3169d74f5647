"""Issue 22, must-show 3 (in-process part): the memo is bounded in bytes, not only in entries.

Requests that can't name a workspace (a 24 KB username, a key as the username) are answered
WORKSPACE_NOT_FOUND without being remembered. Distinct maximal requests that can (64-character
IDs and sources of 4-byte characters, a rendered refusal kept for repeats) are remembered, and
what each is charged is an upper bound of what it holds, measured with tracemalloc; with a small
budget the memo starts again empty rather than pass it. The wire-level flood, with the server's
RSS, is in test_memo_flood.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from moeconnect.config import Settings
from moeconnect.http.app import MoeconnectApp
from moeconnect.keys import generate_key
from moeconnect.runtime import Runtime

NO_LIMITS = {
    "MOECONNECT_LIMIT_FAILED_PER_IP": "off",
    "MOECONNECT_LIMIT_FAILED_PER_WORKSPACE": "off",
    "MOECONNECT_LIMIT_PER_WORKSPACE": "off",
}
LONG_ID = "L" * 64  # the longest workspace ID there can be


@pytest.fixture(autouse=True)
def _no_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limits read the environment; one address sends everything here."""
    for name, value in NO_LIMITS.items():
        monkeypatch.setenv(name, value)


def _request(username: str, key: str, source: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps({"app_id": username, "app_secret": key, "source": source, "region": "01"})
    auth = b"Basic " + base64.b64encode(f"{username}:{key}".encode())
    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", auth),
        (b"moe-appkey", username.encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return headers, body


async def _call(app: MoeconnectApp, headers: list[tuple[bytes, bytes]], body: bytes) -> str:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/integrations/authentication",
        "headers": headers,
        "client": ("127.0.0.9", 40000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    code: str = orjson.loads(sent[1]["body"])["error"]["code"]
    return code


@contextlib.asynccontextmanager
async def _running(db_url: str) -> AsyncIterator[MoeconnectApp]:
    env = {"MOECONNECT_DB": db_url, "MOECONNECT_SECRET": "s" * 32}
    app = MoeconnectApp(Runtime(Settings.from_env(env)))
    await app.runtime.start()
    try:
        ws = await app.runtime.accounts.create_workspace("Long", workspace_id=LONG_ID)
        await app.runtime.accounts.generate_key(ws.id)
        yield app
    finally:
        await app.runtime.stop()


def _source(n: int) -> str:
    """64 characters, each 4 bytes wide in memory, different for each ``n``."""
    return f"{n:08d}" + "\U0001f600" * 56


def test_usernames_that_cant_be_workspace_ids_are_not_remembered(sqlite_url: str) -> None:
    async def go() -> None:
        async with _running(sqlite_url) as app:
            endpoint = app.endpoint
            for n in range(20):
                huge = f"{n:04d}" + "u" * 24_000
                code = await _call(app, *_request(huge, "wrong-key", "s"))
                assert code == "WORKSPACE_NOT_FOUND"
                key = generate_key("data")  # a key sent as the username (app_id swapped)
                assert await _call(app, *_request(key, "secret", "s")) == "WORKSPACE_NOT_FOUND"
            assert len(endpoint._memo) == 0 and endpoint._memo_charged == 0
            # A valid-format unknown ID is still remembered (and found unknown) as before.
            assert await _call(app, *_request("NOSUCH", "k", "s")) == "WORKSPACE_NOT_FOUND"
            assert len(endpoint._memo) == 1

    asyncio.run(go())


def test_maximal_entries_cost_no_more_than_they_are_charged(sqlite_url: str) -> None:
    count = 2000

    async def go() -> None:
        async with _running(sqlite_url) as app:
            endpoint = app.endpoint
            requests = [_request(LONG_ID, f"wrong-{n:06d}", _source(n)) for n in range(count)]
            for headers, body in requests[:10]:  # imports, caches and the like: not measured
                await _call(app, headers, body)
            await asyncio.sleep(0.5)  # the change feed confirms the cached record
            endpoint._memo.clear()
            endpoint._memo_charged = 0
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for headers, body in requests:
                    assert await _call(app, headers, body) == "KEY_MISMATCH"
                    # The protocol's answer for a repeat: the entry keeps the rendered refusal.
                    assert endpoint.answer_at_once(headers, body, ("127.0.0.9", 1)) is not None
                await asyncio.sleep(0.3)  # the held answers are given
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - before
                # What the memo alone holds: the same, without it.
                charged = endpoint._memo_charged
                assert len(endpoint._memo) == count
                assert all(k.refusal is not None for k in endpoint._memo.values())
                endpoint._memo.clear()
                gc.collect()
                memo = held - (tracemalloc.get_traced_memory()[0] - before)
            finally:
                tracemalloc.stop()
            print(
                f"\n{count} maximal memo entries: {memo / count:.0f} bytes each measured, "
                f"{charged / count:.0f} charged"
            )
            assert 0 < memo <= charged

    asyncio.run(go())


def test_the_memo_starts_again_rather_than_pass_its_byte_budget(sqlite_url: str) -> None:
    async def go() -> None:
        async with _running(sqlite_url) as app:
            endpoint = app.endpoint
            endpoint.memo_bytes = 256 * 1024
            peak = 0
            for n in range(3000):
                await _call(app, *_request(f"W{n:063d}", "k", _source(n)))
                assert endpoint._memo_charged <= endpoint.memo_bytes
                peak = max(peak, len(endpoint._memo))
            # ~1 KB charged each: a few hundred at a time, never 3,000.
            assert 100 < peak < 400, peak

    asyncio.run(go())
