"""Issue 23, must-show 3: SIGKILL during 200 concurrent changes leaves each change with exactly
its audit entry, or neither — on SQLite and on PostgreSQL — and ``moeconnect db check`` says so.

200 changes of every kind the admin API makes (create, rename, suspend/resume, generate or
rotate, revoke), all in flight at once; the server is killed with SIGKILL once some have been
answered and before all are. Afterwards every workspace and key row has exactly one entry
naming it, every entry names a row that exists, every answered change is there, the latest
rename entry of each workspace gives its current name, and ``db check`` passes — until one
entry is removed behind the store's back, which it then reports.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from moeconnect.store.schema import audit_log
from moeconnect.store.urls import DatabaseURL
from moeconnect.testing import MoeconnectServer

CHANGES = 200
POOL = 10  # workspaces the changes other than creation work on
KILL_AFTER = 40  # answered changes before the kill
SECRET = {"MOECONNECT_SECRET": "audit-kill-secret-" + "x" * 24}


def request_for(i: int, pool: list[str]) -> tuple[str, str, dict[str, Any] | None]:
    wid = pool[i % len(pool)]
    kind = i % 5
    if kind == 0:
        return "POST", "/admin/v1/workspaces", {"name": f"Made {i}"}
    if kind == 1:
        return "POST", f"/admin/v1/workspaces/{wid}/keys", {"grace": "1h"} if i % 2 else {}
    if kind == 2:
        return "PATCH", f"/admin/v1/workspaces/{wid}", {"name": f"Renamed {i}"}
    if kind == 3:
        return "POST", f"/admin/v1/workspaces/{wid}/keys/revoke", {"scope": "push"}
    return "POST", f"/admin/v1/workspaces/{wid}/{'suspend' if i % 2 else 'resume'}", None


async def change_and_kill(
    server: MoeconnectServer, token: str, pool: list[str]
) -> tuple[list[dict[str, Any]], int]:
    answered: list[dict[str, Any]] = []
    enough = asyncio.Event()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=server.base_url,
        headers=headers,
        limits=httpx.Limits(max_connections=CHANGES),
        timeout=30,
    ) as client:

        async def change(i: int) -> None:
            method, path, body = request_for(i, pool)
            try:
                response = await client.request(method, path, json=body)
            except httpx.HTTPError:
                return  # the server died under this one
            assert response.status_code in (200, 201), response.text
            answered.append({"path": path, **response.json()})
            if len(answered) >= KILL_AFTER:
                enough.set()

        tasks = [asyncio.create_task(change(i)) for i in range(CHANGES)]
        await asyncio.wait_for(enough.wait(), timeout=90)
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        at_kill = len(answered)
        await asyncio.gather(*tasks)
    return answered, at_kill


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_leaves_each_change_with_exactly_its_entry(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db_url = (
        request.getfixturevalue("pg_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'kill.db'}"
    )
    server = MoeconnectServer(db_url=db_url, env=SECRET, workdir=tmp_path)
    try:
        server.start()
        token = server.run(lambda a: a.create_token("kill-robot")).token
        pool = [server.create_workspace(f"Pool {i}").id for i in range(POOL)]
        for wid in pool:
            server.generate_key(wid, scope="push")

        answered, at_kill = asyncio.run(change_and_kill(server, token, pool))
        assert server.stop() == -signal.SIGKILL
        assert KILL_AFTER <= at_kill < CHANGES, "the kill did not land mid-way"

        async def read(accounts: Any) -> tuple[Any, Any, Any]:
            store = accounts.store
            workspaces = await store.list_workspaces(limit=10_000)
            keys = [k for w in workspaces for k in await accounts.list_keys(w.id)]
            log = (await store.list_audit(limit=100_000)).items
            return workspaces, keys, log

        workspaces, keys, log = server.run(read)
        made = Counter(e.target for e in log if e.action == "workspace.create")
        assert made == Counter(w.id for w in workspaces), "a workspace without its entry, or not"
        stored = Counter(e.target for e in log if e.action.startswith("key.") and e.target)
        stored.pop("push", None)  # revocations name the scope
        assert stored == Counter(k.id for k in keys), "a key without its entry, or the reverse"
        # Every change answered before the kill was committed, with its entry.
        by_target = {e.target for e in log}
        for item in answered:
            target = item.get("key_id") or item.get("workspace_id")
            assert target in by_target, item
        # Each workspace's name is what its latest rename entry says (or the name it was made
        # with): no rename committed without its entry, none recorded that did not happen.
        latest: dict[str, str] = {}
        for e in sorted(log, key=lambda e: e.id):
            if e.action in ("workspace.create", "workspace.rename") and e.after:
                latest[e.workspace_id or ""] = e.after["name"]
        assert {w.id: w.name for w in workspaces} == {w.id: latest[w.id] for w in workspaces}
        kinds = Counter(e.action for e in log)
        print(f"{backend}: {at_kill} of {CHANGES} answered at the kill; entries {dict(kinds)}")

        checked = server.cli("db", "check", "--db", db_url, "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert json.loads(checked.stdout) == {"ok": True, "problems": []}

        # db check is no formality: an entry removed behind the store's back is reported.
        renamed = next(e for e in reversed(log) if e.action == "workspace.rename")

        async def remove() -> None:
            engine = create_async_engine(DatabaseURL.parse(db_url).async_url)
            try:
                async with engine.begin() as conn:
                    await conn.execute(audit_log.delete().where(audit_log.c.id == renamed.id))
            finally:
                await engine.dispose()

        asyncio.run(remove())
        checked = server.cli("db", "check", "--db", db_url, "--json")
        assert checked.returncode == 1
        problems = json.loads(checked.stdout)["problems"]
        assert any("changes (by change-feed ID) without an audit entry" in p for p in problems)
    finally:
        server.close()
