"""HTTP adapter of the review service (aiohttp, server-rendered HTML, a little JavaScript).

Pages: `/` worklist, `/studies/{key}` study (film, heatmaps, concept bars, editor, retrieved
cases), `/agreement`; images `/studies/{key}/image.png`, `/studies/{key}/heatmaps/{i}.png`;
`POST /studies/{key}/sign`; `GET /api/worklist` (JSON). `/login` opens a session.

Sign-in (issue 24): OpenID Connect against the provider's IdP when `RADALIGN_REVIEW_OIDC_ISSUER` is
set (`/login` redirects there, authorization code + PKCE; `/auth/callback` validates the ID token
and takes the reviewer's name, identifier and role from its claims); without it, in dev only, a
form login (name, staff identifier, role and the read API token, checked once). Either way the
session lives in a sealed (encrypted, authenticated) HttpOnly, SameSite=Strict cookie holding no
token, with an idle and an absolute timeout (`radalign.review.session`); every state-changing
route (sign, logout) checks the session's CSRF token and the Origin. API callers may read with
the read API's bearer tokens (`RADALIGN_READ_TOKENS`). Who signed in, opened and signed each study
is recorded (`review_audit`; `GET /api/studies/{key}/audit`). Errors are RFC 7807 problem
documents for API callers, a short page for browsers.
"""

from __future__ import annotations

import html
import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from radalign.config import Settings
from radalign.framework import metrics as stage_metrics
from radalign.framework.auth import bearer_authorized, parse_tokens
from radalign.framework.http import problem
from radalign.review.core import ReviewCore
from radalign.review.oidc import LoginState, OidcClient, OidcError, identity_from_claims, role_from_claims
from radalign.review.session import SessionCodec, csrf_matches, new_csrf
from radalign.review.signers import LOCAL_IDENTIFIER_SYSTEM
from radalign.review.signoff import SECTION_TITLES, SignOffError
from radalign.review.worklist import format_waiting
from schemas.events import OBSERVATIONS, ReviewRole
from schemas.model_input import INPUT_SIZE

log = logging.getLogger(__name__)

CORE_KEY = web.AppKey("review_core", ReviewCore)
SESSION_KEY: web.RequestKey[dict | None] = web.RequestKey("review_session", dict)
SESSION_COOKIE = "radalign_review"
LOGIN_COOKIE = "radalign_review_login"
_STUDY_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{7,127}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@'-]{0,79}$")
PUBLIC_PATHS = ("/login", "/auth/callback", "/health/live", "/health/ready", "/metrics", "/static/")
#: Re-seal the session cookie (sliding idle timeout) at most this often.
REFRESH_S = 60

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
)
_env.filters["waiting"] = format_waiting
_env.filters["pct"] = lambda p: "–" if p is None else f"{100 * p:.0f}%"
_env.globals["model_input_size"] = INPUT_SIZE  # the film as the model saw it: the model-input contract


def _render(template: str, status: int = 200, **context: object) -> web.Response:
    html = _env.get_template(template).render(**({"session": None} | context))
    return web.Response(text=html, content_type="text/html", status=status, headers={"Cache-Control": "no-store"})


def session_codec(settings: Settings, purpose: str = "radalign-review-session") -> SessionCodec:
    secret = settings.review_session_secret.get_secret_value() or settings.deid_secret
    if purpose == "radalign-review-session":
        return SessionCodec(secret, idle_s=settings.review_session_idle_s, max_s=settings.review_session_max_s, purpose=purpose)
    return SessionCodec(secret, idle_s=600, max_s=600, purpose=purpose)  # a sign-in in progress


def _set_session(response: web.StreamResponse, codec: SessionCodec, session: dict[str, Any], request: web.Request, settings: Settings) -> None:
    # `iat` stays the sign-in time (the absolute timeout); `seen` becomes now (the idle timeout)
    response.set_cookie(SESSION_COOKIE, codec.seal(session), httponly=True, samesite="Strict", path="/",
                        max_age=settings.review_session_max_s, secure=request.secure)


def _wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def _error(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    if _wants_html(request):
        return _render("error.html.j2", status=status, title=title, detail=detail)
    return problem(status, title, detail)


def _signed_in_page(target: str) -> web.Response:
    """After the IdP's redirect: a same-site navigation onwards, so the Strict cookie is sent."""
    url = html.escape(target, quote=True)
    body = (f'<!doctype html><meta http-equiv="refresh" content="0;url={url}"><title>Signed in</title>'
            f'<p>Signed in. <a href="{url}">Continue</a>.</p>')
    return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/"


def build_review_app(core: ReviewCore, settings: Settings, *, oidc: OidcClient | None = None) -> web.Application:
    tokens = parse_tokens(settings.read_api_tokens)
    codec = session_codec(settings)
    login_codec = session_codec(settings, purpose="radalign-review-login")

    @web.middleware
    async def auth(request: web.Request, handler):
        session = codec.open(request.cookies.get(SESSION_COOKIE))
        request[SESSION_KEY] = session
        if request.path.startswith(PUBLIC_PATHS):
            return await handler(request)
        header = request.headers.get("Authorization")
        if session is not None:
            allowed = True
        elif header:
            allowed = bearer_authorized(header, tokens)  # API callers read with the read API's tokens
        else:
            allowed = not tokens and oidc is None  # auth off (dev only), as for the read API
        if not allowed:
            if _wants_html(request) and request.method == "GET":
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs)}")
            return problem(401, "Unauthorized", "a review session (sign in at /login) or a valid bearer token is required")
        response = await handler(request)
        if session is not None and time.time() - float(session.get("seen", 0)) > REFRESH_S and not response.prepared:
            _set_session(response, codec, session, request, settings)
        return response

    app = web.Application(middlewares=[auth], client_max_size=1024 * 1024)
    app[CORE_KEY] = core
    routes = web.RouteTableDef()

    def _login_form(status: int = 200, *, target: str = "/", error: str | None = None) -> web.Response:
        return _render("login.html.j2", status=status, next=target, needs_token=bool(tokens), error=error, roles=[r.value for r in ReviewRole])

    @routes.get("/login")
    async def login_form(request: web.Request) -> web.Response:
        target = _safe_next(request.query.get("next", "/"))
        if oidc is not None:
            try:
                url, state = await oidc.authorization_url()
            except (OidcError, OSError, ValueError) as exc:
                log.warning("the identity provider is unreachable: %s", exc)
                return _error(request, 503, "Sign-in unavailable", "the identity provider does not answer; try again shortly")
            response = web.HTTPSeeOther(url)
            sealed = login_codec.seal({"state": state.state, "nonce": state.nonce, "verifier": state.verifier, "next": target})
            # Lax: the IdP's redirect back is a cross-site navigation; the cookie only serves the callback
            response.set_cookie(LOGIN_COOKIE, sealed, httponly=True, samesite="Lax", path="/auth/callback", max_age=600, secure=request.secure)
            raise response
        if settings.env != "dev":
            return _error(request, 503, "Sign-in not configured", "set RADALIGN_REVIEW_OIDC_ISSUER: outside dev, reviewers sign in with the IdP")
        return _login_form(target=target)

    @routes.post("/login")
    async def login(request: web.Request) -> web.Response:
        """The dev form login (no IdP): the token is checked once and never kept."""
        if oidc is not None or settings.env != "dev":
            return _error(request, 404, "Not Found", "sign in with the identity provider at GET /login")
        form = await request.post()
        name, role, token = str(form.get("name", "")).strip(), str(form.get("role", "")), str(form.get("token", "")).strip()
        identifier = str(form.get("identifier", "")).strip()
        target = _safe_next(str(form.get("next", "/")))
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
            return _login_form(401 if "token" in error else 400, target=target, error=error)
        session = {"name": name, "identifier": identifier, "identifier_system": LOCAL_IDENTIFIER_SYSTEM, "family_name": "",
                   "given_name": "", "role": role, "csrf": new_csrf(), "via": "token"}
        await core.audit("login", None, session)
        response = web.HTTPSeeOther(target)
        _set_session(response, codec, session, request, settings)
        raise response

    @routes.get("/auth/callback")
    async def callback(request: web.Request) -> web.Response:
        if oidc is None:
            return _error(request, 404, "Not Found", "OpenID Connect sign-in is not configured")
        pending = login_codec.open(request.cookies.get(LOGIN_COOKIE))
        if pending is None:
            return _error(request, 400, "Sign-in expired", "the sign-in took too long or started in another browser; start again at /login")
        if request.query.get("error"):
            return _error(request, 401, "Sign-in refused", f"the identity provider answered {request.query['error']}")
        try:
            claims = await oidc.finish(code=request.query.get("code", ""), state=request.query.get("state", ""),
                                       login=LoginState(pending["state"], pending["nonce"], pending["verifier"]))
        except (OidcError, OSError, ValueError) as exc:
            log.warning("sign-in failed: %s", exc)
            return _error(request, 401, "Sign-in failed", str(exc) if isinstance(exc, OidcError) else "the identity provider did not answer")
        role = role_from_claims(claims, oidc.settings)
        who = identity_from_claims(claims, oidc.settings.issuer)
        if role is None:
            await core.audit("refused", None, {**who, "role": ""}, via="oidc", reason="no reviewer role")
            return _error(request, 403, "Forbidden", "your account has no reviewer role (attending or resident) at the identity provider")
        session = {**who, "role": role.value, "csrf": new_csrf(), "via": "oidc"}
        await core.audit("login", None, session)
        response = _signed_in_page(str(pending.get("next", "/")))
        _set_session(response, codec, session, request, settings)
        response.del_cookie(LOGIN_COOKIE, path="/auth/callback")
        return response

    def _csrf_refusal(request: web.Request, session: dict | None, form: Any) -> web.Response | None:
        origin = request.headers.get("Origin")
        if origin and origin != f"{request.scheme}://{request.host}":
            return _error(request, 403, "Forbidden", "cross-site request refused")
        if not csrf_matches(session, str(form.get("csrf", ""))):
            return _error(request, 403, "Forbidden", "the form's CSRF token is missing or stale; reload the page")
        return None

    @routes.post("/logout")
    async def logout(request: web.Request) -> web.Response:
        session = request.get(SESSION_KEY)
        if session is not None and (refused := _csrf_refusal(request, session, await request.post())) is not None:
            return refused
        await core.audit("logout", None, session)
        target = "/login"
        if oidc is not None and session is not None:
            try:
                target = await oidc.logout_url() or target
            except (OidcError, OSError, ValueError):
                target = "/login"
        response = web.HTTPSeeOther(target)
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
        key = _study_key(request)
        view = await core.study(key)
        if view is None:
            return _error(request, 404, "Not Found", "no drafted report for this study key")
        await core.audit("opened", key, request.get(SESSION_KEY))
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
        form = await request.post()
        if (refused := _csrf_refusal(request, session, form)) is not None:
            return refused
        try:  # never a default: a session without a reviewer role signs nothing
            role = ReviewRole(str(session.get("role", "")))
        except ValueError:
            await core.audit("refused", key, session, reason="no reviewer role")
            return _error(request, 403, "Forbidden", "your session has no reviewer role (attending or resident)")
        opened_at = None
        try:
            opened_at = datetime.fromisoformat(str(form.get("opened_at", ""))) if form.get("opened_at") else None
        except ValueError:
            opened_at = None
        try:
            final, published = await core.sign(
                key, findings=str(form.get("findings", "")), impression=str(form.get("impression", "")),
                signer_name=session["name"], signer_role=role,
                report_id=str(form.get("report_id", "")), opened_at=opened_at,
                signer_identifier=str(session.get("identifier", "")),
                signer_identifier_system=str(session.get("identifier_system") or LOCAL_IDENTIFIER_SYSTEM),
                family_name=str(session.get("family_name", "")), given_name=str(session.get("given_name", "")),
                change="corrected" if form.get("change") == "corrected" else "amended",
            )
        except LookupError as exc:
            return _error(request, 404, "Not Found", str(exc))
        except SignOffError as exc:
            await core.audit("refused", key, session, reason=str(exc)[:300])
            return _error(request, 409 if "changed" in str(exc) or "meanwhile" in str(exc) else 422, "Cannot sign", str(exc))
        await core.audit("signed", key, session, version=final.version, status=final.status, final_id=final.final_id)
        if not _wants_html(request):
            return web.json_response(
                {"final_id": final.final_id, "version": final.version, "status": final.status, "replaces_version": final.replaces_version,
                 "published": published, "edit_distance": final.edit_distance},
                status=201,
            )
        raise web.HTTPSeeOther(f"/studies/{key}?signed={final.version}" + ("" if published else "&pending=1"))

    @routes.get("/api/studies/{study_key}/audit")
    async def audit_trail(request: web.Request) -> web.Response:
        key = _study_key(request)
        trail = getattr(core.store, "audit_trail", None)
        rows = await trail(key) if trail is not None else []
        return web.json_response({"study_key": key, "audit": rows}, headers={"Cache-Control": "no-store"})

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
