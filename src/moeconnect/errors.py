"""The error catalogue: every outcome code with its HTTP status, ``type`` and message.

Pure data. The HTTP layer only renders these; the check table only chooses among them. Messages
are one sentence a person can act on; templates take keyword arguments named in ``{braces}``.
A value quoted from a client goes through :func:`moeconnect.text.excerpt` (at most 64 characters,
escaped) where the message is made; :func:`render_message` also cuts any text parameter at
:data:`MAX_PARAM` characters and escapes its control characters, so no input of any length comes
back whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .text import printable

__all__ = ["CATALOGUE", "MAX_PARAM", "STALE_SUCCESS", "SUCCESS", "ErrorSpec", "render_message"]

# The longest text a message template takes as one parameter (a whole sentence, for
# VALIDATION_ERROR's ``{detail}``): a backstop, as values are cut where they are quoted.
MAX_PARAM: Final = 512

SUCCESS: Final = "SUCCESS"
STALE_SUCCESS: Final = "SUCCESS_STALE_KEY"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One row of the catalogue."""

    code: str
    status: int
    type: str
    message: str


_BAD = "Bad Request"
_AUTH = "Authentication required"

CATALOGUE: Final[dict[str, ErrorSpec]] = {
    spec.code: spec
    for spec in (
        ErrorSpec(
            "METHOD_NOT_ALLOWED",
            405,
            "Method Not Allowed",
            "Use {allowed} for this path; {method} is not allowed.",
        ),
        ErrorSpec(
            "PAYLOAD_TOO_LARGE",
            413,
            "Payload Too Large",
            "The request body is larger than {limit} bytes; send only app_id, app_secret, "
            "source and region.",
        ),
        ErrorSpec(
            "UNSUPPORTED_MEDIA_TYPE",
            415,
            "Unsupported Media Type",
            "Set the Content-Type header to application/json.",
        ),
        ErrorSpec(
            "AUTH_MISSING",
            401,
            _AUTH,
            "Send an Authorization header: Basic base64(workspace_id:data_api_key).",
        ),
        ErrorSpec(
            "AUTH_MALFORMED",
            401,
            _AUTH,
            "The Authorization header is not valid Basic credentials ({reason}); send "
            "Basic base64(workspace_id:data_api_key).",
        ),
        ErrorSpec(
            "RATE_LIMITED",
            429,
            "Rate Limit Exceeded",
            "Too many attempts ({limit}); wait {retry_after} seconds before trying again.",
        ),
        ErrorSpec(
            "APPKEY_MISSING",
            400,
            _BAD,
            "Send the MOE-APPKEY header with your workspace ID.",
        ),
        ErrorSpec(
            "INVALID_JSON",
            400,
            _BAD,
            "The request body must be a JSON object with app_id, app_secret, source and region.",
        ),
        ErrorSpec(
            "FIELD_MISSING",
            400,
            _BAD,
            "The request body is missing the field {field}; add it as a non-empty string.",
        ),
        ErrorSpec(
            "FIELD_INVALID",
            400,
            _BAD,
            "The field {field} must be {expected}.",
        ),
        ErrorSpec(
            "UNKNOWN_REGION",
            400,
            _BAD,
            "The region {region} is not a known data center; use one of {known}.",
        ),
        ErrorSpec(
            "WORKSPACE_ID_MISMATCH",
            400,
            _BAD,
            "The {where} does not match the workspace ID in the Authorization header; send the "
            "same workspace ID in all three places.",
        ),
        ErrorSpec(
            "API_KEY_MISMATCH",
            400,
            _BAD,
            "The app_secret in the body does not match the key in the Authorization header; "
            "send the same Data API key in both.",
        ),
        ErrorSpec(
            "WRONG_DC",
            400,
            _BAD,
            "This endpoint serves data center {served}; send requests for region {region} to "
            "{endpoint}.",
        ),
        ErrorSpec(
            "KEY_MALFORMED",
            401,
            _AUTH,
            "The Data API key fails its checksum, so it was probably mistyped or truncated; copy "
            "it again from Settings > Account > APIs.",
        ),
        ErrorSpec(
            "WORKSPACE_NOT_FOUND",
            401,
            _AUTH,
            "No workspace has this workspace ID; copy it from Settings > Account > APIs.",
        ),
        ErrorSpec(
            "WORKSPACE_IN_OTHER_DC",
            401,
            _AUTH,
            "This workspace lives in data center {dc}; use region {dc} and the endpoint "
            "{endpoint}.",
        ),
        ErrorSpec(
            "WORKSPACE_SUSPENDED",
            403,
            "Forbidden",
            "This workspace is suspended; ask its owner or MoEngage support to reactivate it.",
        ),
        ErrorSpec(
            "NO_DATA_KEY",
            401,
            _AUTH,
            "This workspace has no Data API key; generate one at Settings > Account > APIs.",
        ),
        ErrorSpec(
            "KEY_REVOKED",
            401,
            _AUTH,
            "This Data API key was {how} on {when}; use the current key from "
            "Settings > Account > APIs.",
        ),
        ErrorSpec(
            "KEY_MISMATCH",
            401,
            _AUTH,
            "App Secret key mismatch. Please login to the dashboard to verify key",
        ),
        ErrorSpec(
            "STORE_UNAVAILABLE",
            503,
            "Service Unavailable",
            "The credential store is unavailable; your credentials were not checked, so retry "
            "in {retry_after} seconds.",
        ),
        ErrorSpec(
            "INTERNAL",
            500,
            "Internal Server Error",
            "An unexpected error occurred; retry, and quote the request_id if it persists.",
        ),
        # Answered by the HTTP layer (moeconnect.http.protocol) before any route runs.
        ErrorSpec(
            "HEADERS_TOO_LARGE",
            431,
            "Request Header Fields Too Large",
            "The request headers are larger than {limit} bytes; send only the headers the API "
            "needs.",
        ),
        ErrorSpec(
            "REQUEST_TIMEOUT",
            408,
            "Request Timeout",
            "The request line and headers did not arrive within {limit} seconds; send each "
            "request whole.",
        ),
        ErrorSpec(
            "TOO_MANY_CONNECTIONS",
            503,
            "Service Unavailable",
            "The server has too many open connections; retry in a second.",
        ),
        ErrorSpec(
            "MALFORMED_REQUEST",
            400,
            _BAD,
            "The request is not valid HTTP/1.1; send a well-formed request.",
        ),
        ErrorSpec(
            "NOT_FOUND",
            404,
            "Not Found",
            # The path is not echoed: a client may have put a key or token in it by mistake.
            "Nothing is served at this path; the Test Connection API is "
            "POST /v1/integrations/authentication.",
        ),
        # Admin API and dashboard outcomes share the envelope.
        ErrorSpec("UNAUTHORIZED", 401, _AUTH, "Send a valid operator token as a Bearer token."),
        ErrorSpec("VALIDATION_ERROR", 400, _BAD, "{detail}"),
        ErrorSpec("CONFLICT", 409, "Conflict", "{detail}"),
        # Beyond the operator token's role or workspace restriction (SPEC section 9).
        ErrorSpec("INSUFFICIENT_ROLE", 403, "Forbidden", "{detail}"),
        ErrorSpec("RESOURCE_NOT_FOUND", 404, "Not Found", "{detail}"),
    )
}


class _Default(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "?"


def _bounded(value: object) -> object:
    if type(value) is not str or (len(value) <= MAX_PARAM and value.isprintable()):
        return value
    return printable(value[:MAX_PARAM]) + ("…" if len(value) > MAX_PARAM else "")


def render_message(code: str, **params: object) -> str:
    """The catalogue message for ``code`` with ``params`` filled in (missing ones as ``?``),
    each text parameter at most :data:`MAX_PARAM` characters, control characters escaped."""
    for value in params.values():
        if type(value) is str and (len(value) > MAX_PARAM or not value.isprintable()):
            params = {name: _bounded(other) for name, other in params.items()}
            break
    return CATALOGUE[code].message.format_map(_Default(params))
