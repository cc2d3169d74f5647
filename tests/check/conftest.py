"""The same proxy-free environment as the client tests."""

from __future__ import annotations

from ..client.conftest import _no_proxies

__all__ = ["_no_proxies"]
