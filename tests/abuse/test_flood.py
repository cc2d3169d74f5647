"""Must-show 1: a flood of wrong keys from one IP is throttled; everyone else is served as before.

One real server with the default limits (30 failed attempts per IP per minute). A separate process
floods 2,000 wrong keys from 127.0.0.2 at a steady rate; meanwhile honest clients on 127.0.0.3 …
send valid requests, one of them for the very workspace under attack. Their p99 latency during the
flood is compared with the unloaded p99 measured in the same test, before and after the flood.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from moeconnect.testing import MoeconnectServer

from .helpers import PATH, attempt, client_from, p99

FLOOD_IP = "127.0.0.2"
HONEST_IPS = ("127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7")
FLOOD_COUNT = 2000
FLOOD_RATE = 400.0  # attempts per second: the whole flood takes about five seconds
FLOOD_CONCURRENCY = 8
PACE = 0.01  # honest clients wait this long between requests, flood or not


async def honest_round(
    base_url: str, clients: list[tuple[str, str, str]], *, per_client: int = 0, until: float = 0
) -> tuple[list[float], list[int]]:
    """Valid requests, each client sequentially: ``per_client`` of them, or until ``until``."""
    latencies: list[float] = []
    statuses: list[int] = []

    async def one_client(ip: str, workspace_id: str, key: str) -> None:
        async with client_from(ip, base_url) as client:
            await client.post(PATH, **attempt(workspace_id, key))  # connect outside the timing
            sent = 0
            while (per_client and sent < per_client) or (until and time.monotonic() < until):
                started = time.perf_counter()
                response = await client.post(PATH, **attempt(workspace_id, key))
                latencies.append(time.perf_counter() - started)
                statuses.append(response.status_code)
                sent += 1
                await asyncio.sleep(PACE)

    await asyncio.gather(*(one_client(*c) for c in clients))
    return latencies, statuses


def test_flood_from_one_ip_is_throttled_while_other_ips_keep_their_latency(
    tmp_path: Path,
) -> None:
    with MoeconnectServer(workdir=tmp_path) as server:
        victim, victim_key = server.workspace_with_key("Victim")
        workspaces = [server.workspace_with_key(f"Honest {i}") for i in range(len(HONEST_IPS) - 1)]
        workspaces.append((victim, victim_key))  # the last honest client uses the attacked one
        clients = [(ip, ws, key) for ip, (ws, key) in zip(HONEST_IPS, workspaces, strict=True)]
        base = server.base_url

        before, before_statuses = asyncio.run(honest_round(base, clients, per_client=60))

        flood = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("flood.py")),
                base,
                FLOOD_IP,
                victim,
                str(FLOOD_COUNT),
                str(FLOOD_RATE),
                str(FLOOD_CONCURRENCY),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.3)  # the flood is under way (and past the limit) before measuring
        during, during_statuses = asyncio.run(
            honest_round(base, clients, until=time.monotonic() + 3.5)
        )
        out, _ = flood.communicate(timeout=120)
        assert flood.returncode == 0
        result = json.loads(out)

        after, after_statuses = asyncio.run(honest_round(base, clients, per_client=60))
        metrics = httpx.get(base + "/metrics").text

    statuses = result["statuses"]
    throttled = statuses.get("429", 0)
    let_through = statuses.get("401", 0)
    # Throttled after the configured number; at most the requests already in flight slip past.
    assert set(statuses) <= {"401", "429"}, statuses
    assert 30 <= let_through <= 30 + FLOOD_CONCURRENCY, statuses
    assert throttled == FLOOD_COUNT - let_through
    assert result["retry_after_missing"] == 0
    assert (
        f'moeconnect_ratelimit_rejections_total{{limit="failed_per_ip"}} {throttled}.0' in metrics
    )

    # Every valid request from the other addresses succeeded, including the attacked workspace's.
    assert set(before_statuses) == set(during_statuses) == set(after_statuses) == {200}
    assert len(during) >= 100, "too few samples during the flood to judge p99"

    unloaded = max(p99(before), p99(after))
    loaded = p99(during)
    print(
        f"p99 unloaded before {p99(before) * 1000:.2f} ms, after {p99(after) * 1000:.2f} ms, "
        f"during the flood {loaded * 1000:.2f} ms ({len(during)} samples); flood {result}"
    )
    assert loaded <= 2 * unloaded, (loaded, unloaded)
