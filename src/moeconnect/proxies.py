"""The client address of a request: the peer, or ``X-Forwarded-For`` behind trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["ClientAddress"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    """Resolves the client IP; ``X-Forwarded-For`` counts only when the peer is trusted."""

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self.networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(item.strip(), strict=False) for item in trusted if item.strip()
        )

    def _trusted(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """Walk the chain from the right past trusted hops; the first other hop is the client."""
        if peer is None or forwarded_for is None or not self._trusted(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # a malformed chain is not evidence of anything
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer
