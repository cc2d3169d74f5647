"""The activity view's pure parts: the 24-hour chart layout and outcome wording."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from moeconnect.dashboard.activity import build_chart, outcome_class, outcome_text
from moeconnect.errors import CATALOGUE


def test_chart_stacks_outcomes_per_hour_over_24_hours() -> None:
    now = datetime(2026, 11, 27, 14, 35, tzinfo=UTC)
    hour = now.replace(minute=0)
    counts = [
        (hour, "SUCCESS", 6),
        (hour, "SUCCESS_STALE_KEY", 2),
        (hour, "KEY_MISMATCH", 1),
        (hour, "RATE_LIMITED", 1),
        (hour - timedelta(hours=5), "SUCCESS", 3),
        (hour - timedelta(hours=30), "SUCCESS", 99),  # outside the window
    ]
    chart = build_chart(counts, now)
    assert len(chart.bars) == 24
    assert chart.totals == {"success": 9, "stale": 2, "failure": 2}
    assert chart.max_count == 10
    last = chart.bars[-1]
    assert last.label == "14:00" and last.total == 10
    assert [(g, n) for g, _y, _h, n in last.segments] == [
        ("success", 6),
        ("stale", 2),
        ("failure", 2),
    ]
    # The tallest bar fills the plot exactly; segments stack without gaps.
    assert sum(h for _g, _y, h, _n in last.segments) == chart.plot_bottom - chart.plot_top
    assert last.segments[-1][1] == chart.plot_top
    assert chart.bars[-6].total == 3
    assert all(b.total == 0 for i, b in enumerate(chart.bars) if i not in (18, 23))
    assert "9 success" in chart.description


def test_an_empty_chart_is_still_drawable() -> None:
    chart = build_chart([], datetime(2026, 11, 27, 0, 0, tzinfo=UTC))
    assert chart.max_count == 1 and all(not b.segments for b in chart.bars)
    assert [label for _x, label in chart.ticks] == ["01:00", "07:00", "13:00", "19:00"]


def test_every_outcome_has_words_and_a_group() -> None:
    assert outcome_class("SUCCESS") == "success"
    assert outcome_class("SUCCESS_STALE_KEY") == "stale"
    for code in CATALOGUE:
        assert outcome_class(code) == "failure"
        assert outcome_text(code).endswith(".")
