"""Rendering of the success body and the error envelope, shared by every HTTP surface."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from email.utils import format_datetime

import orjson

from ..errors import CATALOGUE, render_message

__all__ = [
    "JSON_HEADERS",
    "envelope",
    "error_body",
    "error_body_around_id",
    "error_headers",
    "header_lines",
    "http_date",
    "success_body",
]

JSON_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
]


def envelope(code: str, message: str, request_id: str) -> bytes:
    spec = CATALOGUE[code]
    return orjson.dumps(
        {
            "status": "fail",
            "error": {
                "message": message,
                "type": spec.type,
                "code": code,
                "request_id": request_id,
            },
        }
    )


def error_body(code: str, request_id: str, **params: object) -> bytes:
    return envelope(code, render_message(code, **params), request_id)


# Stands in for the request ID while a body is rendered once for many: the ID is the envelope's
# last value, so the last occurrence is the one (a message could quote anything).
_ID_MARK = "REQUEST-ID-GOES-HERE"


def error_body_around_id(code: str, **params: object) -> tuple[bytes, bytes]:
    """:func:`error_body`'s bytes before and after the request ID.

    For a refusal answered again and again: joining the two around an ID gives exactly
    ``error_body(code, that_id, **params)``, as IDs are URL-safe characters that JSON leaves
    as they are (``request_ids``).
    """
    head, _, tail = error_body(code, _ID_MARK, **params).rpartition(_ID_MARK.encode())
    return head, tail


def success_body(app_name: str) -> bytes:
    """The body of a success, built for each answer (~0.1 µs).

    Not for keeping: orjson's bytes carry a 4 KiB buffer whatever their length (one body kept
    per workspace in use once cost 600 MB with 150,000 of them)."""
    return orjson.dumps({"status": "success", "app_name": app_name})


def header_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``name: value`` lines as they go on the wire, for responses written without ASGI."""
    return b"".join([name + b": " + value + b"\r\n" for name, value in headers])


def http_date(moment: datetime) -> str:
    """An HTTP-date (RFC 9110), as the ``Sunset`` header (RFC 8594) wants."""
    return format_datetime(moment, usegmt=True)


def error_headers(status: int, retry_after: int | None = None) -> list[tuple[bytes, bytes]]:
    """The headers a failure of ``status`` carries beyond the JSON ones."""
    headers: list[tuple[bytes, bytes]] = []
    if status == 401:
        headers.append((b"www-authenticate", b'Basic realm="MoEngage", charset="UTF-8"'))
    elif status == 405:
        headers.append((b"allow", b"POST"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return headers
