"""Shared by the abuse tests: attempts as a client sends them, from a chosen loopback address."""

from __future__ import annotations

import base64
import random
from typing import Any

import httpx

PATH = "/v1/integrations/authentication"


def attempt(workspace_id: str, key: str) -> dict[str, Any]:
    """Keyword arguments for ``client.post(PATH, **attempt(...))``: one consistent attempt."""
    token = base64.b64encode(f"{workspace_id}:{key}".encode()).decode()
    return {
        "json": {"app_id": workspace_id, "app_secret": key, "source": "abuse-test", "region": "01"},
        "headers": {"Authorization": f"Basic {token}", "MOE-APPKEY": workspace_id},
    }


def client_from(ip: str, base_url: str, **kwargs: Any) -> httpx.AsyncClient:
    """An async client whose connections come from ``ip`` (any 127.x.y.z is this machine)."""
    transport = httpx.AsyncHTTPTransport(local_address=ip)
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=30, **kwargs)


def sync_client_from(ip: str, base_url: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url, transport=httpx.HTTPTransport(local_address=ip), timeout=30
    )


def fresh_loopback() -> str:
    """A loopback address no other test run used recently, so shared counters start at zero."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
