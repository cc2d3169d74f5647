"""Body limits on every route Starlette serves: the dashboard (sign-in included) and the admin
API refuse an oversized body with 413 in the envelope before reading it whole (issue 22, items 4
and 9; SPEC section 9). Against a real server over a socket.
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from moeconnect.http.bodies import ADMIN_MAX_BODY, DASHBOARD_MAX_BODY, SIGN_IN_MAX_BODY
from moeconnect.testing import MoeconnectServer

MiB = 1024 * 1024
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    with MoeconnectServer(workdir=tmp_path_factory.mktemp("bodies")) as running:
        yield running


@pytest.fixture(scope="module")
def token(srv: MoeconnectServer) -> str:
    return srv.run(lambda accounts: accounts.create_token("bodies")).token


def _csrf(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def sign_in(server: MoeconnectServer, token: str) -> tuple[httpx.Client, str]:
    """A signed-in client and the CSRF token of the new-workspace form."""
    client = httpx.Client(base_url=server.base_url, timeout=15)
    page = client.get("/dashboard/sign-in")
    answer = client.post("/dashboard/sign-in", data={"csrf": _csrf(page.text), "token": token})
    assert answer.status_code == 303, answer.text
    return client, _csrf(client.get("/dashboard/workspaces/new").text)


def assert_too_large(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 413, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert str(limit) in error["message"]
    assert response.headers["connection"] == "close"


def test_admin_api_refuses_an_oversized_json_body(srv: MoeconnectServer, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=srv.base_url + "/admin/v1", headers=auth, timeout=15) as admin:
        # Exactly at the limit: read and handled.
        document = b'{"name": "At the limit"}'
        at_limit = document + b" " * (ADMIN_MAX_BODY - len(document))
        assert admin.post("/workspaces", content=at_limit).status_code == 201
        # One byte over, declared in Content-Length.
        assert_too_large(admin.post("/workspaces", content=at_limit + b" "), ADMIN_MAX_BODY)

        # Over, without a Content-Length (chunked): counted as it arrives.
        def chunks() -> Iterator[bytes]:
            yield b'{"name": "Chunked"'
            for _ in range(20):
                yield b" " * 4096
            yield b"}"

        assert_too_large(admin.post("/workspaces", content=chunks()), ADMIN_MAX_BODY)
        # Before authentication too: the body is refused before anything is read.
        anonymous = httpx.post(srv.base_url + "/admin/v1/workspaces", content=at_limit + b" ")
        assert_too_large(anonymous, ADMIN_MAX_BODY)
        names = [w["name"] for w in admin.get("/workspaces").json()["items"]]
        assert "Chunked" not in names


def test_sign_in_refuses_an_oversized_form(srv: MoeconnectServer) -> None:
    with httpx.Client(base_url=srv.base_url, timeout=15) as client:
        csrf = _csrf(client.get("/dashboard/sign-in").text)
        big = client.post(
            "/dashboard/sign-in", data={"csrf": csrf, "token": "x" * SIGN_IN_MAX_BODY}
        )
        assert_too_large(big, SIGN_IN_MAX_BODY)
        # Issue 22 item 4: a single field over 1 MB used to be Starlette's 400, reported as 404.
        multipart = client.post(
            "/dashboard/sign-in",
            data={"csrf": csrf},
            files={"token": (None, b"x" * (MiB + 1))},
        )
        assert_too_large(multipart, SIGN_IN_MAX_BODY)


def test_signed_in_form_refuses_an_oversized_body(srv: MoeconnectServer, token: str) -> None:
    client, csrf = sign_in(srv, token)
    try:
        name = "Oversized " + "x" * DASHBOARD_MAX_BODY
        answer = client.post("/dashboard/workspaces/new", data={"csrf": csrf, "name": name})
        assert_too_large(answer, DASHBOARD_MAX_BODY)

        def chunks() -> Iterator[bytes]:
            yield f"csrf={csrf}&name=Chunked+".encode()
            for _ in range(10):
                yield b"x" * 4096

        answer = client.post(
            "/dashboard/workspaces/new", content=chunks(), headers={"content-type": FORM}
        )
        assert_too_large(answer, DASHBOARD_MAX_BODY)
        # Still signed in and working: a normal form is accepted.
        fine = client.post("/dashboard/workspaces/new", data={"csrf": csrf, "name": "Fine"})
        assert fine.status_code == 303, fine.text[:300]
    finally:
        client.close()


def test_a_form_parser_refusal_is_a_400_in_the_envelope(srv: MoeconnectServer) -> None:
    """Starlette's own 400s (too many fields, a file where none is taken) stay 400s."""
    with httpx.Client(base_url=srv.base_url, timeout=15) as client:
        many = client.post(
            "/dashboard/sign-in", content=b"a&" * 1001, headers={"content-type": FORM}
        )
        assert many.status_code == 400, many.text[:300]
        assert many.json()["error"]["code"] == "VALIDATION_ERROR"
        assert "fields" in many.json()["error"]["message"]
        upload = client.post("/dashboard/sign-in", files={"token": ("t.txt", b"x")})
        assert upload.status_code == 400, upload.text[:300]
        assert upload.json()["error"]["code"] == "VALIDATION_ERROR"


def test_a_truncated_sign_in_post_logs_no_error(srv: MoeconnectServer) -> None:
    """A client that declares a body and hangs up early is not an error of the server."""
    before = len(srv.logs())
    for _ in range(3):
        with socket.create_connection((srv.host, srv.port), timeout=5) as sock:
            sock.sendall(
                b"POST /dashboard/sign-in HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 1000\r\n\r\ncsrf=abc&token="
            )
    # Answered in order: once this is served, the three above have been handled.
    time.sleep(0.5)
    assert httpx.get(srv.base_url + "/healthz", timeout=10).status_code == 200
    time.sleep(0.5)
    logs = srv.logs()[before:]
    assert '"level":"error"' not in logs.replace(" ", ""), logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]


# -- not buffered: a huge body is refused early, and the server's memory does not grow ----------


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes: now, and the most it ever held."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (
        int(fields["VmRSS"].split()[0]) * 1024,
        int(fields["VmHWM"].split()[0]) * 1024,
    )


_BLOCK = b"f=" + b"x" * (1_000_000 - 3) + b"&"  # a field under Starlette's 1 MB part limit


def _send_until_answered(
    server: MoeconnectServer, head: bytes, total: int, chunked: bool, timeout: float = 20.0
) -> tuple[bytes, int]:
    """Send ``head``, then up to ``total`` body bytes (1 MB form fields) while reading; stop at
    the first complete answer. Returns the answer and how many bytes had been written when it
    began to arrive (b"" and -1 when none came within ``timeout``)."""
    sock = socket.create_connection((server.host, server.port), timeout=5)
    sock.sendall(head)
    sock.setblocking(False)
    written, queued, answered_at = 0, 0, -1
    answer, out = b"", b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not out and queued < total and answered_at < 0:
                offset = queued % len(_BLOCK)
                piece = _BLOCK[offset : offset + 65536]
                queued += len(piece)
                out = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
            readable, writable, _ = select.select([sock], [sock] if out else [], [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if answered_at < 0:
                    answered_at = written
                answer += data
                head_part, _, body = answer.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head_part)
                if not data or (length and len(body) >= int(length.group(1))):
                    break
            if writable and out and answered_at < 0:
                try:
                    count = sock.send(out)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    out, total = b"", 0
                    continue
                written += count
                out = out[count:]
    finally:
        sock.close()
    return answer, answered_at


@pytest.mark.slow
def test_oversized_bodies_are_refused_without_being_buffered(server: MoeconnectServer) -> None:
    """A declared 1 GB body (8 MB of it sent) and a 200 MB chunked one, to the sign-in form, a
    signed-in form and the admin API: each answered 413 before the client has sent 64 MB, and
    the server's peak RSS stays within 48 MB of its RSS before (each held whole would be
    gigabytes)."""
    token = server.run(lambda accounts: accounts.create_token("rss")).token
    client, _ = sign_in(server, token)
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    client.close()
    targets = {
        "sign-in": (b"/dashboard/sign-in", b""),
        "dashboard form": (b"/dashboard/workspaces/new", b"Cookie: " + cookie.encode() + b"\r\n"),
        "admin API": (
            b"/admin/v1/workspaces",
            b"Authorization: Bearer " + token.encode() + b"\r\n",
        ),
    }
    rss_before, _ = _memory(server.process.pid)  # type: ignore[union-attr]
    for label, (path, extra) in targets.items():
        for chunked in (False, True):
            framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 1000000000"
            head = (
                b"POST " + path + b" HTTP/1.1\r\nHost: test\r\n" + extra
                + b"Content-Type: application/x-www-form-urlencoded\r\n" + framing + b"\r\n\r\n"
            )  # fmt: skip
            total = 200 * MiB if chunked else 8 * MiB
            started = time.monotonic()
            answer, sent = _send_until_answered(server, head, total, chunked)
            rss, hwm = _memory(server.process.pid)  # type: ignore[union-attr]
            print(
                f"{label}, {'chunked 200 MB' if chunked else 'Content-Length 1 GB'}: "
                f"answered after {sent / MiB:.1f} MB sent, {time.monotonic() - started:.2f} s; "
                f"RSS {rss_before / MiB:.0f} -> {rss / MiB:.0f} MB, peak {hwm / MiB:.0f} MB"
            )
            assert answer.startswith(b"HTTP/1.1 413 "), (label, chunked, answer[:300])
            body = answer.partition(b"\r\n\r\n")[2]
            if body:
                assert orjson.loads(body)["error"]["code"] == "PAYLOAD_TOO_LARGE"
            assert 0 <= sent < 64 * MiB, (label, chunked, sent)
            assert hwm < rss_before + 48 * MiB, (label, chunked, rss_before, hwm)
