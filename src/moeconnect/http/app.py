"""The ASGI application: the hot endpoint in front, Starlette for everything else.

``create_app()`` builds it from the environment (``MOECONNECT_*``), which is how
``moeconnect serve`` hands settings to each uvicorn worker.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from ..config import Settings
from ..dashboard import dashboard_routes
from ..logs import configure_logging
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..request_ids import new_request_id
from ..runtime import Runtime
from ..store import StoreError
from .admin import PREFIX as ADMIN_PREFIX
from .admin import AdminAPI
from .bodies import BodyLimit, BodyTooLarge, too_large_body
from .endpoint import PATH, TestConnectionEndpoint
from .responses import envelope, error_body

__all__ = ["MoeconnectApp", "create_app"]

log = logging.getLogger("moeconnect.http")

_RAW_PATH = PATH.encode()


def _error_response(
    code: str,
    status: int,
    request_id: str | None = None,
    extra_headers: dict[str, str] | None = None,
    **params: object,
) -> Response:
    request_id = request_id or new_request_id()
    headers = {"cache-control": "no-store", "x-request-id": request_id, **(extra_headers or {})}
    return Response(
        error_body(code, request_id, **params),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        await runtime.store.ping()
    except StoreError:
        return JSONResponse(
            {"status": "unavailable", "store": "unreachable"},
            status_code=503,
            headers={"cache-control": "no-store", "retry-after": "5"},
        )
    return JSONResponse({"status": "ready", "store": "ok"}, headers={"cache-control": "no-store"})


def openapi_document() -> dict[str, Any]:
    text = resources.files("moeconnect").joinpath("openapi.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    return Response(
        runtime.metrics.render(),
        media_type=METRICS_CONTENT_TYPE,
        headers={"cache-control": "no-store"},
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors in the envelope, each with its own status (a 400 stays a 400)."""
    status = getattr(exc, "status_code", 404)
    if status == 405:
        allowed = (getattr(exc, "headers", None) or {}).get("Allow", "GET")
        return _error_response(
            "METHOD_NOT_ALLOWED",
            405,
            extra_headers={"allow": allowed},
            method=request.method[:16],
            allowed=allowed,
        )
    if isinstance(exc, BodyTooLarge):
        request_id = new_request_id()
        return Response(
            too_large_body(exc.limit, request_id),
            status_code=413,
            media_type="application/json",
            headers={"cache-control": "no-store", "x-request-id": request_id},
        )
    if status == 404 or not 400 <= status < 500:
        return _error_response("NOT_FOUND", 404)
    # Starlette's form parser (too many fields, a part too large, a broken multipart body).
    detail = str(getattr(exc, "detail", "") or "The request can't be read.")[:200]
    request_id = new_request_id()
    return Response(
        envelope("VALIDATION_ERROR", detail, request_id),
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store", "x-request-id": request_id},
    )


async def _client_gone(request: Request, exc: Exception) -> Response:
    """A client that closed its connection mid-body is not an error: nothing to log, and the
    answer goes nowhere."""
    log.debug("client disconnected before its request body arrived")
    return Response(status_code=400)


async def _internal(request: Request, exc: Exception) -> Response:
    request_id = new_request_id()
    log.exception("unexpected error", extra={"request_id": request_id}, exc_info=exc)
    return _error_response("INTERNAL", 500, request_id)


class MoeconnectApp:
    """Routes the Test Connection path to the lean endpoint and everything else to Starlette."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.endpoint = TestConnectionEndpoint(
            runtime.store,
            runtime.secret,
            runtime.cache,
            dcs=settings.dcs,
            known_dcs=settings.known_dcs,
            domain=settings.domain,
            client_address=runtime.client_address,
            recorder=runtime.recorder,
            limiter=runtime.limiter,
            metrics=runtime.metrics,
            watcher=runtime.watcher,
        )
        # The HTTP protocol answers warm repeats of a success through this, without ASGI.
        self.answer_at_once = self.endpoint.answer_at_once

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await runtime.start()
            _tune_garbage_collector()
            try:
                yield
            finally:
                await runtime.stop()

        self.starlette = Starlette(
            routes=[
                Route("/healthz", healthz),
                Route("/readyz", readyz),
                Route("/metrics", metrics),
                Route("/openapi.json", openapi),
                Mount(ADMIN_PREFIX, app=AdminAPI(runtime.accounts, runtime.client_address)),
                *dashboard_routes(runtime),
            ],
            exception_handlers={
                HTTPException: _http_error,
                ClientDisconnect: _client_gone,
                Exception: _internal,
            },
            lifespan=lifespan,
        )
        # A path with a slash too many or too few is a 404, never a redirect: Starlette would
        # build the redirect's URL from the client's own Host header, before authentication.
        self.starlette.router.redirect_slashes = False
        self.starlette.state.runtime = runtime
        self.starlette.state.openapi = openapi_document()
        self.others = BodyLimit(self.starlette)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # On the path as it was sent: /v1/integrations%2Fauthentication is another path (a proxy
        # rule written for the literal one must not be bypassed by encoding a slash).
        if (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope.get("raw_path", _RAW_PATH) == _RAW_PATH
        ):
            await self.endpoint(scope, receive, send)
        elif scope["type"] == "http" and b"%2f" in (scope.get("raw_path") or b"").lower():
            # Nothing served here has a slash inside a path segment; Starlette routes on the
            # decoded path, where an encoded slash would pass for a separator.
            await _error_response("NOT_FOUND", 404)(scope, receive, send)
        else:
            await self.others(scope, receive, send)


def _tune_garbage_collector() -> None:
    """Keep the cyclic GC from pausing the endpoint.

    Everything built at start-up (modules, SQLAlchemy's tables, the app) is moved out of the
    collector's sight with ``gc.freeze()``, and generation 0 is collected less often. The
    endpoint allocates many short-lived, acyclic objects; full collections over a warm credential
    cache showed up as tens-of-milliseconds pauses in the benchmark's p99.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def create_app(settings: Settings | None = None) -> MoeconnectApp:
    """The app for ``settings``, or for the environment when none are given."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    return MoeconnectApp(Runtime(settings))
