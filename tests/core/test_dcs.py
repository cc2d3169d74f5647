"""Data centers (SPEC section 2): region spellings, ``api-XX.`` hosts, ``--dc`` lists."""

from __future__ import annotations

import pytest

from moeconnect.dcs import DEFAULT_DCS, dc_from_host, endpoint_for, normalise_region, parse_dc_list


def test_known_dcs() -> None:
    assert DEFAULT_DCS == ("01", "02", "03", "04", "05", "06", "101")


@pytest.mark.parametrize(
    ("region", "dc"),
    [
        ("01", "01"),
        ("1", "01"),
        ("DC-01", "01"),
        ("dc01", "01"),
        ("Dc-1", "01"),
        ("dc1", "01"),
        (" 02 ", "02"),
        ("6", "06"),
        ("101", "101"),
        ("DC-101", "101"),
    ],
)
def test_region_spellings_normalise(region: str, dc: str) -> None:
    assert normalise_region(region) == dc


@pytest.mark.parametrize(
    "region",
    ["", "0", "00", "07", "99", "100", "eu", "DC_01", "dc 01", "api-01", "01a", "-01", "1.0"],
)
def test_unknown_regions(region: str) -> None:
    assert normalise_region(region) is None


def test_configured_list_limits_known_regions() -> None:
    assert normalise_region("07", ("01", "07")) == "07"
    assert normalise_region("02", ("01", "07")) is None


@pytest.mark.parametrize(
    ("host", "dc"),
    [
        ("api-02.localhost:8080", "02"),
        ("api-01.moengage.com", "01"),
        ("API-03.example.org", "03"),
        ("api-101.x", "101"),
        ("api-dc-02.x", "02"),
        ("localhost:8080", None),
        ("127.0.0.1:8080", None),
        ("api-07.localhost", None),
        ("api-02", None),  # no dot: not of the form api-XX.<anything>
        ("xapi-02.localhost", None),
        (None, None),
        ("", None),
    ],
)
def test_dc_from_host(host: str | None, dc: str | None) -> None:
    assert dc_from_host(host) == dc


def test_parse_dc_list() -> None:
    assert parse_dc_list("01") == ("01",)
    assert parse_dc_list("01,2, dc-03,01") == ("01", "02", "03")
    with pytest.raises(ValueError, match="unknown data center '09'"):
        parse_dc_list("01,09")
    with pytest.raises(ValueError, match="at least one"):
        parse_dc_list(" , ")


def test_endpoint_for() -> None:
    assert endpoint_for("02") == "https://api-02.moengage.com"
    assert endpoint_for("01", "example.test", "http") == "http://api-01.example.test"
