"""The dashboard's Starlette app: pages, their JSON, sign-in, and the headers on everything.

Runs on anyio's trio backend inside anycorn (the same server as the calls). Handlers
only await: every read of a file or a database goes to a worker thread (data.py,
work.py), and the live calls are read from the runtime's sessions on the trio thread
without blocking.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ..config import Config
from .auth import (
    COOKIE,
    LoginLimiter,
    Session,
    SessionCodec,
    csrf_ok,
    looks_like_hash,
    verify_password,
)
from .data import PAGE_SIZE, WATERFALL, Analytics, CallFilter
from .work import WorkQueue, live_calls, outbox_failures, retry_notification

__all__ = ["Dashboard", "build_dashboard"]

log = logging.getLogger("hookline.dashboard")

HERE = Path(__file__).parent
STATIC = HERE / "static"
PUBLIC = {"/login", "/static/dashboard.css"}  # what the sign-in page itself needs
MAX_FORM_BYTES = 16_384
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self'; font-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
OUTCOMES = (
    "caller_hangup",
    "agent_hangup",
    "transferred",
    "rejected",
    "provider_failed",
    "error",
    "interrupted",
    "active",
)


@dataclass
class Dashboard:
    """Everything the handlers share: one per mounted app."""

    config: Config
    analytics: Analytics
    work: WorkQueue
    runtime: Any = None  # the serving Runtime; None when run alone
    source: str = "live"  # "live", "workers", "file", "segments" or "parquet": the header says
    password_hash: str | None = None
    trusted_header: str = ""
    codec: SessionCodec = field(init=False)
    limiter: LoginLimiter = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.config.dashboard
        secret = os.environ.get(cfg.session_secret_env)
        self.codec = SessionCodec(
            secret.encode() if secret else secrets.token_bytes(32), cfg.session_hours * 3600
        )
        self.limiter = LoginLimiter(cfg.login_attempts)

    @property
    def can_sign_in(self) -> bool:
        return bool(self.password_hash or self.trusted_header)

    def shown(self, number: str | None) -> str:
        if self.runtime is None:
            return number or "unknown"
        from ..logs import shown_number  # the same rule the logs and the database follow

        return shown_number(number, self.runtime)


def build_dashboard(
    config: Config,
    analytics: Analytics,
    *,
    runtime: Any = None,
    source: str = "live",
) -> Starlette:
    """The dashboard app; mount it under a prefix (it builds its links from root_path)."""
    cfg = config.dashboard
    password_hash = os.environ.get(cfg.password_hash_env) or None
    if password_hash and not looks_like_hash(password_hash):
        log.error(
            "dashboard: %s does not hold a hash from `hookline dashboard hash-password`; "
            "nobody can sign in",
            cfg.password_hash_env,
        )
        password_hash = None
    trusted = cfg.trusted_header.strip().lower()
    if not password_hash and not trusted:
        log.warning(
            "dashboard: no sign-in configured (set %s or [dashboard] trusted_header); "
            "/admin refuses everyone",
            cfg.password_hash_env,
        )
    state = Dashboard(
        config=config,
        analytics=analytics,
        work=WorkQueue(config, analytics.limiter, getattr(runtime, "storage", None)),
        runtime=runtime,
        source=source,
        password_hash=password_hash,
        trusted_header=trusted,
    )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["ms"] = lambda v: "-" if v is None else f"{v:,.0f}"
    env.filters["money"] = lambda v: "-" if v is None else f"${v:.4f}"
    env.filters["when"] = lambda v: "-" if v is None else v.strftime("%Y-%m-%d %H:%M:%S")
    env.filters["secs"] = _secs
    templates = Jinja2Templates(env=env)
    pages = _Pages(state, templates)
    routes = [
        Route("/", pages.today),
        Route("/login", pages.login_form, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/api/today", pages.today_json),
        Route("/calls", pages.calls),
        Route("/calls/{call_id:str}", pages.call),
        Route("/api/calls/{call_id:str}", pages.call_json),
        Route("/work", pages.work),
        Route("/work/messages/{message_id:str}", pages.message_done, methods=["POST"]),
        Route("/work/tows/{reference:str}", pages.tow_done, methods=["POST"]),
        Route("/work/notifications/{nid:str}", pages.notification_retry, methods=["POST"]),
        Route("/trends", pages.trends),
        Route("/api/trends", pages.trends_json),
        Route("/static/{path:path}", pages.static),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Gate, state=state)])
    app.state.dashboard = state
    return app


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    m, s = divmod(int(value), 60)
    return f"{m}:{s:02d}"


def _base(request: Request) -> str:
    return request.scope.get("root_path", "")


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


class _Gate(BaseHTTPMiddleware):
    """Sign-in on every route but the sign-in page; security headers on every response."""

    def __init__(self, app: Any, state: Dashboard) -> None:
        super().__init__(app)
        self.state = state

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        state = self.state
        path = request.scope["path"][len(_base(request)) :] or "/"
        session = state.codec.loads(request.cookies.get(COOKIE))
        new_cookie = None
        if state.trusted_header:
            user = request.headers.get(state.trusted_header, "").strip()
            if user and (session is None or session.user != user):
                session = Session(user=user)
                new_cookie = session
            elif not user and session is not None and session.signed_in:
                session = None  # the proxy no longer vouches: the cookie alone is not enough
        request.state.session = session
        if path in PUBLIC or (session is not None and session.signed_in):
            response = await call_next(request)
        elif path.startswith("/api/") or path.startswith("/static/") or request.method != "GET":
            response = JSONResponse({"error": "sign in first"}, status_code=401)
        else:
            target = f"{_base(request)}/login?next={quote(path)}"
            response = RedirectResponse(target, status_code=303)
        if new_cookie is not None:
            set_session(request, response, state, new_cookie)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def set_session(request: Request, response: Response, state: Dashboard, s: Session) -> None:
    response.set_cookie(
        COOKIE,
        state.codec.dumps(s),
        max_age=int(state.codec.max_age_s),
        path=_base(request) or "/",
        httponly=True,
        secure=_https(request, state),
        samesite="strict",
    )


def _https(request: Request, state: Dashboard) -> bool:
    if request.url.scheme == "https":
        return True
    # Behind a proxy that terminates TLS (the trusted_header setup), it says so.
    forwarded = request.headers.get("x-forwarded-proto", "")
    return bool(state.trusted_header) and forwarded.lower() == "https"


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded form, or None when it is too big or lacks the session's CSRF token."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    if not csrf_ok(request.state.session, form.get("csrf")):
        return None
    return form


def _refused() -> Response:
    return JSONResponse({"error": "missing or stale form token: reload the page"}, 403)


class _Pages:
    def __init__(self, state: Dashboard, templates: Jinja2Templates) -> None:
        self.s = state
        self.templates = templates

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        session = request.state.session
        context.update(
            base=_base(request),
            csrf=session.csrf if session else "",
            user=session.user if session and session.signed_in else "",
            shop=self.s.config.agent.name,
            source=self.s.source,
            analytics_on=self.s.analytics.enabled,
            refresh_ms=int(self.s.config.dashboard.refresh_s * 1000),
            page=name.removesuffix(".html"),
        )
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    # ---------------------------------------------------------------- sign-in

    async def login_form(self, request: Request) -> Response:
        session = request.state.session
        if session is not None and session.signed_in:
            return RedirectResponse(f"{_base(request)}/", 303)
        fresh = session or Session()
        request.state.session = fresh
        response = self.render(
            request,
            "login.html",
            error="",
            configured=self.s.can_sign_in,
            next=request.query_params.get("next", "/"),
        )
        set_session(request, response, self.s, fresh)
        return response

    async def login(self, request: Request) -> Response:
        client = _client(request)
        if self.s.limiter.blocked(client):
            log.warning("dashboard: sign-in attempts from %s are being refused", client)
            return self.render(
                request,
                "login.html",
                429,
                error="Too many attempts: wait a few minutes.",
                configured=True,
                next="/",
            )
        form = await _form(request)
        if form is None:
            return _refused()
        ok = bool(self.s.password_hash) and verify_password(
            form.get("password", ""), self.s.password_hash or ""
        )
        if not ok:
            self.s.limiter.failed(client)
            log.info("dashboard: failed sign-in from %s", client)
            return self.render(
                request,
                "login.html",
                401,
                error="Wrong password.",
                configured=self.s.can_sign_in,
                next=form.get("next", "/"),
            )
        self.s.limiter.succeeded(client)
        signed = Session(user="admin")  # a new token: nothing from before sign-in carries over
        nxt = form.get("next", "/")
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        response = RedirectResponse(f"{_base(request)}{nxt}", 303)
        set_session(request, response, self.s, signed)
        log.info("dashboard: signed in from %s", client)
        return response

    async def logout(self, request: Request) -> Response:
        if await _form(request) is None:
            return _refused()
        response = RedirectResponse(f"{_base(request)}/login", 303)
        response.delete_cookie(COOKIE, path=_base(request) or "/")
        return response

    # ---------------------------------------------------------------- Today

    async def _today(self) -> dict[str, Any]:
        today = await self.s.analytics.today()
        messages = [m for m in await self.s.work.messages() if m["status"] == "new"]
        tows = [t for t in await self.s.work.tows() if not t["done"]]
        return {
            "live": live_calls(self.s.runtime, self.s.shown),
            "live_shown": self.s.runtime is not None,
            "calls": today["calls"],
            "outcomes": today["outcomes"],
            "booked": today["booked"],
            "v2v_p50": today["v2v_p50"],
            "messages_waiting": len(messages),
            "tows_waiting": len(tows),
            "notifications_failed": len(await outbox_failures(self.s.runtime)),
        }

    async def today(self, request: Request) -> Response:
        return self.render(request, "today.html", today=await self._today())

    async def today_json(self, request: Request) -> Response:
        return JSONResponse(await self._today())

    # ---------------------------------------------------------------- Calls

    async def calls(self, request: Request) -> Response:
        q = request.query_params
        f = CallFilter(
            since=_date(q.get("since")),
            until=_date(q.get("until")),
            outcome=q.get("outcome", "") if q.get("outcome") in OUTCOMES else "",
            caller=q.get("caller", "")[:40],
            tool=q.get("tool", "")[:80],
            booked=q.get("booked", "") if q.get("booked") in ("yes", "no") else "",
            page=_int(q.get("page"), 1),
        )
        rows, total = await self.s.analytics.calls(f)
        pages = max(1, -(-total // PAGE_SIZE))
        return self.render(
            request,
            "calls.html",
            rows=rows,
            total=total,
            f=f,
            pages=pages,
            outcomes=OUTCOMES,
            tools=await self.s.analytics.tools(),
            query=_query_without_page(q),
        )

    async def call(self, request: Request) -> Response:
        call = await self.s.analytics.call(request.path_params["call_id"])
        if call is None:
            return self.render(request, "missing.html", 404, what="call")
        return self.render(request, "call.html", call=call, parts=WATERFALL)

    async def call_json(self, request: Request) -> Response:
        call = await self.s.analytics.call(request.path_params["call_id"])
        if call is None:
            return JSONResponse({"error": "no such call"}, 404)
        return JSONResponse(_jsonable(call))

    # ---------------------------------------------------------------- Work queue

    async def work(self, request: Request) -> Response:
        return self.render(
            request,
            "work.html",
            messages=await self.s.work.messages(),
            tows=await self.s.work.tows(),
            has_messages=self.s.work.has_messages,
            has_tows=self.s.work.has_tows,
            failures=await outbox_failures(self.s.runtime),
        )

    async def message_done(self, request: Request) -> Response:
        if await _form(request) is None:
            return _refused()
        found = await self.s.work.mark_message(request.path_params["message_id"], "handled")
        if not found:
            return JSONResponse({"error": "no such message"}, 404)
        return RedirectResponse(f"{_base(request)}/work", 303)

    async def tow_done(self, request: Request) -> Response:
        if await _form(request) is None:
            return _refused()
        if not await self.s.work.mark_tow_done(request.path_params["reference"]):
            return JSONResponse({"error": "no such tow request"}, 404)
        return RedirectResponse(f"{_base(request)}/work", 303)

    async def notification_retry(self, request: Request) -> Response:
        if await _form(request) is None:
            return _refused()
        if not await retry_notification(self.s.runtime, request.path_params["nid"]):
            return JSONResponse({"error": "no such notification"}, 404)
        return RedirectResponse(f"{_base(request)}/work", 303)

    # ---------------------------------------------------------------- Trends

    async def trends(self, request: Request) -> Response:
        return self.render(request, "trends.html", days=_int(request.query_params.get("days"), 30))

    async def trends_json(self, request: Request) -> Response:
        days = min(366, _int(request.query_params.get("days"), 30))
        return JSONResponse(_jsonable(await self.s.analytics.trends(days)))

    # ---------------------------------------------------------------- files

    async def static(self, request: Request) -> Response:
        path = (STATIC / request.path_params["path"]).resolve()
        if not path.is_relative_to(STATIC.resolve()) or not path.is_file():
            return Response("not found\n", 404, media_type="text/plain")
        return FileResponse(path)


def _date(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _int(text: str | None, default: int) -> int:
    try:
        return max(1, int(text)) if text else default
    except ValueError:
        return default


def _query_without_page(q: Any) -> str:
    from urllib.parse import urlencode

    return urlencode([(k, v) for k, v in q.multi_items() if k != "page" and v])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)
