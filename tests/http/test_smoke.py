"""The smallest end-to-end proof: a real server, a real key, a real HTTP request."""

from __future__ import annotations

import httpx

from moeconnect.testing import MoeconnectServer


def test_valid_key_succeeds(server: MoeconnectServer) -> None:
    workspace_id, key = server.workspace_with_key("PI-Prod-DC01")
    response = httpx.post(
        server.base_url + "/v1/integrations/authentication",
        auth=(workspace_id, key),
        headers={"MOE-APPKEY": workspace_id},
        json={"app_id": workspace_id, "app_secret": key, "source": "test", "region": "01"},
    )
    assert response.status_code == 200
    assert response.json() == {"status": "success", "app_name": "PI-Prod-DC01"}
