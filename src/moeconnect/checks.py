"""The check table of the Test Connection endpoint, as pure functions.

Request facts in, outcome out; no I/O. The HTTP layer calls the three stages in order, and runs
the rate limits (row 5) between the first and the second:

1. :func:`check_transport` — method, body size, content type, the Authorization header (rows 1–4);
2. :func:`check_payload` — MOE-APPKEY, the JSON body, region, consistency, DC, checksum (6–12);
3. :func:`check_credentials` — the workspace and its keys, from the store or the cache (13–18).

Each returns a :class:`Failure` naming a code of :mod:`moeconnect.errors`, or what the next stage
needs.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from . import errors
from .dcs import endpoint_for, normalise_region
from .keys import checksum_ok, has_generated_format
from .records import CredentialKey, WorkspaceCredentials

__all__ = [
    "MAX_BODY",
    "REQUIRED_FIELDS",
    "TIMELESS_FAILURES",
    "BasicCredentials",
    "ConnectionRequest",
    "Failure",
    "Success",
    "check_credentials",
    "check_payload",
    "check_transport",
    "is_json_media_type",
]

MAX_BODY = 100 * 1024
REQUIRED_FIELDS = ("app_id", "app_secret", "source", "region")
MAX_SOURCE = 64
_MAX_SHOWN = 12  # the longest region spelling is 6 ("DC-101")


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed check: the catalogue code and the parameters of its message."""

    code: str
    params: dict[str, object] = field(default_factory=dict)
    workspace_id: str | None = None
    key_id: str | None = None

    @property
    def status(self) -> int:
        return errors.CATALOGUE[self.code].status

    def message(self) -> str:
        return errors.render_message(self.code, **self.params)


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class ConnectionRequest:
    """A request that passed rows 1–12: consistent, in this DC, well-formed key."""

    workspace_id: str
    key: str
    source: str
    dc: str


@dataclass(frozen=True, slots=True)
class Success:
    workspace_id: str
    app_name: str
    key_id: str
    stale: bool = False
    sunset: datetime | None = None  # for a key in its grace period: when it stops working


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<x>+json``, parameters such as charset allowed."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _parse_basic(header: str) -> BasicCredentials | str:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return "the scheme is not Basic"
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "the credentials are not valid base64"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "the decoded credentials are not UTF-8"
    username, colon, password = text.partition(":")
    if not colon:
        return "the decoded credentials have no ':' between workspace ID and key"
    return BasicCredentials(username, password)


def check_transport(
    method: str,
    body_too_large: bool,
    content_type: str | None,
    authorization: str | None,
) -> BasicCredentials | Failure:
    """Rows 1–4: what can be judged before the body is parsed."""
    if method != "POST":
        return Failure("METHOD_NOT_ALLOWED", {"method": method[:16], "allowed": "POST"})
    if body_too_large:
        return Failure("PAYLOAD_TOO_LARGE", {"limit": MAX_BODY})
    if not is_json_media_type(content_type):
        return Failure("UNSUPPORTED_MEDIA_TYPE")
    if authorization is None or not authorization.strip():
        return Failure("AUTH_MISSING")
    parsed = _parse_basic(authorization)
    if isinstance(parsed, str):
        return Failure("AUTH_MALFORMED", {"reason": parsed})
    return parsed


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def _shown(value: str) -> str:
    """A user-supplied value safe to echo in a message: short and quoted.

    Only values as short as a region can be are echoed: a partner who pasted the key into the
    wrong field must not find part of it in an error message (or in a log that stores one).
    """
    if len(value) <= _MAX_SHOWN and not has_generated_format(value):
        return repr(value)
    return f"of {len(value)} characters (not shown)"


def check_payload(
    creds: BasicCredentials,
    appkey: str | None,
    body: bytes,
    served_dc: str,
    known_dcs: tuple[str, ...],
    domain: str = "moengage.com",
) -> ConnectionRequest | Failure:
    """Rows 6–12: headers and body agree, the region is served here, the key is well-formed."""
    if appkey is None or not appkey.strip():
        return Failure("APPKEY_MISSING")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Failure("INVALID_JSON")
    if not isinstance(payload, dict):
        return Failure("INVALID_JSON")
    for name in REQUIRED_FIELDS:
        value = payload.get(name)
        if value is None:
            return Failure("FIELD_MISSING", {"field": name})
        if not isinstance(value, str) or not value:
            return Failure("FIELD_INVALID", {"field": name, "expected": "a non-empty string"})
    source: str = payload["source"]
    if len(source) > MAX_SOURCE:
        return Failure(
            "FIELD_INVALID", {"field": "source", "expected": "a string of 1 to 64 characters"}
        )
    region = payload["region"]
    dc = normalise_region(region, known_dcs)
    if dc is None:
        return Failure("UNKNOWN_REGION", {"region": _shown(region), "known": ", ".join(known_dcs)})
    username = creds.username
    if not _same(appkey.strip(), username):
        return Failure("WORKSPACE_ID_MISMATCH", {"where": "MOE-APPKEY header"})
    if not _same(payload["app_id"], username):
        return Failure("WORKSPACE_ID_MISMATCH", {"where": "app_id in the body"})
    if not _same(payload["app_secret"], creds.password):
        return Failure("API_KEY_MISMATCH", workspace_id=username)
    if dc != served_dc:
        return Failure(
            "WRONG_DC",
            {"served": served_dc, "region": dc, "endpoint": endpoint_for(dc, domain)},
            workspace_id=username,
        )
    if has_generated_format(creds.password) and not checksum_ok(creds.password):
        return Failure("KEY_MALFORMED", workspace_id=username)
    return ConnectionRequest(username, creds.password, source, dc)


def _date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


# The failures of check_credentials that only the record, the request and the presented key
# decide, whatever the time: the endpoint renders one once per request and record and repeats
# it. Not KEY_REVOKED, whose message may carry the time of the check.
TIMELESS_FAILURES = frozenset(
    (
        "WORKSPACE_NOT_FOUND",
        "WORKSPACE_IN_OTHER_DC",
        "WORKSPACE_SUSPENDED",
        "NO_DATA_KEY",
        "KEY_MISMATCH",
    )
)


def check_credentials(
    request: ConnectionRequest,
    record: WorkspaceCredentials | None,
    digest: bytes,
    now: datetime,
    domain: str = "moengage.com",
) -> Success | Failure:
    """Rows 13–18, given the workspace's record and the keyed digest of the presented key."""
    if record is None:
        return Failure("WORKSPACE_NOT_FOUND")
    wid = record.workspace_id
    if record.dc != request.dc:
        return Failure(
            "WORKSPACE_IN_OTHER_DC",
            {"dc": record.dc, "endpoint": endpoint_for(record.dc, domain)},
            workspace_id=wid,
        )
    if record.status != "active":
        return Failure("WORKSPACE_SUSPENDED", workspace_id=wid)
    if not record.keys or record.keys[0].state != "current":
        return Failure("NO_DATA_KEY", workspace_id=wid)
    matched: CredentialKey | None = None
    for key in record.keys:
        # Compare against every digest so timing says nothing about which one matched.
        if hmac.compare_digest(key.digest, digest) and matched is None:
            matched = key
    if matched is None:
        return Failure("KEY_MISMATCH", workspace_id=wid)
    if matched.state == "current":
        return Success(wid, record.name, matched.id)
    if matched.state == "replaced" and matched.ended_at is not None and now < matched.ended_at:
        return Success(wid, record.name, matched.id, stale=True, sunset=matched.ended_at)
    when = matched.ended_at or now
    return Failure(
        "KEY_REVOKED",
        {"how": matched.ended_how or "replaced", "when": _date(when)},
        workspace_id=wid,
        key_id=matched.id,
    )
