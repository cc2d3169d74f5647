"""Must-show 3 (pure part): the header and body parsing of :mod:`moeconnect.checks` on any input.

Whatever arrives, the check functions answer — credentials, a request, or a 4xx failure from the
catalogue — and never raise.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from moeconnect import checks
from moeconnect.checks import BasicCredentials, ConnectionRequest, Failure
from moeconnect.dcs import DEFAULT_DCS
from moeconnect.errors import CATALOGUE

# Headers reach the checks decoded as latin-1, so every byte string maps to some text.
header_text = st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
# Lone surrogates can't be encoded as UTF-8 at all, so no client can send them.
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)
json_values = st.recursive(
    # JSON has no NaN or Infinity; numbers beyond a double are INVALID_JSON (tested below).
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(any_text, inner, max_size=5),
    max_leaves=20,
)
FIELDS = checks.REQUIRED_FIELDS


def _json(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


def _is_client_error(result: Failure) -> bool:
    return result.code in CATALOGUE and 400 <= result.status < 500


@given(
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "X"]),
    too_large=st.booleans(),
    content_type=st.none() | header_text,
    authorization=st.none() | header_text,
)
def test_check_transport_never_raises(
    method: str, too_large: bool, content_type: str | None, authorization: str | None
) -> None:
    result = checks.check_transport(method, too_large, content_type, authorization)
    assert isinstance(result, BasicCredentials) or _is_client_error(result)
    if isinstance(result, BasicCredentials):
        assert method == "POST" and not too_large


@given(username=any_text.filter(lambda u: ":" not in u), password=any_text)
def test_basic_credentials_round_trip(username: str, password: str) -> None:
    raw = f"{username}:{password}".encode()
    header = "Basic " + base64.b64encode(raw).decode()
    result = checks.check_transport("POST", False, "application/json", header)
    assert result == BasicCredentials(username, password)


@given(scheme=st.sampled_from(["Basic", "basic", "BASIC"]), payload=st.binary(max_size=200))
def test_any_decoded_basic_payload_is_credentials_or_auth_malformed(
    scheme: str, payload: bytes
) -> None:
    header = f"{scheme} " + base64.b64encode(payload).decode()
    result = checks.check_transport("POST", False, "application/json; charset=utf-8", header)
    if isinstance(result, Failure):
        assert result.code == "AUTH_MALFORMED"
    else:
        assert f"{result.username}:{result.password}".encode() == payload


@given(content_type=header_text)
def test_media_type_check_is_total(content_type: str) -> None:
    assert checks.is_json_media_type(content_type) in (True, False)


def _payload(appkey: str | None, body: bytes) -> ConnectionRequest | Failure:
    creds = BasicCredentials("WS123", "a-key-of-some-length")
    return checks.check_payload(creds, appkey, body, "01", DEFAULT_DCS)


@given(appkey=st.none() | header_text, body=st.binary(max_size=2000))
def test_check_payload_on_arbitrary_bytes(appkey: str | None, body: bytes) -> None:
    result = _payload(appkey, body)
    assert isinstance(result, ConnectionRequest) or _is_client_error(result)


@given(document=json_values)
def test_check_payload_on_arbitrary_json(document: Any) -> None:
    result = _payload("WS123", _json(document))
    assert isinstance(result, Failure) and _is_client_error(result)
    if not isinstance(document, dict):
        assert result.code == "INVALID_JSON"


@given(fields=st.fixed_dictionaries({}, optional={name: json_values for name in FIELDS}))
def test_wrong_types_name_the_field(fields: dict[str, Any]) -> None:
    result = _payload("WS123", _json(fields))
    assert isinstance(result, Failure) and _is_client_error(result)
    for name in FIELDS:  # the first field that is missing or not a non-empty string is named
        value = fields.get(name)
        if value is None:
            assert result.code == "FIELD_MISSING" and result.params["field"] == name
            break
        if not isinstance(value, str) or not value:
            assert result.code == "FIELD_INVALID" and result.params["field"] == name
            break


def test_a_number_beyond_a_double_is_invalid_json() -> None:
    result = _payload("WS123", b'{"app_id": 1e400}')
    assert isinstance(result, Failure) and result.code == "INVALID_JSON"


@given(
    depth=st.integers(min_value=1, max_value=50_000),
    opener=st.sampled_from(["[", '{"a":']),
)
@settings(max_examples=30)
def test_deeply_nested_json_is_invalid_json_not_a_crash(depth: int, opener: str) -> None:
    body = (opener * depth).encode()
    result = _payload("WS123", body)
    assert isinstance(result, Failure) and result.code == "INVALID_JSON"


@given(
    strings=st.fixed_dictionaries(
        {name: any_text.filter(bool) for name in FIELDS},
    ),
    nul_at=st.sampled_from(FIELDS),
)
def test_nul_bytes_in_fields_are_just_characters(strings: dict[str, str], nul_at: str) -> None:
    strings[nul_at] = strings[nul_at] + "\x00"
    result = _payload("WS123\x00", _json(strings))
    assert isinstance(result, Failure) and _is_client_error(result)
