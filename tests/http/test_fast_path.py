"""The HTTP protocol's fast path (``http/protocol.py``), over raw sockets to a real server.

A warm repeat of a success is answered by the protocol before any ASGI task exists. What must
hold: the bytes on the wire are those the app would send, requests the protocol does not hold are
answered by the app as before, pipelined requests keep their order, and a body that arrives in
pieces or is too large is handled like any other. ``moeconnect_warm_answers_total{via}`` tells
which path answered.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from moeconnect.checks import MAX_BODY
from moeconnect.keys import generate_key
from moeconnect.testing import MoeconnectServer

from .wire import PATH


def _request(
    workspace_id: str,
    key: str,
    *,
    target: str = PATH,
    version: str = "HTTP/1.1",
    extra: tuple[str, ...] = (),
    body: bytes | None = None,
    chunked: bool = False,
) -> tuple[bytes, bytes]:
    """(head, body) of a Test Connection request, as a client writes it."""
    if body is None:
        body = orjson.dumps(
            {"app_id": workspace_id, "app_secret": key, "source": "fast-path", "region": "01"}
        )
    token = base64.b64encode(f"{workspace_id}:{key}".encode()).decode()
    lines = [
        f"POST {target} {version}",
        "Host: 127.0.0.1",
        f"Authorization: Basic {token}",
        f"MOE-APPKEY: {workspace_id}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}",
        *extra,
    ]
    if chunked:
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


class _Connection:
    """One keep-alive connection that reads whole responses (Content-Length framed); a context
    manager that closes it."""

    def __init__(self, server: MoeconnectServer) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buffer += chunk

    def response(self) -> tuple[int, list[tuple[str, str]], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = [(n.lower(), v.strip()) for n, v in (line.split(":", 1) for line in lines)]
        length = int(dict(headers).get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _warm_answers(server: MoeconnectServer) -> dict[str, float]:
    text = httpx.get(server.base_url + "/metrics").text
    return {
        sample.labels["via"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "moeconnect_warm_answers_total"
    }


def _until_counted(
    server: MoeconnectServer,
    connection: _Connection,
    request: bytes,
    counted: Callable[[MoeconnectServer], float],
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send ``request`` until the metric ``counted`` reads goes up; that response.

    The first answer always comes from the app. The next may too: the change feed can drop the
    just-loaded record when it reports the workspace's creation a moment later.
    """
    deadline = time.monotonic() + 5
    while True:
        before = counted(server)
        connection.send(request)
        response = connection.response()
        if counted(server) > before:
            return response
        assert time.monotonic() < deadline, "the protocol never answered it"
        time.sleep(0.05)


_Response = tuple[int, list[tuple[str, str]], bytes]


def _app_then_protocol(
    server: MoeconnectServer,
    request: bytes,
    until: Callable[[MoeconnectServer, _Connection, bytes], _Response],
) -> tuple[_Response, _Response]:
    """The app's answer to ``request`` (the first always comes from the app), then the
    protocol's to the same bytes, once ``until`` sees the protocol answer."""
    with _Connection(server) as connection:
        connection.send(request)
        cold = connection.response()
        return cold, until(server, connection, request)


def _until_warm(
    server: MoeconnectServer, connection: _Connection, request: bytes
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send ``request`` until the protocol answers it as a warm success; that response."""
    return _until_counted(server, connection, request, lambda s: _warm_answers(s)["protocol"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    """One server for the module: every test makes its own workspace and counts differences."""
    with MoeconnectServer(workdir=tmp_path_factory.mktemp("fast-path")) as running:
        yield running


@pytest.fixture
def workspace(server: MoeconnectServer) -> tuple[str, str]:
    """A workspace and key whose requests the fast path already answers."""
    workspace_id, key = server.workspace_with_key("Fast path")
    # Written by this process: the server hears of it through its change feed (polled every
    # 0.25 s), which drops a record loaded before the poll. After this, no poll is pending.
    time.sleep(0.6)
    with _Connection(server) as connection:
        _until_warm(server, connection, b"".join(_request(workspace_id, key)))
    return workspace_id, key


def test_a_warm_answer_is_what_the_app_would_have_sent(server: MoeconnectServer) -> None:
    workspace_id, key = server.workspace_with_key("Fast path")
    cold, warm = _app_then_protocol(server, b"".join(_request(workspace_id, key)), _until_warm)
    assert cold[0] == warm[0] == 200
    assert cold[2] == warm[2] == b'{"status":"success","app_name":"Fast path"}'
    # The same headers in the same order; only the request ID and the limit counters move.
    assert [name for name, _ in cold[1]] == [name for name, _ in warm[1]]
    moving = {"date", "x-request-id", "x-ratelimit-remaining", "x-ratelimit-reset"}
    assert [h for h in cold[1] if h[0] not in moving] == [h for h in warm[1] if h[0] not in moving]
    assert dict(cold[1])["x-request-id"] != dict(warm[1])["x-request-id"]
    # Default limits: the tightest is the failed attempts per IP, which successes don't use.
    assert dict(warm[1])["x-ratelimit-limit"] == "30"
    assert dict(warm[1])["x-ratelimit-remaining"] == dict(cold[1])["x-ratelimit-remaining"]


def test_a_caller_request_id_is_echoed_by_the_fast_path(
    server: MoeconnectServer, workspace: tuple[str, str]
) -> None:
    workspace_id, key = workspace
    before = _warm_answers(server)["protocol"]
    with _Connection(server) as connection:
        for request_id in ("first-request-id", "second-request-id"):
            head, body = _request(workspace_id, key, extra=(f"X-Request-ID: {request_id}",))
            connection.send(head + body)
            status, headers, _ = connection.response()
            assert status == 200
            assert dict(headers)["x-request-id"] == request_id
    assert _warm_answers(server)["protocol"] == before + 2


@pytest.mark.parametrize(
    ("variant", "options"),
    [
        ("a query string", {"target": PATH + "?debug=1"}),
        ("HTTP/1.0", {"version": "HTTP/1.0"}),
        ("Connection: close", {"extra": ("Connection: close",)}),
    ],
)
def test_requests_the_protocol_does_not_hold_are_answered_by_the_app(
    server: MoeconnectServer, workspace: tuple[str, str], variant: str, options: dict
) -> None:
    workspace_id, key = workspace
    before = _warm_answers(server)
    head, body = _request(workspace_id, key, **options)
    with _Connection(server) as connection:
        connection.send(head + body)
        status, _, answer = connection.response()
    assert (status, orjson.loads(answer)["status"]) == (200, "success"), variant
    after = _warm_answers(server)
    assert after["protocol"] == before["protocol"], variant
    assert after["asgi"] == before["asgi"] + 1, variant


def test_expect_100_continue_is_left_to_the_app(
    server: MoeconnectServer, workspace: tuple[str, str]
) -> None:
    workspace_id, key = workspace
    before = _warm_answers(server)
    with _Connection(server) as connection:
        head, body = _request(workspace_id, key, extra=("Expect: 100-continue",))
        connection.send(head)
        while b"\r\n\r\n" not in connection.buffer:
            connection._fill()
        assert connection.buffer.startswith(b"HTTP/1.1 100 Continue\r\n")
        connection.buffer = connection.buffer.split(b"\r\n\r\n", 1)[1]
        connection.send(body)
        assert connection.response()[0] == 200
    after = _warm_answers(server)
    assert after == {"protocol": before["protocol"], "asgi": before["asgi"] + 1}


def test_pipelined_requests_are_answered_in_order(
    server: MoeconnectServer, workspace: tuple[str, str]
) -> None:
    workspace_id, key = workspace
    good = b"".join(_request(workspace_id, key))
    wrong = b"".join(_request(workspace_id, "moe_data_wrongwrongwrongwrongwrongwrong"))
    before = _warm_answers(server)["protocol"]
    with _Connection(server) as connection:
        # A warm one, one the app must answer (a failure needs the store), and a warm one
        # queued behind it: answered in the order they were sent.
        connection.send(good + wrong + good + good)
        statuses = [connection.response()[0] for _ in range(4)]
    assert statuses == [200, 401, 200, 200]
    # The first is the protocol's; the last may be too, once the app's answer went out.
    assert _warm_answers(server)["protocol"] >= before + 1


def test_a_body_in_pieces_and_a_chunked_body_are_answered(
    server: MoeconnectServer, workspace: tuple[str, str]
) -> None:
    workspace_id, key = workspace
    before = _warm_answers(server)["protocol"]
    with _Connection(server) as connection:
        head, body = _request(workspace_id, key)
        connection.send(head + body[:10])
        time.sleep(0.05)
        connection.send(body[10:])
        assert connection.response()[0] == 200
        head, body = _request(workspace_id, key, chunked=True)
        connection.send(head + body)
        assert connection.response()[0] == 200
    assert _warm_answers(server)["protocol"] == before + 2


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_refused_by_the_app(
    server: MoeconnectServer, workspace: tuple[str, str], chunked: bool
) -> None:
    workspace_id, key = workspace
    head, body = _request(workspace_id, key, body=b"x" * (MAX_BODY + 1), chunked=chunked)
    with _Connection(server) as connection:
        connection.send(head)
        # In pieces, as a large upload arrives: the protocol stops holding past the limit.
        for start in range(0, len(body), 16 * 1024):
            try:
                connection.send(body[start : start + 16 * 1024])
            except (BrokenPipeError, ConnectionResetError):
                break  # the server may answer and close before the rest is sent
        status, _, answer = connection.response()
    assert status == 413
    assert orjson.loads(answer)["error"]["code"] == "PAYLOAD_TOO_LARGE"


# -- refusals ------------------------------------------------------------------------------------
# A repeat of a request the cached record refuses is answered by the protocol too, once a
# change-feed poll that started after it arrived has left that record in place.

_WRONG = generate_key("data")  # well-formed (rows 6–12 pass), nobody's key


def _protocol_refusals(server: MoeconnectServer) -> float:
    text = httpx.get(server.base_url + "/metrics").text
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "moeconnect_protocol_refusals_total"
    )


def _until_refused_early(
    server: MoeconnectServer, connection: _Connection, request: bytes
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send ``request`` until the protocol refuses it; that response."""
    return _until_counted(server, connection, request, _protocol_refusals)


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    """A server whose limits never trip: the tests below send many refusals from one IP."""
    off = {
        "MOECONNECT_LIMIT_FAILED_PER_IP": "off",
        "MOECONNECT_LIMIT_FAILED_PER_WORKSPACE": "off",
        "MOECONNECT_LIMIT_PER_WORKSPACE": "off",
    }
    with MoeconnectServer(workdir=tmp_path_factory.mktemp("refusals"), env=off) as running:
        yield running


def test_a_repeated_refusal_is_what_the_app_would_have_sent(unlimited: MoeconnectServer) -> None:
    workspace_id, _key = unlimited.workspace_with_key("Refused")
    request = b"".join(_request(workspace_id, _WRONG))
    cold, early = _app_then_protocol(unlimited, request, _until_refused_early)
    assert cold[0] == early[0] == 401
    cold_body, early_body = orjson.loads(cold[2]), orjson.loads(early[2])
    assert early_body["error"]["code"] == "KEY_MISMATCH"
    assert early_body["error"]["request_id"] == dict(early[1])["x-request-id"]
    cold_body["error"].pop("request_id"), early_body["error"].pop("request_id")
    assert cold_body == early_body
    # The same headers in the same order, WWW-Authenticate included; only the date and the
    # request ID may differ.
    moving = {"date", "x-request-id"}
    assert [h for h in cold[1] if h[0] not in moving] == [h for h in early[1] if h[0] not in moving]
    assert [name for name, _ in cold[1]] == [name for name, _ in early[1]]


def test_pipelined_refusals_and_successes_keep_their_order(unlimited: MoeconnectServer) -> None:
    workspace_id, key = unlimited.workspace_with_key("Pipelined refusals")
    good = b"".join(_request(workspace_id, key))
    wrong = b"".join(_request(workspace_id, _WRONG))
    with _Connection(unlimited) as connection:
        _until_refused_early(unlimited, connection, wrong)
        _until_warm(unlimited, connection, good)
        before = _protocol_refusals(unlimited)
        # A refusal waits for the change feed: what comes behind it waits for its answer.
        connection.send(wrong + good + wrong + wrong + good)
        answers = [connection.response() for _ in range(5)]
    assert [status for status, _, _ in answers] == [401, 200, 401, 401, 200]
    assert orjson.loads(answers[1][2])["status"] == "success"
    assert _protocol_refusals(unlimited) >= before + 1


def test_a_remembered_refusal_gives_way_to_a_change_made_elsewhere(
    unlimited: MoeconnectServer,
) -> None:
    """A workspace resumed by another process a moment ago works at once, although the same
    request was refused by the protocol just before: the change-feed poll the refusal waits
    for drops the cached record, and the app answers from the store."""
    workspace_id, key = unlimited.workspace_with_key("Resumed")
    request = b"".join(_request(workspace_id, key))
    unlimited.suspend(workspace_id)
    with _Connection(unlimited) as connection:
        status, _, body = _until_refused_early(unlimited, connection, request)
        assert (status, orjson.loads(body)["error"]["code"]) == (403, "WORKSPACE_SUSPENDED")
        unlimited.resume(workspace_id)  # the regular poll is at most 0.25 s away: be quick
        before = _protocol_refusals(unlimited)
        connection.send(request)
        status, _, body = connection.response()
    assert (status, orjson.loads(body)["status"]) == (200, "success")
    assert _protocol_refusals(unlimited) == before


def test_refusals_answered_by_the_protocol_are_recorded(unlimited: MoeconnectServer) -> None:
    workspace_id, _key = unlimited.workspace_with_key("Recorded refusals")
    request = b"".join(_request(workspace_id, _WRONG))
    before = _protocol_refusals(unlimited)
    with _Connection(unlimited) as connection:
        for _ in range(30):
            connection.send(request)
            assert connection.response()[0] == 401
    assert _protocol_refusals(unlimited) >= before + 20

    def recorded() -> int:
        page = unlimited.run(lambda a: a.store.list_attempts(workspace_id, limit=1000))
        return sum(row.count for row in page.items if row.outcome == "KEY_MISMATCH")

    deadline = time.monotonic() + 10
    while recorded() < 30 and time.monotonic() < deadline:
        time.sleep(0.1)
    # Every refusal, whoever answered it: one row each (failures are never aggregated).
    assert recorded() == 30


def test_refusals_answered_by_the_protocol_count_against_the_limits(
    tmp_path: Path,
) -> None:
    env = {"MOECONNECT_LIMIT_FAILED_PER_IP": "6/minute"}
    with MoeconnectServer(workdir=tmp_path, env=env) as server:
        workspace_id, _key = server.workspace_with_key("Limited")
        request = b"".join(_request(workspace_id, _WRONG))
        with _Connection(server) as connection:
            answers = []
            for _ in range(8):
                connection.send(request)
                answers.append(connection.response())
        early = _protocol_refusals(server)
    assert [status for status, _, _ in answers] == [401] * 6 + [429] * 2
    assert [dict(h)["x-ratelimit-remaining"] for _, h, _ in answers[:6]] == [
        "5",
        "4",
        "3",
        "2",
        "1",
        "0",
    ]
    assert orjson.loads(answers[6][2])["error"]["code"] == "RATE_LIMITED"
    assert "retry-after" in dict(answers[7][1])
    assert early >= 1, "no refusal was answered by the protocol: this test tests nothing"
