"""Durations as people write them (``--grace 24h``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from moeconnect.durations import MAX_GRACE, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("24h", 86400),
        ("7d", 604800),
        ("1w", 604800),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("1.5h", 5400),
        ("500ms", 0.5),
        (" 2H ", 7200),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "24 hours", "1y", "-5m", "5m later", "abc"])
def test_unreadable_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="write it like 90s, 15m, 24h or 7d"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(days=30), "30d"),
        (timedelta(hours=24), "1d"),
        (timedelta(hours=5), "5h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=61), "61s"),
    ],
)
def test_format(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
    assert parse_duration(text) == delta


def test_max_grace_is_thirty_days() -> None:
    assert timedelta(days=30) == MAX_GRACE


def test_durations_beyond_timedelta_are_an_input_error() -> None:
    # Found by schemathesis: a grace of 30 digits was a 500 from the admin API.
    for text in ("999999999999999999999999999999", "9" * 30 + "d"):
        with pytest.raises(ValueError, match="too long a duration"):
            parse_duration(text)
