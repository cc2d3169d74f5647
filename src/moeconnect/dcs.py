"""Data centers: the known list, region-string normalisation and public endpoints.

Pure: no I/O. A request's ``region`` may be written ``"01"``, ``"1"``, ``"DC-01"`` or ``"dc01"``;
all of them mean DC ``"01"``.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "DEFAULT_DCS",
    "dc_from_host",
    "endpoint_for",
    "normalise_region",
    "parse_dc_list",
]

DEFAULT_DCS: tuple[str, ...] = ("01", "02", "03", "04", "05", "06", "101")

_REGION = re.compile(r"^(?:dc-?)?0*(\d{1,3})$", re.IGNORECASE)
_HOST = re.compile(r"^api-(?:dc-?)?(\d{1,3})\.", re.IGNORECASE)


def _canonical(number: str) -> str:
    """``"1"`` → ``"01"``, ``"101"`` → ``"101"``: DC names are at least two digits."""
    return number.lstrip("0").rjust(2, "0") if number.strip("0") else "00"


@functools.cache
def _spellings(known: tuple[str, ...]) -> dict[str, str]:
    """The common spellings of each known DC, for a dictionary look-up on the hot path."""
    table: dict[str, str] = {}
    for dc in known:
        for number in {dc, dc.lstrip("0") or "0"}:
            for prefix in ("", "dc", "dc-"):
                table[prefix + number] = dc
    return table


def normalise_region(region: str, known: tuple[str, ...] = DEFAULT_DCS) -> str | None:
    """The canonical DC name for a region string, or ``None`` when it names no known DC."""
    fast = _spellings(known).get(region.lower())
    if fast is not None:
        return fast
    match = _REGION.match(region.strip())
    if match is None:
        return None
    dc = _canonical(match.group(1))
    return dc if dc in known else None


def parse_dc_list(text: str, known: tuple[str, ...] = DEFAULT_DCS) -> tuple[str, ...]:
    """Parse ``--dc 01,02`` into canonical names; raises ``ValueError`` naming a bad entry."""
    dcs: list[str] = []
    for part in text.split(","):
        if not part.strip():
            continue
        dc = normalise_region(part, known)
        if dc is None:
            raise ValueError(f"unknown data center {part.strip()!r}; known: {', '.join(known)}")
        if dc not in dcs:
            dcs.append(dc)
    if not dcs:
        raise ValueError("at least one data center is needed")
    return tuple(dcs)


def dc_from_host(host: str | None, known: tuple[str, ...] = DEFAULT_DCS) -> str | None:
    """The DC named by a ``Host`` header of the form ``api-XX.<anything>``, if any."""
    if not host:
        return None
    match = _HOST.match(host)
    if match is None:
        return None
    dc = _canonical(match.group(1))
    return dc if dc in known else None


def endpoint_for(dc: str, domain: str = "moengage.com", scheme: str = "https") -> str:
    """The public base URL of DC ``dc``: ``https://api-01.moengage.com``."""
    return f"{scheme}://api-{dc}.{domain}"
