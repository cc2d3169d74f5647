"""Which bucket the per-IP limit counts a client in: an IPv6 client by its /64, and behind a
trusted proxy the address in ``X-Forwarded-For`` even with a port; never the proxy's own bucket,
which every client would share."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from moeconnect.accounts import Accounts
from moeconnect.proxies import UNKNOWN, ClientAddress, IpBuckets, parse_hop
from moeconnect.testing import MoeconnectServer

from .helpers import PATH, attempt


@pytest.mark.parametrize(
    ("hop", "address"),
    [
        ("203.0.113.77", "203.0.113.77"),
        (" 203.0.113.77:5555 ", "203.0.113.77"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ('"[2001:db8::1]:443"', "2001:db8::1"),
        ("unknown", None),
        ("_hidden", None),
        ("203.0.113.77:port", None),
        ("[2001:db8::1]:", None),
        ("[2001:db8::1", None),
        ("x" * 100, None),
        ("", None),
    ],
)
def test_a_hop_is_read_without_its_port(hop: str, address: str | None) -> None:
    assert parse_hop(hop) == address


def test_resolve_walks_trusted_hops_and_names_unparsable_clients_unknown() -> None:
    proxies = ClientAddress(["10.0.0.0/8"])
    assert proxies.resolve("10.0.0.1", "198.51.100.9:5555") == "198.51.100.9"
    assert proxies.resolve("10.0.0.1", "1.1.1.1, [2001:db8::7]:443, 10.0.0.2") == "2001:db8::7"
    # The hop a trusted proxy wrote is not an address: a bucket of its own, not the proxy's.
    assert proxies.resolve("10.0.0.1", "unknown") == UNKNOWN
    assert proxies.resolve("10.0.0.1", "198.51.100.9, garbage, 10.0.0.2") == UNKNOWN
    # Garbage a client put before the hop the proxy wrote changes nothing.
    assert proxies.resolve("10.0.0.1", "garbage, 198.51.100.9") == "198.51.100.9"
    assert proxies.resolve("10.0.0.1", "10.0.0.3, 10.0.0.2") == "10.0.0.3"
    assert proxies.resolve("10.0.0.1", " , ") == "10.0.0.1"
    assert proxies.resolve("192.0.2.1", "198.51.100.9") == "192.0.2.1"  # peer not trusted


def test_ipv6_clients_are_counted_by_their_network() -> None:
    buckets = IpBuckets()
    assert buckets("192.0.2.1") == "192.0.2.1"
    assert buckets("2001:db8:1:2::a") == buckets("2001:db8:1:2:ffff::b") == "2001:db8:1:2::/64"
    assert buckets("2001:db8:1:3::a") == "2001:db8:1:3::/64"
    assert buckets("::ffff:192.0.2.1") == "192.0.2.1"
    assert buckets(UNKNOWN) == UNKNOWN
    assert IpBuckets(48)("2001:db8:1:2::a") == "2001:db8:1::/48"
    assert IpBuckets(128)("2001:db8::1") == "2001:db8::1"
    with pytest.raises(ValueError):
        IpBuckets(0)
    many = IpBuckets()
    for n in range(IpBuckets.SIZE + 10):
        many(f"2001:db8::{n:x}")
    assert len(many._seen) <= IpBuckets.SIZE


def _rows(server: MoeconnectServer, workspace_id: str, total: int) -> list[Any]:
    async def read(accounts: Accounts) -> list[Any]:
        return list((await accounts.store.list_attempts(workspace_id, limit=1000)).items)

    deadline = time.monotonic() + 15
    while True:
        rows = server.run(read)
        if sum(r.count for r in rows) >= total or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_clients_behind_a_proxy_get_their_own_buckets(tmp_path: Path) -> None:
    args = ["--trusted-proxy", "127.0.0.1/32", "--limit-failed-per-ip", "3/minute"]
    args += ["--limit-failed-per-workspace", "off", "--limit-per-workspace", "off"]
    with MoeconnectServer(workdir=tmp_path, args=args) as server:
        workspace_id, key = server.workspace_with_key()
        wrong = attempt(workspace_id, key + "x")

        def status(forwarded: str) -> int:
            headers = {**wrong["headers"], "X-Forwarded-For": forwarded}
            return httpx.post(
                server.base_url + PATH, json=wrong["json"], headers=headers, timeout=10
            ).status_code

        # One IPv6 /64: its addresses share one budget; the next /64 has its own.
        assert [status(f"2001:db8:1:2::{n}") for n in range(1, 5)] == [401, 401, 401, 429]
        assert status("2001:db8:1:3::1") == 401
        # An address with a port is the address: its own budget, the port changes nothing.
        assert [status(f"203.0.113.77:{5550 + n}") for n in range(4)] == [401, 401, 401, 429]
        assert status("[2001:db8:9::1]:443") == 401
        # "unknown" clients share one bucket; everyone else is unaffected by them.
        assert [status("unknown") for _ in range(4)] == [401, 401, 401, 429]
        assert status("203.0.113.78:5555") == 401
        assert status("garbage") == 429  # also unknown
        # The peer's own bucket (the proxy's) was never spent.
        plain = httpx.post(server.base_url + PATH, timeout=10, **wrong)
        assert plain.status_code == 401

        # The record keeps each client's real address, not its /64.
        rows = _rows(server, workspace_id, 13)  # the 401s (429s of an IP have no workspace)
        addresses = {r.client_ip for r in rows}
        assert {"2001:db8:1:2::1", "2001:db8:1:2::3", "203.0.113.77", "unknown"} <= addresses
        assert "2001:db8:1:2::/64" not in addresses
