"""Nearby moments shared as one float object (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from moeconnect.instants import Instants


def test_moments_within_the_resolution_share_the_first_object() -> None:
    instants = Instants(0.001)
    first = instants(1000.0002)
    assert instants(1000.0007) is first
    assert instants(1000.0013) == 1000.0013  # past the resolution: a new one
    later = instants(1000.0013)
    assert instants(1000.0019) is later


@given(st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False), max_size=50))
def test_never_later_and_never_more_than_the_resolution_earlier(moments: list[float]) -> None:
    instants = Instants(0.001)
    for moment in moments:
        given_back = instants(moment)
        assert moment - 0.001 < given_back <= moment
