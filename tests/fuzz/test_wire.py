"""Must-show 3 (wire part): malformed input of every kind, over a real socket.

Whatever bytes a client sends — invalid UTF-8, NUL bytes, huge or repeated headers, deeply nested
or mistyped JSON, broken HTTP — the server answers with a 4xx in the JSON error envelope, quickly,
and never with a 5xx; and it keeps serving afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moeconnect.errors import CATALOGUE
from moeconnect.testing import MoeconnectServer

PATH = b"/v1/integrations/authentication"
TIMEOUT = 10.0  # a hang fails the test


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def envelope(self) -> dict[str, object]:
        """Assert the answer is a client error in the envelope; return the ``error`` object."""
        assert 400 <= self.status < 500, (self.status, self.body[:300])
        assert self.headers["content-type"] == ["application/json"]
        assert len(self.headers["x-request-id"]) == 1
        document = json.loads(self.body)
        assert document["status"] == "fail"
        error: dict[str, object] = document["error"]
        assert set(error) == {"message", "type", "code", "request_id"}
        code = error["code"]
        assert isinstance(code, str) and CATALOGUE[code].status == self.status
        return error


def exchange(server: MoeconnectServer, request: bytes) -> Answer:
    """Send raw bytes, read the whole answer (the server closes, or Content-Length is met)."""
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        # The server may answer and close before reading everything we send.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                if len(body) >= length:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 "), data[:200]
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower().decode(), []).append(value.strip().decode())
    return Answer(int(lines[0].split()[1]), headers, body)


def request(
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    method: bytes = b"POST",
    path: bytes = PATH,
) -> bytes:
    head = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    head += [name + b": " + value for name, value in headers]
    head.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def basic(raw: bytes) -> bytes:
    return b"Basic " + base64.b64encode(raw)


JSON = (b"Content-Type", b"application/json")
GOOD_BODY = json.dumps(
    {"app_id": "WS1", "app_secret": "some-key-1", "source": "fuzz", "region": "01"}
).encode()
GOOD_HEADERS = [JSON, (b"Authorization", basic(b"WS1:some-key-1")), (b"MOE-APPKEY", b"WS1")]

# Header values: any bytes but CR and LF (those would end the header, not fill it).
header_value = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
json_body = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=10,
).map(lambda doc: json.dumps(doc).encode())
field_values = st.none() | st.integers() | st.text(max_size=70) | st.lists(st.text(), max_size=2)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    authorization=st.none() | header_value | st.binary(max_size=80).map(basic),
    second_authorization=st.none() | header_value,
    content_type=st.none() | header_value | st.just(b"application/json"),
    appkey=st.none() | header_value,
    body=st.binary(max_size=400) | json_body,
)
def test_any_headers_and_body_get_a_4xx_envelope(
    fuzz_server: MoeconnectServer,
    authorization: bytes | None,
    second_authorization: bytes | None,
    content_type: bytes | None,
    appkey: bytes | None,
    body: bytes,
) -> None:
    headers: list[tuple[bytes, bytes]] = []
    if authorization is not None:
        headers.append((b"Authorization", authorization))
        if second_authorization is not None:
            headers.append((b"Authorization", second_authorization))
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    if appkey is not None:
        headers.append((b"MOE-APPKEY", appkey))
    exchange(fuzz_server, request(headers, body)).envelope()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            name: field_values for name in ("app_id", "app_secret", "source", "region", "extra")
        },
    )
)
def test_wrong_types_in_the_body_are_a_400_naming_the_field(
    fuzz_server: MoeconnectServer, fields: dict[str, object]
) -> None:
    answer = exchange(fuzz_server, request(GOOD_HEADERS, json.dumps(fields).encode()))
    error = answer.envelope()
    for name in ("app_id", "app_secret", "source", "region"):
        value = fields.get(name)
        if value is None or not isinstance(value, str) or not value:
            assert error["code"] in ("FIELD_MISSING", "FIELD_INVALID")
            assert name in str(error["message"])
            break


CASES: dict[str, tuple[bytes, int, str]] = {
    "two Authorization headers": (
        request([*GOOD_HEADERS, (b"Authorization", basic(b"WS1:other-key"))], GOOD_BODY),
        401,
        "AUTH_MALFORMED",
    ),
    "an empty Authorization header and a second one": (
        request([(b"Authorization", b""), *GOOD_HEADERS], GOOD_BODY),
        401,
        "AUTH_MALFORMED",
    ),
    "credentials that are not UTF-8": (
        request([JSON, (b"Authorization", basic(b"\xff\xfe:\x80key")), (b"MOE-APPKEY", b"x")]),
        401,
        "AUTH_MALFORMED",
    ),
    "an Authorization header that is not UTF-8": (
        request([JSON, (b"Authorization", b"Basic \xff\xfe\xfd")], GOOD_BODY),
        401,
        "AUTH_MALFORMED",
    ),
    "a MOE-APPKEY that is not UTF-8": (
        request([*GOOD_HEADERS[:2], (b"MOE-APPKEY", b"WS\xff1")], GOOD_BODY),
        400,
        "WORKSPACE_ID_MISMATCH",
    ),
    "a body that is not UTF-8": (
        request(GOOD_HEADERS, b'{"app_id": "\xff\xfe"}'),
        400,
        "INVALID_JSON",
    ),
    "NUL bytes in the body": (
        request(GOOD_HEADERS, b'{"app_id": "WS1\x00"}'),
        400,
        "INVALID_JSON",
    ),
    "escaped NUL characters in the fields": (
        request(GOOD_HEADERS, GOOD_BODY.replace(b'"WS1"', b'"WS1\\u0000"')),
        400,
        "WORKSPACE_ID_MISMATCH",
    ),
    "JSON nested 100,000 deep": (
        request(GOOD_HEADERS, b"[" * 100_000),
        400,
        "INVALID_JSON",
    ),
    "a body over 100 KB": (
        request(GOOD_HEADERS, b" " * (100 * 1024 + 1)),
        413,
        "PAYLOAD_TOO_LARGE",
    ),
    "a 1 MB header": (
        request([*GOOD_HEADERS, (b"X-Padding", b"a" * 1_000_000)], GOOD_BODY),
        431,
        "HEADERS_TOO_LARGE",
    ),
    "20,000 headers": (
        request([*GOOD_HEADERS, *[(b"X-H%d" % i, b"v" * 20) for i in range(20_000)]]),
        431,
        "HEADERS_TOO_LARGE",
    ),
    "a NUL byte in a header": (
        request([*GOOD_HEADERS, (b"X-Nul", b"a\x00b")], GOOD_BODY),
        400,
        "MALFORMED_REQUEST",
    ),
    "a request line that is not HTTP": (
        b"HELLO THERE\r\n\r\n",
        400,
        "MALFORMED_REQUEST",
    ),
    "a Content-Length that is not a number": (
        request(GOOD_HEADERS, GOOD_BODY).replace(b"Content-Length: ", b"Content-Length: x"),
        400,
        "MALFORMED_REQUEST",
    ),
    "a path that is not ASCII": (
        request(GOOD_HEADERS, GOOD_BODY, path=PATH + b"\xff"),
        400,
        "MALFORMED_REQUEST",
    ),
    "a body type that is not JSON": (
        request([(b"Content-Type", b"text/plain"), *GOOD_HEADERS[1:]], GOOD_BODY),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input(fuzz_server: MoeconnectServer, case: str) -> None:
    raw, status, code = CASES[case]
    answer = exchange(fuzz_server, raw)
    assert answer.status == status, answer.body[:300]
    assert answer.envelope()["code"] == code


def test_a_chunked_body_over_the_limit_is_413(fuzz_server: MoeconnectServer) -> None:
    head = b"\r\n".join(
        [
            b"POST " + PATH + b" HTTP/1.1",
            b"Host: x",
            b"Connection: close",
            b"Transfer-Encoding: chunked",
            *(name + b": " + value for name, value in GOOD_HEADERS),
        ]
    )
    chunk = b"x" * 8192
    chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 20 + b"0\r\n\r\n"
    answer = exchange(fuzz_server, head + b"\r\n\r\n" + chunks)
    assert answer.status == 413
    assert answer.envelope()["code"] == "PAYLOAD_TOO_LARGE"


def test_the_server_still_serves_after_the_abuse(fuzz_server: MoeconnectServer) -> None:
    workspace_id, key = fuzz_server.workspace_with_key()
    body = json.dumps(
        {"app_id": workspace_id, "app_secret": key, "source": "fuzz", "region": "01"}
    ).encode()
    headers = [
        JSON,
        (b"Authorization", basic(f"{workspace_id}:{key}".encode())),
        (b"MOE-APPKEY", workspace_id.encode()),
    ]
    answer = exchange(fuzz_server, request(headers, body))
    assert answer.status == 200
    assert "ERROR" not in fuzz_server.logs()
