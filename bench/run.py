"""The benchmark behind docs/benchmarks.md: moeconnect against its peers, in one run.

Every contender runs under the same server stack (uvicorn + uvloop + httptools, one worker),
pinned to core 0 while wrk (32 connections) runs on core 1, with requests spread over many
workspaces by ``spread.lua``. The contenders alternate over several rounds and the table reports
medians, because these machines are noisy. Run it with ``make bench``; see ``--help``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
SECRET = "bench-secret-0123456789abcdef"
# SPEC 7: the limits stay on (their cost is part of every request) but are raised so the
# benchmark's single client address never trips them.
LIMITS_RAISED = {
    "MOECONNECT_LIMIT_FAILED_PER_IP": "1000000000/minute",
    "MOECONNECT_LIMIT_FAILED_PER_WORKSPACE": "1000000000/minute",
    "MOECONNECT_LIMIT_PER_WORKSPACE": "1000000000/minute",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(core: int) -> list[str]:
    return (
        ["taskset", "-c", str(core)]
        if (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
        else []
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data -------------------------------------------------------------------------------------


def seed(db_url: str, count: int, creds: Path, env: dict[str, str]) -> float:
    """Seed ``count`` workspaces with ``moeconnect seed``; returns the seconds it took."""
    started = time.monotonic()
    subprocess.run(
        [
            str(BIN / "moeconnect"),
            "seed",
            "--workspaces",
            str(count),
            "--credentials-out",
            str(creds),
            "--db",
            db_url,
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def sqlite_store(count: int) -> tuple[str, Path, float | None]:
    """A seeded SQLite store, reused across runs (seeding a million takes a while)."""
    db = OUT / f"store-{count}.db"
    creds = OUT / f"creds-{count}.csv"
    meta = OUT / f"store-{count}.json"
    url = f"sqlite:///{db}"
    if db.exists() and creds.exists() and meta.exists():
        return url, creds, json.loads(meta.read_text())["seed_seconds"]
    for path in OUT.glob(f"store-{count}.db*"):
        path.unlink()
    log(f"seeding {count:,} workspaces into {db.name} ...")
    seconds = seed(url, count, creds, {**os.environ})
    meta.write_text(json.dumps({"seed_seconds": seconds, "date": datetime.now(UTC).isoformat()}))
    log(f"  seeded in {seconds:.1f} s")
    return url, creds, seconds


def request_file(
    creds: Path, name: str, *, invalid: bool = False, sample: int | None = None
) -> Path:
    """Lines of workspace, base64 auth and body for spread.lua (wrong keys when ``invalid``)."""
    from moeconnect.keys import generate_key

    path = OUT / f"requests-{name}.tsv"
    lines = creds.read_text().splitlines()
    rng = random.Random(7)
    if sample is not None and sample < len(lines):
        lines = rng.sample(lines, sample)
    else:
        rng.shuffle(lines)
    with path.open("w") as out:
        for line in lines:
            wid, key = line.split(",", 1)
            if invalid:
                key = generate_key("data")  # well-formed, passes the checksum, matches nothing
            auth = base64.b64encode(f"{wid}:{key}".encode()).decode()
            body = json.dumps(
                {"app_id": wid, "app_secret": key, "source": "bench", "region": "01"},
                separators=(",", ":"),
            )
            out.write(f"{wid}\t{auth}\t{body}\n")
    return path


def peer_db(creds: Path) -> Path:
    import hashlib
    import sqlite3

    path = OUT / "peer.db"
    if path.exists():
        path.unlink()
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE workspaces (id TEXT PRIMARY KEY, name TEXT, key_sha256 TEXT)")
    rows = []
    for line in creds.read_text().splitlines():
        wid, key = line.split(",", 1)
        rows.append((wid, "Bench", hashlib.sha256(key.encode()).hexdigest()))
    connection.executemany("INSERT INTO workspaces VALUES (?, ?, ?)", rows)
    connection.commit()
    connection.close()
    return path


def pg_store(count: int) -> tuple[str, Path]:
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(PG_ADMIN)
    name = "moeconnect_bench"

    async def recreate() -> None:
        conn = await asyncpg.connect(
            host=base.host, port=base.port, user=base.username, database=base.database
        )
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(recreate())
    url = base.set(database=name).render_as_string(hide_password=False)
    creds = OUT / f"creds-pg-{count}.csv"
    log(f"seeding {count:,} workspaces into PostgreSQL ...")
    seed(url, count, creds, {**os.environ, "MOECONNECT_SECRET": SECRET})
    return url, creds


# -- servers and load -------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    command: list[str]
    requests: Path
    env: dict[str, str] = field(default_factory=dict)
    expect_ok: bool = True
    cached: bool = False  # a moeconnect server, whose cache the warm-up fills


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float
    # How much the connection record's buffer grew over the measured run: a writer that falls
    # behind flatters the figure (its rows cost nothing yet) and, run longer, would lose rows.
    # About zero when it keeps up.
    buffer_growth: float = 0.0


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> float:
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic() - started
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("server did not start")


def start(contender: Contender, port: int) -> tuple[subprocess.Popen[bytes], float]:
    command = [part.replace("{port}", str(port)) for part in contender.command]
    env = {**os.environ, **contender.env}
    process = subprocess.Popen(
        pin(0) + command,
        env=env,
        cwd=OUT,
        stdout=subprocess.DEVNULL,
        stderr=open(OUT / f"{contender.name}.log", "ab"),  # noqa: SIM115
    )
    return process, wait_ready(port, process)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def gauge(port: int, name: str) -> float:
    """One of moeconnect's gauges (``moeconnect_cache_entries``, ...), from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wrk(port: int, requests: Path, seconds: int, connections: int) -> tuple[Result, str]:
    output = subprocess.run(
        [
            *pin(1),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(ROOT / "bench" / "spread.lua"),
            f"http://127.0.0.1:{port}",
        ],
        env={**os.environ, "BENCH_REQUESTS": str(requests)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found_rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    # Anchored: "77.50%" in the thread-stats table must not read as the 50th percentile.
    p50_text = re.search(r"^\s+50%\s+(\S+)\s*$", output, re.MULTILINE)
    p99_text = re.search(r"^\s+99%\s+(\S+)\s*$", output, re.MULTILINE)
    if found_rps is None or p50_text is None or p99_text is None:
        log(f"  wrk reported no completed requests:\n{output}")
        return Result(0.0, 0.0, 0.0, 1, 0.0), "0"
    rps = float(found_rps.group(1))
    p50 = _ms(p50_text.group(1))
    p99 = _ms(p99_text.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = sum(int(x) for x in sockets.groups()) if sockets else 0
    return Result(rps, p50, p99, errors, 0.0), (non2xx.group(1) if non2xx else "0")


def fill_cache(port: int, requests: Path, connections: int) -> None:
    """Run wrk until the server's credential cache holds (nearly) every workspace the requests
    name, so that what is measured next is the steady state.

    99.9 %: at 99 % up to 1,500 of the big store's 150,000 workspaces were first read during
    the measured run. (Those cold reads were suspected of the big store's occasional p99 over
    200 ms; they were not its cause, see docs/benchmarks.md items 37 and "What remains".)
    """
    distinct = sum(1 for _ in requests.open())
    deadline = time.monotonic() + 300
    wanted = distinct * 0.999
    while gauge(port, "moeconnect_cache_entries") < wanted and time.monotonic() < deadline:
        wrk(port, requests, 5, connections)


def measure(
    contender: Contender, seconds: int, warmup: int, connections: int
) -> tuple[Result, float]:
    port = free_port()
    process, startup = start(contender, port)
    try:
        # Warm-up, not measured: moeconnect until its cache holds (nearly) every workspace the
        # requests name, so the measured run is the steady state; then a few seconds for all.
        if contender.cached:
            fill_cache(port, contender.requests, connections)
        wrk(port, contender.requests, warmup, connections)
        buffered = gauge(port, "moeconnect_record_buffered_rows") if contender.cached else 0.0
        result, non2xx = wrk(port, contender.requests, seconds, connections)
        if contender.expect_ok:
            result.errors += int(non2xx)
        result.rss_mb = rss_mb(process.pid)
        if contender.cached:
            result.buffer_growth = gauge(port, "moeconnect_record_buffered_rows") - buffered
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    return result, startup


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured seconds before each run")
    # Five, not the three SPEC 7 asks at least: one 10-s run on these machines swings by
    # +-15 %, and a ratio of two medians of three moved by as much as the 0.9 target's margin.
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workspaces", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=1_000_000, help="workspaces of the big store")
    parser.add_argument(
        "--big-sample",
        type=int,
        default=150_000,
        help="distinct workspaces of the big store that wrk cycles through",
    )
    parser.add_argument("--no-big", action="store_true")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="don't update docs/benchmarks.md")
    parser.add_argument(
        "--only",
        default="",
        help="semicolon-separated contender names to run (implies --no-write); for development",
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    moe = [
        str(BIN / "moeconnect"),
        "serve",
        "--port",
        "{port}",
        "--workers",
        "1",
        "--log-level",
        "warning",
    ]
    # The peers run on moeconnect's own server stack (bench/peers/serve.py).
    peer = [sys.executable, str(ROOT / "bench" / "peers" / "serve.py")]

    small_url, small_creds, _ = sqlite_store(args.workspaces)
    contenders = [
        Contender(
            "moeconnect",
            [*moe, "--db", small_url],
            request_file(small_creds, "valid"),
            LIMITS_RAISED,
            cached=True,
        ),
        Contender(
            "bare ASGI",
            [*peer, "peers.bare:app", "{port}"],
            request_file(small_creds, "valid"),
        ),
        Contender(
            "FastAPI peer",
            [*peer, "peers.fastapi_peer:app", "{port}"],
            request_file(small_creds, "valid"),
            {"PEER_DB": str(peer_db(small_creds))},
        ),
        Contender(
            "moeconnect invalid keys",
            [*moe, "--db", small_url],
            request_file(small_creds, "invalid", invalid=True),
            LIMITS_RAISED,
            expect_ok=False,
            cached=True,
        ),
    ]
    big_seed: float | None = None
    if not args.no_big:
        big_url, big_creds, big_seed = sqlite_store(args.big)
        contenders.append(
            Contender(
                f"moeconnect {args.big:,} workspaces",
                [*moe, "--db", big_url],
                request_file(big_creds, "big", sample=args.big_sample),
                LIMITS_RAISED,
                cached=True,
            )
        )
    if not args.no_pg:
        pg_url, pg_creds = pg_store(args.workspaces)
        contenders.append(
            Contender(
                "moeconnect PostgreSQL+Redis",
                [*moe, "--db", pg_url, "--redis", REDIS],
                request_file(pg_creds, "pg"),
                {**LIMITS_RAISED, "MOECONNECT_SECRET": SECRET},
                cached=True,
            )
        )

    if args.only:
        wanted = {name.strip() for name in args.only.split(";")}
        contenders = [c for c in contenders if c.name in wanted]
        for _round in range(args.rounds):
            for contender in contenders:
                result, startup = measure(contender, args.seconds, args.warmup, args.connections)
                log(
                    f"{contender.name}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                    f"p99 {result.p99_ms:.2f} ms, errors {result.errors}, "
                    f"RSS {result.rss_mb:.0f} MB, start-up {startup:.2f} s, "
                    f"record buffer growth {result.buffer_growth:+,.0f}"
                )
        return
    results: dict[str, list[Result]] = {c.name: [] for c in contenders}
    startups: dict[str, list[float]] = {c.name: [] for c in contenders}
    for round_number in range(1, args.rounds + 1):
        for contender in contenders:
            log(f"round {round_number}: {contender.name}")
            result, startup = measure(contender, args.seconds, args.warmup, args.connections)
            log(
                f"  {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms, errors {result.errors}, RSS {result.rss_mb:.0f} MB, "
                f"record buffer growth {result.buffer_growth:+,.0f}"
            )
            results[contender.name].append(result)
            startups[contender.name].append(startup)

    def median(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results[name])

    rows = []
    for contender in contenders:
        name = contender.name
        rows.append(
            f"| {name} | {median(name, 'rps'):,.0f} | {median(name, 'p50_ms'):.2f} | "
            f"{median(name, 'p99_ms'):.2f} | {sum(r.errors for r in results[name])} | "
            f"{max(r.rss_mb for r in results[name]):.0f} | "
            f"{max(r.buffer_growth for r in results[name]):+,.0f} | "
            f"{' / '.join(f'{r.rps:,.0f}' for r in results[name])} |"
        )
    valid = median("moeconnect", "rps")
    ratios = [
        ("valid-key throughput ÷ bare ASGI", valid / median("bare ASGI", "rps"), "≥ 0.75"),
        ("valid-key throughput ÷ FastAPI peer", valid / median("FastAPI peer", "rps"), "≥ 6"),
        ("p99 latency, valid keys (ms)", median("moeconnect", "p99_ms"), "≤ 5"),
        (
            "invalid-key ÷ valid-key throughput",
            median("moeconnect invalid keys", "rps") / valid,
            "≥ 0.5",
        ),
    ]
    big_name = f"moeconnect {args.big:,} workspaces"
    if big_name in results:
        ratios.append(
            (
                f"{args.big:,}-workspace ÷ {args.workspaces:,}-workspace throughput",
                median(big_name, "rps") / valid,
                "≥ 0.9",
            )
        )
        ratios.append(
            (
                f"RSS with {args.big:,} workspaces (MB)",
                max(r.rss_mb for r in results[big_name]),
                "≤ 300",
            )
        )
        ratios.append(
            (f"server start-up on the {args.big:,} store (s)", max(startups[big_name]), "< 3")
        )
        if big_seed is not None:
            ratios.append((f"`moeconnect seed --workspaces {args.big:,}` (s)", big_seed, "< 120"))

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    command = "make bench" + (" ARGS='" + " ".join(sys.argv[1:]) + "'" if sys.argv[1:] else "")
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    report = "\n".join(
        [
            START,
            f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}` "
            f"(`bench/run.py --seconds {args.seconds} --rounds {args.rounds} "
            f"--connections {args.connections}`) at commit `{commit or 'unknown'}`.",
            "",
            f"Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}. Server pinned to core 0, wrk (1 thread, "
            f"{args.connections} connections) to core 1; {args.warmup} s warm-up before each "
            f"measured run; {args.workspaces:,} workspaces, requests spread over all of them "
            f"(the big store: {args.big_sample:,} of its workspaces, shuffled); connection "
            "record on; rate limits on but raised to 10⁹/minute.",
            "",
            "| contender | req/s (median) | p50 ms | p99 ms | errors | RSS MB "
            "| record buffer growth | req/s per round |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "| target (SPEC §7) | measured | target | met |",
            "|---|---|---|---|",
            *[
                f"| {label} | {value:.2f} | {target} | {'yes' if _met(value, target) else 'NO'} |"
                for label, value, target in ratios
            ],
            END,
        ]
    )
    print(report)
    if not args.no_write:
        text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
        if START in text and END in text:
            text = text[: text.index(START)] + report + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip() + "\n\n## Latest run\n\n" + report + "\n"
        DOC.write_text(text)


def _met(value: float, target: str) -> bool:
    op, number = target.split()
    bound = float(number)
    return {"≥": value >= bound, "≤": value <= bound, "<": value < bound}[op]


if __name__ == "__main__":
    main()
