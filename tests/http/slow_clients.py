"""Clients that hold connections open: some send nothing, some send a head one byte at a time.

Run in its own process by ``test_connections.py`` (``python -m tests.http.slow_clients``), so
that its thousands of sockets and their event loop don't share an interpreter with the client
whose latency is measured. It prints one JSON object: for each kind, how many connections it
opened, how many the server closed (and how long after opening, at the longest), how many were
answered 408, and how many were still open when it gave up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

HEAD = (
    b"POST /v1/integrations/authentication HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n"
)


class Outcome:
    def __init__(self) -> None:
        self.opened = 0
        self.failed_to_open = 0
        self.closed = 0
        self.answered_408 = 0
        self.lifetimes: list[float] = []
        self.open_at_end = 0

    def summary(self) -> dict[str, object]:
        lifetimes = sorted(self.lifetimes)
        return {
            "opened": self.opened,
            "failed_to_open": self.failed_to_open,
            "closed": self.closed,
            "answered_408": self.answered_408,
            "open_at_end": self.open_at_end,
            "longest_s": round(lifetimes[-1], 2) if lifetimes else None,
            "shortest_s": round(lifetimes[0], 2) if lifetimes else None,
        }


class Trickle:
    """Writes the next byte of :data:`HEAD` to every slow connection once a second: one timer
    for all of them, so that the clients' own event loop stays light."""

    def __init__(self) -> None:
        self.writers: dict[asyncio.StreamWriter, int] = {}

    async def run(self, give_up: float) -> None:
        while time.monotonic() < give_up and (self.writers or not self.started):
            for writer, position in list(self.writers.items()):
                if position < len(HEAD) and not writer.is_closing():
                    writer.write(HEAD[position : position + 1])
                    self.writers[writer] = position + 1
            await asyncio.sleep(1.0)

    started = False


async def hold(
    host: str,
    port: int,
    prefix: bytes,
    trickle: Trickle | None,
    give_up: float,
    outcome: Outcome,
) -> None:
    """One connection: send ``prefix`` at once, then (``trickle``) the head a byte a second;
    wait for the server to close it, or until ``give_up`` (monotonic)."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        outcome.failed_to_open += 1
        return
    opened = time.monotonic()
    outcome.opened += 1
    received = b""
    closed = False
    try:
        if prefix:
            writer.write(prefix)
        if trickle is not None:
            trickle.writers[writer] = 0
            trickle.started = True
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), give_up - time.monotonic())
            if not chunk:
                closed = True
                break
            received += chunk
    except TimeoutError:
        pass
    except (ConnectionError, OSError):
        closed = True
    finally:
        if trickle is not None:
            trickle.writers.pop(writer, None)
        if closed:
            outcome.closed += 1
            outcome.lifetimes.append(time.monotonic() - opened)
            if received.startswith(b"HTTP/1.1 408 "):
                outcome.answered_408 += 1
        else:
            outcome.open_at_end += 1
        writer.close()


async def attack(args: argparse.Namespace) -> dict[str, object]:
    give_up = time.monotonic() + args.give_up
    kinds = {"silent": Outcome(), "slow": Outcome(), "partial": Outcome()}
    prefix = b"GET / HTTP/1.1\r\nX-Partial: " + b"x" * args.partial_bytes
    trickle = Trickle()
    plan = (
        [("silent", b"", None)] * args.silent
        + [("slow", b"", trickle)] * args.slow
        + [("partial", prefix, None)] * args.partial
    )
    tasks = [asyncio.ensure_future(trickle.run(give_up))]
    # Opened in batches: a burst of thousands at once overflows the accept backlog, and the
    # kernel's SYN retries (1 s, 3 s) would only blur what is measured.
    for start in range(0, len(plan), args.batch):
        for kind, data, slow in plan[start : start + args.batch]:
            task = hold(args.host, args.port, data, slow, give_up, kinds[kind])
            tasks.append(asyncio.ensure_future(task))
        await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    return {kind: outcome.summary() for kind, outcome in kinds.items() if outcome.opened}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--silent", type=int, default=0)
    parser.add_argument("--slow", type=int, default=0)
    parser.add_argument("--partial", type=int, default=0, help="connections with a big half-head")
    parser.add_argument("--partial-bytes", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--give-up", type=float, default=20.0, help="seconds, then stop waiting")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.silent + args.slow + args.partial + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise SystemExit(f"the hard open-file limit is {hard}; {wanted} are needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop  # the server's own loop: ~3x lighter than asyncio's for this many sockets

        uvloop.install()
    except ImportError:  # pragma: no cover - installed with the server
        pass
    print(json.dumps(asyncio.run(attack(args))), flush=True)


if __name__ == "__main__":
    main()
