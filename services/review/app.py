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
from radalign.framework.auth import bearer_authorized, parse_tokens
from radalign.framework.http import OPEN_PATHS, Probes, auth_middleware, probe_routes, problem
from radalign.review.core import ReviewCore
from radalign.review.oidc import LoginState, OidcClient, OidcError, identity_from_claims, role_from_claims
from radalign.review.session import SessionCodec, csrf_matches, new_csrf
from radalign.review.signers import LOCAL_IDENTIFIER_SYSTEM
from radalign.review.signoff import SECTION_TITLES, SignOffError
from radalign.review.worklist import format_waiting
from schemas.events import KEY_RE, OBSERVATIONS, ReviewRole
from schemas.model_input import INPUT_SIZE

log = logging.getLogger(__name__)

SESSION_KEY: web.RequestKey[dict | None] = web.RequestKey("review_session", dict)
SESSION_COOKIE = "radalign_review"
LOGIN_COOKIE = "radalign_review_login"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@'-]{0,79}$")
PUBLIC_PATHS = ("/login", "/auth/callback", "/static/", *OPEN_PATHS)
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


def review_middlewares(settings: Settings, *, oidc: OidcClient | None = None) -> list[Any]:
    """The session cookie, then the shared auth check (`radalign.framework.http.auth_middleware`):
    a review session, or the read API's bearer tokens for API callers; a browser without either is
    sent to /login. Anonymous access only in dev with no tokens and no IdP, as for the read API."""
    tokens = parse_tokens(settings.read_api_tokens)
    codec = session_codec(settings)

    @web.middleware
    async def session(request: web.Request, handler: Any) -> web.StreamResponse:
        current = codec.open(request.cookies.get(SESSION_COOKIE))
        request[SESSION_KEY] = current
        response = await handler(request)
        # a sliding idle timeout: re-seal the cookie now and then, never on a streamed answer
        # (not on sign-in and the open paths: the callback sets a new session of its own)
        if (current is not None and not request.path.startswith(PUBLIC_PATHS)
                and time.time() - float(current.get("seen", 0)) > REFRESH_S and not response.prepared):
            _set_session(response, codec, current, request, settings)
        return response

    def refused(request: web.Request) -> web.StreamResponse:
        if _wants_html(request) and request.method == "GET":
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs)}")
        return problem(401, "Unauthorized", "a review session (sign in at /login) or a valid bearer token is required")

    auth = auth_middleware(tokens, open_paths=PUBLIC_PATHS, has_session=lambda request: request.get(SESSION_KEY) is not None,
                           anonymous=not tokens and oidc is None, refused=refused)
    return [session, auth]


def build_review_app(core: ReviewCore, settings: Settings, *, oidc: OidcClient | None = None) -> web.Application:
    """The review app on its own (tests, the conformance documents): its routes and middlewares,
    and the probes every service serves. The worker serves the same through the stage runner."""
    app = web.Application(middlewares=review_middlewares(settings, oidc=oidc), client_max_size=1024 * 1024)
    app.add_routes(review_routes(core, settings, oidc=oidc))
    app.add_routes(probe_routes(review_probes(core)))
    return app


def review_probes(core: ReviewCore) -> Probes:
    """Live while the process answers; ready while the database does (the queue gauges read it)."""
    started = time.monotonic()

    async def live() -> tuple[bool, dict[str, object]]:
        return True, {"status": "ok", "uptime_s": round(time.monotonic() - started, 1)}

    async def ready() -> tuple[bool, dict[str, object]]:
        try:
            await core.refresh_gauges()
        except Exception as exc:  # noqa: BLE001 - readiness must answer, not raise
            return False, {"status": "not ready", "dependencies": f"database: {type(exc).__name__}"}
        return True, {"status": "ready"}

    return Probes(live, ready, before_scrape=lambda: refresh_gauges_quietly(core))


async def refresh_gauges_quietly(core: ReviewCore) -> None:
    """Before a scrape: the queue gauges, if the database answers (the other metrics are still worth serving)."""
    try:
        await core.refresh_gauges()
    except Exception:  # noqa: BLE001 - a scrape must not fail on the database
        log.warning("queue gauges not refreshed")


def review_routes(core: ReviewCore, settings: Settings, *, oidc: OidcClient | None = None) -> list[web.RouteDef]:
    """The pages, images, sign-in and API routes (the auth check sits in `review_middlewares`)."""
    return _ReviewHandlers(core, settings, oidc).routes()


def _study_key(request: web.Request) -> str:
    key = request.match_info["study_key"]
    if not KEY_RE.fullmatch(key):
        raise web.HTTPNotFound()
    return key


def _dev_login_error(name: str, identifier: str, role: str, token: str, tokens: Any) -> str | None:
    """Why the dev form login is refused, or None."""
    if not _NAME.match(name):
        return "Enter your name (letters, digits, spaces, . _ @ ' -; up to 80 characters)."
    if identifier and not _NAME.match(identifier):
        return "The staff identifier may hold letters, digits, spaces, . _ @ ' - (up to 80 characters)."
    if role not in {r.value for r in ReviewRole}:
        return "Choose a role."
    if not bearer_authorized(f"Bearer {token}", tokens):
        return "That access token is not valid."
    return None


def _opened_at(form: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(form.get("opened_at", ""))) if form.get("opened_at") else None
    except ValueError:
        return None


def _signed_json(final: Any, published: bool) -> web.Response:
    return web.json_response(
        {"final_id": final.final_id, "version": final.version, "status": final.status, "replaces_version": final.replaces_version,
         "published": published, "edit_distance": final.edit_distance},
        status=201,
    )


class _ReviewHandlers:
    """The review app's middleware and route handlers, over one core, settings and (optional) IdP client."""

    def __init__(self, core: ReviewCore, settings: Settings, oidc: OidcClient | None) -> None:
        self.core, self.settings, self.oidc = core, settings, oidc
        self.tokens = parse_tokens(settings.read_api_tokens)
        self.codec = session_codec(settings)
        self.login_codec = session_codec(settings, purpose="radalign-review-login")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/login", self.login_form), web.post("/login", self.login), web.get("/auth/callback", self.callback),
            web.post("/logout", self.logout), web.get("/", self.worklist), web.get("/api/worklist", self.worklist_json),
            web.get("/studies/{study_key}", self.study), web.get("/studies/{study_key}/image.png", self.image),
            web.get("/studies/{study_key}/heatmaps/{index:\\d+}.png", self.heatmap), web.post("/studies/{study_key}/sign", self.sign),
            web.get("/api/studies/{study_key}/audit", self.audit_trail), web.get("/agreement", self.agreement),
            web.get("/static/review.css", self.css), web.get("/static/review.js", self.js),
        ]

    def _login_form(self, status: int = 200, *, target: str = "/", error: str | None = None) -> web.Response:
        return _render("login.html.j2", status=status, next=target, needs_token=bool(self.tokens), error=error, roles=[r.value for r in ReviewRole])

    async def login_form(self, request: web.Request) -> web.Response:
        target = _safe_next(request.query.get("next", "/"))
        if self.oidc is not None:
            try:
                url, state = await self.oidc.authorization_url()
            except (OidcError, OSError, ValueError) as exc:
                log.warning("the identity provider is unreachable: %s", exc)
                return _error(request, 503, "Sign-in unavailable", "the identity provider does not answer; try again shortly")
            response = web.HTTPSeeOther(url)
            sealed = self.login_codec.seal({"state": state.state, "nonce": state.nonce, "verifier": state.verifier, "next": target})
            # Lax: the IdP's redirect back is a cross-site navigation; the cookie only serves the callback
            response.set_cookie(LOGIN_COOKIE, sealed, httponly=True, samesite="Lax", path="/auth/callback", max_age=600, secure=request.secure)
            raise response
        if self.settings.env != "dev":
            return _error(request, 503, "Sign-in not configured", "set RADALIGN_REVIEW_OIDC_ISSUER: outside dev, reviewers sign in with the IdP")
        return self._login_form(target=target)

    async def login(self, request: web.Request) -> web.Response:
        """The dev form login (no IdP): the token is checked once and never kept."""
        if self.oidc is not None or self.settings.env != "dev":
            return _error(request, 404, "Not Found", "sign in with the identity provider at GET /login")
        form = await request.post()
        name, role, token = str(form.get("name", "")).strip(), str(form.get("role", "")), str(form.get("token", "")).strip()
        identifier = str(form.get("identifier", "")).strip()
        target = _safe_next(str(form.get("next", "/")))
        error = _dev_login_error(name, identifier, role, token, self.tokens)
        if error:
            return self._login_form(401 if "token" in error else 400, target=target, error=error)
        session = {"name": name, "identifier": identifier, "identifier_system": LOCAL_IDENTIFIER_SYSTEM, "family_name": "",
                   "given_name": "", "role": role, "csrf": new_csrf(), "via": "token"}
        await self.core.audit("login", None, session)
        response = web.HTTPSeeOther(target)
        _set_session(response, self.codec, session, request, self.settings)
        raise response

    async def callback(self, request: web.Request) -> web.Response:
        oidc = self.oidc
        if oidc is None:
            return _error(request, 404, "Not Found", "OpenID Connect sign-in is not configured")
        pending = self.login_codec.open(request.cookies.get(LOGIN_COOKIE))
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
            await self.core.audit("refused", None, {**who, "role": ""}, via="oidc", reason="no reviewer role")
            return _error(request, 403, "Forbidden", "your account has no reviewer role (attending or resident) at the identity provider")
        session = {**who, "role": role.value, "csrf": new_csrf(), "via": "oidc"}
        await self.core.audit("login", None, session)
        response = _signed_in_page(str(pending.get("next", "/")))
        _set_session(response, self.codec, session, request, self.settings)
        response.del_cookie(LOGIN_COOKIE, path="/auth/callback")
        return response

    @staticmethod
    def _csrf_refusal(request: web.Request, session: dict | None, form: Any) -> web.Response | None:
        origin = request.headers.get("Origin")
        if origin and origin != f"{request.scheme}://{request.host}":
            return _error(request, 403, "Forbidden", "cross-site request refused")
        if not csrf_matches(session, str(form.get("csrf", ""))):
            return _error(request, 403, "Forbidden", "the form's CSRF token is missing or stale; reload the page")
        return None

    async def logout(self, request: web.Request) -> web.Response:
        session = request.get(SESSION_KEY)
        if session is not None and (refused := self._csrf_refusal(request, session, await request.post())) is not None:
            return refused
        await self.core.audit("logout", None, session)
        target = "/login"
        if self.oidc is not None and session is not None:
            try:
                target = await self.oidc.logout_url() or target
            except (OidcError, OSError, ValueError):
                target = "/login"
        response = web.HTTPSeeOther(target)
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    async def worklist(self, request: web.Request) -> web.Response:
        items = await self.core.worklist()
        now = datetime.now(UTC)
        return _render("worklist.html.j2", items=items, now=now, session=request.get(SESSION_KEY))

    async def worklist_json(self, request: web.Request) -> web.Response:
        now = datetime.now(UTC)
        body = [
            {"study_key": i.study_key, "report_id": i.report_id, "priority": i.priority.value, "needs_review": i.needs_review,
             "critical": [c.value for c in i.critical], "abnormal_probability": i.abnormal_probability,
             "received_at": i.received_at.isoformat(), "waiting_s": round(i.waiting_s(now), 1)}
            for i in await self.core.worklist()
        ]
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def study(self, request: web.Request) -> web.Response:
        key = _study_key(request)
        view = await self.core.study(key)
        if view is None:
            return _error(request, 404, "Not Found", "no drafted report for this study key")
        await self.core.audit("opened", key, request.get(SESSION_KEY))
        return _render(
            "study.html.j2", v=view, d=view.draft, session=request.get(SESSION_KEY), section_titles=SECTION_TITLES,
            signed=request.query.get("signed"), pending=request.query.get("pending"), error=None,
        )

    async def image(self, request: web.Request) -> web.Response:
        data = await self.core.image(_study_key(request))
        if data is None:
            return _error(request, 404, "Not Found", "no image recorded for this study")
        return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    async def heatmap(self, request: web.Request) -> web.Response:
        index = int(request.match_info["index"])
        if index >= len(OBSERVATIONS):
            return _error(request, 404, "Not Found", "no such observation")
        data = await self.core.heatmap(_study_key(request), OBSERVATIONS[index])
        if data is None:
            return _error(request, 404, "Not Found", "no image recorded for this study")
        return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    async def sign(self, request: web.Request) -> web.Response:
        key = _study_key(request)
        session = request.get(SESSION_KEY)
        if not session:
            return _error(request, 401, "Unauthorized", "signing needs a review session (log in at /login)")
        form = await request.post()
        if (refused := self._csrf_refusal(request, session, form)) is not None:
            return refused
        try:  # never a default: a session without a reviewer role signs nothing
            role = ReviewRole(str(session.get("role", "")))
        except ValueError:
            await self.core.audit("refused", key, session, reason="no reviewer role")
            return _error(request, 403, "Forbidden", "your session has no reviewer role (attending or resident)")
        try:
            final, published = await self.core.sign(
                key, findings=str(form.get("findings", "")), impression=str(form.get("impression", "")),
                signer_name=session["name"], signer_role=role,
                report_id=str(form.get("report_id", "")), opened_at=_opened_at(form),
                signer_identifier=str(session.get("identifier", "")),
                signer_identifier_system=str(session.get("identifier_system") or LOCAL_IDENTIFIER_SYSTEM),
                family_name=str(session.get("family_name", "")), given_name=str(session.get("given_name", "")),
                change="corrected" if form.get("change") == "corrected" else "amended",
            )
        except LookupError as exc:
            return _error(request, 404, "Not Found", str(exc))
        except SignOffError as exc:
            await self.core.audit("refused", key, session, reason=str(exc)[:300])
            return _error(request, 409 if "changed" in str(exc) or "meanwhile" in str(exc) else 422, "Cannot sign", str(exc))
        await self.core.audit("signed", key, session, version=final.version, status=final.status, final_id=final.final_id)
        if not _wants_html(request):
            return _signed_json(final, published)
        raise web.HTTPSeeOther(f"/studies/{key}?signed={final.version}" + ("" if published else "&pending=1"))

    async def audit_trail(self, request: web.Request) -> web.Response:
        key = _study_key(request)
        trail = getattr(self.core.store, "audit_trail", None)
        rows = await trail(key) if trail is not None else []
        return web.json_response({"study_key": key, "audit": rows}, headers={"Cache-Control": "no-store"})

    async def agreement(self, request: web.Request) -> web.Response:
        overall, weeks = await self.core.agreement()
        return _render("agreement.html.j2", overall=overall, weeks=weeks, observations=OBSERVATIONS, session=request.get(SESSION_KEY))

    async def css(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(Path(__file__).with_name("templates") / "review.css", headers={"Cache-Control": "max-age=3600"})

    async def js(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(Path(__file__).with_name("templates") / "review.js", headers={"Cache-Control": "max-age=3600"})

