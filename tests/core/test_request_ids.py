"""Request IDs minted, honoured and kept compactly (pure)."""

from __future__ import annotations

import re

from moeconnect.request_ids import new_request_id, request_id_from, request_id_text


def test_a_minted_id_is_kept_as_its_number_and_written_back_the_same() -> None:
    text, kept = request_id_from(None)
    assert isinstance(kept, int)
    assert re.fullmatch(r"[A-Za-z0-9_-]{8}[0-9a-f]{10}", text)
    assert request_id_text(kept) == text
    assert request_id_from(None)[0] != text
    assert new_request_id() not in (text, request_id_from(None)[0])


def test_a_callers_id_is_honoured_and_kept_as_text() -> None:
    assert request_id_from(b"caller-ABC_123") == ("caller-ABC_123", "caller-ABC_123")
    assert request_id_text("caller-ABC_123") == "caller-ABC_123"


def test_an_ill_formed_header_is_replaced() -> None:
    for header in (b"short", b"has space 123", b"x" * 33, "é".encode() * 8):
        text, kept = request_id_from(header)
        assert isinstance(kept, int) and request_id_text(kept) == text
