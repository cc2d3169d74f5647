"""``moeconnect check``: the partner's doctor for a connection that doesn't work.

It walks the path a request takes — key format → URL → DNS → TCP → TLS → HTTP → answer — prints
one line per step, and on failure one sentence saying what to fix. The HTTP step is the same
``moeconnect.client`` call a partner's code would make (one attempt: a doctor reports a rate limit
rather than waiting it out). Exit codes (SPEC §4): 0 connected, 2 credentials, 3 wrong DC or
endpoint, 4 network, 5 server error or rate limit.
"""

from __future__ import annotations

import re
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import click
import httpx

from ..client import Client, ConnectionResult
from ..dcs import DEFAULT_DCS, endpoint_for, normalise_region
from ..keys import checksum_ok, has_generated_format
from ._common import emit_json, json_option, read_secret, shown

__all__ = ["EXIT_CODES", "check", "diagnose"]

OK, USAGE, CREDENTIALS, ENDPOINT, NETWORK, SERVER = 0, 1, 2, 3, 4, 5
EXIT_CODES = {
    OK: "connected",
    USAGE: "usage error",
    CREDENTIALS: "credentials",
    ENDPOINT: "wrong DC or endpoint",
    NETWORK: "network",
    SERVER: "server error or rate limit",
}

# What to fix for each answer code: (exit code, sentence). ``{…}`` come from the answer.
_FIXES: dict[str, tuple[int, str]] = {
    "KEY_MALFORMED": (
        CREDENTIALS,
        "The key fails its checksum, so it was mistyped or truncated: copy the Data API key "
        "again from Settings > Account > APIs.",
    ),
    "KEY_MISMATCH": (
        CREDENTIALS,
        "The key is not this workspace's Data API key: copy the current key from Settings > "
        "Account > APIs (and check the workspace ID).",
    ),
    "KEY_REVOKED": (
        CREDENTIALS,
        "This key was {how} on {when}: ask the workspace owner for the current Data API key.",
    ),
    "NO_DATA_KEY": (
        CREDENTIALS,
        "The workspace has no Data API key: its owner must generate one at Settings > Account > "
        "APIs.",
    ),
    "WORKSPACE_NOT_FOUND": (
        CREDENTIALS,
        "No workspace has this ID in this data center: copy the workspace ID again, and check "
        "the DC.",
    ),
    "WORKSPACE_SUSPENDED": (
        CREDENTIALS,
        "The workspace is suspended: ask its owner or MoEngage support to reactivate it.",
    ),
    "AUTH_MISSING": (CREDENTIALS, "The request carried no credentials: {message}"),
    "AUTH_MALFORMED": (CREDENTIALS, "The credentials were not readable: {message}"),
    "WORKSPACE_ID_MISMATCH": (CREDENTIALS, "{message}"),
    "API_KEY_MISMATCH": (CREDENTIALS, "{message}"),
    "WRONG_DC": (
        ENDPOINT,
        "Wrong data center for this endpoint: {message}",
    ),
    "WORKSPACE_IN_OTHER_DC": (
        ENDPOINT,
        "The workspace lives in another data center: {message}",
    ),
    "UNKNOWN_REGION": (ENDPOINT, "{message}"),
    "FIELD_INVALID": (ENDPOINT, "The server refused the request as sent: {message}"),
    "FIELD_MISSING": (ENDPOINT, "The server refused the request as sent: {message}"),
    "NOT_FOUND": (
        ENDPOINT,
        "The server has no Test Connection API at this URL: check --base-url (it should be the "
        "DC's base URL, such as https://api-01.moengage.com).",
    ),
    "METHOD_NOT_ALLOWED": (
        ENDPOINT,
        "The URL answers but not as the Test Connection API: check --base-url.",
    ),
    "RATE_LIMITED": (
        SERVER,
        "Rate limited: wait {retry_after} seconds before trying again (failed attempts count "
        "against the limit, so fix the credentials first).",
    ),
    "STORE_UNAVAILABLE": (
        SERVER,
        "The server could not check the credentials (its store is unavailable); they may well "
        "be right: retry in {retry_after} seconds.",
    ),
    "INTERNAL": (
        SERVER,
        "The server failed unexpectedly: retry, and quote request_id {request_id} if it persists.",
    ),
}


@dataclass
class Step:
    """One line of the walk: a name, whether it passed, what was found."""

    name: str
    ok: bool
    detail: str
    ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.name, "ok": self.ok, "detail": self.detail, "ms": self.ms}


@dataclass
class Diagnosis:
    """The whole walk and its verdict."""

    endpoint: str
    steps: list[Step] = field(default_factory=list)
    exit_code: int = OK
    fix: str | None = None
    result: ConnectionResult | None = None

    def fail(self, exit_code: int, fix: str) -> Diagnosis:
        self.exit_code, self.fix = exit_code, fix
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == OK,
            "exit_code": self.exit_code,
            "verdict": EXIT_CODES[self.exit_code],
            "endpoint": self.endpoint,
            "fix": self.fix,
            "steps": [step.as_dict() for step in self.steps],
            "result": self.result.as_dict() if self.result else None,
        }


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _fmt_seconds(value: float | None) -> str:
    return "a few" if value is None else f"{value:g}"


def _answer_fix(result: ConnectionResult) -> tuple[int, str]:
    """Exit code and sentence for an answer that came back from some HTTP server."""
    params: dict[str, Any] = {
        "message": result.message,
        "retry_after": _fmt_seconds(result.retry_after),
        "request_id": result.request_id or "?",
        "how": "replaced or revoked",
        "when": "an earlier date",
    }
    if result.code == "KEY_REVOKED":
        found = re.search(r"was (\w+) on (\d{4}-\d\d-\d\d(?: \d\d:\d\d)?(?: UTC)?)", result.message)
        if found:
            params["how"], params["when"] = found.group(1), found.group(2)
    if result.code == "NON_JSON_RESPONSE":
        status = result.status or 0
        if status in (404, 405):
            return ENDPOINT, (
                f"The URL answered HTTP {status} with a non-JSON page, so it is not the Test "
                "Connection API: check --base-url and the DC."
            )
        return NETWORK, (
            f"Something between you and the API (a proxy, firewall or load balancer) answered "
            f"HTTP {status} with {result.content_type or 'a non-JSON body'} instead of the API: "
            "check your proxy settings (HTTPS_PROXY) or ask your network team to let the "
            "endpoint through."
        )
    if result.code in _FIXES:
        exit_code, template = _FIXES[result.code]
        return exit_code, template.format(**params)
    status = result.status or 0
    if status in (401, 403):
        return CREDENTIALS, f"The server refused the credentials: {result.message}"
    if status == 429 or status >= 500:
        return SERVER, (
            f"The server answered HTTP {status} ({result.message or result.code}): retry in "
            f"{_fmt_seconds(result.retry_after)} seconds."
        )
    return ENDPOINT, (
        f"The server answered HTTP {status} with {result.code} ({result.message}): check "
        "--base-url and the DC."
    )


def _dns(host: str, port: int, diag: Diagnosis, proxy: bool) -> list[tuple[Any, ...]] | None:
    started = time.monotonic()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        diag.steps.append(Step("dns", False, f"{host} does not resolve ({err.strerror})"))
        if proxy:
            diag.fail(NETWORK, f"The proxy host {host} does not resolve: check HTTP(S)_PROXY.")
        elif err.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            diag.fail(
                ENDPOINT,
                f"The host {host} does not exist: check the DC (--dc) or the host in --base-url.",
            )
        else:
            diag.fail(
                NETWORK,
                f"Name resolution for {host} failed ({err.strerror}): check this machine's DNS "
                "settings and network connection.",
            )
        return None
    addresses = sorted({str(info[4][0]) for info in infos})
    diag.steps.append(Step("dns", True, f"{host} → {', '.join(addresses)}", _ms(started)))
    return infos


def _tcp(
    host: str,
    port: int,
    infos: list[tuple[Any, ...]],
    timeout: float,
    diag: Diagnosis,
    proxy: bool,
) -> socket.socket | None:
    started = time.monotonic()
    errors: list[str] = []
    for family, kind, proto, _name, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except TimeoutError:
            sock.close()
            errors.append(f"{address[0]}: timed out after {timeout:g}s")
        except OSError as err:
            sock.close()
            errors.append(f"{address[0]}: {err.strerror or err}")
        else:
            diag.steps.append(
                Step("tcp", True, f"connected to {address[0]} port {port}", _ms(started))
            )
            return sock
    diag.steps.append(Step("tcp", False, f"port {port}: " + "; ".join(errors)))
    if proxy:
        fix = f"The proxy {host} port {port} can't be reached: check HTTP(S)_PROXY and NO_PROXY."
    elif any("refused" in e.lower() for e in errors):
        fix = (
            f"Nothing accepts connections on {host} port {port}: check the port in --base-url, "
            "and that the server is running."
        )
    else:
        fix = (
            f"{host} port {port} is unreachable from here: check your network, firewall or "
            "proxy (HTTPS_PROXY)."
        )
    diag.fail(NETWORK, fix)
    return None


def _tls(sock: socket.socket, host: str, port: int, timeout: float, diag: Diagnosis) -> bool:
    started = time.monotonic()
    # The trust store httpx uses for the HTTP step (certifi, or SSL_CERT_FILE / SSL_CERT_DIR).
    context = httpx.create_ssl_context()
    try:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            tls.settimeout(timeout)
            version = tls.version()
            cert = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError as err:
        diag.steps.append(Step("tls", False, f"certificate not trusted: {err.verify_message}"))
        diag.fail(
            NETWORK,
            f"The TLS certificate of {host} is not trusted ({err.verify_message}): a proxy may be "
            "intercepting HTTPS; install its CA (SSL_CERT_FILE) or connect without it.",
        )
        return False
    except (ssl.SSLError, OSError) as err:
        diag.steps.append(Step("tls", False, f"handshake failed: {err}"))
        diag.fail(
            NETWORK,
            f"The TLS handshake with {host} port {port} failed: the port may not speak HTTPS "
            "(try http:// or the right port), or something in between breaks TLS.",
        )
        return False
    expires = cert.get("notAfter", "?")
    diag.steps.append(
        Step("tls", True, f"{version}, certificate valid until {expires}", _ms(started))
    )
    return True


def _proxy_for(url: str) -> str | None:
    """The proxy httpx would use for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``)."""
    import urllib.request

    host = urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.request.getproxies().get(urlsplit(url).scheme)
    return proxy if proxy and urlsplit(proxy).hostname else None


def diagnose(
    workspace_id: str,
    key: str,
    dc: str = "01",
    base_url: str | None = None,
    source: str = "moeconnect-check",
    timeout: float = 10.0,
) -> Diagnosis:
    """Walk every step of a Test Connection call and say what to fix. Never raises."""
    region = normalise_region(dc, DEFAULT_DCS)
    base = base_url or (endpoint_for(region) if region else "")
    diag = Diagnosis(endpoint=base.rstrip("/") + "/v1/integrations/authentication" if base else "")

    # Key format: a generated key carries a checksum, so a typo is caught before the network.
    if has_generated_format(key):
        if not checksum_ok(key):
            diag.steps.append(Step("key", False, "generated-format key fails its checksum"))
            return diag.fail(CREDENTIALS, _FIXES["KEY_MALFORMED"][1])
        diag.steps.append(Step("key", True, f"{len(key)} characters, checksum ok"))
    else:
        diag.steps.append(
            Step("key", True, f"{len(key)} characters (imported format: no checksum to test)")
        )

    # URL
    if region is None:
        diag.steps.append(Step("url", False, f"unknown data center {dc!r}"))
        return diag.fail(ENDPOINT, f"Use one of the data centers {', '.join(DEFAULT_DCS)}.")
    parts = urlsplit(base)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https") or not parts.hostname or not port:
        diag.steps.append(Step("url", False, f"{base!r} is not an http(s) URL"))
        return diag.fail(
            ENDPOINT, "Give --base-url as http(s)://host[:port], e.g. https://api-01.moengage.com."
        )
    host = parts.hostname
    diag.steps.append(Step("url", True, f"{diag.endpoint} (DC {region})"))

    # DNS, TCP, TLS — to the proxy instead when one applies (HTTPS_PROXY etc., as httpx does).
    if (proxy := _proxy_for(base)) is not None:
        proxy_parts = urlsplit(proxy)
        diag.steps[-1].detail += f", via proxy {proxy_parts.hostname}:{proxy_parts.port or 80}"
        host, port = proxy_parts.hostname or host, proxy_parts.port or 80
    if (infos := _dns(host, port, diag, proxy is not None)) is None:
        return diag
    if (sock := _tcp(host, port, infos, timeout, diag, proxy is not None)) is None:
        return diag
    if proxy is not None:
        sock.close()
        diag.steps.append(Step("tls", True, "through the proxy: checked by the HTTP step"))
    elif parts.scheme == "https":
        if not _tls(sock, host, port, timeout, diag):
            return diag
    else:
        sock.close()
        diag.steps.append(Step("tls", True, "skipped: plain http (fine for a local server only)"))

    # HTTP: the same call a partner's code makes.
    started = time.monotonic()
    with Client(timeout=timeout, max_attempts=1) as client:
        result = client.test_connection(workspace_id, key, dc=region, source=source, base_url=base)
    diag.result = result
    if result.status is None:
        diag.steps.append(Step("http", False, result.message))
        return diag.fail(
            NETWORK,
            "The connection broke during the request, or its answer was garbled: check your "
            "network or proxy, and retry.",
        )
    rid = f", request_id {result.request_id}" if result.request_id else ""
    diag.steps.append(
        Step("http", True, f"POST → HTTP {result.status}{rid}", _ms(started)),
    )

    # Answer
    if result.ok:
        detail = f"connected to workspace {result.app_name!r}"
        diag.steps.append(Step("answer", True, detail))
        if result.sunset is not None:
            when = result.sunset.strftime("%Y-%m-%d %H:%M UTC")
            diag.fix = (
                f"Connected, but with a replaced key that stops working at {when}: switch to "
                "the current Data API key before then."
            )
        return diag
    diag.steps.append(Step("answer", False, f"{result.code}: {result.message}"))
    exit_code, fix = _answer_fix(result)
    return diag.fail(exit_code, fix)


def _source(value: str) -> str:
    if not 1 <= len(value) <= 64:
        raise click.BadParameter("must be 1 to 64 characters long")
    return value


def _print(diag: Diagnosis) -> None:
    for step in diag.steps:
        mark = click.style("✓", fg="green") if step.ok else click.style("✗", fg="red")
        timing = f"  ({step.ms:g} ms)" if step.ms is not None else ""
        click.echo(f"{mark} {step.name:<7}{shown(step.detail)}{timing}")
    if diag.fix:
        label = "Fix:" if diag.exit_code else "Note:"
        click.echo(f"\n{label} {shown(diag.fix)}")
    elif diag.exit_code == OK:
        click.echo("\nConnection works.")


class _UsageError(click.UsageError):
    exit_code = USAGE


class _CheckCommand(click.Command):
    """Usage errors exit 1: click's usual 2 would read as "credentials" to a script."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            raise _UsageError(err.format_message(), err.ctx) from None


@click.command(cls=_CheckCommand)
@click.option("--dc", default="01", show_default=True, help="Data center of the workspace.")
@click.option(
    "--workspace-id",
    required=True,
    envvar="MOE_WORKSPACE_ID",
    help="Workspace ID (App ID) from Settings > Account > APIs (env MOE_WORKSPACE_ID).",
)
@click.option(
    "--base-url",
    default=None,
    help="Base URL to call instead of the DC's MoEngage endpoint, e.g. http://127.0.0.1:8080.",
)
@click.option(
    "--source",
    default="moeconnect-check",
    show_default=True,
    type=click.STRING,
    callback=lambda _ctx, _param, value: _source(value),
    help="The tool name sent as source (1 to 64 characters).",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per network step.")
@json_option
def check(
    dc: str,
    workspace_id: str,
    base_url: str | None,
    source: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Test a connection step by step and say what to fix.

    The Data API key is read from env MOE_DATA_API_KEY, standard input, or a hidden prompt —
    never from an argument. Exit codes: 0 connected, 1 usage error, 2 credentials, 3 wrong DC
    or endpoint, 4 network, 5 server error or rate limit.
    """
    key = read_secret("data API key", "MOE_DATA_API_KEY").strip()
    if not key:
        click.echo("Error: the Data API key is empty; set MOE_DATA_API_KEY.", err=True)
        sys.exit(CREDENTIALS)
    diag = diagnose(workspace_id.strip(), key, dc, base_url, source, timeout)
    if as_json:
        emit_json(diag.as_dict())
    else:
        _print(diag)
    sys.exit(diag.exit_code)
