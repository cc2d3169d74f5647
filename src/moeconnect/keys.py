"""API key and operator token formats: generation, checksum, hints, import rules.

Pure apart from drawing random numbers. A generated key is ``moe_<scope>_`` + 32 random base62
characters + 6 base62 characters of a CRC32 over everything before them, so a client can catch a
mistyped key before any network call and secret scanners can find a leaked one by its prefix.
"""

from __future__ import annotations

import functools
import re
import secrets
import string
import zlib
from typing import Final

__all__ = [
    "ALPHABET",
    "SCOPES",
    "TOKEN_PREFIX",
    "WORKSPACE_ID_PATTERN",
    "checksum_ok",
    "generate_key",
    "generate_keys",
    "generate_token",
    "has_generated_format",
    "key_hint",
    "looks_like_key",
    "new_id",
    "new_ids",
    "new_workspace_id",
    "new_workspace_ids",
    "redact_keys",
    "validate_imported_key",
]

SCOPES: Final = ("data", "push", "inform", "campaign", "personalize")
ALPHABET: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase  # base62
TOKEN_PREFIX: Final = "moeop_"  # noqa: S105 - a prefix, not a secret
_RANDOM_LEN: Final = 32  # 32 × log2(62) ≈ 190.5 bits
_CHECK_LEN: Final = 6  # 62**6 > 2**32, so any CRC32 fits
_GENERATED = re.compile(
    r"^moe_(" + "|".join(SCOPES) + r")_[0-9A-Za-z]{" + str(_RANDOM_LEN + _CHECK_LEN) + "}$"
)
_ANYWHERE: Final = re.compile(
    r"moe_(?:" + "|".join(SCOPES) + r")_[0-9A-Za-z]{" + str(_RANDOM_LEN + _CHECK_LEN) + "}"
)
_LOOKS_GENERATED = re.compile(r"^moe_(" + "|".join(SCOPES) + r")_")
WORKSPACE_ID_PATTERN: Final = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")  # \Z: "$" allows a final "\n"
_WORKSPACE_ALPHABET: Final = string.ascii_uppercase + string.digits


@functools.cache
def _sampler(alphabet: str) -> tuple[bytes, bytes]:
    """A byte translation table onto ``alphabet`` and the bytes to reject for uniformity."""
    size = len(alphabet)
    limit = 256 - 256 % size
    table = bytes(ord(alphabet[b % size]) if b < limit else 0 for b in range(256))
    return table, bytes(range(limit, 256))


def _random_strings(count: int, length: int, alphabet: str = ALPHABET) -> list[str]:
    """``count`` strings of ``length`` characters drawn uniformly from ``alphabet`` with the OS's
    CSPRNG, in one draw for all of them.

    Rejection sampling over random bytes, in C via ``bytes.translate``: a byte is used only
    below the largest multiple of ``len(alphabet)`` that fits in a byte, so every character is
    equally likely. Much faster than one ``secrets.choice`` per character; and one draw per
    batch, because a ``getrandom()`` call per key was a quarter of seeding a million of them.
    """
    table, reject = _sampler(alphabet)
    need = count * length
    out = b""
    while len(out) < need:
        missing = need - len(out)
        out += secrets.token_bytes(missing + missing // 4 + 8).translate(table, reject)
    text = out[:need].decode("ascii")
    return [text[start : start + length] for start in range(0, need, length)]


def _random_chars(count: int, alphabet: str = ALPHABET) -> str:
    """``count`` characters drawn uniformly from ``alphabet``: see :func:`_random_strings`."""
    return _random_strings(1, count, alphabet)[0]


# Every two-character base62 string, in order: a 32-bit checksum is three lookups.
_PAIRS: Final = tuple(high + low for high in ALPHABET for low in ALPHABET)
_PAIR: Final = len(_PAIRS)  # 62**2


def _checksum(body: str) -> str:
    """CRC32 of ``body`` as six base62 digits, most significant first."""
    number = zlib.crc32(body.encode("ascii"))
    return (
        _PAIRS[number // (_PAIR * _PAIR)] + _PAIRS[number // _PAIR % _PAIR] + _PAIRS[number % _PAIR]
    )


def generate_key(scope: str) -> str:
    """A new key for ``scope`` in the generated format."""
    return generate_keys(scope, 1)[0]


def generate_keys(scope: str, count: int) -> list[str]:
    """``count`` new keys for ``scope`` in the generated format, from one random draw."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; scopes are {', '.join(SCOPES)}")
    prefix = f"moe_{scope}_"
    bodies = [prefix + chars for chars in _random_strings(count, _RANDOM_LEN)]
    return [body + _checksum(body) for body in bodies]


def generate_token() -> str:
    """A new operator token: ``moeop_`` + 40 base62 characters (≈ 238 bits)."""
    return TOKEN_PREFIX + _random_chars(40)


def has_generated_format(key: str) -> bool:
    """Whether ``key`` claims to be a generated key (starts ``moe_<scope>_``)."""
    return _LOOKS_GENERATED.match(key) is not None


def checksum_ok(key: str) -> bool:
    """Whether a generated-format key is well formed and its checksum matches."""
    if _GENERATED.match(key) is None:
        return False
    return secrets.compare_digest(_checksum(key[:-_CHECK_LEN]), key[-_CHECK_LEN:])


def looks_like_key(value: str) -> bool:
    """Whether ``value`` is a generated key (prefix and a valid checksum): a secret, whatever
    field it arrived in, so it must never be stored or used as a name outside a digest."""
    return value.startswith("moe_") and checksum_ok(value)


def redact_keys(text: str) -> str:
    """``text`` with every generated key inside it (prefix and valid checksum) replaced by
    ``moe_<scope>_[redacted]``: for values a client sends that are stored or logged as they are
    (a ``source``, a user agent), in case a key was pasted into the wrong field.

    Random strings that merely look like keys keep their text: the checksum tells them apart.
    """
    if "moe_" not in text:
        return text  # nearly always: no regex, no copy

    def redact(match: re.Match[str]) -> str:
        key = match.group(0)
        if not checksum_ok(key):
            return key
        return key[: key.index("_", 4) + 1] + "[redacted]"

    return _ANYWHERE.sub(redact, text)


def key_hint(key: str) -> str:
    """The display hint stored beside a digest: the last four characters."""
    return key[-4:]


def validate_imported_key(key: str) -> str | None:
    """Why ``key`` can't be imported, or ``None`` when it can (8–256 printable ASCII)."""
    if not 8 <= len(key) <= 256:
        return "an imported key must be 8 to 256 characters long"
    if not all(" " <= ch <= "~" for ch in key):
        return "an imported key may contain only printable ASCII characters"
    if has_generated_format(key) and not checksum_ok(key):
        return "the key looks generated (moe_<scope>_…) but its checksum is wrong; was it mistyped?"
    return None


def new_id(prefix: str) -> str:
    """An opaque identifier such as ``key_3fK9…`` for rows that are not secrets."""
    return new_ids(prefix, 1)[0]


def new_ids(prefix: str, count: int) -> list[str]:
    """``count`` identifiers as :func:`new_id` makes them, from one random draw."""
    return [prefix + "_" + chars for chars in _random_strings(count, 16)]


def new_workspace_id() -> str:
    """A generated workspace ID: 21 characters of ``[A-Z0-9]``."""
    return new_workspace_ids(1)[0]


def new_workspace_ids(count: int) -> list[str]:
    """``count`` workspace IDs as :func:`new_workspace_id` makes them, from one random draw."""
    return _random_strings(count, 21, _WORKSPACE_ALPHABET)
