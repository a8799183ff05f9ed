"""A loopback FHIR server for tests and the demo, because no FHIR server installs from the
package registries this project can reach (HAPI FHIR and the like ship as JARs or containers).

It does what the delivery stage relies on, the way a FHIR server does it, and is strict:
- `POST {base}` a transaction Bundle: the Bundle and every resource are validated with
  fhir.resources (R5 or R4B models), an invalid one is refused with 400 and an OperationOutcome;
  conditional updates (`PUT Type?identifier=system|value`: no match creates, one match updates,
  several are 412) and updates by id; urn:uuid references between entries are resolved to the
  stored resources; answers a transaction-response Bundle with each entry's location;
- `GET {base}/Type?identifier=system|value` (searchset) and `GET {base}/Type/id`; every version
  of a resource is kept: `GET {base}/Type/id/_history` (a history Bundle, newest first) and
  `GET {base}/Type/id/_history/vid` (vread), as a versioned FHIR server keeps them;
- `POST /token` the OAuth 2.0 client credentials grant, when a client id and secret are set,
  and then every FHIR request needs its bearer token.
Resources live in memory. Not a production server: it is the test double of one, kept honest by
validating everything it receives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from pydantic import ValidationError

from radalign.drafting.fhir import FhirVersion, validate


def _outcome(status: int, code: str, text: str) -> web.Response:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text[:2000]}]}
    return web.json_response(body, status=status, content_type="application/fhir+json")


class LoopbackFhirServer:
    def __init__(self, version: FhirVersion = "R5", *, client_id: str = "", client_secret: str = "") -> None:
        self.version = version
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens: set[str] = set()
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        #: Every stored version of every resource, oldest first (type -> id -> versions).
        self.history: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.transactions = 0
        self.rejected: list[str] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- store -------------------------------------------------------------------------------
    def find(self, resource_type: str, system: str, value: str) -> list[dict[str, Any]]:
        return [
            r for r in self.resources.get(resource_type, {}).values()
            if any(i.get("system") == system and i.get("value") == value for i in r.get("identifier", []))
        ]

    def all(self, resource_type: str) -> list[dict[str, Any]]:
        return list(self.resources.get(resource_type, {}).values())

    def versions(self, resource_type: str, resource_id: str) -> list[dict[str, Any]]:
        """Every stored version of one resource, oldest first (versionId 1, 2, ...)."""
        return list(self.history.get(resource_type, {}).get(resource_id, []))

    # -- HTTP ----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/token", self._token)
        app.router.add_post("/fhir", self._transaction)
        app.router.add_get("/fhir/{type}", self._search)
        app.router.add_get("/fhir/{type}/{id}", self._read)
        app.router.add_get("/fhir/{type}/{id}/_history", self._history)
        app.router.add_get("/fhir/{type}/{id}/_history/{vid}", self._vread)
        return app

    def _authorized(self, request: web.Request) -> bool:
        if not self.client_id:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token in self.tokens

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        user, _, password = base64.b64decode(encoded or b"").decode().partition(":") if scheme.lower() == "basic" else ("", "", "")
        if form.get("grant_type") != "client_credentials" or (user, password) != (self.client_id, self.client_secret):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    async def _search(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _outcome(401, "login", "bearer token required")
        resource_type = request.match_info["type"]
        system, _, value = request.query.get("identifier", "").partition("|")
        hits = self.find(resource_type, system, value) if value else self.all(resource_type)
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(hits), "entry": [{"resource": r} for r in hits]}
        return web.json_response(bundle, content_type="application/fhir+json")

    async def _read(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _outcome(401, "login", "bearer token required")
        resource = self.resources.get(request.match_info["type"], {}).get(request.match_info["id"])
        if resource is None:
            return _outcome(404, "not-found", "no such resource")
        return web.json_response(resource, content_type="application/fhir+json")

    async def _history(self, request: web.Request) -> web.Response:
        """The instance's history interaction: a `history` Bundle, newest version first."""
        if not self._authorized(request):
            return _outcome(401, "login", "bearer token required")
        rtype, rid = request.match_info["type"], request.match_info["id"]
        versions = self.versions(rtype, rid)
        if not versions:
            return _outcome(404, "not-found", "no such resource")
        entries = [
            {"fullUrl": f"{self.base_url}/{rtype}/{rid}/_history/{v['meta']['versionId']}", "resource": v,
             "request": {"method": "PUT", "url": f"{rtype}/{rid}"}, "response": {"status": "201 Created" if i == 0 else "200 OK"}}
            for i, v in enumerate(versions)
        ]
        bundle = {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries[::-1]}
        return web.json_response(bundle, content_type="application/fhir+json")

    async def _vread(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _outcome(401, "login", "bearer token required")
        rtype, rid, vid = request.match_info["type"], request.match_info["id"], request.match_info["vid"]
        found = [v for v in self.versions(rtype, rid) if v["meta"]["versionId"] == vid]
        if not found:
            return _outcome(404, "not-found", "no such resource version")
        return web.json_response(found[0], content_type="application/fhir+json")

    def _reject(self, status: int, code: str, text: str) -> web.Response:
        self.rejected.append(text[:500])
        return _outcome(status, code, text)

    async def _transaction(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _outcome(401, "login", "bearer token required")
        if not request.content_type.startswith("application/fhir+json"):
            return self._reject(415, "not-supported", f"content type {request.content_type}")
        try:
            bundle = json.loads(await request.read())
            validate(bundle, self.version)
        except (ValueError, ValidationError, KeyError) as exc:
            return self._reject(400, "structure", f"invalid Bundle: {exc}")
        if bundle.get("type") != "transaction":
            return self._reject(400, "invalid", "only transaction Bundles are accepted")
        targets: list[tuple[str, str, bool]] = []  # (type, id, created)
        resolved: dict[str, str] = {}
        for entry in bundle.get("entry", []):
            resource, req = entry.get("resource", {}), entry.get("request", {})
            rtype = resource.get("resourceType", "")
            url = unquote(req.get("url", ""))
            if req.get("method") != "PUT" or not url.startswith(rtype):
                return self._reject(400, "not-supported", f"entry {url!r}: only PUT by identifier or id")
            if url.startswith(f"{rtype}?identifier="):
                system, _, value = url.split("=", 1)[1].partition("|")
                hits = self.find(rtype, system, value)
                if len(hits) > 1:
                    return self._reject(412, "multiple-matches", f"{url} matches {len(hits)} resources")
                rid, created = (hits[0]["id"], False) if hits else (uuid.uuid4().hex, True)
            elif url.startswith(f"{rtype}/"):
                rid = url.split("/", 1)[1]
                created = rid not in self.resources.get(rtype, {})
            else:
                return self._reject(400, "invalid", f"entry url {url!r}")
            targets.append((rtype, rid, created))
            if entry.get("fullUrl"):
                resolved[entry["fullUrl"]] = f"{rtype}/{rid}"
        staged = []
        for entry, (rtype, rid, created) in zip(bundle.get("entry", []), targets, strict=True):
            resource = _resolve(json.loads(json.dumps(entry["resource"])), resolved)
            unresolved = _dangling(resource)
            if unresolved:
                return self._reject(400, "not-found", f"{rtype} references unknown {unresolved}")
            old = self.resources.get(rtype, {}).get(rid)
            version = int(old["meta"]["versionId"]) + 1 if old else 1
            resource["id"] = rid
            resource["meta"] = {**resource.get("meta", {}), "versionId": str(version), "lastUpdated": datetime.now(UTC).isoformat()}
            try:
                validate(resource, self.version)
            except ValidationError as exc:
                return self._reject(400, "structure", f"invalid {rtype}: {exc}")
            staged.append((rtype, rid, created, version, resource))
        # All or nothing, like a transaction: stored only once every entry is valid.
        response_entries = []
        for rtype, rid, created, version, resource in staged:
            self.resources.setdefault(rtype, {})[rid] = resource
            self.history.setdefault(rtype, {}).setdefault(rid, []).append(json.loads(json.dumps(resource)))
            response_entries.append(
                {"response": {"status": "201 Created" if created else "200 OK", "location": f"{rtype}/{rid}/_history/{version}"}}
            )
        self.transactions += 1
        answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": response_entries}
        return web.json_response(answer, content_type="application/fhir+json")

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; returns the FHIR base URL."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._runner = web.AppRunner(self.app())
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, host, port)
            self._loop.run_until_complete(site.start())
            bound = self._runner.addresses[0][1]
            self.base_url = f"http://{host}:{bound}/fhir"
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="loopback-fhir", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the loopback FHIR server did not start")
        return self.base_url

    @property
    def token_url(self) -> str:
        return self.base_url.rsplit("/fhir", 1)[0] + "/token"

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def _resolve(node: Any, resolved: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: (resolved.get(v, v) if k == "reference" and isinstance(v, str) else _resolve(v, resolved)) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, resolved) for v in node]
    return node


def _dangling(node: Any) -> str | None:
    """A urn:uuid reference that no entry of the transaction defined."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v.startswith("urn:uuid:"):
                return v
            if (found := _dangling(v)) is not None:
                return found
    elif isinstance(node, list):
        for v in node:
            if (found := _dangling(v)) is not None:
                return found
    return None
