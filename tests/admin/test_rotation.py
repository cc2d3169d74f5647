"""Must-show 1: rotation with a 2-second grace through the admin API, on a running server."""

from __future__ import annotations

import time
from datetime import datetime
from email.utils import parsedate_to_datetime

from moeconnect.testing import MoeconnectServer

from .helpers import admin, connect, operator_token


def wait_for(condition, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_grace_rotation_end_to_end(server: MoeconnectServer) -> None:
    token = operator_token(server)
    with admin(server, token) as api:
        ws = api.post("/workspaces", json={"name": "PI-Prod-DC01"})
        assert ws.status_code == 201, ws.text
        wid = ws.json()["workspace_id"]
        first = api.post(f"/workspaces/{wid}/keys", json={})
        assert first.status_code == 201, first.text
        old_key = first.json()["key"]
        assert connect(server, wid, old_key, "old-tool").status_code == 200

        rotated = api.post(f"/workspaces/{wid}/keys", json={"grace": "2s"})
        assert rotated.status_code == 201, rotated.text
        body = rotated.json()
        new_key = body["key"]
        assert body["previous_key_id"] == first.json()["key_id"]
        expires = datetime.fromisoformat(body["previous_key_expires_at"].replace("Z", "+00:00"))

        # Within the grace: the old key works, marked by a Sunset header at its expiry.
        stale = connect(server, wid, old_key, "old-tool")
        assert stale.status_code == 200, stale.text
        assert parsedate_to_datetime(stale.headers["sunset"]) == expires.replace(microsecond=0)
        fresh = connect(server, wid, new_key, "new-tool")
        assert fresh.status_code == 200 and "sunset" not in fresh.headers

        def summary() -> dict[str, dict[str, object]]:
            response = api.get(f"/workspaces/{wid}/sources")
            assert response.status_code == 200, response.text
            return {s["source"]: s for s in response.json()["sources"]}

        sources = wait_for(lambda: (s := summary()).get("new-tool") and s)
        old = sources["old-tool"]
        assert old["uses_replaced_key"] is True
        assert old["replaced_key_id"] == first.json()["key_id"]
        assert old["replaced_key_ends_at"] == body["previous_key_expires_at"]
        assert old["counts"] == {"SUCCESS": 1, "SUCCESS_STALE_KEY": 1}
        assert sources["new-tool"]["uses_replaced_key"] is False
        stale_rows = api.get(
            f"/workspaces/{wid}/attempts", params={"outcome": "SUCCESS_STALE_KEY"}
        ).json()["items"]
        assert [r["stale"] for r in stale_rows] == [True]

        # After the grace: the old key is refused as replaced, the new one still works.
        time.sleep(max(0.0, expires.timestamp() - time.time()) + 0.3)
        late = connect(server, wid, old_key, "old-tool")
        assert late.status_code == 401
        assert late.json()["error"]["code"] == "KEY_REVOKED"
        assert "sunset" not in late.headers
        assert connect(server, wid, new_key, "new-tool").status_code == 200

        sources = wait_for(
            lambda: (
                (s := summary())["old-tool"]["last_failure_code"] == "KEY_REVOKED"
                and s["new-tool"]["total"] == 2
                and s
            )
        )
        assert sources["old-tool"]["counts"]["KEY_REVOKED"] == 1
        assert sources["new-tool"]["counts"] == {"SUCCESS": 2}
