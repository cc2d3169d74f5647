"""The same proxy-free environment as the client tests (the plugin tests call 127.0.0.1)."""

from __future__ import annotations

from ..client.conftest import _no_proxies

__all__ = ["_no_proxies"]
