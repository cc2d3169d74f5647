"""Text from outside — a client's ``source``, a stored name, an input quoted in a message — made
safe to show. Pure.

Anyone can put bytes in the record (``source`` and ``User-Agent`` come from unauthenticated
requests), and an old store may hold names from before they were checked. Written raw to an
operator's terminal, ESC and C1 sequences retitle the window, clear the screen or rewrite what
was printed before; bidi overrides (U+202E) make text read differently from what it is. So:

- :func:`printable` writes every such character as an escape (``\\x1b``, ``\\u202e``) for human
  output, newlines and tabs included, so a value stays on its line and in its column;
- :func:`json_printable` does the same inside an encoded JSON document, where the encoder
  already escapes C0 controls but leaves DEL, C1, bidi controls and U+2028/2029 as they are;
- :func:`first_unsafe` finds the character a name must not contain;
- :func:`excerpt` quotes a client's value in an error message: escaped, at most 64 characters,
  with any key in it redacted.

Unsafe means Unicode categories Cc (C0, DEL, C1), Cf (format characters: bidi controls,
zero-width spaces, BOM, soft hyphen...), Zl, Zp (U+2028, U+2029) and Cs (lone surrogates), except
the zero-width (non-)joiners U+200C and U+200D, which emoji sequences and several scripts need
and which move nothing on a terminal.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from .keys import redact_keys

__all__ = ["MAX_QUOTED", "escape_char", "excerpt", "first_unsafe", "json_printable", "printable"]

MAX_QUOTED: Final = 64

_UNSAFE_CATEGORIES: Final = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
_JOINERS: Final = frozenset(("\u200c", "\u200d"))
_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# Candidates only: the category decides. Everything in printable ASCII is safe.
_NOT_PLAIN_ASCII: Final = re.compile(r"[^ -~]")
_NOT_ASCII: Final = re.compile(r"[^\x00-\x7e]")


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES and char not in _JOINERS


def escape_char(char: str) -> str:
    """``\\t``, ``\\n``, ``\\r``, else ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN`` (Python's own)."""
    if char in _NAMED:
        return _NAMED[char]
    point = ord(char)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def _escape_match(match: re.Match[str]) -> str:
    char = match.group(0)
    return escape_char(char) if _unsafe(char) else char


def printable(text: str) -> str:
    """``text`` with every unsafe character written as an escape, for a terminal.

    Backslashes are left alone: the output is for reading, not for parsing back.
    """
    if text.isprintable():  # nearly always: no copy
        return text
    return _NOT_PLAIN_ASCII.sub(_escape_match, text)


def _json_escape(match: re.Match[str]) -> str:
    char = match.group(0)
    if not _unsafe(char):
        return char
    point = ord(char)
    if point < 0x10000:
        return f"\\u{point:04x}"
    high, low = divmod(point - 0x10000, 0x400)
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def json_printable(document: str) -> str:
    """An encoded JSON document with DEL, C1, bidi controls and the other unsafe characters the
    encoder left raw written as ``\\uNNNN``: the same values once decoded, and nothing a terminal
    acts on. (Outside strings JSON is ASCII, so every such character is inside a string.)"""
    if document.isascii() and "\x7f" not in document:
        return document
    return _NOT_ASCII.sub(_json_escape, document)


def first_unsafe(text: str) -> tuple[int, str] | None:
    """The first unsafe character of ``text`` and its position (0-based), or None."""
    if text.isprintable():
        return None
    for position, char in enumerate(text):
        if _unsafe(char):
            return position, char
    return None


def excerpt(value: str, limit: int = MAX_QUOTED) -> str:
    """``value`` quoted for an error message: keys redacted, at most ``limit`` characters,
    escaped. A client's input of any length makes a message of bounded length."""
    # Redact before cutting (a key cut in two no longer passes its checksum); a key that starts
    # inside the first ``limit`` characters ends inside the first ``limit + 64``.
    head = redact_keys(value[: limit + 64])
    if len(value) <= limit:
        return f"'{printable(head)}'"
    return f"'{printable(head[:limit])}…' ({len(value)} characters)"
