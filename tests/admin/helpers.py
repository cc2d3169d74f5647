"""Helpers for admin API tests: operator tokens and requests against a real server."""

from __future__ import annotations

from typing import Any

import httpx

from moeconnect.testing import MoeconnectServer

ENDPOINT = "/v1/integrations/authentication"


def operator_token(server: MoeconnectServer, name: str = "ops") -> str:
    """A fresh operator token for ``server``'s store (plaintext, as the CLI prints it once)."""
    return server.run(lambda accounts: accounts.create_token(name)).token


def admin(server: MoeconnectServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url + "/admin/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def connect(
    server: MoeconnectServer, workspace_id: str, key: str, source: str = "test"
) -> httpx.Response:
    return httpx.post(
        server.base_url + ENDPOINT,
        auth=(workspace_id, key),
        headers={"MOE-APPKEY": workspace_id},
        json={"app_id": workspace_id, "app_secret": key, "source": source, "region": "01"},
        timeout=10,
    )


def connect_kwargs(workspace_id: str, key: str, source: str) -> dict[str, Any]:
    return {
        "auth": (workspace_id, key),
        "headers": {"MOE-APPKEY": workspace_id},
        "json": {"app_id": workspace_id, "app_secret": key, "source": source, "region": "01"},
    }
