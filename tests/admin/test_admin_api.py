"""The admin API's operations and errors, over a real server."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moeconnect.testing import MoeconnectServer

from .helpers import admin, connect, operator_token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    """One server for this module's tests: each works on workspaces of its own."""
    with MoeconnectServer(workdir=tmp_path_factory.mktemp("admin-api")) as running:
        yield running


def test_workspace_lifecycle_and_errors(server: MoeconnectServer) -> None:
    with admin(server, operator_token(server)) as api:
        created = api.post(
            "/workspaces", json={"name": "Acme", "dc": "DC-02", "workspace_id": "acme_1"}
        )
        assert created.status_code == 201, created.text
        assert created.json() == {
            **created.json(),
            "workspace_id": "acme_1",
            "name": "Acme",
            "dc": "02",
            "status": "active",
        }
        assert created.headers["cache-control"] == "no-store"
        duplicate = api.post("/workspaces", json={"name": "Acme", "workspace_id": "acme_1"})
        assert duplicate.status_code == 409
        assert duplicate.json()["error"]["code"] == "CONFLICT"

        for body, words in [
            ({}, "name is required"),
            ({"name": "   "}, "1 to 100 characters"),
            ({"name": "x", "dc": "99"}, "Unknown data center"),
            ({"name": "x", "workspace_id": "bad id!"}, "workspace ID must be"),
            ({"name": 5}, "must be a string"),
            ({"name": "x", "colour": "red"}, "Unknown field 'colour'"),
        ]:
            bad = api.post("/workspaces", json=body)
            assert bad.status_code == 400, (body, bad.text)
            error = bad.json()["error"]
            assert (
                error["code"] == "VALIDATION_ERROR" and words.lower() in error["message"].lower()
            ), error
            assert error["message"].endswith(".")
        not_json = api.post(
            "/workspaces", content=b"[1,", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400

        for n in range(5):
            assert api.post("/workspaces", json={"name": f"Page {n}"}).status_code == 201
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = api.get("/workspaces", params=params).json()
            seen += [w["workspace_id"] for w in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(set(seen)) and len(seen) >= 6  # every one once, in ID order
        assert [
            w["workspace_id"] for w in api.get("/workspaces", params={"dc": "2"}).json()["items"]
        ] == ["acme_1"]
        assert (
            api.get("/workspaces", params={"search": "page 3"}).json()["items"][0]["name"]
            == "Page 3"
        )
        assert api.get("/workspaces", params={"limit": "0"}).status_code == 400
        assert api.get("/workspaces", params={"dc": "nowhere"}).status_code == 400

        assert (
            api.patch("/workspaces/acme_1", json={"name": "Acme Corp"}).json()["name"]
            == "Acme Corp"
        )
        assert api.post("/workspaces/acme_1/suspend").json()["status"] == "suspended"
        assert api.get("/workspaces/acme_1").json()["status"] == "suspended"
        assert api.post("/workspaces/acme_1/resume").json()["status"] == "active"
        deleted = api.delete("/workspaces/acme_1")
        assert deleted.status_code == 204 and deleted.content == b""
        for response in (
            api.get("/workspaces/acme_1"),
            api.delete("/workspaces/acme_1"),
            api.patch("/workspaces/acme_1", json={"name": "x"}),
            api.get("/workspaces/acme_1/keys"),
            api.get("/workspaces/acme_1/sources"),
            api.get("/workspaces/no%20such/attempts"),
        ):
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
        assert api.get("/nothing-here").json()["error"]["code"] == "RESOURCE_NOT_FOUND"
        wrong_method = api.put("/workspaces")
        assert wrong_method.status_code == 405
        assert wrong_method.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
        assert set(wrong_method.headers["allow"].split(", ")) >= {"GET", "POST"}
        assert "PUT is not allowed" in wrong_method.json()["error"]["message"]


def test_keys_import_revoke_and_attempts(server: MoeconnectServer) -> None:
    with admin(server, operator_token(server)) as api:
        wid = api.post("/workspaces", json={"name": "Keys"}).json()["workspace_id"]
        imported = api.post(f"/workspaces/{wid}/keys/import", json={"key": "fixture-key-0001"})
        assert imported.status_code == 201, imported.text
        assert "key" not in imported.json() and imported.json()["hint"] == "0001"
        assert connect(server, wid, "fixture-key-0001", "ci").status_code == 200
        assert api.post(f"/workspaces/{wid}/keys/import", json={"key": "short"}).status_code == 400
        assert api.post(f"/workspaces/{wid}/keys", json={"grace": "31d"}).status_code == 400
        assert api.post(f"/workspaces/{wid}/keys", json={"grace": "soon"}).status_code == 400
        assert api.post(f"/workspaces/{wid}/keys", json={"scope": "nope"}).status_code == 400
        push = api.post(f"/workspaces/{wid}/keys", json={"scope": "push"})
        assert push.status_code == 201 and push.json()["key"].startswith("moe_push_")

        keys = api.get(f"/workspaces/{wid}/keys").json()["keys"]
        assert {(k["scope"], k["state"]) for k in keys} == {
            ("data", "current"),
            ("push", "current"),
        }
        assert all("digest" not in k and "key" not in k for k in keys)

        revoked = api.post(f"/workspaces/{wid}/keys/revoke", json={"scope": "data"})
        assert revoked.json() == {"workspace_id": wid, "scope": "data", "revoked": 1}
        refused = connect(server, wid, "fixture-key-0001", "ci")
        assert refused.json()["error"]["code"] == "NO_DATA_KEY"

        for _ in range(50):
            page = api.get(f"/workspaces/{wid}/attempts", params={"source": "ci"}).json()
            if len(page["items"]) == 2:
                break
            time.sleep(0.1)
        outcomes = [r["outcome"] for r in page["items"]]
        assert outcomes == ["NO_DATA_KEY", "SUCCESS"]
        assert page["items"][0]["request_id"] == refused.headers["x-request-id"]
        assert (
            api.get(
                f"/workspaces/{wid}/attempts", params={"since": "1h", "outcome": "success"}
            ).json()["items"][0]["count"]
            == 1
        )
        assert (
            api.get(f"/workspaces/{wid}/attempts", params={"until": "2000-01-01T00:00:00Z"}).json()[
                "items"
            ]
            == []
        )
        assert (
            api.get(f"/workspaces/{wid}/attempts", params={"since": "yesterday"}).status_code == 400
        )
        assert api.get(f"/workspaces/{wid}/attempts", params={"cursor": "abc"}).status_code == 400


def test_store_outage_is_503_not_401(server: MoeconnectServer, tmp_path: Path) -> None:
    token = operator_token(server)
    db_file = Path(server.db_url.removeprefix("sqlite:///"))
    os.rename(db_file, tmp_path / "away.db")
    try:
        with admin(server, token) as api:
            response = api.get("/workspaces")
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "STORE_UNAVAILABLE"
            assert response.headers["retry-after"] == "5"
    finally:
        os.rename(tmp_path / "away.db", db_file)
    with admin(server, token) as api:
        assert api.get("/workspaces").status_code == 200
