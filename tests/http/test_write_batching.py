"""The protocol writes fast-path answers once the loop has read the requests of its turn.

In process, with a recording transport: what is asserted is *when* the bytes are written, which
a socket can't show. (``test_fast_path.py`` checks the bytes themselves over real sockets.)
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from moeconnect.http.protocol import BoundedHttpToolsProtocol

ANSWER = b"content-length: 2\r\n\r\n{}"
REQUEST = b"POST /v1/integrations/authentication HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


class _Transport(asyncio.Transport):
    def __init__(self, written: list[tuple[int, bytes]], number: int) -> None:
        super().__init__()
        self.written, self.number, self.closing = written, number, False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000 + self.number), "sockname": ("127.0.0.1", 80)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.written.append((self.number, bytes(data)))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _App:
    """An app whose every request is answered at once by the fast path."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the fast path answers every request here")

    def answer_at_once(self, headers: Any, body: bytes, client: Any) -> bytes:
        return ANSWER


def _config() -> Config:
    config = Config(app=_App(), http=BoundedHttpToolsProtocol, lifespan="off", proxy_headers=False)
    config.load()
    return config


def test_answers_to_one_turns_requests_are_written_after_all_are_read() -> None:
    async def go() -> None:
        config = _config()
        state = ServerState()
        written: list[tuple[int, bytes]] = []
        protocols = []
        for number in range(3):
            protocol = BoundedHttpToolsProtocol(config, state, {}, asyncio.get_running_loop())
            protocol.connection_made(_Transport(written, number))
            protocols.append(protocol)
        for protocol in protocols:  # as the loop delivers one turn's reads
            protocol.data_received(REQUEST)
        assert written == []  # answered, but nothing written while requests are being read
        await asyncio.sleep(0)
        assert [number for number, _ in written] == [0, 1, 2]
        assert all(data.startswith(b"HTTP/1.1 200 OK\r\n") for _, data in written)
        assert all(data.endswith(ANSWER) for _, data in written)
        # Each connection is ready for its next request, which is answered the same way.
        protocols[0].data_received(REQUEST)
        await asyncio.sleep(0)
        assert [number for number, _ in written] == [0, 1, 2, 0]
        for protocol in protocols:
            protocol.connection_lost(None)

    asyncio.run(go())


def test_an_answered_request_leaves_nothing_for_the_cyclic_collector() -> None:
    """What stands in for uvicorn's cycle goes when its answer is written. One that referred to
    itself waited for the cyclic collector, whose run every ~50,000 answers stopped the event
    loop for 30-40 ms (the benchmark's p99 with 150,000 workspaces)."""

    def parked() -> int:
        return sum(type(o).__name__ == "_Parked" for o in gc.get_objects())

    async def go() -> None:
        loop = asyncio.get_running_loop()
        protocol = BoundedHttpToolsProtocol(_config(), ServerState(), {}, loop)
        written: list[tuple[int, bytes]] = []
        protocol.connection_made(_Transport(written, 0))
        before = parked()
        for _ in range(50):
            protocol.data_received(REQUEST)
            await asyncio.sleep(0)
        assert len(written) == 50
        assert parked() - before <= 1  # the connection's current cycle, replaced by the next
        protocol.connection_lost(None)

    gc.collect()
    gc.disable()
    try:
        asyncio.run(go())
    finally:
        gc.enable()
