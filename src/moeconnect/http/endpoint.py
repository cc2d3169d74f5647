"""``POST /v1/integrations/authentication``: the hot path, as a plain ASGI callable.

No framework, ORM or model objects per request: headers are read once from the ASGI scope, the
check table (:mod:`moeconnect.checks`) decides, and the credential cache answers without a
database round trip when it can. A store failure is a 503, never a 401.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .. import checks
from ..cache import CredentialCache
from ..checks import BasicCredentials, ConnectionRequest, Failure, Success
from ..dcs import dc_from_host
from ..digests import key_digest
from ..errors import STALE_SUCCESS, SUCCESS
from ..metrics import Metrics
from ..proxies import ClientAddress
from ..ratelimit import Admission, RateLimiter
from ..records import Attempt, WorkspaceCredentials
from ..store import Store, StoreError
from .responses import (
    JSON_HEADERS,
    error_body,
    error_headers,
    http_date,
    request_id_from,
    success_body,
)

__all__ = ["PATH", "TestConnectionEndpoint"]

PATH = "/v1/integrations/authentication"
RETRY_AFTER_STORE = 5
# How long a cached entry is trusted for a *failure* without asking the store again: a key or
# workspace created by another process a moment ago must work at once.
_RECHECK_AFTER = 0.05

log = logging.getLogger("moeconnect.endpoint")

Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class _Outcome:
    """What the endpoint answered, for the response, the record and the metrics."""

    __slots__ = ("body", "code", "extra", "key_id", "status", "workspace_id")

    def __init__(
        self,
        status: int,
        body: bytes,
        code: str,
        workspace_id: str | None = None,
        key_id: str | None = None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.code = code
        self.workspace_id = workspace_id
        self.key_id = key_id
        self.extra = extra or []


class TestConnectionEndpoint:
    """The ASGI handler of the Test Connection API."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        store: Store,
        secret: bytes,
        cache: CredentialCache,
        *,
        dcs: tuple[str, ...],
        known_dcs: tuple[str, ...],
        domain: str = "moengage.com",
        client_address: ClientAddress | None = None,
        record: Callable[[Attempt], None] | None = None,
        limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.secret = secret
        self.cache = cache
        self.dcs = dcs
        self.known_dcs = known_dcs
        self.domain = domain
        self.client_address = client_address or ClientAddress()
        self.record = record
        self.limiter = limiter if limiter is not None and limiter.enabled else None
        self.metrics = metrics

    def served_dc(self, host: bytes | None) -> str:
        if len(self.dcs) == 1 or host is None:
            return self.dcs[0]
        dc = dc_from_host(host.decode("latin-1"), self.known_dcs)
        return dc if dc in self.dcs else self.dcs[0]

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        authorization = content_type = appkey = host = req_id = agent = forwarded = None
        content_length = -1
        repeated_auth = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value
                else:
                    repeated_auth = True
            elif name == b"content-type":
                content_type = value
            elif name == b"moe-appkey":
                appkey = value
            elif name == b"host":
                host = value
            elif name == b"x-request-id":
                req_id = value
            elif name == b"user-agent":
                agent = value
            elif name == b"x-forwarded-for":
                forwarded = value
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = -1
        request_id = request_id_from(req_id)
        dc = self.served_dc(host)
        source: str | None = None
        client = scope.get("client")
        client_ip = self.client_address.resolve(
            client[0] if client else None, forwarded.decode("latin-1") if forwarded else None
        )
        limit_headers: list[tuple[bytes, bytes]] = []
        try:
            method = scope["method"]
            body = b""
            too_large = content_length > checks.MAX_BODY
            if method == "POST" and not too_large:
                body, too_large = await _read_body(receive)
            outcome, source, admission = await self._decide(
                method,
                too_large,
                content_type,
                authorization,
                appkey,
                body,
                dc,
                request_id,
                client_ip,
                repeated_auth,
            )
            if admission is not None and self.limiter is not None:
                limit_headers = await self.limiter.settle(admission, outcome.code)
        except Exception:
            log.exception("unexpected error", extra={"request_id": request_id})
            outcome = _Outcome(500, error_body("INTERNAL", request_id), "INTERNAL")
        headers = [
            *JSON_HEADERS,
            (b"content-length", str(len(outcome.body)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        headers.extend(outcome.extra)
        headers.extend(limit_headers)
        await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
        await send({"type": "http.response.body", "body": outcome.body})
        if self.metrics is not None:
            self.metrics.observe(outcome.code, time.perf_counter() - started)
        if self.record is not None:
            self.record(
                Attempt(
                    at=datetime.now(UTC),
                    request_id=request_id,
                    workspace_id=outcome.workspace_id,
                    dc=dc,
                    source=source,
                    outcome=outcome.code,
                    key_id=outcome.key_id,
                    client_ip=client_ip,
                    user_agent=agent.decode("latin-1")[:256] if agent else None,
                )
            )

    async def _decide(
        self,
        method: str,
        too_large: bool,
        content_type: bytes | None,
        authorization: bytes | None,
        appkey: bytes | None,
        body: bytes,
        dc: str,
        request_id: str,
        client_ip: str | None = None,
        repeated_auth: bool = False,
    ) -> tuple[_Outcome, str | None, Admission | None]:
        creds = checks.check_transport(
            method,
            too_large,
            content_type.decode("latin-1") if content_type is not None else None,
            authorization.decode("latin-1") if authorization is not None else None,
        )
        if repeated_auth and (
            not isinstance(creds, Failure) or creds.code in ("AUTH_MISSING", "AUTH_MALFORMED")
        ):
            # Two Authorization headers are ambiguous: an intermediary may have read the other.
            creds = Failure("AUTH_MALFORMED", {"reason": "more than one Authorization header"})
        limiter = self.limiter
        if isinstance(creds, Failure):
            # Answered before row 5: the limits only lend their headers.
            admission = None
            if limiter is not None:
                admission = await limiter.admit(client_ip, None, checked=False)
            return self._failure(creds, request_id), None, admission
        # Row 5: refuse at once when a limit for this IP or workspace is exhausted.
        admission = None
        if limiter is not None:
            admission = await limiter.admit(client_ip, creds.username, checked=True)
            if admission.blocked is not None:
                return self._rate_limited(admission, request_id), None, admission
        outcome, source = await self._check(creds, appkey, body, dc, request_id)
        return outcome, source, admission

    def _rate_limited(self, admission: Admission, request_id: str) -> _Outcome:
        retry_after = admission.retry_after
        return _Outcome(
            429,
            error_body(
                "RATE_LIMITED", request_id, limit=admission.describe(), retry_after=retry_after
            ),
            "RATE_LIMITED",
            # A workspace's own limit is news for its owner; an IP's is not about the workspace.
            admission.blocked_workspace(),
            extra=error_headers(429, retry_after),
        )

    async def _check(
        self,
        creds: BasicCredentials,
        appkey: bytes | None,
        body: bytes,
        dc: str,
        request_id: str,
    ) -> tuple[_Outcome, str | None]:
        """Rows 6–18."""
        request = self._payload(creds, appkey, body, dc)
        if isinstance(request, Failure):
            return self._failure(request, request_id), None
        try:
            result = await self._authenticate(request)
        except StoreError as err:
            log.warning("store unavailable: %s", err, extra={"request_id": request_id})
            return (
                _Outcome(
                    503,
                    error_body("STORE_UNAVAILABLE", request_id, retry_after=RETRY_AFTER_STORE),
                    "STORE_UNAVAILABLE",
                    request.workspace_id,
                    extra=error_headers(503, RETRY_AFTER_STORE),
                ),
                request.source,
            )
        if isinstance(result, Failure):
            return self._failure(result, request_id), request.source
        extra: list[tuple[bytes, bytes]] = []
        if result.stale and result.sunset is not None:
            extra.append((b"sunset", http_date(result.sunset).encode()))
        return (
            _Outcome(
                200,
                success_body(result.app_name),
                STALE_SUCCESS if result.stale else SUCCESS,
                result.workspace_id,
                result.key_id,
                extra,
            ),
            request.source,
        )

    def _payload(
        self, creds: BasicCredentials, appkey: bytes | None, body: bytes, dc: str
    ) -> ConnectionRequest | Failure:
        return checks.check_payload(
            creds,
            appkey.decode("utf-8", "replace") if appkey is not None else None,
            body,
            dc,
            self.known_dcs,
            self.domain,
        )

    async def _authenticate(self, request: ConnectionRequest) -> Success | Failure:
        digest = key_digest(self.secret, request.key)
        now = datetime.now(UTC)
        cached = self.cache.get(request.workspace_id)
        if cached is not None:
            loaded, record = cached
            result = checks.check_credentials(request, record, digest, now, self.domain)
            if isinstance(result, Success) or time.monotonic() - loaded < _RECHECK_AFTER:
                return result
        fresh = await self._load(request.workspace_id)
        return checks.check_credentials(request, fresh, digest, now, self.domain)

    async def _load(self, workspace_id: str) -> WorkspaceCredentials | None:
        loaded = time.monotonic()
        record = await self.store.credentials(workspace_id)
        if record is not None:
            self.cache.put(record, loaded)
        return record

    def _failure(self, failure: Failure, request_id: str) -> _Outcome:
        status = failure.status
        return _Outcome(
            status,
            error_body(failure.code, request_id, **failure.params),
            failure.code,
            failure.workspace_id,
            failure.key_id,
            error_headers(status, RETRY_AFTER_STORE if status == 503 else None),
        )


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body, or ``(b"", True)`` as soon as it passes the limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > checks.MAX_BODY:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False
