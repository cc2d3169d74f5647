"""Connection activity for one workspace, shaped for the dashboard: recent attempts, the
per-source summary (with a warning per source still on a replaced key) and the 24-hour chart.

The store's connection record answers; this module only groups outcomes, words them for people
and lays the chart out, so the templates stay free of arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ..errors import CATALOGUE, STALE_SUCCESS, SUCCESS
from ..store import Store
from ..store.base import AttemptRow, SourceSummary

__all__ = ["Activity", "Chart", "load_activity", "outcome_class", "outcome_text"]

CHART_HOURS = 24

# Outcome groups drawn in the chart, in stacking order (bottom first).
GROUPS: tuple[tuple[str, str], ...] = (
    ("success", "Success"),
    ("stale", "Success with a replaced key"),
    ("failure", "Failed"),
)

_WORDS: dict[str, str] = {
    SUCCESS: "Connected.",
    STALE_SUCCESS: "Connected with a replaced key that stops working when its grace period ends.",
    "KEY_MISMATCH": "The Data API key does not match.",
    "KEY_REVOKED": "The key was replaced or revoked.",
    "KEY_MALFORMED": "The key is mistyped (its checksum is wrong).",
    "NO_DATA_KEY": "The workspace has no Data API key.",
    "WORKSPACE_NOT_FOUND": "No workspace has this ID.",
    "WORKSPACE_IN_OTHER_DC": "The workspace lives in another data center.",
    "WORKSPACE_SUSPENDED": "The workspace is suspended.",
    "WRONG_DC": "The request went to the wrong data center's endpoint.",
    "RATE_LIMITED": "Too many attempts; rate limited.",
}


def outcome_class(outcome: str) -> str:
    """The chart/legend group of an outcome code."""
    if outcome == SUCCESS:
        return "success"
    if outcome == STALE_SUCCESS:
        return "stale"
    return "failure"


def outcome_text(outcome: str) -> str:
    """One short sentence for an outcome code, for people reading the activity list."""
    if outcome in _WORDS:
        return _WORDS[outcome]
    spec = CATALOGUE.get(outcome)
    return f"{spec.type}." if spec else outcome


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    label: str  # the hour, e.g. "14:00"
    segments: list[tuple[str, float, float, int]]  # (group, y, height, count)
    total: int


@dataclass(frozen=True, slots=True)
class Chart:
    """A stacked bar chart laid out in SVG user units."""

    width: int
    height: int
    plot_top: int
    plot_bottom: int
    bar_width: float
    bars: list[Bar]
    max_count: int
    ticks: list[tuple[float, str]]  # (x, label) along the time axis
    totals: dict[str, int]
    groups: tuple[tuple[str, str], ...] = GROUPS

    @property
    def description(self) -> str:
        parts = [f"{self.totals[g]} {label.lower()}" for g, label in self.groups]
        return "Attempts in the last 24 hours: " + ", ".join(parts) + "."


@dataclass(frozen=True, slots=True)
class Activity:
    recent: list[AttemptRow]
    sources: list[SourceSummary]
    stale_sources: list[SourceSummary]
    chart: Chart
    now: datetime
    texts: dict[str, str] = field(default_factory=dict)


def build_chart(counts: list[tuple[datetime, str, int]], now: datetime) -> Chart:
    """Hourly stacked bars for the 24 hours up to ``now`` from ``(bucket start, outcome, n)``."""
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=CHART_HOURS)
    per_hour: list[dict[str, int]] = [{g: 0 for g, _ in GROUPS} for _ in range(CHART_HOURS)]
    totals = {g: 0 for g, _ in GROUPS}
    for bucket_start, outcome, count in counts:
        index = int((bucket_start.astimezone(UTC) - start).total_seconds() // 3600)
        if 0 <= index < CHART_HOURS:
            group = outcome_class(outcome)
            per_hour[index][group] += count
            totals[group] += count
    width, height, top, bottom, left = 720, 180, 10, 150, 36
    slot = (width - left - 8) / CHART_HOURS
    bar_width = slot * 0.72
    max_count = max((sum(h.values()) for h in per_hour), default=0) or 1
    scale = (bottom - top) / max_count
    bars: list[Bar] = []
    ticks: list[tuple[float, str]] = []
    for i, hour in enumerate(per_hour):
        x = left + i * slot + (slot - bar_width) / 2
        label = (start + timedelta(hours=i)).strftime("%H:00")
        y = float(bottom)
        segments = []
        for group, _ in GROUPS:
            n = hour[group]
            if n:
                h = max(n * scale, 1.5)
                y -= h
                segments.append((group, round(y, 2), round(h, 2), n))
        bars.append(Bar(round(x, 2), label, segments, sum(hour.values())))
        if i % 6 == 0:
            ticks.append((round(x + bar_width / 2, 2), label))
    return Chart(width, height, top, bottom, round(bar_width, 2), bars, max_count, ticks, totals)


async def load_activity(
    store: Store, workspace_id: str, now: datetime, recent: int = 50
) -> Activity:
    """Everything the activity view shows; ``recent=0`` skips the attempt list."""
    rows: list[AttemptRow] = []
    if recent:
        rows = (await store.list_attempts(workspace_id, limit=recent)).items
    sources = await store.source_summary(workspace_id)
    sources.sort(key=lambda s: s.last_seen, reverse=True)
    buckets = await store.attempt_counts(
        workspace_id, now - timedelta(hours=CHART_HOURS + 1), bucket_seconds=3600
    )
    chart = build_chart([(b.start, b.outcome, b.count) for b in buckets], now)
    outcomes = {r.outcome for r in rows} | {s.last_failure_code or "" for s in sources}
    return Activity(
        recent=rows,
        sources=sources,
        stale_sources=[s for s in sources if s.uses_replaced_key],
        chart=chart,
        now=now,
        texts={code: outcome_text(code) for code in outcomes if code},
    )
