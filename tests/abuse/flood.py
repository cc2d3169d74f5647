"""Flood a server with wrong keys from one address, at a steady rate; print the status counts.

Run as a separate process by the flood test, so the flood's client work does not share an
interpreter (and its GIL) with the client that measures latency.
usage: flood.py BASE_URL SOURCE_IP WORKSPACE_ID COUNT RATE CONCURRENCY
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections import Counter

import httpx


async def main(
    base_url: str, ip: str, workspace_id: str, count: int, rate: float, conc: int
) -> None:
    statuses: Counter[str] = Counter()
    retry_after_missing = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    transport = httpx.AsyncHTTPTransport(local_address=ip)
    started = time.monotonic()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal retry_after_missing
        while True:
            i = await queue.get()
            if i < 0:
                return
            key = f"wrong-key-{i:06d}"
            token = base64.b64encode(f"{workspace_id}:{key}".encode()).decode()
            response = await client.post(
                "/v1/integrations/authentication",
                json={"app_id": workspace_id, "app_secret": key, "source": "flood", "region": "01"},
                headers={"Authorization": f"Basic {token}", "MOE-APPKEY": workspace_id},
            )
            statuses[str(response.status_code)] += 1
            if response.status_code == 429 and "retry-after" not in response.headers:
                retry_after_missing += 1

    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=30) as client:
        workers = [asyncio.create_task(worker(client)) for _ in range(conc)]
        for i in range(count):
            # A steady rate: attempt i leaves at started + i / rate.
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await queue.put(i)
            while queue.qsize() > conc:
                await asyncio.sleep(0.001)
        for _ in workers:
            await queue.put(-1)
        await asyncio.gather(*workers)
    print(
        json.dumps(
            {
                "statuses": statuses,
                "retry_after_missing": retry_after_missing,
                "seconds": time.monotonic() - started,
            }
        )
    )


if __name__ == "__main__":
    url, source, workspace, n, per_second, concurrency = sys.argv[1:7]
    asyncio.run(main(url, source, workspace, int(n), float(per_second), int(concurrency)))
