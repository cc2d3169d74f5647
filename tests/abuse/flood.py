"""Flood a server with wrong keys from one address or several, at a steady rate; print the
status counts.

Run as a separate process by the flood and lockout tests. The requests are prebuilt bytes written
to raw keep-alive sockets, so the generator costs this machine little CPU beside the server's own
work. SOURCE_IPS is one address or a comma-separated list: connection i comes from address
i mod len(list).
usage: flood.py BASE_URL SOURCE_IPS WORKSPACE_ID COUNT RATE CONCURRENCY
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from collections import Counter
from urllib.parse import urlsplit


def request(host: str, workspace_id: str, i: int) -> bytes:
    key = f"wrong-key-{i:06d}"
    token = base64.b64encode(f"{workspace_id}:{key}".encode()).decode()
    body = json.dumps(
        {"app_id": workspace_id, "app_secret": key, "source": "flood", "region": "01"}
    ).encode()
    head = (
        f"POST /v1/integrations/authentication HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Basic {token}\r\nMOE-APPKEY: {workspace_id}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def main(
    base_url: str, ips: list[str], workspace_id: str, count: int, rate: float, conc: int
) -> None:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    statuses: Counter[str] = Counter()
    retry_after_missing = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    started = time.monotonic()

    async def worker(ip: str) -> None:
        nonlocal retry_after_missing
        reader, writer = await asyncio.open_connection(host, port, local_addr=(ip, 0))
        while True:
            i = await queue.get()
            if i < 0:
                writer.close()
                return
            writer.write(request(url.netloc, workspace_id, i))
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = lines[0].split()[1]
            fields = dict(
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            )
            await reader.readexactly(int(fields["content-length"]))
            statuses[status] += 1
            if status == "429" and "retry-after" not in fields:
                retry_after_missing += 1

    workers = [asyncio.create_task(worker(ips[n % len(ips)])) for n in range(conc)]
    next_at = started
    for i in range(count):
        # A steady rate while running; after a pause (SIGSTOP) no burst to catch up.
        now = time.monotonic()
        if next_at > now:
            await asyncio.sleep(next_at - now)
        else:
            next_at = now
        next_at += 1 / rate
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
    # A real attacker's requests cost this machine only the server's work. Here the generator
    # shares two cores with the server and the honest clients, so it yields the CPU to them: the
    # server still answers every one of its requests, at whatever rate the generator achieves.
    os.nice(10)
    url, source, workspace, n, per_second, concurrency = sys.argv[1:7]
    sources = source.split(",")
    asyncio.run(main(url, sources, workspace, int(n), float(per_second), int(concurrency)))
