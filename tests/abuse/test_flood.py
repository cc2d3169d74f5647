"""Must-show 1: a flood of wrong keys from one IP is throttled; everyone else is served as before.

One real server with the default limits on failures (30 failed attempts per IP per minute). A
separate process floods 2,000 wrong keys from 127.0.0.2 at a steady rate; meanwhile honest clients
on 127.0.0.3 … send valid requests, one of them for the very workspace under attack. Their p99
latency during the flood is compared with their unloaded p99 measured in the same test, in windows
that alternate with the flood's. The flood generator runs at a lower CPU priority (``nice 10``): a
real attacker's client runs elsewhere, and only the server's work for each flood request belongs
on this machine.
"""

from __future__ import annotations

import asyncio
import json
import signal
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
FLOOD_RATE = 250.0  # attempts per second while running: about eight seconds of flooding
ROUNDS = 6
WINDOW = 1.0  # seconds of measurement, unloaded then loaded, in each round
FLOOD_CONCURRENCY = 8
PACE = 0.01  # honest clients wait this long between requests, flood or not


class Phases:
    """Which window the run is in: 0 settling (samples discarded), 1 unloaded, 2 loaded."""

    def __init__(self) -> None:
        self.number = 0  # bumps at every switch; a sample that straddles one is discarded
        self.kind = 0


async def honest_clients(
    base_url: str, clients: list[tuple[str, str, str]], flood: subprocess.Popen[str]
) -> tuple[list[float], list[float], list[int]]:
    """Valid requests from every honest client, all along, while the flood is switched on and
    off (SIGCONT/SIGSTOP) in alternating windows; returns (unloaded, loaded, statuses)."""
    phases = Phases()
    samples: dict[int, list[float]] = {1: [], 2: []}
    statuses: list[int] = []
    done = asyncio.Event()

    async def one_client(ip: str, workspace_id: str, key: str) -> None:
        async with client_from(ip, base_url) as client:
            await client.post(PATH, **attempt(workspace_id, key))  # connect outside the timing
            while not done.is_set():
                number, kind = phases.number, phases.kind
                started = time.perf_counter()
                response = await client.post(PATH, **attempt(workspace_id, key))
                elapsed = time.perf_counter() - started
                statuses.append(response.status_code)
                if kind and phases.number == number:
                    samples[kind].append(elapsed)
                await asyncio.sleep(PACE)

    def switch(kind: int) -> None:
        phases.number += 1
        phases.kind = kind

    async def controller() -> None:
        try:
            await asyncio.sleep(0.5)  # the flood is under way, and past the limit
            for _ in range(ROUNDS):
                flood.send_signal(signal.SIGSTOP)
                switch(0)
                await asyncio.sleep(0.2)  # its requests in flight are answered
                switch(1)
                await asyncio.sleep(WINDOW)
                flood.send_signal(signal.SIGCONT)
                switch(2)
                await asyncio.sleep(WINDOW)
                assert flood.poll() is None, "the flood ended before the last loaded window"
        finally:
            flood.send_signal(signal.SIGCONT)
            done.set()

    await asyncio.gather(controller(), *(one_client(*c) for c in clients))
    return samples[1], samples[2], statuses


def test_flood_from_one_ip_is_throttled_while_other_ips_keep_their_latency(
    tmp_path: Path,
) -> None:
    # The p99 comparison is made on a shared 2-core VM whose speed drifts (steal time): a
    # measurement spoiled by the neighbours is repeated once, on a fresh server. Everything else
    # is asserted on every run, and a real regression fails both.
    ratios = []
    for run in range(2):
        unloaded, loaded = _flood_run(tmp_path / f"run{run}")
        ratios.append(p99(loaded) / p99(unloaded))
        if p99(loaded) <= 2 * p99(unloaded):
            return
    raise AssertionError(f"p99 during the flood over 2x unloaded in both runs: ratios {ratios}")


def _flood_run(tmp_path: Path) -> tuple[list[float], list[float]]:
    tmp_path.mkdir()
    # Default limits, except all attempts per workspace: to measure p99 the honest clients send
    # ~50 requests/s each for one workspace, beyond what an integration sends and beyond the
    # default 600/minute (that limit has its own tests).
    limits = {"MOECONNECT_LIMIT_PER_WORKSPACE": "100000/minute"}
    with MoeconnectServer(workdir=tmp_path, env=limits) as server:
        victim, victim_key = server.workspace_with_key("Victim")
        workspaces = [server.workspace_with_key(f"Honest {i}") for i in range(len(HONEST_IPS) - 1)]
        workspaces.append((victim, victim_key))  # the last honest client uses the attacked one
        clients = [(ip, ws, key) for ip, (ws, key) in zip(HONEST_IPS, workspaces, strict=True)]
        base = server.base_url

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
        # Unloaded and loaded windows alternate (the flood is paused with SIGSTOP in between), so
        # both see the same background load of a shared machine, which drifts over seconds.
        unloaded, loaded, statuses = asyncio.run(honest_clients(base, clients, flood))
        out, _ = flood.communicate(timeout=120)
        assert flood.returncode == 0
        result = json.loads(out)
        metrics = httpx.get(base + "/metrics").text

    flood_statuses = result["statuses"]
    throttled = flood_statuses.get("429", 0)
    let_through = flood_statuses.get("401", 0)
    # Throttled after the configured number; at most the requests already in flight slip past.
    assert set(flood_statuses) <= {"401", "429"}, flood_statuses
    assert 30 <= let_through <= 30 + FLOOD_CONCURRENCY, flood_statuses
    assert throttled == FLOOD_COUNT - let_through
    assert result["retry_after_missing"] == 0
    assert (
        f'moeconnect_ratelimit_rejections_total{{limit="failed_per_ip"}} {throttled}.0' in metrics
    )

    # Every valid request from the other addresses succeeded, including the attacked workspace's.
    assert set(statuses) == {200}
    assert len(loaded) >= 200 and len(unloaded) >= 200, "too few samples to judge p99"
    print(
        f"p99 unloaded {p99(unloaded) * 1000:.2f} ms ({len(unloaded)} samples), during the flood "
        f"{p99(loaded) * 1000:.2f} ms ({len(loaded)} samples); flood {result}"
    )
    return unloaded, loaded
