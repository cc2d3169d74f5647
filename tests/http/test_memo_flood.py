"""Issue 22, must-show 3 (on the wire): distinct maximal requests inside the default limits don't
grow the server's memory beyond the memo's budget.

A real server with the default limits (30 failures per address a minute). From 200 loopback
addresses, 30 requests each that pass rows 6-12 with a 24,000-character username (the issue's
attack: 6,000 of them took RSS from 84 to 261 MB, as the memo kept each username); then from 200
more, 30 each of the largest requests that can name a workspace: a 64-character ID, a source of
64 four-byte characters, a body padded to nearly 100 KB, all different. The server's RSS is read
from /proc before and after; it may grow by what the memo is charged for 6,000 maximal entries
plus a stated allowance for the limits' counters and the allocator, far below the 177 MB the
first batch alone cost before.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from moeconnect.testing import MoeconnectServer

from .wire import PATH

ADDRESSES = 200
PER_ADDRESS = 30  # the default failure limit per address and minute
HUGE_USERNAME = 24_000  # characters: the head stays under 64 KiB
BODY = 100_000  # bytes: the endpoint takes up to 100 KiB
# Allowed RSS growth for 12,000 requests: the memo's charge for 6,000 maximal entries (~8 MB)
# and the limits' counters for 400 addresses and 12,000 usernames (~6 MB), with room for the
# allocator's own keeping of freed 100 KB buffers.
RSS_BOUND = 40 * 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _request(host: str, username: str, key: str, source: str, pad: int = 0) -> bytes:
    payload = {"app_id": username, "app_secret": key, "source": source, "region": "01"}
    body = json.dumps(payload).encode()
    if pad:
        payload["padding"] = "p" * (pad - len(body) - 16)
        body = json.dumps(payload).encode()
    token = base64.b64encode(f"{username}:{key}".encode()).decode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}\r\n"
        f"MOE-APPKEY: {username}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _from(host: str, port: int, ip: str, requests: list[bytes], out: Counter[str]) -> None:
    """Send ``requests`` one after the other on a connection from ``ip`` (not pipelined, so
    what the server holds afterwards is not the high-water mark of its read buffers); count the
    answers' codes."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(ip, 0))
    for request in requests:
        writer.write(request)
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        body = json.loads(await reader.readexactly(length))
        out[body.get("error", {}).get("code", "SUCCESS")] += 1
    writer.close()
    await writer.wait_closed()


def _addresses(count: int) -> list[str]:
    """Distinct loopback addresses no other test run is likely to have used this minute."""
    chosen: set[str] = set()
    while len(chosen) < count:
        chosen.add(
            f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        )
    return sorted(chosen)


@pytest.mark.slow
def test_distinct_maximal_requests_stay_within_the_memo_budget(tmp_path: Path) -> None:
    with MoeconnectServer(workdir=tmp_path) as server:
        assert server.process is not None
        pid = server.process.pid
        netloc = f"{server.host}:{server.port}"
        answers: dict[str, Counter[str]] = {"huge": Counter(), "maximal": Counter()}
        addresses = _addresses(2 * ADDRESSES + 1)
        serial = iter(range(1_000_000))

        def huge(ip: str) -> list[bytes]:
            return [
                _request(netloc, f"{next(serial):08d}" + "u" * (HUGE_USERNAME - 8), "k", "huge")
                for _ in range(PER_ADDRESS)
            ]

        def maximal(ip: str) -> list[bytes]:
            return [
                _request(
                    netloc,
                    f"{(n := next(serial)):08d}" + "W" * 56,
                    f"key-{n:08d}",
                    f"{n:08d}" + "\U0001f600" * 56,
                    pad=BODY,
                )
                for _ in range(PER_ADDRESS)
            ]

        async def batch(kind: str, ips: list[str]) -> None:
            make = huge if kind == "huge" else maximal
            for start in range(0, len(ips), 20):  # 20 addresses at a time
                await asyncio.gather(
                    *(
                        _from(server.host, server.port, ip, make(ip), answers[kind])
                        for ip in ips[start : start + 20]
                    )
                )

        # Warm-up, not measured: every code path has run once.
        asyncio.run(_from(server.host, server.port, addresses[-1], maximal(""), Counter()))
        before = _rss(pid)
        asyncio.run(batch("huge", addresses[:ADDRESSES]))
        middle = _rss(pid)
        asyncio.run(batch("maximal", addresses[ADDRESSES : 2 * ADDRESSES]))
        after = _rss(pid)

    mib = 1024 * 1024
    print(
        f"\nRSS before {before / mib:.0f} MiB, after {ADDRESSES * PER_ADDRESS:,} requests with "
        f"{HUGE_USERNAME:,}-character usernames {middle / mib:.0f} MiB, after as many maximal "
        f"valid-format ones {after / mib:.0f} MiB (bound +{RSS_BOUND / mib:.0f} MiB); "
        f"answers {answers}"
    )
    total = ADDRESSES * PER_ADDRESS
    # Usernames that can't be workspace IDs share one rate-limit bucket (docs/limits.md), so
    # past its failure budget they are refused with 429; none is remembered either way.
    assert sum(answers["huge"].values()) == total
    assert set(answers["huge"]) <= {"WORKSPACE_NOT_FOUND", "RATE_LIMITED"}
    # Valid-format IDs inside the limits: every request was checked, none refused with 429.
    assert answers["maximal"] == {"WORKSPACE_NOT_FOUND": total}
    assert after - before <= RSS_BOUND
