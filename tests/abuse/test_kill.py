"""Must-show 5: SIGKILL in the middle of 200 concurrent key rotations leaves a sound store.

200 rotations through the admin API, all in flight at once over 20 (workspace, scope) pairs, some
with a grace period; the server is killed with SIGKILL once some have been answered and before all
are. After a restart every (workspace, scope) has at most one current key, every key we were shown
that the store still calls current authenticates, and ``moeconnect db check`` passes.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest

from moeconnect.testing import MoeconnectServer

from .helpers import PATH, attempt

ROTATIONS = 200
WORKSPACES = 10
SCOPES = ("data", "push")
KILL_AFTER = 25  # answered rotations before the kill
SECRET = {"MOECONNECT_SECRET": "kill-test-secret-" + "x" * 24}


async def rotate_and_kill(
    server: MoeconnectServer, token: str, workspaces: list[str]
) -> tuple[list[dict[str, str]], int]:
    """Fire every rotation at once; SIGKILL the server after KILL_AFTER answers."""
    answered: list[dict[str, str]] = []
    enough = asyncio.Event()
    limits = httpx.Limits(max_connections=ROTATIONS)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=headers, limits=limits, timeout=30
    ) as client:

        async def rotate(i: int) -> None:
            workspace_id = workspaces[i % len(workspaces)]
            body: dict[str, str] = {"scope": SCOPES[(i // len(workspaces)) % len(SCOPES)]}
            if i % 3 == 0:
                body["grace"] = "1h"
            try:
                response = await client.post(f"/admin/v1/workspaces/{workspace_id}/keys", json=body)
            except httpx.HTTPError:
                return  # the server died under this one
            assert response.status_code == 201, response.text
            answered.append(response.json())
            if len(answered) >= KILL_AFTER:
                enough.set()

        tasks = [asyncio.create_task(rotate(i)) for i in range(ROTATIONS)]
        await asyncio.wait_for(enough.wait(), timeout=60)
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        at_kill = len(answered)
        await asyncio.gather(*tasks)
    return answered, at_kill


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_during_concurrent_rotations_leaves_one_current_key_per_scope(
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
        created = server.cli("token", "create", "--name", "kill-test", "--json")
        assert created.returncode == 0, created.stderr
        token = json.loads(created.stdout)["token"]
        workspaces = []
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}
        ) as admin:
            for i in range(WORKSPACES):
                made = admin.post("/admin/v1/workspaces", json={"name": f"Kill {i}"})
                assert made.status_code == 201, made.text
                workspace_id = made.json()["workspace_id"]
                first = admin.post(f"/admin/v1/workspaces/{workspace_id}/keys", json={})
                assert first.status_code == 201, first.text
                workspaces.append(workspace_id)

        answered, at_kill = asyncio.run(rotate_and_kill(server, token, workspaces))
        assert server.stop() == -signal.SIGKILL
        assert KILL_AFTER <= at_kill < ROTATIONS, "the kill did not land mid-way"

        server.start()  # the same database, after a crash
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}
        ) as admin:
            shown = {item["key_id"]: item["key"] for item in answered}
            for workspace_id in workspaces:
                response = admin.get(f"/admin/v1/workspaces/{workspace_id}/keys")
                assert response.status_code == 200, response.text
                keys = response.json()["keys"]
                current = Counter(k["scope"] for k in keys if k["state"] == "current")
                assert all(n <= 1 for n in current.values()), (workspace_id, current)
                assert current["data"] == 1  # rotations never leave a scope without a key
                for key in keys:
                    current_data = key["state"] == "current" and key["scope"] == "data"
                    if current_data and key["key_id"] in shown:
                        check = httpx.post(
                            server.base_url + PATH, **attempt(workspace_id, shown[key["key_id"]])
                        )
                        assert check.status_code == 200, check.text

        checked = server.cli("db", "check", "--db", db_url, "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert json.loads(checked.stdout) == {"ok": True, "problems": []}
    finally:
        server.close()
