"""HTTP pieces every stage's web server shares: RFC 7807 problem documents and bearer guards."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from radalign.framework.auth import bearer_authorized

PROBLEM_JSON = "application/problem+json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def require_bearer(handler: Handler, tokens: frozenset[str]) -> Handler:
    """`handler`, answering 401 (problem document) unless the request carries one of `tokens`."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if not bearer_authorized(request.headers.get("Authorization"), tokens):
            return problem(401, "Unauthorized", "a valid bearer token is required", "unauthorized")
        return await handler(request)

    return guarded


def guard_routes(routes: Iterable[web.RouteDef], tokens: frozenset[str]) -> list[web.RouteDef]:
    return [web.RouteDef(r.method, r.path, require_bearer(r.handler, tokens), r.kwargs) for r in routes]
