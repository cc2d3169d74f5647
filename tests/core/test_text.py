"""moeconnect.text: what is escaped for a terminal and in JSON, and how input is quoted."""

from __future__ import annotations

import json
import sys
import unicodedata

import orjson
import pytest

from moeconnect.durations import parse_duration
from moeconnect.errors import MAX_PARAM, render_message
from moeconnect.keys import generate_key
from moeconnect.text import escape_char, excerpt, first_unsafe, json_printable, printable

UNSAFE = [
    chr(c)
    for c in range(sys.maxunicode + 1)
    if unicodedata.category(chr(c)) in ("Cc", "Cf", "Cs", "Zl", "Zp") and c not in (0x200C, 0x200D)
]


def test_every_control_and_format_character_is_escaped() -> None:
    assert len(UNSAFE) > 65 + 100  # C0, DEL, C1 and the format characters
    for char in UNSAFE:
        shown = printable(f"a{char}b")
        assert shown.startswith("a\\") and shown.endswith("b") and char not in shown, repr(char)
        assert first_unsafe(f"ab{char}") == (2, char)


def test_escapes_read_like_python() -> None:
    assert printable("a\x1b]0;x\x07\r\n\t\x00\x7f\x9b\u202e\u2028\U000e0001") == (
        r"a\x1b]0;x\x07\r\n\t\x00\x7f\x9b\u202e\u2028\U000e0001"
    )
    assert escape_char("\x1b") == r"\x1b"


def test_ordinary_text_is_left_as_it_is() -> None:
    for text in ("Acme", "Ünïcödé 日本 👩\u200d💻", "back\\slash", "a b", "\u00a0nbsp"):
        assert printable(text) == text
        assert first_unsafe(text) is None


def test_json_escapes_what_orjson_leaves_raw_and_decodes_the_same() -> None:
    encodable = [c for c in UNSAFE if unicodedata.category(c) != "Cs"]  # no store holds these
    value = "".join(encodable) + "\x7f\x9b\u202e\u2028日本"
    document = orjson.dumps({"v": value}).decode()
    safe = json_printable(document)
    assert json.loads(safe) == {"v": value}
    assert not any(char in safe for char in UNSAFE)
    assert "日本" in safe
    plain = orjson.dumps({"v": "plain"}).decode()
    assert json_printable(plain) is plain


def test_excerpt_is_short_escaped_and_keeps_keys_out() -> None:
    assert excerpt("colour") == "'colour'"
    assert excerpt("\x1b[2J") == r"'\x1b[2J'"
    long = excerpt("W" * 100_000)
    assert long == "'" + "W" * 64 + "…' (100000 characters)"
    key = generate_key("data")
    assert excerpt(key) == "'moe_data_[redacted]'"
    # A key straddling the cut is redacted before it is cut: none of its characters show.
    for start in (0, 30, 60, 63):
        shown = excerpt("x" * start + key + "y" * 100)
        assert key[9:15] not in shown, (start, shown)


def test_durations_quote_what_they_cannot_read_briefly() -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration("W" * 100_000)
    assert len(str(caught.value)) < 200


def test_render_message_bounds_every_text_parameter() -> None:
    message = render_message("VALIDATION_ERROR", detail="W" * 100_000)
    assert message == "W" * MAX_PARAM + "…"
    assert render_message("UNKNOWN_REGION", region="\x1b[2J", known="01").startswith(
        r"The region \x1b[2J is"
    )
    assert render_message("RATE_LIMITED", limit="3 per minute", retry_after=5) == (
        "Too many attempts (3 per minute); wait 5 seconds before trying again."
    )
