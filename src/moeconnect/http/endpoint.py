"""``POST /v1/integrations/authentication``: the hot path, as a plain ASGI callable.

No framework, ORM or model objects per request: headers are read once from the ASGI scope, the
check table (:mod:`moeconnect.checks`) decides, and the credential cache answers without a
database round trip when it can. A store failure is a 503, never a 401.

Rows 4 and 6–12 are pure functions of the Authorization and MOE-APPKEY headers, the body and the
served DC, and integration tools send the same bytes again and again. So a request that passed
them is remembered under a keyed hash of those bytes (:class:`_Known`: never the bytes, which hold
the key), with the keyed digest of its key. A repeat skips the Basic decode, the JSON parse, the
field checks and the key's HMAC; and when the last answer was a success against the very record
the cache still holds, the repeat is answered from what was sent then (the *warm* path): a hash,
two dict lookups, the limits and the record's counter.

The memo is bounded in entries (:data:`_MEMO_SIZE`) and in bytes (:data:`MEMO_BYTES`, 160 MiB by
default): each entry is charged an upper estimate of what it holds, and when either bound would
be passed the memo starts again empty. Only requests that passed rows 6-12 with a username that
can be a workspace ID are remembered, so every string an entry keeps is short (an ID and a
source of at most 64 characters); a username that can't name a workspace is answered
WORKSPACE_NOT_FOUND (what row 13 would say: no workspace has such an ID) without a store read.
A warm success's counter also keeps the latest request ID, client address and User-Agent (cut to
320 bytes), which only a client holding the key can put there: not charged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .. import checks
from ..cache import ChangeWatcher, CredentialCache
from ..checks import BasicCredentials, ConnectionRequest, Failure, Success
from ..dcs import dc_from_host
from ..digests import key_digest
from ..errors import STALE_SUCCESS, SUCCESS
from ..metrics import Metrics
from ..proxies import ClientAddress
from ..ratelimit import Admission, RateLimiter
from ..record import AGENT_KEPT, ConnectionRecorder, SuccessCounter
from ..records import Attempt, WorkspaceCredentials, could_be_workspace_id
from ..request_ids import KeptRequestId, request_id_from
from ..store import Store, StoreError
from .pending import PendingAnswer
from .responses import (
    JSON_HEADERS,
    error_body,
    error_body_around_id,
    error_headers,
    header_lines,
    http_date,
    success_body,
)

__all__ = ["MEMO_BYTES", "PATH", "TestConnectionEndpoint"]

PATH = "/v1/integrations/authentication"
RETRY_AFTER_STORE = 5

# At most this many remembered requests, and at most this many bytes of them; when either is
# reached, the memo starts again empty (a flood of distinct requests costs the memo its hits,
# never memory). 250,000 typical entries (a 21-character ID, a short source) are charged about
# 150 MB, so normal traffic meets the count first; maximal ones (64-character ID and source,
# every character of the source 4 bytes wide, a rendered refusal) meet the bytes first.
_MEMO_SIZE = 250_000
MEMO_BYTES = 160 * 1024 * 1024
# What an entry costs beside its workspace ID and source, at most: its dict slot (60-120 bytes,
# by how full the table is), the 16-byte fingerprint (56), the _Known object (160), the key's
# digest (72): ~330-410 bytes measured with tracemalloc, charged with a margin. A rendered
# refusal kept for repeats adds _REFUSAL_BYTES and its text (~440 bytes measured in all).
_ENTRY_BYTES = 480
_REFUSAL_BYTES = 400
_JSON = b"application/json"
# The header lines every answer starts with, for answers the protocol writes (see _rendered).
_JSON_LINES = header_lines(JSON_HEADERS)

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


class _Refusal:
    """A failure's answer, rendered once: each request's own answer only puts its ID in.

    ``record`` is the cached record the failure was found in, when a request's memo entry keeps
    it for repeats (see :meth:`TestConnectionEndpoint._refuse_soon`).
    """

    __slots__ = ("extra", "failure", "head", "record", "tail")

    def __init__(self, failure: Failure, record: WorkspaceCredentials | None = None) -> None:
        self.failure = failure
        self.record = record
        self.head, self.tail = error_body_around_id(failure.code, **failure.params)
        status = failure.status
        self.extra = error_headers(status, RETRY_AFTER_STORE if status == 503 else None)

    def outcome(self, request_id: str) -> _Outcome:
        failure = self.failure
        return _Outcome(
            failure.status,
            self.head + request_id.encode() + self.tail,
            failure.code,
            failure.workspace_id,
            failure.key_id,
            self.extra,
        )


class _Known(SuccessCounter):
    """A request whose bytes passed rows 4 and 6–12 before, and what was answered last.

    Kept small (one per distinct request, up to :data:`_MEMO_SIZE`): plain fields rather than a
    :class:`ConnectionRequest`, which is rebuilt on the rare path that needs one. It is also the
    connection record's counter of this request's warm successes (its workspace, source, DC and
    key ID are the counter's).
    """

    __slots__ = ("digest", "record", "refusal")

    def __init__(self, request: ConnectionRequest, digest: bytes) -> None:
        # Interned: tools send the same few sources for many workspaces.
        super().__init__(request.workspace_id, request.dc, sys.intern(request.source))
        # The key itself is not kept: rows 13–18 need only its keyed digest.
        self.digest = digest
        # Set after a success with a current key (time can't change that answer, only a new
        # record can): the record it was checked against. The body is not kept: it is rebuilt
        # from the record's name for each answer (~0.1 µs), where keeping it cost ~100 bytes
        # per workspace in use (15 MB with 150,000).
        self.record: WorkspaceCredentials | None = None
        # Set after a refusal that time can't change (checks.TIMELESS_FAILURES), rendered.
        self.refusal: _Refusal | None = None

    def request(self) -> ConnectionRequest:
        """What rows 13–18 check, without the key."""
        return ConnectionRequest(self.workspace_id, "", self.source, self.dc)

    def remember_success(self, record: WorkspaceCredentials, key_id: str) -> None:
        self.record = record
        self.key_id = key_id
        # The record's objects, equal to this request's: one copy per workspace (the digest's
        # own copy was ~10 MB with 150,000 workspaces in use).
        self.workspace_id = record.workspace_id
        for key in record.keys:
            if key.id == key_id and hmac.compare_digest(key.digest, self.digest):
                self.digest = key.digest
                break


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
        recorder: ConnectionRecorder | None = None,
        limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
        watcher: ChangeWatcher | None = None,
    ) -> None:
        self.store = store
        self.secret = secret
        self.cache = cache
        self.dcs = dcs
        self.known_dcs = known_dcs
        self.domain = domain
        self.client_address = client_address or ClientAddress()
        self.recorder = recorder
        self.limiter = limiter if limiter is not None and limiter.enabled else None
        self.metrics = metrics
        self.watcher = watcher
        self._memo: dict[bytes, _Known] = {}
        self.memo_bytes = MEMO_BYTES  # the memo's byte budget
        self._memo_charged = 0  # what its entries were charged (an upper estimate of their size)
        # Full-path answers to requests the protocol holds (see _refuse_soon): kept referenced.
        self._later: set[asyncio.Task[None]] = set()
        self._memo_key = hmac.digest(secret, b"moeconnect request memo", "sha256")

    def served_dc(self, host: bytes | None) -> str:
        if len(self.dcs) == 1 or host is None:
            return self.dcs[0]
        dc = dc_from_host(host.decode("latin-1"), self.known_dcs)
        return dc if dc in self.dcs else self.dcs[0]

    def _fingerprint(self, authorization: bytes, appkey: bytes, body: bytes) -> bytes:
        """The memo's key for a request: a keyed hash, so the memo holds no key."""
        # Header values can't hold a newline, so the joined bytes are unambiguous.
        return hashlib.blake2b(
            authorization + b"\n" + appkey + b"\n" + body, key=self._memo_key, digest_size=16
        ).digest()

    def _recall(self, head: _Head, body: bytes, dc: str) -> tuple[bytes, _Known | None]:
        """The memo's key for this request (b"" when it can't be remembered) and its entry."""
        if (
            head.content_type != _JSON
            or head.authorization is None
            or head.appkey is None
            or head.repeated_auth
        ):
            return b"", None
        fingerprint = self._fingerprint(head.authorization, head.appkey, body)
        known = self._memo.get(fingerprint)
        if known is not None and known.dc != dc:
            known = None
        return fingerprint, known

    def _client_ip(self, client: tuple[str, int] | None, head: _Head) -> str | None:
        forwarded = head.forwarded
        return self.client_address.resolve(
            client[0] if client else None, forwarded.decode("latin-1") if forwarded else None
        )

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        # Monotonic: also compared with the cache's load times (see _authenticate).
        started = time.monotonic()
        head = _Head(scope["headers"])
        authorization, content_type, appkey = head.authorization, head.content_type, head.appkey
        agent, repeated_auth = head.agent, head.repeated_auth
        request_id, kept_id = request_id_from(head.request_id)
        dc = self.served_dc(head.host)
        client_ip = self._client_ip(scope.get("client"), head)
        limit_headers: list[tuple[bytes, bytes]] | None = None
        try:
            method = scope["method"]
            body = b""
            too_large = head.content_length > checks.MAX_BODY
            if method == "POST" and not too_large:
                body, too_large = await _read_body(receive)
            known: _Known | None = None
            fingerprint = b""
            if method == "POST" and not too_large:
                fingerprint, known = self._recall(head, body, dc)
            if known is not None and known.record is not None:
                warm = await self._warm(known, client_ip, request_id, kept_id, agent, send, started)
                if warm:
                    return
            if known is not None:
                outcome, source, admission = await self._decide_known(
                    known, request_id, client_ip, started
                )
            else:
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
                    fingerprint,
                    started,
                )
            if admission is not None and self.limiter is not None:
                limit_headers = await self.limiter.settle(admission, outcome.code)
        except Exception:
            log.exception("unexpected error", extra={"request_id": request_id})
            outcome = _Outcome(500, error_body("INTERNAL", request_id), "INTERNAL")
        await _respond(
            send, outcome.status, outcome.body, request_id, [*outcome.extra, *(limit_headers or ())]
        )
        self._after(outcome, source, request_id, dc, client_ip, agent, started)

    def _after(
        self,
        outcome: _Outcome,
        source: str | None,
        request_id: str,
        dc: str,
        client_ip: str | None,
        agent: bytes | None,
        started: float,
    ) -> None:
        """The metrics and the connection record of an answered attempt."""
        if self.metrics is not None:
            self.metrics.observe(outcome.code, time.monotonic() - started)
        if self.recorder is not None:
            # Positional, in Attempt's field order (at, request ID, workspace, DC, source,
            # outcome, key, client IP, User-Agent): by keyword it cost twice as much.
            self.recorder.record(
                Attempt(
                    datetime.now(UTC),
                    request_id,
                    outcome.workspace_id,
                    dc,
                    source,
                    outcome.code,
                    outcome.key_id,
                    client_ip,
                    agent.decode("latin-1")[:AGENT_KEPT] if agent else None,
                )
            )

    def answer_at_once(
        self, headers: list[tuple[bytes, bytes]], body: bytes, client: tuple[str, int] | None
    ) -> bytes | PendingAnswer | None:
        """A success's whole response after the status line and server headers, a refusal
        still to come, or None.

        For the HTTP protocol (:mod:`.protocol`), which calls it for a POST to :data:`PATH`
        whose complete body is ``body``, before any ASGI task exists. Only repeats are answered
        here: a warm repeat of a success at once (see :meth:`_pass_warm`), a repeat of a request
        the cached record refuses once the change feed confirms that record (see
        :meth:`_refuse_soon`). None means "take the ASGI path", and nothing has been counted then.
        """
        started = time.monotonic()
        head = _Head(headers)
        if len(body) > checks.MAX_BODY:
            return None
        known = self._recall(head, body, self.served_dc(head.host))[1]
        if known is None:
            return None
        if known.record is None:
            return self._refuse_soon(known, head, client, started)
        name = known.record.name
        client_ip = self._client_ip(client, head)
        request_id, kept_id = request_id_from(head.request_id)
        limit_headers = self._pass_warm(known, client_ip, kept_id, head.agent, started, "protocol")
        if limit_headers is None:
            return None
        return _rendered(success_body(name), request_id, limit_headers)

    def _refuse_soon(
        self, known: _Known, head: _Head, client: tuple[str, int] | None, started: float
    ) -> PendingAnswer | None:
        """The refusal of a repeat whose cached record refuses it, once it stands; or None.

        The rule is :meth:`_authenticate`'s: a failure found in the cache stands once a change-
        feed poll that started after the request arrived has left the record in place. Until
        then the protocol holds the request (and those pipelined behind it); then this answers
        it, or — when the record changed, the feed failed or a limit is exhausted — hands it to
        the full path in a task (:meth:`_answer_later`). None, having counted nothing, when the
        limits live in Redis, nothing watches the feed, or the cache has no refusal to give.
        """
        watcher = self.watcher
        limiter = self.limiter
        if watcher is None or (limiter is not None and not limiter.in_memory):
            return None
        cached = self.cache.get(known.workspace_id, count=False)
        if cached is None:
            return None
        record = cached[1]
        refusal = known.refusal
        if refusal is None or refusal.record is not record:
            failure = checks.check_credentials(
                known.request(), record, known.digest, datetime.now(UTC), self.domain
            )
            if not isinstance(failure, Failure):
                return None  # a replaced key in its grace period: the full path answers that
            refusal = _Refusal(failure, record)
            if failure.code in checks.TIMELESS_FAILURES:
                self._charge(_REFUSAL_BYTES + len(refusal.head) + len(refusal.tail))
                known.refusal = refusal  # the next repeat against this record renders nothing
        self.cache.hits += 1
        pending = PendingAnswer()
        request_id = request_id_from(head.request_id)[0]
        client_ip = self._client_ip(client, head)
        agent = head.agent

        def confirmed(ok: bool) -> None:
            if ok and self.cache.holds(known.workspace_id, record, count=False):
                limits = self._pass_limits(client_ip, known.workspace_id, failed=True)
                if limits is not None:
                    outcome = refusal.outcome(request_id)
                    pending.resolve(
                        outcome.status,
                        _rendered(outcome.body, request_id, [*outcome.extra, *limits]),
                    )
                    self._after(
                        outcome, known.source, request_id, known.dc, client_ip, agent, started
                    )
                    if self.metrics is not None:
                        self.metrics.protocol_refusals += 1
                    return
            task = asyncio.get_running_loop().create_task(
                self._answer_later(pending, known, request_id, client_ip, agent, started)
            )
            self._later.add(task)
            task.add_done_callback(self._later.discard)

        watcher.when_caught_up(started, confirmed)
        return pending

    async def _answer_later(
        self,
        pending: PendingAnswer,
        known: _Known,
        request_id: str,
        client_ip: str | None,
        agent: bytes | None,
        started: float,
    ) -> None:
        """The full path for a request the protocol holds: what ``__call__`` would answer."""
        source: str | None = None
        limit_headers: list[tuple[bytes, bytes]] = []
        try:
            outcome, source, admission = await self._decide_known(
                known, request_id, client_ip, started
            )
            if admission is not None and self.limiter is not None:
                limit_headers = await self.limiter.settle(admission, outcome.code)
        except Exception:
            log.exception("unexpected error", extra={"request_id": request_id})
            outcome = _Outcome(500, error_body("INTERNAL", request_id), "INTERNAL")
        pending.resolve(
            outcome.status,
            _rendered(outcome.body, request_id, [*outcome.extra, *limit_headers]),
        )
        self._after(outcome, source, request_id, known.dc, client_ip, agent, started)

    async def _warm(
        self,
        known: _Known,
        client_ip: str | None,
        request_id: str,
        kept_id: KeptRequestId,
        agent: bytes | None,
        send: Send,
        started: float,
    ) -> bool:
        """Answer a repeat of a success from memory; False when the full path must answer."""
        limit_headers = self._pass_warm(known, client_ip, kept_id, agent, started, "asgi")
        if limit_headers is None:
            return False
        assert known.record is not None  # _pass_warm checked it
        await _respond(send, 200, success_body(known.record.name), request_id, limit_headers)
        return True

    def _pass_warm(
        self,
        known: _Known,
        client_ip: str | None,
        kept_id: KeptRequestId,
        agent: bytes | None,
        started: float,
        via: str,
    ) -> list[tuple[bytes, bytes]] | None:
        """Limits, metrics and record of a warm success: its limit headers, or None.

        None — having counted nothing — when the full path must answer: when the cache no longer
        holds the record the success was checked against (a rotation, a revocation or the TTL
        replaced or dropped it), when the limits live in Redis, or when a limit is exhausted.
        """
        workspace_id = known.workspace_id
        limiter = self.limiter
        if limiter is not None and not limiter.in_memory:
            return None
        if known.record is None or not self.cache.holds(workspace_id, known.record):
            return None
        limit_headers = self._pass_limits(client_ip, workspace_id, failed=False)
        if limit_headers is None:
            return None
        metrics = self.metrics
        if metrics is not None:
            metrics.observe(SUCCESS, time.monotonic() - started)
            metrics.warm[via] += 1
        recorder = self.recorder
        if recorder is not None:
            recorder.count_success(known, time.time(), kept_id, client_ip, agent)
        return limit_headers

    def _pass_limits(
        self, client_ip: str | None, workspace_id: str, failed: bool
    ) -> list[tuple[bytes, bytes]] | None:
        """Row 5 and the count for an answer already known (:meth:`RateLimiter.pass_known`):
        the limit headers, or None — having counted nothing — when the full path must answer
        (the limits live in Redis, or one is exhausted and a 429 is due)."""
        limiter = self.limiter
        if limiter is None:
            return []
        if not limiter.in_memory:
            return None
        return limiter.pass_known(client_ip, workspace_id, failed=failed)

    async def _decide_known(
        self, known: _Known, request_id: str, client_ip: str | None, arrived: float
    ) -> tuple[_Outcome, str | None, Admission | None]:
        """Rows 5 and 13–18 for a request whose rows 4 and 6–12 passed before."""
        request = known.request()
        admission = None
        limiter = self.limiter
        if limiter is not None:
            admission = await limiter.admit(client_ip, request.workspace_id, checked=True)
            if admission.blocked is not None:
                return self._rate_limited(admission, request_id), None, admission
        return (
            await self._answer(request, known.digest, request_id, arrived, known),
            request.source,
            admission,
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
        fingerprint: bytes = b"",
        arrived: float = 0.0,
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
            # Refused before row 5, yet counted against the client's address (SPEC section 9),
            # and an address over its limit gets 429 whatever rows 1-4 say: a flood of
            # malformed requests is throttled like one of wrong keys.
            admission = None
            if limiter is not None:
                admission = await limiter.admit_refusal(client_ip)
                if admission.blocked is not None:
                    return self._rate_limited(admission, request_id), None, admission
            return self._failure(creds, request_id), None, admission
        # Row 5: refuse at once when a limit for this IP or workspace is exhausted.
        admission = None
        if limiter is not None:
            admission = await limiter.admit(client_ip, creds.username, checked=True)
            if admission.blocked is not None:
                return self._rate_limited(admission, request_id), None, admission
        outcome, source = await self._check(
            creds, appkey, body, dc, request_id, fingerprint, arrived
        )
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
        fingerprint: bytes = b"",
        arrived: float = 0.0,
    ) -> tuple[_Outcome, str | None]:
        """Rows 6–18; a request that passes 6–12 is remembered under ``fingerprint``."""
        request = self._payload(creds, appkey, body, dc)
        if isinstance(request, Failure):
            return self._failure(request, request_id), None
        workspace_id, source = request.workspace_id, request.source
        if not could_be_workspace_id(workspace_id):
            # No workspace has this ID: row 13's answer, with no store read and nothing
            # remembered (a 27 KB username must not cost the memo 27 KB, nor a key be kept).
            return self._failure(_NOT_FOUND, request_id), source
        digest = key_digest(self.secret, request.key)
        known = None
        if fingerprint:
            size = sys.getsizeof(source)
            if not source.isascii():
                # Its UTF-8 form, which the string keeps once the record has written it, is at
                # most as large again (for 64 characters at most).
                size *= 2
            self._charge(_ENTRY_BYTES + sys.getsizeof(workspace_id) + size)
            known = self._memo[fingerprint] = _Known(request, digest)
        return await self._answer(request, digest, request_id, arrived, known), source

    def _charge(self, size: int) -> None:
        """Charge the memo ``size`` more bytes, for an entry about to be added or grown; when
        that (or one more entry) would pass its bounds, it starts again empty first."""
        if len(self._memo) >= _MEMO_SIZE or self._memo_charged + size > self.memo_bytes:
            self._memo.clear()
            self._memo_charged = 0
        self._memo_charged += size

    async def _answer(
        self,
        request: ConnectionRequest,
        digest: bytes,
        request_id: str,
        arrived: float,
        known: _Known | None = None,
    ) -> _Outcome:
        """Rows 13–18; a plain success is remembered in ``known`` for the warm path."""
        try:
            result = await self._authenticate(request, digest, arrived, known)
        except StoreError as err:
            log.warning("store unavailable: %s", err, extra={"request_id": request_id})
            return _Outcome(
                503,
                error_body("STORE_UNAVAILABLE", request_id, retry_after=RETRY_AFTER_STORE),
                "STORE_UNAVAILABLE",
                request.workspace_id,
                extra=error_headers(503, RETRY_AFTER_STORE),
            )
        if isinstance(result, Failure):
            return self._failure(result, request_id)
        extra: list[tuple[bytes, bytes]] = []
        if result.stale and result.sunset is not None:
            extra.append((b"sunset", http_date(result.sunset).encode()))
        body = success_body(result.app_name)
        return _Outcome(
            200,
            body,
            STALE_SUCCESS if result.stale else SUCCESS,
            result.workspace_id,
            result.key_id,
            extra,
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

    async def _authenticate(
        self,
        request: ConnectionRequest,
        digest: bytes,
        arrived: float,
        known: _Known | None = None,
    ) -> Success | Failure:
        """Rows 13–18 against the cached record, or the store's.

        A cached record is trusted for a success. A *failure* must be true of the store as it
        was when this request arrived: a key, a workspace or a resumption written by another
        process a moment ago must work at once, before the regular change-feed poll tells this
        process about it. So a failure stands if the cached record was read after the request
        arrived, or if a change-feed poll started after it arrived left that record in the cache
        (no change to the workspace since it was read). Otherwise the store is asked.
        """
        now = datetime.now(UTC)
        workspace_id = request.workspace_id
        cached = self.cache.get(workspace_id)
        if cached is not None:
            loaded, record = cached
            result = checks.check_credentials(request, record, digest, now, self.domain)
            if (
                isinstance(result, Success)
                or loaded >= arrived
                or (
                    self.watcher is not None
                    and await self.watcher.caught_up(arrived)
                    and self.cache.holds(workspace_id, record, count=False)
                )
            ):
                self._remember(known, record, result)
                return result
        fresh = await self._load(workspace_id)
        result = checks.check_credentials(request, fresh, digest, now, self.domain)
        if fresh is not None:
            self._remember(known, fresh, result)
        return result

    @staticmethod
    def _remember(
        known: _Known | None, record: WorkspaceCredentials, result: Success | Failure
    ) -> None:
        if known is not None and isinstance(result, Success) and not result.stale:
            known.remember_success(record, result.key_id)

    async def _load(self, workspace_id: str) -> WorkspaceCredentials | None:
        loaded = time.monotonic()
        record = await self.store.credentials(workspace_id)
        if record is not None:
            self.cache.put(record, loaded)
        return record

    def _failure(self, failure: Failure, request_id: str) -> _Outcome:
        return _Refusal(failure).outcome(request_id)


_NOT_FOUND = Failure("WORKSPACE_NOT_FOUND")


class _Head:
    """The request headers the endpoint reads, found in one pass over them."""

    __slots__ = (
        "agent",
        "appkey",
        "authorization",
        "content_length",
        "content_type",
        "forwarded",
        "host",
        "repeated_auth",
        "request_id",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        authorization = content_type = appkey = host = request_id = agent = forwarded = None
        content_length = -1  # absent or not a number
        repeated_auth = False  # Authorization came more than once
        for name, value in headers:
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
                request_id = value
            elif name == b"user-agent":
                agent = value
            elif name == b"x-forwarded-for":
                forwarded = value
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = -1
        self.authorization: bytes | None = authorization
        self.content_type: bytes | None = content_type
        self.appkey: bytes | None = appkey
        self.host: bytes | None = host
        self.request_id: bytes | None = request_id
        self.agent: bytes | None = agent
        self.forwarded: bytes | None = forwarded
        self.content_length = content_length
        self.repeated_auth = repeated_auth


def _rendered(body: bytes, request_id: str, extra: list[tuple[bytes, bytes]]) -> bytes:
    """What :func:`_respond` sends after the status line and the server's headers, as bytes:
    for answers the HTTP protocol writes itself."""
    return b"".join(
        [
            _JSON_LINES,
            b"content-length: %d\r\nx-request-id: " % len(body),
            request_id.encode(),
            b"\r\n",
            header_lines(extra),
            b"\r\n",
            body,
        ]
    )


async def _respond(
    send: Send, status: int, body: bytes, request_id: str, extra: list[tuple[bytes, bytes]]
) -> None:
    """Send a response with the headers every answer of the endpoint carries, then ``extra``."""
    headers = [
        *JSON_HEADERS,
        (b"content-length", b"%d" % len(body)),
        (b"x-request-id", request_id.encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
