"""The dashboard's pages: sign-in, workspaces, the "Settings › Account › APIs" page, activity.

Every page is server-rendered; every change is a POST carrying a CSRF token (checked before
anything is read from the store or changed). A newly generated key is rendered once, in the
response to the POST that made it, with ``Cache-Control: no-store``; it is never put in the
session, a cookie or a URL, so reloading can't show it again.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..accounts import InvalidInput
from ..audit import AuditContext, SignInFailures, describe
from ..http.bodies import DASHBOARD_MAX_BODY
from ..keys import SCOPES
from ..records import ApiKey, OperatorToken, Workspace
from ..roles import Permission, allows, refusal, sees
from ..runtime import Runtime
from ..store import Conflict, NotFound, StoreError
from ..text import excerpt
from .activity import load_activity, outcome_class
from .sessions import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Session,
    SessionSigner,
    new_random_id,
)

__all__ = ["GRACE_CHOICES", "dashboard_routes"]

log = logging.getLogger("moeconnect.dashboard")

PREFIX = "/dashboard"
PAGE_SIZE = 50
# Bounds on a form, beyond the body limit of moeconnect.http.bodies (Starlette's defaults are
# 1,000 fields of 1 MB): the largest form here has three fields, and none takes a file.
MAX_FORM_FIELDS = 16

GRACE_CHOICES: dict[str, tuple[str, timedelta | None]] = {
    "none": ("None — the old key stops working now", None),
    "1h": ("1 hour", timedelta(hours=1)),
    "24h": ("24 hours", timedelta(hours=24)),
    "7d": ("7 days", timedelta(days=7)),
    "30d": ("30 days", timedelta(days=30)),
}

SCOPE_INFO: dict[str, tuple[str, str]] = {
    "data": ("Data", "Track users and events; the key Test Connection checks."),
    "push": ("Push", "Send push notifications from your servers."),
    "inform": ("Inform", "Send transactional messages through Inform."),
    "campaign": ("Campaign", "Create and trigger campaigns through the API."),
    "personalize": ("Personalize", "Fetch personalized content and experiences."),
}

_SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}

Handler = Callable[[Request, Session], Awaitable[Response]]


def _fmt_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%d %b %Y, %H:%M UTC")


def _fmt_relative(value: datetime | None, now: datetime | None = None) -> str:
    """'in 23 h', '5 min ago': how far ``value`` is from now, roughly."""
    if value is None:
        return ""
    now = now or datetime.now(UTC)
    seconds = (value - now).total_seconds()
    future, seconds = seconds > 0, abs(seconds)
    if seconds < 60:
        text = "less than a minute"
    elif seconds < 3600:
        text = f"{int(seconds // 60)} min"
    elif seconds < 2 * 86400:
        text = f"{int(seconds // 3600)} h"
    else:
        text = f"{int(seconds // 86400)} days"
    return f"in {text}" if future else f"{text} ago"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("moeconnect.dashboard", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _fmt_time
    env.filters["relative"] = _fmt_relative
    env.filters["short"] = lambda v: v.astimezone(UTC).strftime("%d %b %H:%M") if v else "—"
    env.filters["iso"] = lambda v: v.astimezone(UTC).isoformat() if v else ""
    env.globals["outcome_class"] = outcome_class
    env.filters["describe"] = describe
    return env


class Dashboard:
    """The dashboard's handlers over one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.signer = SessionSigner(runtime.secret)
        self.env = _environment()
        # Failed sign-ins need no credentials: only so many a minute get an audit entry.
        self.sign_in_failures = SignInFailures()

    # -- rendering ----------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        session: Session | None = None,
        **context: Any,
    ) -> HTMLResponse:
        context.setdefault("csrf", self.signer.csrf_token(session.session_id) if session else "")
        operator = _operator(request) if session is not None else None
        html = self.env.get_template(template).render(
            request=request,
            signed_in=session is not None,
            prefix=PREFIX,
            operator=operator,
            can=_abilities(operator),
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)

    def _cookie_options(self, request: Request) -> dict[str, Any]:
        return {
            "httponly": True,
            "samesite": "lax",
            "secure": self._over_tls(request),
            "path": PREFIX,
        }

    def _over_tls(self, request: Request) -> bool:
        """Served over TLS: by this server, or by a TLS proxy among ``--trusted-proxy`` that says
        so in ``X-Forwarded-Proto`` (the last value, the one the nearest proxy added; from any
        other peer the header proves nothing)."""
        if request.url.scheme == "https":
            return True
        values = request.headers.getlist("x-forwarded-proto")
        if not values or request.client is None:
            return False
        if values[-1].rpartition(",")[2].strip().lower() != "https":
            return False
        return _trusted_peer(self.runtime.client_address.networks, request.client.host)

    def _problem(
        self, request: Request, status: int, title: str, message: str, session: Session | None
    ) -> HTMLResponse:
        return self.render(request, "error.html", status, session, title=title, message=message)

    # -- sessions -----------------------------------------------------------------------------

    async def current_session(self, request: Request) -> Session | None:
        """The request's session, if its cookie holds and its token is still usable.

        The token is read by its ID on every request (one primary-key lookup, no cache): a
        revoked or expired token ends its open sessions at once, and the role and workspace
        restriction in force are the stored ones, never a copy in the cookie.
        """
        session = self.signer.verify(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None
        operator = await self.runtime.accounts.operator(session.token_id)
        if operator is None:
            return None
        request.state.operator = operator
        return session

    def client_ip(self, request: Request) -> str | None:
        """The client's address: the peer, or X-Forwarded-For behind a trusted proxy."""
        peer = request.client.host if request.client else None
        return self.runtime.client_address.resolve(peer, request.headers.get("x-forwarded-for"))

    async def audit(self, request: Request, session: Session) -> AuditContext:
        """What a change made in this request is recorded as: the session's token, from here."""
        return AuditContext.token(_operator(request), "dashboard", self.client_ip(request))

    def signed_in(
        self, handler: Handler, permission: Permission = Permission.READ
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap ``handler``: sign-in required; POSTs must carry this session's CSRF token; the
        token's role must allow ``permission`` (the form pages of a change need it too)."""

        async def endpoint(request: Request) -> Response:
            try:
                session = await self.current_session(request)
                if session is None:
                    target = request.url.path
                    if request.method == "GET" and request.url.query:
                        target += "?" + request.url.query
                    return RedirectResponse(
                        f"{PREFIX}/sign-in?" + urlencode({"next": target}), status_code=303
                    )
                if request.method == "POST":
                    form = await _form(request)
                    if not self.signer.csrf_ok(session.session_id, form.get("csrf")):
                        return self._problem(
                            request,
                            403,
                            "This form can't be accepted",
                            "It expired or did not come from this dashboard. Nothing was "
                            "changed; go back, reload the page and try again.",
                            session,
                        )
                operator = _operator(request)
                if not allows(operator.role, permission):
                    return self._problem(
                        request,
                        403,
                        "Your operator token can't do this",
                        refusal(operator.role, permission) + " Nothing was changed.",
                        session,
                    )
                return await handler(request, session)
            except StoreError as err:
                if isinstance(err, NotFound):
                    return self._problem(request, 404, "Not found", str(err), None)
                log.warning("dashboard: store unavailable", exc_info=err)
                response = self._problem(
                    request,
                    503,
                    "The store can't be reached",
                    "moeconnect can't reach its database right now. Nothing was changed; "
                    "try again in a moment.",
                    None,
                )
                response.headers["retry-after"] = "5"
                return response

        return endpoint

    # -- sign-in ------------------------------------------------------------------------------

    async def sign_in_page(self, request: Request) -> Response:
        try:
            if await self.current_session(request) is not None:
                target = _safe_next(request.query_params.get("next")) or PREFIX
                return RedirectResponse(target, status_code=303)
        except StoreError:
            pass  # show the form; signing in will say the store is unreachable
        pre = request.cookies.get(SIGNIN_COOKIE) or new_random_id()
        return self._sign_in_form(request, pre, 200, "")

    def _sign_in_form(self, request: Request, pre: str, status: int, error: str) -> Response:
        response = self.render(
            request,
            "sign_in.html",
            status,
            None,
            csrf=self.signer.csrf_token(pre, "signin"),
            next=_safe_next(request.query_params.get("next")),
            error=error,
        )
        response.set_cookie(SIGNIN_COOKIE, pre, max_age=3600, **self._cookie_options(request))
        return response

    async def sign_in(self, request: Request) -> Response:
        form = await _form(request)
        pre = request.cookies.get(SIGNIN_COOKIE)
        if not pre or not self.signer.csrf_ok(pre, form.get("csrf"), "signin"):
            return self._sign_in_form(
                request,
                new_random_id(),
                403,
                "The sign-in form expired. Paste your operator token again.",
            )
        token = form.get("token")
        client_ip = self.client_ip(request)
        try:
            record = await self.runtime.accounts.authenticate_token(
                token.strip() if isinstance(token, str) else ""
            )
            # Recorded before the session exists: no sign-in goes unaudited. A failure names
            # no one (never the text submitted), and only so many are written a minute.
            if record is not None:
                who = AuditContext.token(record, "dashboard", client_ip)
                await self.runtime.store.add_audit(who, "dashboard.sign_in", target=record.id)
            elif (unrecorded := self.sign_in_failures.admit(client_ip)) is not None:
                await self.runtime.store.add_audit(
                    AuditContext.anonymous("dashboard", client_ip),
                    "dashboard.sign_in_failed",
                    after={"unrecorded_before": unrecorded} if unrecorded else None,
                )
        except StoreError:
            return self._sign_in_form(
                request, pre, 503, "The store can't be reached right now; try again in a moment."
            )
        if record is None:
            return self._sign_in_form(
                request,
                pre,
                401,
                "That operator token is not valid, has expired or has been revoked.",
            )
        _session, cookie = self.signer.new_session(record.id)
        target = _safe_next(_text(form, "next")) or PREFIX
        response = RedirectResponse(target, status_code=303)
        options = self._cookie_options(request)
        response.set_cookie(SESSION_COOKIE, cookie, max_age=self.signer.lifetime, **options)
        response.delete_cookie(SIGNIN_COOKIE, **options)
        log.info("dashboard sign-in", extra={"token_id": record.id, "client_ip": client_ip})
        return response

    async def sign_out(self, request: Request, session: Session) -> Response:
        response = RedirectResponse(f"{PREFIX}/sign-in?signed_out=1", status_code=303)
        response.delete_cookie(SESSION_COOKIE, **self._cookie_options(request))
        return response

    # -- workspaces ---------------------------------------------------------------------------

    async def workspaces(self, request: Request, session: Session) -> Response:
        search = request.query_params.get("q", "").strip()[:100]
        dc = request.query_params.get("dc", "")
        dc = dc if dc in self.runtime.accounts.known_dcs else ""
        after = request.query_params.get("after") or None
        rows = await self.runtime.store.list_workspaces(
            limit=PAGE_SIZE + 1,
            after=after,
            dc=dc or None,
            search=search or None,
            only=_operator(request).workspace_ids,
        )
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        next_url = ""
        if more:
            query = {"q": search, "dc": dc, "after": rows[-1].id}
            next_url = f"{PREFIX}?" + urlencode({k: v for k, v in query.items() if v})
        return self.render(
            request,
            "workspaces.html",
            session=session,
            workspaces=rows,
            search=search,
            dc=dc,
            dcs=self.runtime.accounts.known_dcs,
            next_url=next_url,
            paged=after is not None,
        )

    async def new_workspace_page(self, request: Request, session: Session) -> Response:
        if (refused := self._restricted(request, session)) is not None:
            return refused
        return self._new_workspace_form(request, session, 200, "", "", "")

    def _restricted(self, request: Request, session: Session) -> Response | None:
        """The 403 for a token restricted to some workspaces: it can't create one."""
        if _operator(request).workspace_ids is None:
            return None
        return self._problem(
            request,
            403,
            "Your operator token can't do this",
            "This operator token is restricted to a list of workspaces, so it can't create one. "
            "Nothing was changed.",
            session,
        )

    def _new_workspace_form(
        self, request: Request, session: Session, status: int, error: str, name: str, dc: str
    ) -> Response:
        return self.render(
            request,
            "new_workspace.html",
            status,
            session,
            error=error,
            name=name,
            dc=dc or self.runtime.settings.dcs[0],
            dcs=self.runtime.accounts.known_dcs,
        )

    async def create_workspace(self, request: Request, session: Session) -> Response:
        if (refused := self._restricted(request, session)) is not None:
            return refused
        form = await _form(request)
        name, dc = _text(form, "name"), _text(form, "dc")
        try:
            workspace = await self.runtime.accounts.create_workspace(
                name, dc or "01", audit=await self.audit(request, session)
            )
        except (InvalidInput, Conflict) as err:
            return self._new_workspace_form(request, session, 400, str(err), name, dc)
        return RedirectResponse(
            f"{PREFIX}/workspaces/{quote(workspace.id)}?done=created", status_code=303
        )

    async def _workspace(self, request: Request) -> Workspace:
        workspace_id = request.path_params["workspace_id"]
        # Outside the token's restriction: the same 404 as a workspace that does not exist.
        workspace = (
            await self.runtime.store.get_workspace(workspace_id)
            if sees(_operator(request), workspace_id)
            else None
        )
        if workspace is None:
            raise NotFound(f"No workspace has the ID {excerpt(workspace_id)}.")
        return workspace

    async def workspace(self, request: Request, session: Session) -> Response:
        workspace = await self._workspace(request)
        keys = await self.runtime.accounts.list_keys(workspace.id)
        now = datetime.now(UTC)
        activity = await load_activity(self.runtime.store, workspace.id, now, recent=0)
        return self.render(
            request,
            "workspace.html",
            session=session,
            workspace=workspace,
            tiles=[_tile(scope, keys, now) for scope in SCOPES],
            activity=activity,
            done=request.query_params.get("done", ""),
        )

    async def activity(self, request: Request, session: Session) -> Response:
        workspace = await self._workspace(request)
        now = datetime.now(UTC)
        activity = await load_activity(self.runtime.store, workspace.id, now, recent=50)
        return self.render(
            request, "activity.html", session=session, workspace=workspace, activity=activity
        )

    async def audit_page(self, request: Request, session: Session) -> Response:
        """The workspace's audit log, newest first, :data:`PAGE_SIZE` entries a page."""
        workspace = await self._workspace(request)
        cursor = request.query_params.get("before") or None
        try:
            page = await self.runtime.store.list_audit(
                workspace_id=workspace.id, limit=PAGE_SIZE, cursor=cursor
            )
        except ValueError:
            raise NotFound("That page of the audit log does not exist.") from None
        older = ""
        if page.next_cursor:
            older = f"{PREFIX}/workspaces/{quote(workspace.id)}/audit?" + urlencode(
                {"before": page.next_cursor}
            )
        return self.render(
            request,
            "audit.html",
            session=session,
            workspace=workspace,
            entries=page.items,
            older=older,
            paged=cursor is not None,
        )

    # -- keys ---------------------------------------------------------------------------------

    def _scope(self, request: Request) -> str:
        scope = str(request.path_params["scope"])
        if scope not in SCOPES:
            raise NotFound(f"There is no key scope called {excerpt(scope)}.")
        return scope

    async def generate_page(self, request: Request, session: Session) -> Response:
        workspace = await self._workspace(request)
        scope = self._scope(request)
        keys = await self.runtime.accounts.list_keys(workspace.id)
        tile = _tile(scope, keys, datetime.now(UTC))
        return self.render(
            request,
            "generate.html",
            session=session,
            workspace=workspace,
            tile=tile,
            grace_choices=GRACE_CHOICES,
            error="",
        )

    async def generate(self, request: Request, session: Session) -> Response:
        workspace = await self._workspace(request)
        scope = self._scope(request)
        form = await _form(request)
        keys = await self.runtime.accounts.list_keys(workspace.id)
        tile = _tile(scope, keys, datetime.now(UTC))
        grace_choice = _text(form, "grace") or "none"
        expected = _text(form, "replaces")
        actual = tile["current"].id if tile["current"] else "none"
        if grace_choice not in GRACE_CHOICES or expected != actual:
            # A resubmitted or stale confirmation: the key changed since it was shown.
            error = (
                "Choose one of the grace periods offered."
                if grace_choice not in GRACE_CHOICES
                else "The key changed since this confirmation was shown, so no key was "
                "generated. Check the tile below and confirm again."
            )
            return self.render(
                request,
                "generate.html",
                409,
                session,
                workspace=workspace,
                tile=tile,
                grace_choices=GRACE_CHOICES,
                error=error,
            )
        who = await self.audit(request, session)
        new = await self.runtime.accounts.generate_key(
            workspace.id, scope, GRACE_CHOICES[grace_choice][1], audit=who
        )
        log.info(
            "dashboard: key generated",
            extra={
                "workspace_id": workspace.id,
                "scope": scope,
                "key_id": new.rotation.key.id,
                "token_id": who.actor_id,
                "client_ip": who.client_ip,
            },
        )
        return self.render(
            request,
            "new_key.html",
            session=session,
            workspace=workspace,
            scope=scope,
            scope_label=SCOPE_INFO[scope][0],
            key=new.key,
            rotation=new.rotation,
        )

    async def revoke_page(self, request: Request, session: Session) -> Response:
        workspace = await self._workspace(request)
        scope = self._scope(request)
        keys = await self.runtime.accounts.list_keys(workspace.id)
        return self.render(
            request,
            "revoke.html",
            session=session,
            workspace=workspace,
            tile=_tile(scope, keys, datetime.now(UTC)),
        )

    async def revoke(self, request: Request, session: Session) -> Response:
        workspace = await self._workspace(request)
        scope = self._scope(request)
        who = await self.audit(request, session)
        await self.runtime.accounts.revoke_key(workspace.id, scope, audit=who)
        log.info(
            "dashboard: key revoked",
            extra={
                "workspace_id": workspace.id,
                "scope": scope,
                "token_id": who.actor_id,
                "client_ip": who.client_ip,
            },
        )
        return RedirectResponse(
            f"{PREFIX}/workspaces/{quote(workspace.id)}?done=revoked-{scope}", status_code=303
        )

    # -- routing ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        ws = PREFIX + "/workspaces/{workspace_id}"
        key = ws + "/keys/{scope}"
        guard = self.signed_in
        workspaces, keys = Permission.WORKSPACES, Permission.KEYS
        return [
            Route(PREFIX, guard(self.workspaces), methods=["GET"]),
            Route(PREFIX + "/", guard(self.workspaces), methods=["GET"]),
            Route(PREFIX + "/sign-in", self.sign_in_page, methods=["GET"]),
            Route(PREFIX + "/sign-in", self.sign_in, methods=["POST"]),
            Route(PREFIX + "/sign-out", guard(self.sign_out), methods=["POST"]),
            Route(
                PREFIX + "/workspaces/new",
                guard(self.new_workspace_page, workspaces),
                methods=["GET"],
            ),
            Route(
                PREFIX + "/workspaces/new",
                guard(self.create_workspace, workspaces),
                methods=["POST"],
            ),
            Route(ws, guard(self.workspace), methods=["GET"]),
            Route(ws + "/activity", guard(self.activity), methods=["GET"]),
            Route(ws + "/audit", guard(self.audit_page), methods=["GET"]),
            Route(key + "/generate", guard(self.generate_page, keys), methods=["GET"]),
            Route(key + "/generate", guard(self.generate, keys), methods=["POST"]),
            Route(key + "/revoke", guard(self.revoke_page, keys), methods=["GET"]),
            Route(key + "/revoke", guard(self.revoke, keys), methods=["POST"]),
            Mount(
                PREFIX + "/static",
                app=StaticFiles(packages=[("moeconnect.dashboard", "static")]),
                name="dashboard-static",
            ),
        ]


async def _form(request: Request) -> FormData:
    """The request's form, bounded in fields and size; no files."""
    return await request.form(
        max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=DASHBOARD_MAX_BODY
    )


def _trusted_peer(networks: tuple[Any, ...], host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _operator(request: Request) -> OperatorToken:
    """The signed-in operator token (set by :meth:`Dashboard.current_session`)."""
    operator: OperatorToken = request.state.operator
    return operator


def _abilities(operator: OperatorToken | None) -> dict[str, bool]:
    """What the pages offer: only the forms this token may use (SPEC section 9)."""
    if operator is None:
        return {"create_workspace": False, "change_keys": False}
    return {
        "create_workspace": allows(operator.role, Permission.WORKSPACES)
        and operator.workspace_ids is None,
        "change_keys": allows(operator.role, Permission.KEYS),
    }


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard: never another site (no open redirect)."""
    if (
        not target
        or not target.startswith(PREFIX)
        or target.startswith("//")
        or "\\" in target
        or any(ch in target for ch in "\r\n")
    ):
        return ""
    return target


def _tile(scope: str, keys: list[ApiKey], now: datetime) -> dict[str, Any]:
    """What one scope's tile shows: the current key, a previous key still in grace, or why
    there is none."""
    mine = [k for k in keys if k.scope == scope]
    current = next((k for k in mine if k.state == "current"), None)
    grace = next(
        (
            k
            for k in mine
            if k.state != "current"
            and k.ended_how == "replaced"
            and k.ended_at is not None
            and k.ended_at > now
        ),
        None,
    )
    latest = max(mine, key=lambda k: k.created_at, default=None)
    label, description = SCOPE_INFO[scope]
    if current is not None:
        state = "active"
    elif latest is not None and latest.ended_how == "revoked":
        state = "revoked"
    else:
        state = "none"
    return {
        "scope": scope,
        "label": label,
        "description": description,
        "current": current,
        "grace": grace,
        "latest": latest,
        "state": state,
    }


def dashboard_routes(runtime: Runtime) -> list[BaseRoute]:
    """The routes to mount in the Starlette app."""
    return Dashboard(runtime).routes()
