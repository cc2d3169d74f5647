"""Durations as people write them: ``90s``, ``15m``, ``24h``, ``7d``, ``1h30m``. Pure."""

from __future__ import annotations

import re
from datetime import timedelta

from .text import excerpt

__all__ = ["MAX_GRACE", "format_duration", "parse_duration"]

MAX_GRACE = timedelta(days=30)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parse ``text``; raises ``ValueError`` with a sentence saying what is accepted."""
    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        return _seconds(float(cleaned), text)
    pos, total = 0, 0.0
    for match in _PART.finditer(cleaned):
        if cleaned[pos : match.start()].strip():
            break
        total += float(match.group(1)) * _UNITS[match.group(2).lower()]
        pos = match.end()
    if pos == 0 or cleaned[pos:].strip():
        raise ValueError(
            f"can't read {excerpt(text)} as a duration; write it like 90s, 15m, 24h or 7d"
        )
    return _seconds(total, text)


def _seconds(total: float, text: str) -> timedelta:
    try:
        return timedelta(seconds=total)
    except OverflowError:  # beyond timedelta's ~2.7 million years: an input error like any other
        raise ValueError(f"{excerpt(text)} is too long a duration") from None


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
