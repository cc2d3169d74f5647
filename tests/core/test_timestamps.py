"""The record's cached minute and SQLite text agree with the plain formulas, in any order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from moeconnect.timestamps import minute_of, sqlite_text

ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)
MOMENTS = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1), timezones=ZONES
)


def _runs(moments: list[datetime]) -> list[datetime]:
    """Each moment followed by a few just after it: the cache's hits and its edges."""
    out = []
    for moment in moments:
        out.append(moment)
        for step in (0, 1, 999_999, 59_000_000, 60_000_000):
            out.append(moment + timedelta(microseconds=step))
    return out


@given(st.lists(MOMENTS, min_size=1, max_size=20))
def test_minute_of_is_the_moment_without_seconds(moments: list[datetime]) -> None:
    for moment in _runs(moments):
        got = minute_of(moment)
        assert got == moment.replace(second=0, microsecond=0)
        assert got.tzinfo is moment.tzinfo


@given(st.lists(MOMENTS, min_size=1, max_size=20))
def test_sqlite_text_is_the_utc_isoformat(moments: list[datetime]) -> None:
    for moment in _runs(moments):
        expected = moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]
        assert sqlite_text(moment) == expected


def test_a_second_boundary_is_not_served_from_the_previous_second() -> None:
    before = datetime(2026, 11, 29, 9, 59, 59, 999_999, tzinfo=UTC)
    assert sqlite_text(before) == "2026-11-29 09:59:59.999999"
    assert sqlite_text(before + timedelta(microseconds=1)) == "2026-11-29 10:00:00.000000"
    assert minute_of(before) == datetime(2026, 11, 29, 9, 59, tzinfo=UTC)
    assert minute_of(before + timedelta(microseconds=1)) == datetime(2026, 11, 29, 10, tzinfo=UTC)


def test_a_naive_moment_is_floored_too_and_does_not_break_the_cache() -> None:
    aware = datetime(2026, 11, 29, 9, 30, 15, tzinfo=UTC)
    assert minute_of(aware) == datetime(2026, 11, 29, 9, 30, tzinfo=UTC)
    naive = datetime(2026, 11, 29, 9, 30, 45)
    assert minute_of(naive) == datetime(2026, 11, 29, 9, 30)
    assert minute_of(aware).tzinfo is UTC
