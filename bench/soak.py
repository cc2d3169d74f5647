"""Soak test (``make soak``): steady load on one real server, watched for leaks and lost records.

Starts ``moeconnect serve`` on a free loopback port with a throwaway SQLite database, seeds
workspaces, then holds a steady request rate (valid keys, wrong keys and malformed bodies mixed)
for ``--duration`` seconds. It samples the server's RSS from ``/proc`` and at the end checks:

- no 5xx and no transport error, ever;
- RSS at the end within 10 % of RSS after the warm-up (the first tenth of the run, at least 30 s);
- every attempt recorded: after the record's queue drains and the server stops, the connection
  record holds exactly as many attempts per outcome code as the client counted.

The result is printed as JSON and, unless ``--doc ''``, written to the "Soak" section of
docs/benchmarks.md. Loopback only; the request loop is bounded by the rate and the duration.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import platform
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx

from moeconnect.testing import MoeconnectServer

PATH = "/v1/integrations/authentication"
ROOT = Path(__file__).resolve().parent.parent
MAX_RSS_GROWTH = 0.10
# Of every 20 requests: 16 valid, 3 with a wrong key, 1 with a malformed body.
MIX = ["valid"] * 16 + ["wrong"] * 3 + ["malformed"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def attempt(workspace_id: str, key: str, kind: str, other_key: str) -> dict[str, object]:
    if kind == "wrong":
        key = other_key  # well-formed, but another workspace's: KEY_MISMATCH
    token = base64.b64encode(f"{workspace_id}:{key}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "MOE-APPKEY": workspace_id}
    if kind == "malformed":
        return {
            "content": b'{"app_id": ',
            "headers": {**headers, "Content-Type": "application/json"},
        }
    body = {"app_id": workspace_id, "app_secret": key, "source": "soak", "region": "01"}
    return {"json": body, "headers": headers}


async def load(
    base_url: str,
    credentials: list[tuple[str, str]],
    duration: float,
    rate: float,
    concurrency: int,
) -> tuple[Counter[str], Counter[str], int]:
    """Steady load; returns (outcome codes, HTTP statuses, transport errors)."""
    codes: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    errors = 0
    started = time.monotonic()
    deadline = started + duration
    sent = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent, errors
        while True:
            n = sent
            sent += 1
            at = started + n / rate
            # Bounded both ways: no more than rate x duration requests, and none after the
            # deadline even when a busy machine made the client fall behind the schedule.
            if at >= deadline or time.monotonic() >= deadline:
                return
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            workspace_id, key = credentials[n % len(credentials)]
            other_key = credentials[(n + 1) % len(credentials)][1]
            kind = MIX[n % len(MIX)]
            try:
                response = await client.post(PATH, **attempt(workspace_id, key, kind, other_key))
            except httpx.HTTPError:
                errors += 1
                continue
            statuses[str(response.status_code)] += 1
            document = response.json()
            codes["SUCCESS" if response.status_code == 200 else document["error"]["code"]] += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return codes, statuses, errors


async def sample_rss(pid: int, every: float, samples: list[tuple[float, int]]) -> None:
    started = time.monotonic()
    while True:
        samples.append((time.monotonic() - started, rss_kib(pid)))
        await asyncio.sleep(every)


async def drive(args: argparse.Namespace, server: MoeconnectServer, creds: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    assert server.process is not None
    samples: list[tuple[float, int]] = []
    sampler = asyncio.create_task(sample_rss(server.process.pid, args.sample_every, samples))
    try:
        codes, statuses, errors = await load(
            server.base_url, creds, args.duration, args.rate, args.concurrency
        )
    finally:
        sampler.cancel()
    samples.append((args.duration, rss_kib(server.process.pid)))
    return codes, statuses, errors, samples


def queue_drained(base_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(base_url + "/metrics").text
        depth = [ln for ln in text.splitlines() if ln.startswith("moeconnect_record_queue_depth")]
        if depth and float(depth[0].split()[1]) == 0:
            return
        time.sleep(0.5)
    raise TimeoutError("the connection record's queue did not drain")


def recorded(db_path: Path) -> Counter[str]:
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT outcome, SUM(count) FROM connection_attempts GROUP BY outcome"
        ).fetchall()
    return Counter({outcome: int(total) for outcome, total in rows})


def write_doc(doc: Path, markdown: str) -> None:
    """Replace (or add) the "## Soak" section of ``doc``; other sections stay as they are."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == "## Soak"), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + markdown
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        tail = "\n".join(lines[end:])
        new = "\n".join(lines[:start]) + "\n" + markdown + ("\n" + tail if tail else "")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(new.rstrip("\n") + "\n")


def render(result: dict[str, object]) -> str:
    rss = result["rss_kib"]
    assert isinstance(rss, dict)
    verdict = "passed" if result["passed"] else "FAILED"
    statuses = ", ".join(f"{k}: {v}" for k, v in result["statuses"].items())  # type: ignore[attr-defined]
    codes = ", ".join(f"{k}: {v}" for k, v in result["codes"].items())  # type: ignore[attr-defined]

    def yes(flag: object) -> str:
        return "yes" if flag else "**no**"

    return f"""## Soak

`make soak` (`bench/soak.py`): one server (`moeconnect serve`, one worker, SQLite, connection
record on, default rate limits raised so they don't trigger), {result["workspaces"]} workspaces, a
steady {result["rate"]:.0f} requests/s over {result["concurrency"]} loopback connections for
{result["duration_s"]:.0f} s; of every 20 requests 16 are valid, 3 carry another workspace's key
and 1 a malformed body. RSS is sampled from `/proc`; growth is measured from the end of the
warm-up (the first tenth of the run) to the end.

Last run: {result["finished"]} on {result["machine"]} — **{verdict}**.

| | |
|---|---|
| requests answered | {result["answered"]} ({result["achieved_rate"]:.0f}/s achieved) |
| HTTP statuses | {statuses} |
| outcome codes (client = record) | {codes} |
| 5xx / transport errors | {result["server_errors"]} / {result["transport_errors"]} |
| RSS at start / after warm-up / end | {rss["start"]} / {rss["warm"]} / {rss["end"]} KiB |
| RSS growth after warm-up | {result["rss_growth_pct"]:.1f} % (limit 10 %) |
| every attempt recorded | {yes(result["all_recorded"])} ({result["recorded_total"]} recorded) |

The machine is shared and has two cores, so the rate is modest on purpose: the soak looks for
leaks and lost records, not for throughput (that is the benchmark's job).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling, seconds")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()

    # SIGTERM (like Ctrl-C) unwinds through the finally below, which stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="moeconnect-soak-"))
    raised = "1000000/minute"
    env = {
        "MOECONNECT_LIMIT_FAILED_PER_IP": raised,
        "MOECONNECT_LIMIT_FAILED_PER_WORKSPACE": raised,
        "MOECONNECT_LIMIT_PER_WORKSPACE": raised,
    }
    server = MoeconnectServer(workdir=workdir, env=env)
    server.start()
    try:
        out = workdir / "credentials.csv"
        seeded = server.cli(
            "seed", "--workspaces", str(args.workspaces), "--credentials-out", str(out),
            "--db", server.db_url,
        )  # fmt: skip
        if seeded.returncode != 0:
            raise RuntimeError(f"seed failed: {seeded.stderr}")
        creds = [
            (line.split(",", 1)[0], line.split(",", 1)[1])
            for line in out.read_text().splitlines()
            if line.strip()
        ]
        print(f"soak: {len(creds)} workspaces, {args.rate}/s for {args.duration}s", flush=True)
        codes, statuses, errors, samples = asyncio.run(drive(args, server, creds))
        queue_drained(server.base_url)
    finally:
        server.stop()  # graceful: the record's final flush
    db_path = workdir / "moeconnect.db"
    in_record = recorded(db_path)
    server.close()

    warm_at = max(30.0, args.duration / 10)
    warm = next((kib for t, kib in samples if t >= warm_at), samples[-1][1])
    growth = (samples[-1][1] - warm) / warm
    server_errors = sum(n for status, n in statuses.items() if status.startswith("5"))
    answered = sum(statuses.values())
    result: dict[str, object] = {
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "duration_s": args.duration,
        "achieved_rate": sum(statuses.values()) / args.duration,
        "rate": args.rate,
        "concurrency": args.concurrency,
        "workspaces": len(creds),
        "answered": answered,
        "statuses": dict(sorted(statuses.items())),
        "codes": dict(sorted(codes.items())),
        "server_errors": server_errors,
        "transport_errors": errors,
        "rss_kib": {"start": samples[0][1], "warm": warm, "end": samples[-1][1]},
        "rss_growth_pct": growth * 100,
        "recorded": dict(sorted(in_record.items())),
        "recorded_total": sum(in_record.values()),
        "all_recorded": in_record == codes,
    }
    result["passed"] = (
        server_errors == 0 and errors == 0 and growth < MAX_RSS_GROWTH and in_record == codes
    )
    print(json.dumps(result, indent=2))
    if args.doc:
        write_doc(Path(args.doc), render(result))
        print(f"soak: result written to {args.doc}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
