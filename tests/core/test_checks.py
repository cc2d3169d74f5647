"""The check table as pure functions: every row of SPEC section 3, and the order of the rows."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from moeconnect import checks
from moeconnect.checks import (
    BasicCredentials,
    ConnectionRequest,
    Failure,
    Success,
    check_credentials,
    check_payload,
    check_transport,
    is_json_media_type,
)
from moeconnect.dcs import DEFAULT_DCS
from moeconnect.digests import key_digest
from moeconnect.keys import generate_key
from moeconnect.records import CredentialKey, WorkspaceCredentials

SECRET = b"s" * 32
WID = "WORKSPACE01"
KEY = generate_key("data")
NOW = datetime(2026, 5, 4, 12, 30, tzinfo=UTC)


def basic(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return "Basic " + base64.b64encode(raw).decode()


def body(**fields: object) -> bytes:
    payload: dict[str, object] = {"app_id": WID, "app_secret": KEY, "source": "s", "region": "01"}
    payload.update(fields)
    return orjson.dumps({k: v for k, v in payload.items() if v is not ...})


def transport(**overrides: object) -> BasicCredentials | Failure:
    args: dict[str, object] = {
        "method": "POST",
        "body_too_large": False,
        "content_type": "application/json",
        "authorization": basic(f"{WID}:{KEY}"),
    }
    args.update(overrides)
    return check_transport(**args)  # type: ignore[arg-type]


def payload(
    raw: bytes | None = None, appkey: str | None = WID, served: str = "01", key: str = KEY
) -> ConnectionRequest | Failure:
    return check_payload(
        BasicCredentials(WID, key), appkey, body() if raw is None else raw, served, DEFAULT_DCS
    )


def code(result: object) -> str:
    assert isinstance(result, Failure), result
    return result.code


# -- rows 1-4: check_transport ---------------------------------------------------------------------


def test_valid_transport_yields_the_credentials() -> None:
    assert transport() == BasicCredentials(WID, KEY)
    assert transport(authorization=basic("a:b:c")) == BasicCredentials("a", "b:c")
    assert transport(authorization=basic("ünï:cödé")) == BasicCredentials("ünï", "cödé")


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD", "OPTIONS", "post"])
def test_row_1(method: str) -> None:
    failure = transport(method=method, body_too_large=True, content_type=None)
    assert code(failure) == "METHOD_NOT_ALLOWED" and failure.status == 405  # type: ignore[union-attr]


def test_row_2_before_row_3() -> None:
    assert code(transport(body_too_large=True, content_type="text/plain")) == "PAYLOAD_TOO_LARGE"
    assert checks.MAX_BODY == 100 * 1024


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        (" APPLICATION/JSON ;charset=UTF-8", True),
        ("application/problem+json", True),
        (None, False),
        ("", False),
        ("text/json", False),
        ("text/plain", False),
        ("application/jsonp", False),
        ("multipart/form-data", False),
    ],
)
def test_row_3_json_media_types(content_type: str | None, ok: bool) -> None:
    assert is_json_media_type(content_type) is ok
    if not ok:
        assert code(transport(content_type=content_type, authorization=None)) == (
            "UNSUPPORTED_MEDIA_TYPE"
        )


@pytest.mark.parametrize("authorization", [None, "", "   "])
def test_row_4_missing(authorization: str | None) -> None:
    assert code(transport(authorization=authorization)) == "AUTH_MISSING"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Bearer abc", "not Basic"),
        ("Basic", "no ':'"),  # an empty value decodes to nothing
        ("Basic !!!", "base64"),
        ("Basic YWJj=", "base64"),
        ("Basic " + base64.b64encode(b"\xc3(:x").decode(), "UTF-8"),
        (basic("nocolon"), "no ':'"),
    ],
)
def test_row_4_malformed(authorization: str, reason: str) -> None:
    failure = transport(authorization=authorization)
    assert code(failure) == "AUTH_MALFORMED"
    assert reason in failure.message()  # type: ignore[union-attr]


# -- rows 6-12: check_payload ----------------------------------------------------------------------


def test_valid_payload_yields_the_request() -> None:
    assert payload() == ConnectionRequest(WID, KEY, "s", "01")
    assert payload(body(region="DC-1")) == ConnectionRequest(WID, KEY, "s", "01")


@pytest.mark.parametrize("appkey", [None, "", "  "])
def test_row_6(appkey: str | None) -> None:
    assert code(payload(b"not json", appkey=appkey)) == "APPKEY_MISSING"


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b"42", b'"x"', b"\xff"])
def test_row_7_invalid_json(raw: bytes) -> None:
    assert code(payload(raw)) == "INVALID_JSON"


@pytest.mark.parametrize("field", ["app_id", "app_secret", "source", "region"])
def test_row_7_field_missing_in_order(field: str) -> None:
    failure = payload(body(**{field: ...}))
    assert code(failure) == "FIELD_MISSING"
    assert failure.params == {"field": field}  # type: ignore[union-attr]
    assert code(payload(body(**{field: None}))) == "FIELD_MISSING"


@pytest.mark.parametrize("value", ["", 1, 1.5, True, [], {}])
@pytest.mark.parametrize("field", ["app_id", "app_secret", "source", "region"])
def test_row_7_field_invalid(field: str, value: object) -> None:
    failure = payload(body(**{field: value}))
    assert code(failure) == "FIELD_INVALID"
    assert field in failure.message()  # type: ignore[union-attr]


def test_row_7_source_length() -> None:
    assert isinstance(payload(body(source="s" * 64)), ConnectionRequest)
    failure = payload(body(source="s" * 65))
    assert code(failure) == "FIELD_INVALID" and "1 to 64" in failure.message()  # type: ignore[union-attr]


def test_row_7_first_missing_field_wins() -> None:
    failure = payload(body(app_secret=..., region=...))
    assert failure.params == {"field": "app_secret"}  # type: ignore[union-attr]


@pytest.mark.parametrize("region", ["07", "eu", "DC-99", "x" * 200])
def test_row_8(region: str) -> None:
    failure = payload(body(region=region, app_id="OTHER"))  # row 8 comes before row 9
    assert code(failure) == "UNKNOWN_REGION"
    message = failure.message()  # type: ignore[union-attr]
    assert "01, 02, 03, 04, 05, 06, 101" in message and len(message) < 200


def test_row_9_names_where() -> None:
    header = payload(appkey="OTHER")
    assert code(header) == "WORKSPACE_ID_MISMATCH" and "MOE-APPKEY" in header.message()  # type: ignore[union-attr]
    field = payload(body(app_id="OTHER", app_secret="other"))  # row 9 before row 10
    assert code(field) == "WORKSPACE_ID_MISMATCH" and "app_id" in field.message()  # type: ignore[union-attr]
    assert isinstance(payload(appkey=f"  {WID} "), ConnectionRequest)  # surrounding blanks


def test_row_10() -> None:
    assert code(payload(body(app_secret=KEY + "x", region="02"))) == "API_KEY_MISMATCH"


def test_row_11_names_the_endpoint() -> None:
    failure = payload(body(region="dc02"))
    assert code(failure) == "WRONG_DC"
    assert "https://api-02.moengage.com" in failure.message()  # type: ignore[union-attr]
    assert isinstance(payload(body(region="02"), served="02"), ConnectionRequest)


def test_row_12_only_for_generated_format() -> None:
    typo = KEY[:-1] + ("a" if KEY[-1] != "a" else "b")
    assert code(payload(body(app_secret=typo), key=typo)) == "KEY_MALFORMED"
    legacy = "moe-data-legacy-key"  # not the generated format: no checksum to check
    assert isinstance(payload(body(app_secret=legacy), key=legacy), ConnectionRequest)


def test_row_11_before_row_12() -> None:
    typo = KEY[:-1] + ("a" if KEY[-1] != "a" else "b")
    assert code(payload(body(app_secret=typo, region="02"), key=typo)) == "WRONG_DC"


# -- rows 13-18: check_credentials -----------------------------------------------------------------


def key(
    key_id: str,
    plaintext: str,
    state: str = "current",
    ended: datetime | None = None,
    how: str | None = None,
) -> CredentialKey:
    return CredentialKey(key_id, key_digest(SECRET, plaintext), state, ended, how)  # type: ignore[arg-type]


def record(*keys: CredentialKey, dc: str = "01", status: str = "active") -> WorkspaceCredentials:
    return WorkspaceCredentials(WID, "PI-Prod-DC01", dc, status, keys)


def creds(rec: WorkspaceCredentials | None, presented: str = KEY) -> Success | Failure:
    request = ConnectionRequest(WID, presented, "s", "01")
    return check_credentials(request, rec, key_digest(SECRET, presented), NOW)


def test_success() -> None:
    assert creds(record(key("k1", KEY))) == Success(WID, "PI-Prod-DC01", "k1")


def test_row_13() -> None:
    assert code(creds(None)) == "WORKSPACE_NOT_FOUND"


def test_row_14_names_the_dc() -> None:
    failure = creds(record(key("k1", KEY), dc="02", status="suspended"))
    assert code(failure) == "WORKSPACE_IN_OTHER_DC"
    assert "02" in failure.message() and "https://api-02.moengage.com" in failure.message()  # type: ignore[union-attr]


def test_row_15_before_row_16() -> None:
    assert code(creds(record(status="suspended"))) == "WORKSPACE_SUSPENDED"


def test_row_16() -> None:
    assert code(creds(record())) == "NO_DATA_KEY"
    revoked = key("k1", KEY, "revoked", NOW - timedelta(days=1), "revoked")
    assert code(creds(record(revoked))) == "NO_DATA_KEY"


def test_row_17_gives_how_and_when() -> None:
    old = key("k1", "old-key-123", "replaced", datetime(2026, 5, 1, 9, 5, tzinfo=UTC), "replaced")
    failure = creds(record(key("k2", KEY), old), "old-key-123")
    assert code(failure) == "KEY_REVOKED"
    assert failure.key_id == "k1"  # type: ignore[union-attr]
    assert "replaced on 2026-05-01 09:05 UTC" in failure.message()  # type: ignore[union-attr]
    older = key("k0", "older-key-1", "revoked", datetime(2026, 4, 2, 0, 0, tzinfo=UTC), "revoked")
    failure = creds(record(key("k2", KEY), old, older), "older-key-1")
    assert "revoked on 2026-04-02 00:00 UTC" in failure.message()  # type: ignore[union-attr]


def test_grace_period_key_succeeds_as_stale_with_its_sunset() -> None:
    ends = NOW + timedelta(hours=2)
    graced = key("k1", "old-key-123", "replaced", ends, "replaced")
    result = creds(record(key("k2", KEY), graced), "old-key-123")
    assert result == Success(WID, "PI-Prod-DC01", "k1", stale=True, sunset=ends)
    expired = key("k1", "old-key-123", "replaced", NOW, "replaced")
    assert code(creds(record(key("k2", KEY), expired), "old-key-123")) == "KEY_REVOKED"


def test_row_18() -> None:
    failure = creds(record(key("k1", KEY)), "wrong-key-1")
    assert code(failure) == "KEY_MISMATCH"
    assert failure.message() == (  # type: ignore[union-attr]
        "App Secret key mismatch. Please login to the dashboard to verify key"
    )


def test_timeless_failures_are_the_same_whatever_the_time() -> None:
    """The endpoint renders a TIMELESS_FAILURES refusal once per request and record and repeats
    it (``_Known.refusal``): only the record and the presented key may decide it."""
    cases = {
        "WORKSPACE_NOT_FOUND": (None, KEY),
        "WORKSPACE_IN_OTHER_DC": (record(key("k1", KEY), dc="02"), KEY),
        "WORKSPACE_SUSPENDED": (record(key("k1", KEY), status="suspended"), KEY),
        "NO_DATA_KEY": (record(key("k1", KEY, "revoked", NOW, "revoked")), KEY),
        "KEY_MISMATCH": (record(key("k1", KEY)), "wrong-key-1"),
    }
    assert set(cases) == checks.TIMELESS_FAILURES
    for expected, (rec, presented) in cases.items():
        request = ConnectionRequest(WID, presented, "s", "01")
        digest = key_digest(SECRET, presented)
        first = check_credentials(request, rec, digest, NOW)
        assert code(first) == expected
        for later in (timedelta(seconds=1), timedelta(days=1), timedelta(days=3650)):
            assert check_credentials(request, rec, digest, NOW + later) == first
    # Why KEY_REVOKED is not among them: without an end on record, it says when it was checked.
    unended = record(key("k2", KEY), key("k1", "old-key-123", "replaced"))
    request = ConnectionRequest(WID, "old-key-123", "s", "01")
    digest = key_digest(SECRET, "old-key-123")
    assert check_credentials(request, unended, digest, NOW) != check_credentials(
        request, unended, digest, NOW + timedelta(days=1)
    )


@pytest.mark.parametrize("region", [KEY, "a-legacy-secret-key", "moe_data_abc"])
def test_row_8_never_echoes_a_key_pasted_into_region(region: str) -> None:
    failure = payload(body(region=region))
    assert code(failure) == "UNKNOWN_REGION"
    message = failure.message()  # type: ignore[union-attr]
    assert "not shown" in message
    assert not any(region[i : i + 6] in message for i in range(len(region) - 5))


def test_row_8_echoes_a_short_region() -> None:
    assert "'eu-west'" in payload(body(region="eu-west")).message()  # type: ignore[union-attr]
