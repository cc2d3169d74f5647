"""A client for the Test Connection API that partners would otherwise write badly themselves.

``Client`` (sync) and ``AsyncClient`` (asyncio) call ``POST /v1/integrations/authentication`` on
MoEngage's real endpoint for a DC (``https://api-XX.moengage.com``) or on any moeconnect server
(``base_url=``), and turn every outcome into a :class:`ConnectionResult` instead of an exception:

- a generated-format key (``moe_data_…``) whose checksum fails is reported as ``KEY_MALFORMED``
  without any network traffic;
- 429 and 503 answers are retried with exponential backoff and jitter, honouring ``Retry-After``,
  within a bounded number of attempts and a bounded wait;
- transport failures become ``CONNECT_ERROR`` / ``TLS_ERROR`` / ``TIMEOUT``, and an answer that is
  not the API's JSON (an HTML page from a proxy) becomes ``NON_JSON_RESPONSE``;
- the key never appears in a repr, a log line or an exception text: it is only ever inside the
  request's body and ``Authorization`` header, which neither httpx nor this module logs.

The request/answer logic is sans-IO (``_Call``); the two classes only differ in how they send and
sleep.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import ssl
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx

from . import __version__
from .dcs import DEFAULT_DCS, endpoint_for, normalise_region
from .errors import CATALOGUE, SUCCESS
from .keys import checksum_ok, has_generated_format

__all__ = ["AsyncClient", "Client", "ConnectionResult"]

PATH: Final = "/v1/integrations/authentication"
RETRY_STATUSES: Final = frozenset({429, 503})
# Outcome codes the client produces itself (the server's codes are in ``moeconnect.errors``).
CONNECT_ERROR: Final = "CONNECT_ERROR"
TLS_ERROR: Final = "TLS_ERROR"
TIMEOUT: Final = "TIMEOUT"
NON_JSON_RESPONSE: Final = "NON_JSON_RESPONSE"
UNEXPECTED_RESPONSE: Final = "UNEXPECTED_RESPONSE"

log = logging.getLogger("moeconnect.client")


@dataclass(frozen=True, slots=True)
class ConnectionResult:
    """What one ``test_connection`` call found. Holds no secret, so it is safe to log or print.

    ``status`` is the HTTP status of the last answer (``None`` when there was none: a local
    checksum failure or a network error). ``code`` is ``SUCCESS``, the server's ``error.code``,
    or one of the client's own codes (``KEY_MALFORMED`` without network, ``CONNECT_ERROR``,
    ``TLS_ERROR``, ``TIMEOUT``, ``NON_JSON_RESPONSE``, ``UNEXPECTED_RESPONSE``). ``attempts`` and
    ``waited`` (seconds slept between attempts) describe the retries; ``retry_after`` is the last
    ``Retry-After`` the server sent, in seconds; ``sunset`` is set when the key still works but
    was replaced and stops working then (RFC 8594 ``Sunset``).
    """

    ok: bool
    code: str
    message: str
    endpoint: str
    status: int | None = None
    app_name: str | None = None
    request_id: str | None = None
    attempts: int = 0
    waited: float = 0.0
    retry_after: float | None = None
    sunset: datetime | None = None
    content_type: str | None = None
    elapsed: float | None = None

    @property
    def network(self) -> bool:
        """Whether no answer arrived from the server (nothing was checked)."""
        return self.code in (CONNECT_ERROR, TLS_ERROR, TIMEOUT)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601)."""
        data = asdict(self)
        if self.sunset is not None:
            data["sunset"] = self.sunset.isoformat().replace("+00:00", "Z")
        return data


def _retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def _sunset(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_tls(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return "SSL" in str(error) or "TLS" in str(error)


def _code_from(status: int, message: str) -> str:
    """A code for an error envelope without one (MoEngage's own answers carry none)."""
    if status == 401 and message.startswith("App Secret key mismatch"):
        return "KEY_MISMATCH"
    return f"HTTP_{status}"


def _redacted(key: str) -> str:
    """How a key is named in logs: its scope prefix at most, never a character of the secret."""
    return key[: key.index("_", 4) + 1] + "***" if has_generated_format(key) else "***"


class _Call:
    """One ``test_connection`` call, sans-IO: builds the request, reads answers, plans retries."""

    def __init__(
        self,
        client: _Base,
        workspace_id: str,
        data_api_key: str,
        dc: str,
        source: str,
        base_url: str | None,
    ) -> None:
        region = normalise_region(dc, DEFAULT_DCS) if dc else None
        if base_url is None:
            if region is None:
                raise ValueError(
                    f"unknown data center {dc!r}; use one of {', '.join(DEFAULT_DCS)} or pass "
                    "base_url"
                )
            base_url = endpoint_for(region)
        base = base_url.rstrip("/")
        self.url = base if base.endswith(PATH) else base + PATH
        self.workspace_id = workspace_id
        self.region = region or dc
        self.source = source
        self.client = client
        self._key = data_api_key
        self.attempts = 0
        self.waited = 0.0

    def __repr__(self) -> str:
        return f"<_Call {self.url} workspace={self.workspace_id!r} key={_redacted(self._key)}>"

    def scrub(self, text: str) -> str:
        """``text`` with the key in every form it travelled in replaced by ``***``.

        A server or proxy that echoes the request (some debug pages print headers) must not
        carry the key into a result, a log line or an exception.
        """
        pair = f"{self.workspace_id}:{self._key}".encode()
        for secret in (
            self._key,
            base64.b64encode(pair).decode("ascii"),
            base64.b64encode(self._key.encode()).decode("ascii"),
            base64.urlsafe_b64encode(pair).decode("ascii"),
        ):
            if secret:
                text = text.replace(secret, "***")
        return text

    def local_failure(self) -> ConnectionResult | None:
        """``KEY_MALFORMED`` for a generated-format key that fails its checksum: no request."""
        if has_generated_format(self._key) and not checksum_ok(self._key):
            return ConnectionResult(
                ok=False,
                code="KEY_MALFORMED",
                message=CATALOGUE["KEY_MALFORMED"].message,
                endpoint=self.url,
            )
        return None

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        token = base64.b64encode(f"{self.workspace_id}:{self._key}".encode()).decode("ascii")
        return http.build_request(
            "POST",
            self.url,
            headers={
                "Authorization": f"Basic {token}",
                "MOE-APPKEY": self.workspace_id,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            json={
                "app_id": self.workspace_id,
                "app_secret": self._key,
                "source": self.source,
                "region": self.region,
            },
        )

    def transport_failure(self, error: httpx.RequestError) -> ConnectionResult:
        # httpx's messages name the host and the OS error, never the request's headers or body.
        if not isinstance(error, httpx.TransportError):  # e.g. a body that fails to decode
            reason = self.scrub(str(error)) or type(error).__name__
            return ConnectionResult(
                ok=False,
                code=UNEXPECTED_RESPONSE,
                message=f"The answer from {self.url} could not be read ({reason}).",
                endpoint=self.url,
                attempts=self.attempts,
                waited=round(self.waited, 3),
            )
        if isinstance(error, httpx.TimeoutException):
            code, what = TIMEOUT, f"no answer within {self.client.timeout:g} seconds"
        elif _is_tls(error):
            code, what = TLS_ERROR, f"the TLS handshake failed ({self.scrub(str(error))})"
        else:
            reason = self.scrub(str(error)) or type(error).__name__
            code, what = CONNECT_ERROR, f"the connection failed ({reason})"
        log.debug("test_connection %s: %s", self.url, what)
        return ConnectionResult(
            ok=False,
            code=code,
            message=f"Could not reach {self.url}: {what}.",
            endpoint=self.url,
            attempts=self.attempts,
            waited=round(self.waited, 3),
        )

    def read(self, response: httpx.Response, elapsed: float) -> ConnectionResult:
        """Turn an answer into a result; an answer that isn't the API's JSON is reported, too."""
        status = response.status_code
        ctype = response.headers.get("content-type")
        request_id = response.headers.get("x-request-id")
        common: dict[str, Any] = {
            "endpoint": self.url,
            "status": status,
            "request_id": request_id,
            "attempts": self.attempts,
            "waited": round(self.waited, 3),
            "retry_after": _retry_after(response.headers.get("retry-after")),
            "content_type": ctype,
            "elapsed": round(elapsed, 4),
        }
        try:
            body = response.json()
        except ValueError:
            body = None
            snippet = " ".join(self.scrub(response.text)[:80].split())
            return ConnectionResult(
                ok=False,
                code=NON_JSON_RESPONSE,
                message=(
                    f"The answer (HTTP {status}, {ctype or 'no content type'}) is not JSON, so "
                    "it did not come from the Test Connection API; a proxy, firewall or web "
                    f"server answered instead: {snippet!r}."
                ),
                **common,
            )
        if isinstance(body, dict) and status == 200 and body.get("status") == "success":
            return ConnectionResult(
                ok=True,
                code=SUCCESS,
                message="Connected.",
                app_name=str(body.get("app_name", "")),
                sunset=_sunset(response.headers.get("sunset")),
                **common,
            )
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            request_id = str(error.get("request_id") or request_id or "") or None
            common["request_id"] = request_id
            message = self.scrub(str(error.get("message") or ""))
            return ConnectionResult(
                ok=False,
                code=str(error.get("code") or _code_from(status, message)),
                message=message,
                **common,
            )
        return ConnectionResult(
            ok=False,
            code=UNEXPECTED_RESPONSE,
            message=f"The answer (HTTP {status}) is JSON but not the Test Connection API's.",
            **common,
        )

    def delay(self, response: httpx.Response) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when not to retry.

        ``Retry-After`` wins (plus up to 10% jitter, never less than asked); without it,
        exponential backoff with full jitter. Nothing beyond ``max_attempts`` or ``max_wait``.
        """
        c = self.client
        if response.status_code not in RETRY_STATUSES or self.attempts >= c.max_attempts:
            return None
        asked = _retry_after(response.headers.get("retry-after"))
        if asked is not None:
            wait = asked + random.uniform(0, asked * 0.1 + 0.05)  # noqa: S311 - jitter, not crypto
        else:
            cap = c.backoff * 2 ** (self.attempts - 1)
            wait = random.uniform(cap / 2, cap)  # noqa: S311
        if self.waited + wait > c.max_wait:
            log.info(
                "test_connection %s: HTTP %s, not retrying (would wait %.1fs, max_wait %.1fs)",
                self.url,
                response.status_code,
                wait,
                c.max_wait,
            )
            return None
        log.info(
            "test_connection %s: HTTP %s, retry %d/%d in %.2fs",
            self.url,
            response.status_code,
            self.attempts + 1,
            c.max_attempts,
            wait,
        )
        return wait


class _Base:
    """Settings shared by both clients.

    ``timeout`` (seconds, for connect, read and write); at most ``max_attempts`` requests and
    ``max_wait`` seconds of waiting between them; ``backoff`` is the first backoff step when the
    server sends no ``Retry-After``; ``verify`` as in httpx (``True``: certifi, or
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``; ``False``; or an ``ssl.SSLContext``).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_attempts: int = 3,
        max_wait: float = 30.0,
        backoff: float = 0.5,
        verify: bool | ssl.SSLContext = True,
        user_agent: str | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.backoff = backoff
        self.verify = verify
        self.user_agent = user_agent or f"moeconnect-client/{__version__}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(timeout={self.timeout}, max_attempts={self.max_attempts}, "
            f"max_wait={self.max_wait})"
        )

    def _http_options(self) -> dict[str, Any]:
        return {
            "timeout": self.timeout,
            "verify": self.verify,
            "headers": {"User-Agent": self.user_agent},
            "follow_redirects": False,
            "trust_env": True,
        }


class Client(_Base):
    """Synchronous client; use as a context manager or call :meth:`close`.

    >>> with Client(timeout=5) as client:                                  # doctest: +SKIP
    ...     result = client.test_connection("WORKSPACE_ID", key, dc="01")
    ...     print(result.ok, result.code, result.message)
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_attempts: int = 3,
        max_wait: float = 30.0,
        backoff: float = 0.5,
        verify: bool | ssl.SSLContext = True,
        user_agent: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            timeout=timeout,
            max_attempts=max_attempts,
            max_wait=max_wait,
            backoff=backoff,
            verify=verify,
            user_agent=user_agent,
        )
        self._http = httpx.Client(transport=transport, **self._http_options())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def test_connection(
        self,
        workspace_id: str,
        data_api_key: str,
        dc: str = "01",
        source: str = "moeconnect-client",
        base_url: str | None = None,
    ) -> ConnectionResult:
        """Call the Test Connection API; never raises for a network or server failure."""
        call = _Call(self, workspace_id, data_api_key, dc, source, base_url)
        if (local := call.local_failure()) is not None:
            return local
        while True:
            call.attempts += 1
            started = time.monotonic()
            try:
                response = self._http.send(call.request(self._http))
            except httpx.RequestError as error:
                return call.transport_failure(error)
            elapsed = time.monotonic() - started
            wait = call.delay(response)
            if wait is None:
                return call.read(response, elapsed)
            time.sleep(wait)
            call.waited += wait


class AsyncClient(_Base):
    """Asyncio client; use as an async context manager or await :meth:`aclose`."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_attempts: int = 3,
        max_wait: float = 30.0,
        backoff: float = 0.5,
        verify: bool | ssl.SSLContext = True,
        user_agent: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            timeout=timeout,
            max_attempts=max_attempts,
            max_wait=max_wait,
            backoff=backoff,
            verify=verify,
            user_agent=user_agent,
        )
        self._http = httpx.AsyncClient(transport=transport, **self._http_options())

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def test_connection(
        self,
        workspace_id: str,
        data_api_key: str,
        dc: str = "01",
        source: str = "moeconnect-client",
        base_url: str | None = None,
    ) -> ConnectionResult:
        """Call the Test Connection API; never raises for a network or server failure."""
        call = _Call(self, workspace_id, data_api_key, dc, source, base_url)
        if (local := call.local_failure()) is not None:
            return local
        while True:
            call.attempts += 1
            started = time.monotonic()
            try:
                response = await self._http.send(call.request(self._http))
            except httpx.RequestError as error:
                return call.transport_failure(error)
            elapsed = time.monotonic() - started
            wait = call.delay(response)
            if wait is None:
                return call.read(response, elapsed)
            await asyncio.sleep(wait)
            call.waited += wait
