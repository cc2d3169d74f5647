"""The endpoint's memory of requests it has seen (in-process, against a real SQLite file).

What the warm path must never do: keep a key, answer for a record the cache no longer holds,
or grow without bound. The wire behaviour around it (rotation and revocation seen within a
second, by the CLI and by other instances) is tested through real servers elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest

from moeconnect.config import Settings
from moeconnect.http import endpoint as endpoint_module
from moeconnect.http.app import MoeconnectApp
from moeconnect.runtime import Runtime

Call = Callable[[str, str], Awaitable[tuple[int, dict[str, Any], dict[bytes, bytes]]]]


def _app(db_url: str) -> MoeconnectApp:
    settings = Settings.from_env({"MOECONNECT_DB": db_url, "MOECONNECT_SECRET": "s" * 32})
    return MoeconnectApp(Runtime(settings))


def _caller(app: MoeconnectApp) -> Call:
    async def call(workspace_id: str, key: str) -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
        body = orjson.dumps(
            {"app_id": workspace_id, "app_secret": key, "source": "memo-test", "region": "01"}
        )
        auth = base64.b64encode(f"{workspace_id}:{key}".encode())
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/integrations/authentication",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"authorization", b"Basic " + auth),
                (b"moe-appkey", workspace_id.encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 40000),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return (
            sent[0]["status"],
            orjson.loads(sent[1]["body"]),
            dict(sent[0]["headers"]),
        )

    return call


@contextlib.asynccontextmanager
async def _running(db_url: str) -> AsyncIterator[tuple[MoeconnectApp, Call, str, str]]:
    """A started app, its caller, and a workspace "Memo" with its key."""
    app = _app(db_url)
    runtime = app.runtime
    await runtime.start()
    try:
        ws = await runtime.accounts.create_workspace("Memo")
        key = (await runtime.accounts.generate_key(ws.id)).key
        yield app, _caller(app), ws.id, key
    finally:
        await runtime.stop()


def test_repeats_are_answered_from_memory_until_the_record_changes(sqlite_url: str) -> None:
    async def go() -> None:
        async with _running(sqlite_url) as (app, call, ws_id, key):
            runtime = app.runtime
            first = await call(ws_id, key)
            assert first[0] == 200 and first[1] == {"status": "success", "app_name": "Memo"}
            hits = runtime.cache.hits
            for _ in range(5):
                status, body, headers = await call(ws_id, key)
                assert (status, body) == (200, first[1])
                assert headers[b"x-ratelimit-remaining"]  # limits still counted
            assert runtime.cache.hits == hits + 5
            (known,) = app.endpoint._memo.values()
            assert known.record is not None
            # The record's own objects, not copies: one per workspace in use.
            assert known.workspace_id is known.record.workspace_id
            assert known.digest is known.record.keys[0].digest
            # ... and the request's workspace ID string, which the limit counter was keyed by
            # before the record was read, is the record's too.
            counted = [k for t in runtime.limiter.local._tables for k in t if k == ws_id]
            assert counted and all(k is known.workspace_id for k in counted)

            # A rotation (here through this process's store; other processes reach the cache
            # through the change feed and Redis) replaces the cached record: the same bytes
            # are checked again, and refused.
            new_key = (await runtime.accounts.generate_key(ws_id)).key
            status, body, _ = await call(ws_id, key)
            assert (status, body["error"]["code"]) == (401, "KEY_REVOKED")
            assert (await call(ws_id, new_key))[0] == 200

            # A grace-period success depends on the time, so it is never answered from memory.
            newest = (await runtime.accounts.generate_key(ws_id, grace=timedelta(hours=1))).key
            assert newest
            for _ in range(2):
                status, body, headers = await call(ws_id, new_key)
                assert status == 200 and b"sunset" in headers
            stale = [k for k in app.endpoint._memo.values() if k.workspace_id == ws_id]
            assert all(k.record is None or k.key_id != "" for k in stale)

    asyncio.run(go())


def test_the_memo_holds_no_key_and_stays_bounded(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoint_module, "_MEMO_SIZE", 8)

    async def go() -> None:
        async with _running(sqlite_url) as (app, call, ws_id, key):
            assert (await call(ws_id, key))[0] == 200
            for n in range(30):  # well-formed but wrong keys: each is remembered, then dropped
                await call(ws_id, key[:-4] + f"{n:04d}")
                assert len(app.endpoint._memo) <= 8
            for known in app.endpoint._memo.values():
                assert known.request().key == ""
                for name in known.__slots__:
                    value = getattr(known, name)
                    text = value if isinstance(value, str | bytes) else repr(value)
                    needle = key if isinstance(text, str) else key.encode()
                    assert needle not in text  # type: ignore[operator]
            # Nor anything the memo refers to: no live object holds the key but our own local.
            holders = [
                o
                for o in gc.get_objects()
                if type(o) is dict and any(type(v) is str and v == key for v in list(o.values()))
            ]
            assert not [h for h in holders if "app_secret" not in h]

    asyncio.run(go())


def test_what_a_warm_workspace_costs_stays_within_its_budget(sqlite_url: str) -> None:
    """The 1,000,000-workspace benchmark keeps ~150,000 workspaces warm in ≤ 300 MB (SPEC 7):
    the credentials, the cache entry, the memo entry with its success counter, and the limit
    counter of each must stay within ~1 KB. Measured with tracemalloc over 2,000 workspaces after
    a cold and a warm success each: 1,098 bytes when this was written (1,322 before the memo
    stopped keeping bodies, times shared a float per millisecond, request IDs were kept as
    numbers and the record took the request's workspace ID string); 1,120-1,160 on other
    machines and versions since. The budget fails when a body (~4 KB), or a string per
    workspace (~60 bytes), comes back.

    On a busy machine one measurement in a few came out 100-200 bytes higher (a few hundred KB
    held at that moment by the server's background work, not per workspace; seen at several
    commits), so a second set of workspaces is measured when the first is over budget: a real
    regression is over in both.

    Since issue 22 the limiter also remembers, per workspace, the address that succeeded (so a
    stranger can't lock it out): ~85 bytes, in a table bounded at 50,000 entries in all
    (moeconnect.trust), hence the budget 1,175 + 90."""
    count = 2000
    budget = 1175 + 90

    async def go() -> None:
        app = _app(sqlite_url)
        runtime = app.runtime
        await runtime.start()
        try:
            seeded = await runtime.accounts.seed_batch(2 * count, "01", start=0)
            call = _caller(app)
            await asyncio.sleep(0.6)  # the change feed has seen the new workspaces
            assert runtime.recorder is not None
            measured = []
            for pairs in (seeded[:count], seeded[count:]):
                await runtime.recorder.flush()
                gc.collect()
                tracemalloc.start()
                try:
                    before = tracemalloc.get_traced_memory()[0]
                    for wid, key in pairs:
                        assert (await call(wid, key))[0] == 200
                        assert (await call(wid, key))[0] == 200  # warm: a memo hit
                    await runtime.recorder.flush()  # the first successes, written
                    gc.collect()
                    held = tracemalloc.get_traced_memory()[0] - before
                finally:
                    tracemalloc.stop()
                measured.append(held / count)
                print(f"{measured[-1]:.0f} bytes per warm workspace")
                if measured[-1] < budget:
                    break
            assert len(app.endpoint._memo) >= count and len(runtime.cache) >= count
            assert min(measured) < budget, f"{min(measured):.0f} bytes per warm workspace"
        finally:
            await runtime.stop()

    asyncio.run(go())
