"""Where a request's CPU goes: one warm moeconnect server, per-thread CPU per request.

A development tool beside ``run.py`` (whose seeded stores and request files it reuses, so run
``make bench`` or ``run.py --only ...`` once first). It copies the chosen store so that every run
starts from the same record, starts ``moeconnect serve`` pinned as the benchmark pins it, warms
the cache, runs wrk, and prints the throughput, the connection record's buffer over the run and,
for each thread of the server, its CPU time divided by the requests answered (from
``/proc/PID/task``): the event loop (the lowest thread ID), the record's writer (aiosqlite's
thread) and the change-feed reader apart. Runs of two versions, alternated, are how the items of
docs/benchmarks.md were measured (py-spy is not installed by default: ``.venv/bin/pip install
py-spy``)::

    .venv/bin/python bench/threads.py invalid --seconds 30
    .venv/bin/python bench/threads.py valid --py-spy /tmp/valid.txt   # py-spy's raw format

``--pythonpath DIR`` puts a ``sitecustomize.py`` of yours in the server (a diagnostic: take a part
away and see what the rest costs). ``--lag`` loads ``bench/lag/`` instead, which reports what
stopped the event loop during the measured run: late wake-ups, the stacks the loop was in, and
the cyclic collector's runs (docs/benchmarks.md, item 36)::

    .venv/bin/python bench/threads.py big --seconds 15 --lag
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import run

STORES = {"valid": 10_000, "invalid": 10_000, "big": 1_000_000}


def thread_cpu(pid: int) -> dict[str, tuple[str, int]]:
    """Thread ID -> (name, user + system clock ticks) of every thread of ``pid``."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except FileNotFoundError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[task.name] = (name, int(fields[11]) + int(fields[12]))
    return found


def report_lag(path: Path, began: float, ended: float) -> None:
    """What ``bench/lag/`` saw between ``began`` and ``ended`` (wall clock)."""
    events = [json.loads(line) for line in path.read_text().splitlines()]
    events = [(kind, detail) for at, kind, detail in events if began <= at <= ended]
    late = sorted(detail for kind, detail in events if kind == "late")
    print(
        f"event loop: {len(late)} wake-ups over 3 ms late, {sum(late):,.0f} ms in all;"
        f" over 5 ms {sum(ms > 5 for ms in late)}, over 10 ms {sum(ms > 10 for ms in late)},"
        f" longest {max(late, default=0):.1f} ms"
    )
    collections_by_generation: dict[int, list[float]] = collections.defaultdict(list)
    for kind, detail in events:
        if kind == "gc":
            collections_by_generation[detail[0]].append(detail[1])
    for generation, took in sorted(collections_by_generation.items()):
        print(
            f"  gc generation {generation}: {len(took)} runs, {sum(took):.1f} ms in all,"
            f" longest {max(took):.1f} ms"
        )
    stacks = collections.Counter(detail for kind, detail in events if kind == "stack")
    for stack, samples in stacks.most_common(8):
        print(f"  {samples:5d} samples in {stack[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=sorted(STORES))
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--py-spy", metavar="FILE", help="also record py-spy (raw) into FILE")
    # Each is a sitecustomize.py for the server, and only one of those is ever loaded.
    server_path = parser.add_mutually_exclusive_group()
    server_path.add_argument("--pythonpath", metavar="DIR", help="PYTHONPATH for the server")
    server_path.add_argument(
        "--lag", action="store_true", help="report what stopped the event loop"
    )
    args = parser.parse_args()

    count = STORES[args.mode]
    requests = run.OUT / f"requests-{args.mode}.tsv"
    if not (run.OUT / f"store-{count}.db").exists() or not requests.exists():
        raise SystemExit(f"no seeded store or {requests.name}: run make bench first")
    work = Path(tempfile.mkdtemp(prefix="moeconnect-threads-"))
    for path in run.OUT.glob(f"store-{count}.db*"):
        shutil.copy(path, work / path.name)
    env = {**os.environ, **run.LIMITS_RAISED}
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    lag_out = work / "lag.jsonl"
    if args.lag:
        env["PYTHONPATH"] = str(run.ROOT / "bench" / "lag")
        env["MOECONNECT_LAG_OUT"] = str(lag_out)
    port = run.free_port()
    command = [str(run.BIN / "moeconnect"), "serve", "--port", str(port), "--workers", "1"]
    command += ["--log-level", "warning", "--db", f"sqlite:///{work / f'store-{count}.db'}"]
    server = subprocess.Popen(run.pin(0) + command, env=env, cwd=work, stdout=subprocess.DEVNULL)
    try:
        run.wait_ready(port, server)
        run.fill_cache(port, requests, 32)
        run.wrk(port, requests, 3, 32)
        buffered = [run.gauge(port, "moeconnect_record_buffered_rows")]

        def sample() -> None:  # the buffer swings while a move of staged rows is under way
            for _ in range(args.seconds // 5):
                time.sleep(5)
                buffered.append(run.gauge(port, "moeconnect_record_buffered_rows"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        spy = None
        if args.py_spy:
            record = ["record", "-r", "97", "--threads", "-f", "raw", "-o", args.py_spy]
            spy = subprocess.Popen(
                [str(run.BIN / "py-spy"), *record, "-p", str(server.pid), "-d", str(args.seconds)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        before = thread_cpu(server.pid)
        began = time.time()
        result, non2xx = run.wrk(port, requests, args.seconds, 32)
        ended = time.time()
        after = thread_cpu(server.pid)
        sampler.join()
        if spy is not None:
            spy.wait()
        answered = result.rps * args.seconds
        print(
            f"{args.mode}: {result.rps:,.0f} req/s, p50 {result.p50_ms} ms, p99 {result.p99_ms}"
            f" ms, non-2xx {non2xx}, RSS {run.rss_mb(server.pid):.0f} MB"
        )
        print("record buffer every 5 s: " + " ".join(f"{b:,.0f}" for b in buffered))
        tick = 1e6 / os.sysconf("SC_CLK_TCK")
        for tid, (name, ticks) in sorted(after.items()):
            spent = ticks - before.get(tid, (name, 0))[1]
            if spent > 0:
                print(f"  thread {tid} {name:16s} {spent * tick / answered:6.2f} µs/request")
        if args.lag:
            time.sleep(2.5)  # the probe writes its events every two seconds
            report_lag(lag_out, began, ended)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
