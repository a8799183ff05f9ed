"""HTTP adapter of the review service (aiohttp, server-rendered HTML, a little JavaScript).

Pages: `/` worklist, `/studies/{key}` study (film, heatmaps, concept bars, editor, retrieved
cases), `/agreement`; images `/studies/{key}/image.png`, `/studies/{key}/heatmaps/{i}.png`;
`POST /studies/{key}/sign`; `GET /api/worklist` (JSON). `/login` opens a session.

Auth: the read API's bearer tokens (`RADALIGN_READ_TOKENS`, in dev the ingest tokens when unset; checked by the shared
`bearer_authorized`). A browser cannot send a bearer header on navigation, so `/login` takes the
token once and keeps it in an HttpOnly, SameSite=Strict cookie with the reviewer's name and role;
every request is checked against the tokens again. Signing needs that session (the signer).
Errors are RFC 7807 problem documents for API callers, a short page for browsers.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import jinja2
from aiohttp import web

from radalign.config import Settings
from radalign.framework import metrics as stage_metrics
from radalign.framework.auth import bearer_authorized, parse_tokens
from radalign.framework.http import problem
from radalign.review.core import ReviewCore
from radalign.review.signoff import SECTION_TITLES, SignOffError
from radalign.review.worklist import format_waiting
from schemas.events import OBSERVATIONS, ReviewRole

log = logging.getLogger(__name__)

CORE_KEY = web.AppKey("review_core", ReviewCore)
SESSION_KEY: web.RequestKey[dict | None] = web.RequestKey("review_session", dict)
SESSION_COOKIE = "radalign_review"
_STUDY_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{7,127}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@'-]{0,79}$")
PUBLIC_PATHS = ("/login", "/health/live", "/health/ready", "/metrics", "/static/")

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
)
_env.filters["waiting"] = format_waiting
_env.filters["pct"] = lambda p: "–" if p is None else f"{100 * p:.0f}%"


def _render(template: str, status: int = 200, **context: object) -> web.Response:
    html = _env.get_template(template).render(**({"session": None} | context))
    return web.Response(text=html, content_type="text/html", status=status, headers={"Cache-Control": "no-store"})


def _session(request: web.Request) -> dict | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (binascii.Error, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("name"), str) else None


def _wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def _error(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    if _wants_html(request):
        return _render("error.html.j2", status=status, title=title, detail=detail)
    return problem(status, title, detail)


def build_review_app(core: ReviewCore, settings: Settings) -> web.Application:
    tokens = parse_tokens(settings.read_api_tokens)

    @web.middleware
    async def auth(request: web.Request, handler):
        if request.path.startswith(PUBLIC_PATHS):
            return await handler(request)
        session = _session(request)
        header = request.headers.get("Authorization")
        if not tokens:
            allowed = True  # auth off (dev only), as for the read API
        elif header:
            allowed = bearer_authorized(header, tokens)
        else:
            allowed = session is not None and bearer_authorized(f"Bearer {session.get('token', '')}", tokens)
        if allowed:
            request[SESSION_KEY] = session
            return await handler(request)
        if _wants_html(request) and request.method == "GET":
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs)}")
        return problem(401, "Unauthorized", "a valid bearer token (or a review session from /login) is required")

    app = web.Application(middlewares=[auth], client_max_size=1024 * 1024)
    app[CORE_KEY] = core
    routes = web.RouteTableDef()

    @routes.get("/login")
    async def login_form(request: web.Request) -> web.Response:
        return _render("login.html.j2", next=request.query.get("next", "/"), needs_token=bool(tokens), error=None,
                       roles=[r.value for r in ReviewRole])

    @routes.post("/login")
    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        name, role, token = str(form.get("name", "")).strip(), str(form.get("role", "")), str(form.get("token", "")).strip()
        identifier = str(form.get("identifier", "")).strip()
        target = str(form.get("next", "/"))
        target = target if target.startswith("/") and not target.startswith("//") else "/"
        error = None
        if not _NAME.match(name):
            error = "Enter your name (letters, digits, spaces, . _ @ ' -; up to 80 characters)."
        elif identifier and not _NAME.match(identifier):
            error = "The staff identifier may hold letters, digits, spaces, . _ @ ' - (up to 80 characters)."
        elif role not in {r.value for r in ReviewRole}:
            error = "Choose a role."
        elif not bearer_authorized(f"Bearer {token}", tokens):
            error = "That access token is not valid."
        if error:
            return _render("login.html.j2", status=401 if "token" in error else 400, next=target, needs_token=bool(tokens),
                           error=error, roles=[r.value for r in ReviewRole])
        value = base64.urlsafe_b64encode(json.dumps({"name": name, "identifier": identifier, "role": role, "token": token}).encode()).decode()
        response = web.HTTPSeeOther(target)
        response.set_cookie(SESSION_COOKIE, value, httponly=True, samesite="Strict", path="/", max_age=12 * 3600,
                            secure=request.secure)
        raise response

    @routes.post("/logout")
    async def logout(request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    @routes.get("/")
    async def worklist(request: web.Request) -> web.Response:
        items = await core.worklist()
        now = datetime.now(UTC)
        return _render("worklist.html.j2", items=items, now=now, session=request.get(SESSION_KEY))

    @routes.get("/api/worklist")
    async def worklist_json(request: web.Request) -> web.Response:
        now = datetime.now(UTC)
        body = [
            {"study_key": i.study_key, "report_id": i.report_id, "priority": i.priority.value, "needs_review": i.needs_review,
             "critical": [c.value for c in i.critical], "abnormal_probability": i.abnormal_probability,
             "received_at": i.received_at.isoformat(), "waiting_s": round(i.waiting_s(now), 1)}
            for i in await core.worklist()
        ]
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _study_key(request: web.Request) -> str:
        key = request.match_info["study_key"]
        if not _STUDY_KEY.match(key):
            raise web.HTTPNotFound()
        return key

    @routes.get("/studies/{study_key}")
    async def study(request: web.Request) -> web.Response:
        view = await core.study(_study_key(request))
        if view is None:
            return _error(request, 404, "Not Found", "no drafted report for this study key")
        return _render(
            "study.html.j2", v=view, d=view.draft, session=request.get(SESSION_KEY), section_titles=SECTION_TITLES,
            signed=request.query.get("signed"), pending=request.query.get("pending"), error=None,
        )

    @routes.get("/studies/{study_key}/image.png")
    async def image(request: web.Request) -> web.Response:
        data = await core.image(_study_key(request))
        if data is None:
            return _error(request, 404, "Not Found", "no image recorded for this study")
        return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    @routes.get("/studies/{study_key}/heatmaps/{index:\\d+}.png")
    async def heatmap(request: web.Request) -> web.Response:
        index = int(request.match_info["index"])
        if index >= len(OBSERVATIONS):
            return _error(request, 404, "Not Found", "no such observation")
        data = await core.heatmap(_study_key(request), OBSERVATIONS[index])
        if data is None:
            return _error(request, 404, "Not Found", "no image recorded for this study")
        return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    @routes.post("/studies/{study_key}/sign")
    async def sign(request: web.Request) -> web.Response:
        key = _study_key(request)
        session = request.get(SESSION_KEY)
        if not session:
            return _error(request, 401, "Unauthorized", "signing needs a review session (log in at /login)")
        origin = request.headers.get("Origin")
        if origin and origin != f"{request.scheme}://{request.host}":
            return _error(request, 403, "Forbidden", "cross-site sign-off refused")
        form = await request.post()
        opened_at = None
        try:
            opened_at = datetime.fromisoformat(str(form.get("opened_at", ""))) if form.get("opened_at") else None
        except ValueError:
            opened_at = None
        try:
            final, published = await core.sign(
                key, findings=str(form.get("findings", "")), impression=str(form.get("impression", "")),
                signer_name=session["name"], signer_role=ReviewRole(session.get("role", "radiologist")),
                report_id=str(form.get("report_id", "")), opened_at=opened_at,
                signer_identifier=str(session.get("identifier", "")), change="corrected" if form.get("change") == "corrected" else "amended",
            )
        except LookupError as exc:
            return _error(request, 404, "Not Found", str(exc))
        except SignOffError as exc:
            return _error(request, 409 if "changed" in str(exc) or "meanwhile" in str(exc) else 422, "Cannot sign", str(exc))
        if not _wants_html(request):
            return web.json_response(
                {"final_id": final.final_id, "version": final.version, "status": final.status, "replaces_version": final.replaces_version,
                 "published": published, "edit_distance": final.edit_distance},
                status=201,
            )
        raise web.HTTPSeeOther(f"/studies/{key}?signed={final.version}" + ("" if published else "&pending=1"))

    @routes.get("/agreement")
    async def agreement(request: web.Request) -> web.Response:
        overall, weeks = await core.agreement()
        return _render("agreement.html.j2", overall=overall, weeks=weeks, observations=OBSERVATIONS, session=request.get(SESSION_KEY))

    @routes.get("/static/review.css")
    async def css(request: web.Request) -> web.FileResponse:
        return web.FileResponse(Path(__file__).with_name("templates") / "review.css", headers={"Cache-Control": "max-age=3600"})

    @routes.get("/static/review.js")
    async def js(request: web.Request) -> web.FileResponse:
        return web.FileResponse(Path(__file__).with_name("templates") / "review.js", headers={"Cache-Control": "max-age=3600"})

    started = time.monotonic()

    @routes.get("/health/live")
    async def live(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "uptime_s": round(time.monotonic() - started, 1)})

    @routes.get("/health/ready")
    async def ready(request: web.Request) -> web.Response:
        try:
            await core.refresh_gauges()
        except Exception as exc:  # noqa: BLE001 - readiness must answer, not raise
            return web.json_response({"status": "not ready", "dependencies": f"database: {type(exc).__name__}"}, status=503)
        return web.json_response({"status": "ready"})

    @routes.get("/metrics")
    async def metrics_view(request: web.Request) -> web.Response:
        try:
            await core.refresh_gauges()
        except Exception:  # noqa: BLE001 - the other metrics are still worth serving
            log.warning("queue gauges not refreshed")
        return web.Response(body=stage_metrics.render(), headers={"Content-Type": stage_metrics.CONTENT_TYPE})

    app.add_routes(routes)
    return app
