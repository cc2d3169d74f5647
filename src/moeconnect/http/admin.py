"""The admin API, ``/admin/v1``: workspaces, keys and the connection record for operators.

Every route needs ``Authorization: Bearer <operator token>``; the token is looked up by its keyed
digest (an index lookup on an HMAC, so timing says nothing about how close a guess was). Without a
valid one the answer is 401 ``UNAUTHORIZED`` with ``WWW-Authenticate: Bearer``, before anything is
read or changed. All operations go through :class:`~moeconnect.accounts.Accounts`, where input is
validated. Failures use the same envelope as the Test Connection endpoint; a store outage is a
503, never a 401. No key or token is ever logged: only token IDs, methods and paths.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from ..accounts import Accounts, InvalidInput
from ..audit import AuditContext
from ..audit_views import audit_json
from ..durations import parse_duration
from ..keys import SCOPES, WORKSPACE_ID_PATTERN
from ..proxies import ClientAddress
from ..record_views import attempt_json, iso, key_json, summary_json, workspace_json
from ..records import OperatorToken
from ..request_ids import request_id_from
from ..roles import Permission, allows, refusal, sees
from ..store import Conflict, NotFound, Store, StoreError
from ..text import excerpt
from .bodies import ADMIN_MAX_BODY
from .responses import envelope, error_body

__all__ = ["PREFIX", "AdminAPI"]

PREFIX = "/admin/v1"
RETRY_AFTER = 5
MAX_LIMIT = 1000
MAX_BODY = ADMIN_MAX_BODY  # enforced before a handler runs (.bodies); checked again here
_RACE = "another key of this scope was stored at the same moment; list the keys, then retry"

log = logging.getLogger("moeconnect.admin")

Handler = Callable[[Request, "_Context"], Awaitable[Response]]


class _Invalid(Exception):
    """Bad input found in this module: answered 400 VALIDATION_ERROR with the message."""


class _Forbidden(Exception):
    """Beyond the token's role or workspace restriction: 403 INSUFFICIENT_ROLE, the message."""


class _Context:
    __slots__ = ("audit", "request_id", "token")

    def __init__(self, request_id: str, token: OperatorToken, client_ip: str | None) -> None:
        self.request_id = request_id
        self.token = token
        # What every change made with this request is recorded as in the audit log.
        self.audit = AuditContext.token(token, "admin-api", client_ip)


def _headers(request_id: str) -> dict[str, str]:
    return {"cache-control": "no-store", "x-request-id": request_id}


def _json(document: Any, request_id: str, status: int = 200) -> Response:
    return Response(
        orjson.dumps(document),
        status_code=status,
        media_type="application/json",
        headers=_headers(request_id),
    )


def _error(code: str, status: int, request_id: str, **params: object) -> Response:
    headers = _headers(request_id)
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="moeconnect admin"'
    elif status == 503:
        headers["retry-after"] = str(RETRY_AFTER)
    return Response(
        error_body(code, request_id, **params),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


# -- input ---------------------------------------------------------------------------------


async def _body(request: Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip() and optional:
        return {}
    if len(raw) > MAX_BODY:
        raise _Invalid(f"The request body is larger than {MAX_BODY} bytes.")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Invalid("The request body must be a JSON object.") from None
    if not isinstance(document, dict):
        raise _Invalid("The request body must be a JSON object.")
    return document


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _Invalid(
            f"Unknown field {excerpt(unknown[0])}; this request takes "
            f"{', '.join(allowed) or 'no fields'}."
        )


def _string(
    body: dict[str, Any], name: str, *, required: bool = False, default: str | None = None
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _Invalid(f"The field {name} is required.")
        return default
    if not isinstance(value, str):
        raise _Invalid(f"The field {name} must be a string.")
    return value


def _scope(value: str | None) -> str:
    scope = value or "data"
    if scope not in SCOPES:
        raise _Invalid(f"Unknown scope {excerpt(scope)}; use one of {', '.join(SCOPES)}.")
    return scope


def _grace(value: str | None) -> timedelta | None:
    if value is None or value == "":
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        raise _Invalid(f"The field grace is not a duration: {err}.") from None


def _limit(request: Request, default: int = 100) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise _Invalid(f"The parameter limit must be a whole number from 1 to {MAX_LIMIT}.")
    return int(raw)


def _text_param(request: Request, name: str, max_length: int) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_length:
        raise _Invalid(f"The parameter {name} can be at most {max_length} characters long.")
    return value


def _moment(request: Request, name: str) -> datetime | None:
    """A time parameter: an ISO 8601 time, or a duration meaning that long ago (``24h``)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        try:
            return datetime.now(UTC) - parse_duration(raw)
        except (ValueError, OverflowError):
            raise _Invalid(
                f"The parameter {name} must be an ISO 8601 time or a duration such as 24h."
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _workspace_id(request: Request) -> str:
    """The workspace in the path; one outside the token's restriction is answered as missing
    (404, like a workspace that does not exist: a restricted token learns nothing of others)."""
    value = str(request.path_params["workspace_id"])
    if not WORKSPACE_ID_PATTERN.match(value) or not sees(request.state.operator, value):
        raise NotFound(f"No workspace has ID {value[:64]!r}.")
    return value


def _needs(permission: Permission, handler: Handler) -> Handler:
    """``handler``, refused with 403 before it runs when the token's role lacks ``permission``."""

    async def checked(request: Request, ctx: _Context) -> Response:
        if not allows(ctx.token.role, permission):
            raise _Forbidden(refusal(ctx.token.role, permission))
        return await handler(request, ctx)

    return checked


# -- the API ---------------------------------------------------------------------------------


class AdminAPI:
    """The ``/admin/v1`` ASGI app: authentication first, then the routes."""

    def __init__(self, accounts: Accounts, client_address: ClientAddress | None = None) -> None:
        self.accounts = accounts
        # The client IP the audit log records: the peer, or X-Forwarded-For behind a trusted
        # proxy, resolved as the Test Connection endpoint resolves it.
        self.client_address = client_address or ClientAddress()
        read, workspaces, keys = Permission.READ, Permission.WORKSPACES, Permission.KEYS
        # Every route names what its token's role must allow (moeconnect.roles).
        routes = [
            ("/workspaces", self.create_workspace, "POST", workspaces),
            ("/workspaces", self.list_workspaces, "GET", read),
            ("/workspaces/{workspace_id}", self.get_workspace, "GET", read),
            ("/workspaces/{workspace_id}", self.rename_workspace, "PATCH", workspaces),
            ("/workspaces/{workspace_id}", self.delete_workspace, "DELETE", workspaces),
            ("/workspaces/{workspace_id}/suspend", self.suspend, "POST", workspaces),
            ("/workspaces/{workspace_id}/resume", self.resume, "POST", workspaces),
            ("/workspaces/{workspace_id}/keys", self.list_keys, "GET", read),
            ("/workspaces/{workspace_id}/keys", self.generate_key, "POST", keys),
            ("/workspaces/{workspace_id}/keys/import", self.import_key, "POST", keys),
            ("/workspaces/{workspace_id}/keys/revoke", self.revoke_key, "POST", keys),
            ("/workspaces/{workspace_id}/attempts", self.list_attempts, "GET", read),
            ("/workspaces/{workspace_id}/sources", self.sources, "GET", read),
            ("/audit", self.audit, "GET", read),
        ]
        # One route per path, so a wrong method is answered with every method the path allows.
        by_path: dict[str, dict[str, Handler]] = {}
        for path, handler, method, permission in routes:
            by_path.setdefault(path, {})[method] = _needs(permission, handler)
        self.router = Router(
            routes=[
                Route(path, self._guarded(_by_method(handlers)), methods=list(handlers))
                for path, handlers in by_path.items()
            ],
            # A trailing slash is a 404 after authentication, never a redirect to a URL built
            # from the client's Host header.
            redirect_slashes=False,
        )

    @property
    def store(self) -> Store:
        return self.accounts.store

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.router(scope, receive, send)
        except HTTPException as exc:
            if exc.status_code not in (404, 405):
                raise
            # Unknown routes and methods, too, say nothing to a caller without a token.
            request = Request(scope, receive)
            request_id = request_id_from(request.headers.get("x-request-id", "").encode())[0]
            response = await self._authenticated(request, request_id)
            if response is None and exc.status_code == 405:
                allow = (exc.headers or {}).get("Allow", "")
                headers = _headers(request_id)
                headers["allow"] = allow
                message = f"Use {allow} for this admin API route; {request.method} is not allowed."
                response = Response(
                    envelope("METHOD_NOT_ALLOWED", message, request_id),
                    status_code=405,
                    media_type="application/json",
                    headers=headers,
                )
            if response is None:
                response = _error(
                    "RESOURCE_NOT_FOUND",
                    404,
                    request_id,
                    detail=f"There is no admin API route at {request.url.path[:200]}.",
                )
            await response(scope, receive, send)

    async def _authenticated(self, request: Request, request_id: str) -> Response | None:
        """None when the request carries a valid token, else the 401 (or 503) to send."""
        token = _bearer(request)
        try:
            record = await self.accounts.authenticate_token(token) if token else None
        except StoreError as err:
            log.warning("store unavailable: %s", err, extra={"request_id": request_id})
            return _error("STORE_UNAVAILABLE", 503, request_id, retry_after=RETRY_AFTER)
        if record is None:
            return _error("UNAUTHORIZED", 401, request_id)
        request.state.operator = record
        return None

    def _guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            request_id = request_id_from(request.headers.get("x-request-id", "").encode())[0]
            if (denied := await self._authenticated(request, request_id)) is not None:
                return denied
            peer = request.client.host if request.client else None
            client_ip = self.client_address.resolve(peer, request.headers.get("x-forwarded-for"))
            context = _Context(request_id, request.state.operator, client_ip)
            try:
                response = await handler(request, context)
            except (_Invalid, InvalidInput) as err:
                return _error("VALIDATION_ERROR", 400, request_id, detail=_sentence(str(err)))
            except _Forbidden as err:
                return _error("INSUFFICIENT_ROLE", 403, request_id, detail=_sentence(str(err)))
            except NotFound as err:
                return _error("RESOURCE_NOT_FOUND", 404, request_id, detail=_sentence(str(err)))
            except Conflict as err:
                return _error("CONFLICT", 409, request_id, detail=_sentence(str(err)))
            except StoreError as err:
                log.warning("store unavailable: %s", err, extra={"request_id": request_id})
                return _error("STORE_UNAVAILABLE", 503, request_id, retry_after=RETRY_AFTER)
            if request.method != "GET":
                log.info(
                    "admin change",
                    extra={
                        "request_id": request_id,
                        "operator_token_id": context.token.id,
                        "client_ip": context.audit.client_ip,
                        "method": request.method,
                        "path": request.url.path,
                        "status": response.status_code,
                    },
                )
            return response

        return endpoint

    # -- workspaces ----------------------------------------------------------------------------

    async def create_workspace(self, request: Request, ctx: _Context) -> Response:
        if ctx.token.workspace_ids is not None:
            raise _Forbidden(
                "This operator token is restricted to a list of workspaces, so it can't create "
                "one; use a token without a workspace restriction."
            )
        body = await _body(request)
        _only(body, ("name", "dc", "workspace_id"))
        name = _string(body, "name", required=True)
        assert name is not None
        workspace = await self.accounts.create_workspace(
            name,
            _string(body, "dc", default=self.accounts.known_dcs[0]) or "",
            _string(body, "workspace_id"),
            audit=ctx.audit,
        )
        return _json(workspace_json(workspace), ctx.request_id, 201)

    async def list_workspaces(self, request: Request, ctx: _Context) -> Response:
        limit = _limit(request)
        cursor = _text_param(request, "cursor", 64)
        if cursor is not None and not WORKSPACE_ID_PATTERN.match(cursor):
            raise _Invalid("The parameter cursor is not one this API returned.")
        dc = _text_param(request, "dc", 16)
        search = _text_param(request, "search", 100)
        items = await self.store.list_workspaces(
            limit=limit + 1,
            after=cursor,
            dc=self.accounts.check_dc(dc) if dc is not None else None,
            search=search,
            only=ctx.token.workspace_ids,
        )
        page = items[:limit]
        next_cursor = page[-1].id if len(items) > limit else None
        return _json(
            {"items": [workspace_json(w) for w in page], "next_cursor": next_cursor},
            ctx.request_id,
        )

    async def _workspace(self, workspace_id: str) -> Any:
        workspace = await self.store.get_workspace(workspace_id)
        if workspace is None:
            raise NotFound(f"no workspace has ID {workspace_id}")
        return workspace

    async def get_workspace(self, request: Request, ctx: _Context) -> Response:
        workspace = await self._workspace(_workspace_id(request))
        return _json(workspace_json(workspace), ctx.request_id)

    async def rename_workspace(self, request: Request, ctx: _Context) -> Response:
        workspace_id = _workspace_id(request)
        body = await _body(request)
        _only(body, ("name",))
        name = _string(body, "name", required=True)
        assert name is not None
        workspace = await self.accounts.rename_workspace(workspace_id, name, audit=ctx.audit)
        return _json(workspace_json(workspace), ctx.request_id)

    async def _set_status(self, request: Request, ctx: _Context, status: str) -> Response:
        workspace = await self.accounts.set_workspace_status(
            _workspace_id(request), status, audit=ctx.audit
        )
        return _json(workspace_json(workspace), ctx.request_id)

    async def suspend(self, request: Request, ctx: _Context) -> Response:
        return await self._set_status(request, ctx, "suspended")

    async def resume(self, request: Request, ctx: _Context) -> Response:
        return await self._set_status(request, ctx, "active")

    async def delete_workspace(self, request: Request, ctx: _Context) -> Response:
        await self.accounts.delete_workspace(_workspace_id(request), audit=ctx.audit)
        return Response(status_code=204, headers=_headers(ctx.request_id))

    # -- keys ----------------------------------------------------------------------------------

    async def list_keys(self, request: Request, ctx: _Context) -> Response:
        workspace_id = _workspace_id(request)
        await self._workspace(workspace_id)
        keys = await self.accounts.list_keys(workspace_id)
        return _json(
            {"workspace_id": workspace_id, "keys": [key_json(k) for k in keys]}, ctx.request_id
        )

    async def generate_key(self, request: Request, ctx: _Context) -> Response:
        workspace_id = _workspace_id(request)
        body = await _body(request, optional=True)
        _only(body, ("scope", "grace"))
        scope = _scope(_string(body, "scope"))
        grace = _grace(_string(body, "grace"))
        try:
            new = await self.accounts.generate_key(workspace_id, scope, grace, audit=ctx.audit)
        except Conflict:
            raise Conflict(_RACE) from None
        rotation = new.rotation
        document = {
            "key": new.key,
            **key_json(rotation.key),
            "previous_key_id": rotation.previous_key_id,
            "previous_key_expires_at": iso(rotation.previous_key_expires_at),
        }
        return _json(document, ctx.request_id, 201)

    async def import_key(self, request: Request, ctx: _Context) -> Response:
        workspace_id = _workspace_id(request)
        body = await _body(request)
        _only(body, ("key", "scope", "grace"))
        key = _string(body, "key", required=True)
        assert key is not None
        scope = _scope(_string(body, "scope"))
        grace = _grace(_string(body, "grace"))
        try:
            rotation = await self.accounts.import_key(
                workspace_id, key, scope, grace, audit=ctx.audit
            )
        except Conflict:
            raise Conflict(_RACE) from None
        document = {
            **key_json(rotation.key),
            "previous_key_id": rotation.previous_key_id,
            "previous_key_expires_at": iso(rotation.previous_key_expires_at),
        }
        return _json(document, ctx.request_id, 201)

    async def revoke_key(self, request: Request, ctx: _Context) -> Response:
        workspace_id = _workspace_id(request)
        body = await _body(request, optional=True)
        _only(body, ("scope",))
        scope = _scope(_string(body, "scope"))
        revoked = await self.accounts.revoke_key(workspace_id, scope, audit=ctx.audit)
        return _json(
            {"workspace_id": workspace_id, "scope": scope, "revoked": revoked}, ctx.request_id
        )

    # -- the connection record -----------------------------------------------------------------

    async def list_attempts(self, request: Request, ctx: _Context) -> Response:
        workspace_id = _workspace_id(request)
        limit = _limit(request)
        source = _text_param(request, "source", 64)
        outcome = _text_param(request, "outcome", 32)
        since = _moment(request, "since")
        until = _moment(request, "until")
        cursor = _text_param(request, "cursor", 40)
        await self._workspace(workspace_id)
        try:
            page = await self.store.list_attempts(
                workspace_id,
                source=source,
                outcome=outcome.upper() if outcome else None,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
        except ValueError as err:  # a cursor this API did not hand out
            raise _Invalid(_sentence(str(err))) from None
        return _json(
            {
                "workspace_id": workspace_id,
                "items": [attempt_json(r) for r in page.items],
                "next_cursor": page.next_cursor,
            },
            ctx.request_id,
        )

    async def sources(self, request: Request, ctx: _Context) -> Response:
        workspace_id = _workspace_id(request)
        await self._workspace(workspace_id)
        summary = await self.store.source_summary(workspace_id)
        return _json(
            {"workspace_id": workspace_id, "sources": [summary_json(s) for s in summary]},
            ctx.request_id,
        )

    # -- the audit log -------------------------------------------------------------------------

    async def audit(self, request: Request, ctx: _Context) -> Response:
        """The audit log, newest first; filtered by workspace, time and action."""
        limit = _limit(request)
        workspace_id = _text_param(request, "workspace_id", 64)
        if workspace_id is not None and not WORKSPACE_ID_PATTERN.match(workspace_id):
            raise _Invalid("The parameter workspace_id is not a workspace ID.")
        if ctx.token.workspace_ids is not None:
            # A restricted token reads its own workspaces' entries, never the tokens' or the
            # sign-ins' (which belong to no workspace).
            if workspace_id is None:
                raise _Forbidden(
                    "This operator token is restricted to some workspaces; "
                    "read the audit log of one of them with workspace_id."
                )
            if not sees(ctx.token, workspace_id):
                raise NotFound(f"No workspace has ID {workspace_id!r}.")
        action = _text_param(request, "action", 40)
        since = _moment(request, "since")
        cursor = _text_param(request, "cursor", 40)
        try:
            page = await self.store.list_audit(
                workspace_id=workspace_id, action=action, since=since, limit=limit, cursor=cursor
            )
        except ValueError as err:  # a cursor this API did not hand out, or an unknown action
            raise _Invalid(_sentence(str(err))) from None
        return _json(
            {"items": [audit_json(e) for e in page.items], "next_cursor": page.next_cursor},
            ctx.request_id,
        )


def _by_method(handlers: dict[str, Handler]) -> Handler:
    async def dispatch(request: Request, ctx: _Context) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request, ctx)

    return dispatch


def _sentence(text: str) -> str:
    """Store and validation messages as one sentence: capitalised, with a full stop."""
    text = text.strip() or "The request can't be processed"
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
