"""A record row's minute and its time as SQLite text, worked out once per minute or second. Pure.

Every failed attempt becomes a row of the connection record, and building it ran on the event
loop: its minute (``datetime.replace``, ~0.7 µs) and, on SQLite, its time as the text the column
stores (``isoformat``, ~1 µs) were a sizeable share of what a refusal cost beyond its answer.
Attempts come in time order, many per second, so the last minute and second worked out are kept
(as one tuple, so a reader in another thread never sees half of an update) and reused while the
next moment falls inside them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["minute_of", "sqlite_text"]

_MINUTE = timedelta(minutes=1)
_SECOND = timedelta(seconds=1)
_NEVER = datetime.max.replace(tzinfo=UTC)

# (start, end) of the last minute given out, and (start, end, text) of the last second.
_minute: tuple[datetime, datetime] = (_NEVER, _NEVER)
_second: tuple[datetime, datetime, str] = (_NEVER, _NEVER, "")


def minute_of(moment: datetime) -> datetime:
    """``moment`` with its seconds and microseconds set to zero, in its own timezone."""
    global _minute
    start, end = _minute
    if moment.tzinfo is start.tzinfo and start <= moment < end:
        return start
    start = moment.replace(second=0, microsecond=0)
    _minute = (start, start + _MINUTE)
    return start


def sqlite_text(moment: datetime) -> str:
    """An aware ``moment`` as the text SQLAlchemy's SQLite DATETIME stores for it in UTC
    (``YYYY-MM-DD HH:MM:SS.ffffff``), so that comparisons in SQL stay consistent."""
    global _second
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    start, end, text = _second
    if not start <= moment < end:
        start = moment.replace(microsecond=0)
        text = start.isoformat(" ")[:19]
        _second = (start, start + _SECOND, text)
    return f"{text}.{moment.microsecond:06d}"
