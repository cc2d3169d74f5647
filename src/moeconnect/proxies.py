"""The client address of a request: the peer, or ``X-Forwarded-For`` behind trusted proxies.

Also the rate limiter's bucket for an address (:class:`IpBuckets`): an IPv6 client is counted by
its network (a /64 by default), because one host is routinely given a whole /64.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

__all__ = ["UNKNOWN", "ClientAddress", "IpBuckets", "parse_hop"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# The client of a trusted proxy that named it with something that is not an address
# (``unknown``, an obfuscated RFC 7239 identifier, garbage): all such clients share this name,
# in the record and in the rate limits.
UNKNOWN: Final = "unknown"
_MAX_HOP: Final = 64  # no address with a port is longer; a longer hop is garbage


def parse_hop(hop: str) -> str | None:
    """An ``X-Forwarded-For`` hop as an address, without port, brackets or quotes; or None.

    ``203.0.113.77:5555`` → ``203.0.113.77``, ``[2001:db8::1]:443`` → ``2001:db8::1``; a bare
    IPv6 address keeps its colons. The address comes back in its canonical text.
    """
    text = hop.strip().strip('"')
    if not text or len(text) > _MAX_HOP:
        return None
    if text[0] == "[":
        end = text.find("]")
        rest = text[end + 1 :] if end > 0 else ""
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 has at least two colons
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


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
        """Walk the chain from the right past trusted hops; the first other hop is the client.

        A hop reached this way was written by a trusted proxy. When it is not an address (after
        taking off a port), that proxy could not name its client: the client is :data:`UNKNOWN`,
        a bucket of its own, so such clients never land in the proxy's bucket (shared by every
        client) nor get a name they chose.
        """
        if peer is None or forwarded_for is None or not self._trusted(peer):
            return peer
        hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
        address: str | None = None
        for hop in reversed(hops):
            address = parse_hop(hop)
            if address is None:
                return UNKNOWN
            if not self._trusted(address):
                return address
        return address or peer  # every hop a trusted proxy: the leftmost


class IpBuckets:
    """The rate limiter's bucket of a client address: an IPv4 address is its own bucket, an
    IPv6 address counts as its ``/prefix`` network (``2001:db8:1:2::/64``), an IPv4-mapped IPv6
    address (``::ffff:192.0.2.1``) as the IPv4 address.

    IPv4 costs a ``":" in`` test. IPv6 results are remembered in a dict of at most
    :attr:`SIZE` entries (emptied when full, ~2 MB at most), since parsing costs microseconds.
    """

    SIZE: Final = 8192

    def __init__(self, prefix: int = 64) -> None:
        if not 1 <= prefix <= 128:
            raise ValueError(f"an IPv6 prefix length is 1 to 128, not {prefix}")
        self.prefix = prefix
        self._seen: dict[str, str] = {}

    def __call__(self, ip: str) -> str:
        if ":" not in ip:
            return ip
        bucket = self._seen.get(ip)
        if bucket is None:
            bucket = self._bucket(ip)
            if len(self._seen) >= self.SIZE:
                self._seen.clear()
            self._seen[ip] = bucket
        return bucket

    def _bucket(self, ip: str) -> str:
        try:
            address: _Address = ipaddress.ip_address(ip)
        except ValueError:
            return ip[:_MAX_HOP]  # not an address (UNKNOWN never has a colon): as it is
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            if self.prefix < 128:
                network = ipaddress.IPv6Network((address.packed, self.prefix), strict=False)
                return str(network)
        return str(address)
