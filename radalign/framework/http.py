"""HTTP pieces every service's web server shares, built once: RFC 7807 problem documents, the
probes and metrics (`/health/live`, `/health/ready`, `/metrics`), and the bearer-or-session auth
middleware. The gateway, every stage run by the Faust runner, and the review app use these.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from radalign.framework import metrics
from radalign.framework.auth import bearer_authorized

PROBLEM_JSON = "application/problem+json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: A probe's verdict: healthy or not, and the JSON body that says why.
Probe = Callable[[], Awaitable[tuple[bool, dict[str, object]]]]
#: Paths every service answers without auth (Kubernetes probes and the Prometheus scrape).
OPEN_PATHS = ("/health/live", "/health/ready", "/metrics")


def problem(status: int, title: str, detail: str, reason: str | None = None) -> web.Response:
    """An `application/problem+json` answer. `reason` is a machine-readable slug (`type` becomes
    `/problems/<reason>`); without one the type is `about:blank`. Never cached: problem details
    can describe a patient's study."""
    body: dict[str, object] = {"type": f"/problems/{reason}" if reason else "about:blank", "title": title, "status": status, "detail": detail}
    if reason:
        body["reason"] = reason
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="radalign"'
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_JSON, headers=headers)


@dataclass(frozen=True)
class Probes:
    """What a service says on its open endpoints. `before_scrape` refreshes gauges that are
    computed on demand (queue depths) before /metrics renders."""

    live: Probe
    ready: Probe
    before_scrape: Callable[[], Awaitable[None]] | None = None


def probe_routes(probes: Probes) -> list[web.RouteDef]:
    """GET /health/live, /health/ready and /metrics: 200 or 503 with the probe's JSON body."""

    def _probe(probe: Probe) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            ok, body = await probe()
            return web.json_response(body, status=200 if ok else 503)

        return handler

    async def scrape(request: web.Request) -> web.StreamResponse:
        if probes.before_scrape is not None:
            await probes.before_scrape()
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE})

    return [web.get("/health/live", _probe(probes.live)), web.get("/health/ready", _probe(probes.ready)), web.get("/metrics", scrape)]


def _unauthorized(request: web.Request) -> web.StreamResponse:
    return problem(401, "Unauthorized", "a valid bearer token is required", "unauthorized")


def auth_middleware(
    tokens: frozenset[str],
    *,
    open_paths: tuple[str, ...] = OPEN_PATHS,
    has_session: Callable[[web.Request], bool] | None = None,
    anonymous: bool | None = None,
    refused: Callable[[web.Request], web.StreamResponse] = _unauthorized,
) -> Middleware:
    """The one auth check: a request passes on an open path (a prefix) or an unknown one, with a session
    (`has_session`, the review app's sealed cookie), or with one of `tokens` as a bearer token.
    Without a header it passes only when `anonymous` (default: no tokens configured, dev only);
    otherwise `refused(request)` answers (or raises)."""
    allow_anonymous = not tokens if anonymous is None else anonymous

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # an unknown route is a 404 for anyone: refusing it as unauthorized would say nothing more
        if request.match_info.http_exception is not None or request.path.startswith(open_paths):
            return await handler(request)
        if has_session is not None and has_session(request):
            return await handler(request)
        header = request.headers.get("Authorization")
        if bearer_authorized(header, tokens) if header else allow_anonymous:
            return await handler(request)
        return refused(request)

    return middleware
