"""Key and token formats (SPEC section 2): prefix, entropy, CRC32 checksum, import rules."""

from __future__ import annotations

import math
import re
import string
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moeconnect.keys import (
    ALPHABET,
    SCOPES,
    TOKEN_PREFIX,
    checksum_ok,
    generate_key,
    generate_keys,
    generate_token,
    has_generated_format,
    key_hint,
    new_ids,
    new_workspace_id,
    new_workspace_ids,
    validate_imported_key,
)

FORMAT = re.compile(
    r"^moe_(data|push|inform|campaign|personalize)_([0-9A-Za-z]{32})([0-9A-Za-z]{6})$"
)


def _base62(number: int) -> str:
    digits = ""
    for _ in range(6):
        number, rest = divmod(number, 62)
        digits = ALPHABET[rest] + digits
    return digits


@pytest.mark.parametrize("scope", SCOPES)
def test_generated_key_format_for_every_scope(scope: str) -> None:
    key = generate_key(scope)
    match = FORMAT.match(key)
    assert match and match.group(1) == scope
    assert has_generated_format(key)
    assert checksum_ok(key)


def test_checksum_is_crc32_of_everything_before_it_in_base62() -> None:
    key = generate_key("data")
    body, check = key[:-6], key[-6:]
    assert check == _base62(zlib.crc32(body.encode()))


def test_alphabet_is_base62_and_entropy_at_least_190_bits() -> None:
    assert sorted(ALPHABET) == sorted(string.digits + string.ascii_letters)
    assert 32 * math.log2(62) >= 190


def test_generated_keys_are_distinct_and_use_the_whole_alphabet() -> None:
    keys = {generate_key("data") for _ in range(300)}
    assert len(keys) == 300
    used = set("".join(FORMAT.match(k).group(2) for k in keys))  # type: ignore[union-attr]
    assert used == set(ALPHABET)  # 9,600 draws: every one of 62 characters shows up


def test_unknown_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        generate_key("admin")


@given(st.integers(min_value=0, max_value=37), st.sampled_from(ALPHABET))
def test_any_single_character_change_fails_the_checksum(position: int, char: str) -> None:
    key = generate_key("push")
    index = len("moe_push_") + position
    if key[index] == char:
        return
    mistyped = key[:index] + char + key[index + 1 :]
    assert has_generated_format(mistyped)
    assert not checksum_ok(mistyped)


@pytest.mark.parametrize(
    "key",
    [
        "moe_data_",
        "moe_data_short",
        "moe_data_" + "A" * 39,
        "moe_data_" + "A" * 37,
        "moe_data_" + "!" * 38,
    ],
)
def test_wrong_length_or_characters_fail(key: str) -> None:
    assert has_generated_format(key)
    assert not checksum_ok(key)


@pytest.mark.parametrize("key", ["moe_unknown_abc", "legacy-key-123", "MOE_DATA_x", "xmoe_data_"])
def test_other_strings_do_not_claim_the_generated_format(key: str) -> None:
    assert not has_generated_format(key)


def test_hint_is_the_last_four_characters() -> None:
    assert key_hint("abcdefgh1234") == "1234"


@pytest.mark.parametrize(
    "key", ["12345678", "x" * 256, " spaces and ~!@#$%^&*() ok ", generate_key("data")]
)
def test_importable_keys(key: str) -> None:
    assert validate_imported_key(key) is None


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("1234567", "8 to 256"),
        ("x" * 257, "8 to 256"),
        ("tab\there!", "printable ASCII"),
        ("naïve-key-1", "printable ASCII"),
        ("line\nbreak", "printable ASCII"),
        ("moe_data_" + "A" * 38, "checksum"),
    ],
)
def test_unimportable_keys_say_why(key: str, reason: str) -> None:
    problem = validate_imported_key(key)
    assert problem is not None and reason in problem


def test_tokens_and_workspace_ids() -> None:
    token = generate_token()
    assert token.startswith(TOKEN_PREFIX) and len(token) == len(TOKEN_PREFIX) + 40
    assert generate_token() != token
    wid = new_workspace_id()
    assert re.fullmatch(r"[A-Z0-9]{21}", wid)


def test_batches_are_made_like_single_ones() -> None:
    """The seed's batch generators: same formats, checksums that hold, nothing repeated."""
    keys = generate_keys("data", 500)
    assert len(set(keys)) == 500
    for key in keys:
        body, check = key[:-6], key[-6:]
        assert FORMAT.match(key) and checksum_ok(key)
        assert check == _base62(zlib.crc32(body.encode()))
    used = set("".join(FORMAT.match(k).group(2) for k in keys))  # type: ignore[union-attr]
    assert used == set(ALPHABET)
    workspace_ids = new_workspace_ids(500)
    assert len(set(workspace_ids)) == 500
    assert all(re.fullmatch(r"[A-Z0-9]{21}", wid) for wid in workspace_ids)
    assert set("".join(workspace_ids)) == set(string.ascii_uppercase + string.digits)
    ids = new_ids("key", 500)
    assert len(set(ids)) == 500
    assert all(re.fullmatch(r"key_[0-9A-Za-z]{16}", i) for i in ids)
    assert re.fullmatch(r"[A-Z0-9]{21}", new_workspace_id())
    with pytest.raises(ValueError, match="unknown scope"):
        generate_keys("admin", 1)


@given(st.text(alphabet=ALPHABET + "_", max_size=60))
def test_the_checksum_is_six_base62_digits_of_crc32(body: str) -> None:
    key = "moe_data_" + body
    assert checksum_ok(key + _base62(zlib.crc32(key.encode()))) == bool(
        FORMAT.match(key + "000000")
    )


def test_a_generated_key_is_recognised_and_redacted_wherever_it_sits() -> None:
    from moeconnect.keys import looks_like_key, redact_keys

    key = generate_key("data")
    mistyped = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert looks_like_key(key)
    assert not looks_like_key(mistyped)
    assert not looks_like_key("ACME_PROD")
    assert redact_keys(f"tool {key} v1") == "tool moe_data_[redacted] v1"
    assert key not in redact_keys(f"{key}{key}")
    assert redact_keys(mistyped) == mistyped  # random strings keep their text
    assert redact_keys("segment") == "segment"


def test_a_workspace_id_pattern_allows_no_final_newline() -> None:
    from moeconnect.keys import WORKSPACE_ID_PATTERN

    assert WORKSPACE_ID_PATTERN.match("ACME_PROD")
    assert not WORKSPACE_ID_PATTERN.match("ACME_PROD\n")  # "$" would have let it through
