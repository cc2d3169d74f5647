"""A tiny real HTTP server in a thread that answers from a script: 429s, proxy pages, stalls.

For what a moeconnect server can't be made to do on demand (an HTML page from a proxy, a 429 with
a chosen ``Retry-After``), the client and ``check`` are tested against this over a real socket.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["PROXY_PAGE", "SUCCESS", "Answer", "Stub", "json_answer", "stub_server"]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    echo: str | None = None  # "html" or "json": answer with the request's headers and body


@dataclass
class Stub:
    """What the stub saw: arrival times, request headers and bodies."""

    base_url: str
    answers: list[Answer]
    arrivals: list[float] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


def json_answer(status: int, body: str, *headers: tuple[str, str]) -> Answer:
    return Answer(status, body.encode(), (("Content-Type", "application/json"), *headers))


PROXY_PAGE = Answer(
    502,
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    b"</h1></center><hr><center>nginx</center></body></html>",
    (("Content-Type", "text/html"),),
)
SUCCESS = json_answer(200, '{"status": "success", "app_name": "Stubbed"}')


@contextmanager
def stub_server(answers: Sequence[Answer]) -> Iterator[Stub]:
    """Serve ``answers`` in order (the last one repeats) on 127.0.0.1 and a free port."""
    stub = Stub("", list(answers))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with lock:
                stub.arrivals.append(time.monotonic())
                stub.requests.append((dict(self.headers.items()), body))
                index = min(len(stub.arrivals), len(stub.answers)) - 1
                answer = stub.answers[index]
            if answer.delay:
                time.sleep(answer.delay)
            payload = answer.body
            if answer.echo:
                seen = f"Authorization: {self.headers.get('Authorization')} {body.decode()}"
                payload = (
                    f"<html><body><pre>Bad Gateway {seen}</pre></body></html>".encode()
                    if answer.echo == "html"
                    else json.dumps(
                        {"status": "fail", "error": {"message": f"bad request {seen}"}}
                    ).encode()
                )
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    stub.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
