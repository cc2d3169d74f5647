"""The error catalogue against SPEC section 3's table (copied here: the spec is not in the repo)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moeconnect.errors import CATALOGUE, render_message
from moeconnect.http.responses import error_body, error_body_around_id

# (status, type, code) for every row of SPEC section 3, in table order, plus the 404 it names.
SPEC_TABLE = [
    (405, "Method Not Allowed", "METHOD_NOT_ALLOWED"),
    (413, "Payload Too Large", "PAYLOAD_TOO_LARGE"),
    (415, "Unsupported Media Type", "UNSUPPORTED_MEDIA_TYPE"),
    (401, "Authentication required", "AUTH_MISSING"),
    (401, "Authentication required", "AUTH_MALFORMED"),
    (429, "Rate Limit Exceeded", "RATE_LIMITED"),
    (400, "Bad Request", "APPKEY_MISSING"),
    (400, "Bad Request", "INVALID_JSON"),
    (400, "Bad Request", "FIELD_MISSING"),
    (400, "Bad Request", "FIELD_INVALID"),
    (400, "Bad Request", "UNKNOWN_REGION"),
    (400, "Bad Request", "WORKSPACE_ID_MISMATCH"),
    (400, "Bad Request", "API_KEY_MISMATCH"),
    (400, "Bad Request", "WRONG_DC"),
    (401, "Authentication required", "KEY_MALFORMED"),
    (401, "Authentication required", "WORKSPACE_NOT_FOUND"),
    (401, "Authentication required", "WORKSPACE_IN_OTHER_DC"),
    (403, "Forbidden", "WORKSPACE_SUSPENDED"),
    (401, "Authentication required", "NO_DATA_KEY"),
    (401, "Authentication required", "KEY_REVOKED"),
    (401, "Authentication required", "KEY_MISMATCH"),
    (503, "Service Unavailable", "STORE_UNAVAILABLE"),
    (500, "Internal Server Error", "INTERNAL"),
    (404, "Not Found", "NOT_FOUND"),
]


@pytest.mark.parametrize(("status", "type_", "code"), SPEC_TABLE)
def test_every_spec_row_is_in_the_catalogue(status: int, type_: str, code: str) -> None:
    spec = CATALOGUE[code]
    assert (spec.code, spec.status, spec.type) == (code, status, type_)


def test_key_mismatch_message_is_moengages() -> None:
    expected = "App Secret key mismatch. Please login to the dashboard to verify key"
    assert CATALOGUE["KEY_MISMATCH"].message == expected
    assert render_message("KEY_MISMATCH") == expected


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_messages_are_one_sentence_with_named_fields(code: str) -> None:
    spec = CATALOGUE[code]
    assert spec.code == code
    fields = [name for _, name, _, _ in string.Formatter().parse(spec.message) if name]
    assert all(name.isidentifier() for name in fields), fields
    rendered = render_message(code, **{name: "X" for name in fields})
    assert "{" not in rendered and rendered.strip() == rendered
    # One sentence: no full stop followed by another sentence (KEY_MISMATCH is MoEngage's own).
    if code != "KEY_MISMATCH" and fields != ["detail"]:
        assert ". " not in rendered.replace("e.g. ", ""), rendered


def test_missing_parameters_render_as_question_marks() -> None:
    assert render_message("FIELD_MISSING") == (
        "The request body is missing the field ?; add it as a non-empty string."
    )


def test_status_codes_are_http_errors() -> None:
    assert all(400 <= spec.status <= 599 for spec in CATALOGUE.values())


@given(
    code=st.sampled_from(sorted(CATALOGUE)),
    request_id=st.from_regex(r"\A[A-Za-z0-9_-]{8,32}\Z"),
    value=st.text(max_size=40),
)
def test_a_body_rendered_around_the_id_is_the_body_rendered_with_it(
    code: str, request_id: str, value: str
) -> None:
    """A refusal rendered once and answered again with each request's ID (the endpoint's fast
    path) must be byte for byte what rendering it with that ID gives, whatever its message
    quotes (here: the ID mark itself, a request ID, or anything)."""
    params = {name: value for name in ("dc", "endpoint", "served", "region", "how", "when")}
    head, tail = error_body_around_id(code, **params)
    assert head + request_id.encode() + tail == error_body(code, request_id, **params)
    params = dict.fromkeys(params, "REQUEST-ID-GOES-HERE")
    head, tail = error_body_around_id(code, **params)
    assert head + request_id.encode() + tail == error_body(code, request_id, **params)
