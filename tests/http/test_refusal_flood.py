"""Issue 22, must-show 8: refusals made before the rate limits can't grow the store.

One address sends 200,000 malformed requests (a bad ``Authorization``: 401 AUTH_MALFORMED,
answered before row 5) pipelined over a few raw connections to a real server on SQLite with the
default limits. They count against the address's failure limit (30 a minute), so all but the
first few are answered 429; and they are aggregated in the record per outcome, address and
minute, like 429s, so the store grows by a few rows, not 200,000 (before: one row each, 107 MB
for 210,000). A normal client from another address is served throughout.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from moeconnect.testing import MoeconnectServer

from ..abuse.helpers import PATH, attempt, client_from, fresh_loopback

FLOOD = 200_000
CONNECTIONS = 8
PIPELINE = 250  # requests written at once on a connection before reading their answers
# What the store may grow by (database + WAL) for the whole flood: one aggregate row per outcome,
# address and minute, re-upserted every few seconds; the WAL's own growth dominates.
GROWTH_BOUND = 2 * 1024 * 1024
# Rows of the record after the flood: 2 outcomes (AUTH_MALFORMED, RATE_LIMITED) per minute the
# flood spans (at most 3 at the slowest), and the normal client's successes (a row a minute).
ROW_BOUND = 12
SECONDS_BOUND = 60.0  # the "in a minute"


def _malformed(host: str) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Authorization: Basic !!not-base64!!\r\nContent-Length: 2\r\n\r\n{}"
    ).encode()


async def _flood(host: str, port: int, ip: str, count: int, statuses: Counter[bytes]) -> None:
    """``count`` malformed requests on one keep-alive connection, ``PIPELINE`` at a time."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(ip, 0))
    request = _malformed(f"{host}:{port}")
    marker = b"HTTP/1.1 "
    pending = b""
    sent = answered = 0
    while answered < count:
        if sent == answered:
            batch = min(PIPELINE, count - sent)
            writer.write(request * batch)
            sent += batch
            await writer.drain()
        chunk = await reader.read(1 << 16)
        assert chunk, "the server closed the connection"
        data = pending + chunk
        position = 0
        while True:
            found = data.find(marker, position)
            if found < 0 or found + len(marker) + 3 > len(data):
                # Keep what may be the start of the next status line.
                keep = found if found >= 0 else max(position, len(data) - len(marker) - 3)
                pending = data[keep:]
                break
            statuses[data[found + len(marker) : found + len(marker) + 3]] += 1
            answered += 1
            position = found + len(marker) + 3
    writer.close()
    await writer.wait_closed()


def _store_size(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


def _rows(db: Path) -> list[tuple[str, str | None, int]]:
    with sqlite3.connect(db) as conn:
        rows = []
        for table in ("connection_attempts", "connection_attempts_staged"):
            rows += conn.execute(f"SELECT outcome, client_ip, count FROM {table}").fetchall()  # noqa: S608
        return rows


@pytest.mark.slow
def test_a_flood_of_malformed_requests_is_throttled_and_aggregated(tmp_path: Path) -> None:
    with MoeconnectServer(workdir=tmp_path) as server:
        workspace_id, key = server.workspace_with_key("Honest")
        db = tmp_path / "moeconnect.db"
        flood_ip, honest_ip = fresh_loopback(), fresh_loopback()
        statuses: Counter[bytes] = Counter()
        honest: list[int] = []

        async def normal_client(done: asyncio.Event) -> None:
            async with client_from(honest_ip, server.base_url) as client:
                while not done.is_set():
                    response = await client.post(PATH, **attempt(workspace_id, key))
                    honest.append(response.status_code)
                    await asyncio.sleep(0.5)
                # And once the flood is over.
                response = await client.post(PATH, **attempt(workspace_id, key))
                honest.append(response.status_code)

        async def scenario() -> float:
            done = asyncio.Event()
            client = asyncio.create_task(normal_client(done))
            started = time.monotonic()
            share = FLOOD // CONNECTIONS
            await asyncio.gather(
                *(
                    _flood(server.host, server.port, flood_ip, share, statuses)
                    for _ in range(CONNECTIONS)
                )
            )
            elapsed = time.monotonic() - started
            done.set()
            await client
            return elapsed

        size_before = _store_size(db)
        rows_before = len(_rows(db))
        elapsed = asyncio.run(scenario())
        time.sleep(1.0)  # the record's next writes
        running = _store_size(db)
        server.stop()  # writes whatever the record still holds

    growth = max(running, _store_size(db)) - size_before
    rows = _rows(db)[rows_before:]
    flood_rows = [r for r in rows if r[1] == flood_ip]
    print(
        f"\n{FLOOD:,} malformed requests from one address in {elapsed:.1f} s "
        f"({FLOOD / elapsed:,.0f}/s): answers {dict(statuses)}; store +{growth:,} bytes "
        f"(bound {GROWTH_BOUND:,}), {len(rows)} new rows (bound {ROW_BOUND}): {rows}; "
        f"normal client: {Counter(honest)}"
    )
    assert sum(statuses.values()) == FLOOD
    # The first 30 refusals (the default limit) as themselves, then 429: at most the requests
    # already being answered may slip past the count.
    assert statuses[b"401"] <= 30 + CONNECTIONS, statuses
    assert statuses[b"429"] == FLOOD - statuses[b"401"], statuses
    assert elapsed <= SECONDS_BOUND
    # The store grew by a bounded amount, and the record still counts every attempt.
    assert growth <= GROWTH_BOUND
    assert len(rows) <= ROW_BOUND
    assert sum(r[2] for r in flood_rows) == FLOOD
    assert {r[0] for r in flood_rows} == {"AUTH_MALFORMED", "RATE_LIMITED"}
    # The other address was served all along.
    assert len(honest) >= 2 and set(honest) == {200}, Counter(honest)
