"""What the scale tests share: the Test Connection request, an in-process server, worker lookup."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from moeconnect.config import Settings
from moeconnect.http.app import MoeconnectApp, create_app
from moeconnect.testing import free_port

PATH = "/v1/integrations/authentication"
# These tests hammer one workspace from one address on purpose: abuse limits would only get in
# the way of what they measure.
NO_LIMITS = {
    "MOECONNECT_LIMIT_FAILED_PER_IP": "off",
    "MOECONNECT_LIMIT_FAILED_PER_WORKSPACE": "off",
    "MOECONNECT_LIMIT_PER_WORKSPACE": "off",
}


def request_kwargs(workspace_id: str, key: str) -> dict[str, Any]:
    """The arguments of a well-formed Test Connection request for ``workspace_id``/``key``."""
    return {
        "auth": (workspace_id, key),
        "headers": {"MOE-APPKEY": workspace_id},
        "json": {"app_id": workspace_id, "app_secret": key, "source": "scale", "region": "01"},
    }


def code_of(response: httpx.Response) -> str:
    """``SUCCESS`` or the error code in the body."""
    body = response.json()
    if body.get("status") == "success":
        return "SUCCESS"
    return str(body["error"]["code"])


class InProcessServer:
    """The real app under a real uvicorn server, in a background thread of this process.

    In-process so a test can look inside (count the store's queries, read the cache) while
    requests still arrive over a socket.
    """

    def __init__(self, settings: Settings) -> None:
        self.app: MoeconnectApp = create_app(settings)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",
            lifespan="on",
            log_config=None,
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve())

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's event loop (where its store and cache live)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("in-process server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


# -- which worker process holds a connection --------------------------------------------------


def children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _socket_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server-side socket of the TCP connection from ``client_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if (
                int(local.rsplit(":", 1)[1], 16) == server_port
                and int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                return inode
    return None


def worker_holding(workers: list[int], server_port: int, client_port: int) -> int | None:
    """Which of ``workers`` accepted the connection from local ``client_port``."""
    inode = _socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in workers:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None
