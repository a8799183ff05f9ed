"""A loopback FHIR server for tests and the demo, because no FHIR server installs from the
package registries this project can reach (HAPI FHIR and the like ship as JARs or containers).

It does what the delivery stage relies on, the way a FHIR server does it, and is as strict as
HAPI FHIR on a transaction, so a test fails where HAPI would refuse:
- `POST {base}` a transaction Bundle: the Bundle and every resource are validated with
  fhir.resources (R4B models for R4, the default; R5), an invalid one is refused with 400 and an
  OperationOutcome; conditional updates (`PUT Type?identifier=system|value`: no match creates,
  one match updates, several are 412), updates by id, creates (`POST Type`, with `ifNoneExist`:
  an existing match is reused, several are 412); id syntax (`[A-Za-z0-9-.]{1,64}`) and urn:uuid
  fullUrls are checked; references: a urn:uuid must be an entry's fullUrl, a literal `Type/id`
  must resolve (written by the transaction or stored: else 404), a conditional reference
  (`Type?identifier=...`) must match exactly one stored resource (none: 400, several: 412);
  answers a transaction-response Bundle with each entry's location; all or nothing;
- `GET {base}/Type?identifier=[system|]value`, `?patient=`/`?subject=`, `?_id=` (searchset; an
  unknown parameter is 400) and `GET {base}/Type/id`; `seed()` stores what the EHR already holds
  (a Patient, a ServiceRequest); every version of a resource is kept: `GET {base}/Type/id/_history`
  (a history Bundle, newest first) and `GET {base}/Type/id/_history/vid` (vread);
- `POST /token` the OAuth 2.0 client credentials grant, when a client id and secret are set,
  and then every FHIR request needs its bearer token.
Resources live in memory. Not a production server: it is the test double of one, kept honest by
validating everything it receives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import threading
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from pydantic import ValidationError

from radalign.reports.fhir import FhirVersion, validate


def _outcome(status: int, code: str, text: str) -> web.Response:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text[:2000]}]}
    return web.json_response(body, status=status, content_type="application/fhir+json")


class LoopbackFhirServer:
    def __init__(self, version: FhirVersion = "R4", *, client_id: str = "", client_secret: str = "") -> None:
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

    def seed(self, resource: dict[str, Any]) -> str:
        """Store a resource as if another client had (a Patient or ServiceRequest the EHR holds);
        returns its id."""
        validate(resource, self.version)
        rid = resource.get("id") or uuid.uuid4().hex
        stored = {**resource, "id": rid, "meta": {**resource.get("meta", {}), "versionId": "1", "lastUpdated": datetime.now(UTC).isoformat()}}
        self.resources.setdefault(resource["resourceType"], {})[rid] = stored
        self.history.setdefault(resource["resourceType"], {}).setdefault(rid, []).append(json.loads(json.dumps(stored)))
        return rid

    def search(self, resource_type: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """The search parameters this server knows: `identifier` ([system|]value), `_id`, and
        `patient` / `subject` (`Patient/id` or `id`); any other parameter is refused (ValueError),
        as a strict server refuses what it cannot search on."""
        hits = self.all(resource_type)
        for name, value in params.items():
            if name == "identifier":
                system, sep, code = value.partition("|")
                if not sep:
                    system, code = "", value
                hits = [r for r in hits if any((not sep or i.get("system") == system) and i.get("value") == code for i in r.get("identifier", []))]
            elif name == "_id":
                hits = [r for r in hits if r.get("id") == value]
            elif name in ("patient", "subject"):
                target = value if "/" in value else f"Patient/{value}"
                hits = [r for r in hits if r.get("subject", {}).get("reference") == target]
            else:
                raise ValueError(f"unknown search parameter {name!r}")
        return hits

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
        try:
            hits = self.search(resource_type, dict(request.query))
        except ValueError as exc:
            return _outcome(400, "invalid", str(exc))
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
        try:
            targets, resolved = self._targets(bundle.get("entry", []))
            staged = self._staged(bundle.get("entry", []), targets, resolved)
        except _Refused as exc:
            return self._reject(exc.status, exc.code, str(exc))
        response_entries = self._store(staged)
        self.transactions += 1
        answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": response_entries}
        return web.json_response(answer, content_type="application/fhir+json")

    def _targets(self, entries: list[dict[str, Any]]) -> tuple[list[tuple[str, str, bool, bool]], dict[str, str]]:
        """Each entry's (type, id, created, write), and the `Type/id` each fullUrl resolves to."""
        targets: list[tuple[str, str, bool, bool]] = []
        resolved: dict[str, str] = {}
        for entry in entries:
            resource, req = entry.get("resource", {}), entry.get("request", {})
            rtype = resource.get("resourceType", "")
            full_url = entry.get("fullUrl", "")
            if full_url.startswith("urn:uuid:") and not _UUID.fullmatch(full_url.removeprefix("urn:uuid:")):
                raise _Refused(400, "invalid", f"fullUrl {full_url!r} is not a valid urn:uuid")
            if "id" in resource and not _ID.fullmatch(str(resource["id"])):
                raise _Refused(400, "invalid", f"{rtype}: id {resource['id']!r} is not a valid FHIR id")
            rid, created, write = self._target(rtype, resource, req.get("method"), unquote(req.get("url", "")), req.get("ifNoneExist"))
            targets.append((rtype, rid, created, write))
            if full_url:
                resolved[full_url] = f"{rtype}/{rid}"
        return targets, resolved

    def _target(self, rtype: str, resource: dict[str, Any], method: str | None, url: str, if_none_exist: str | None) -> tuple[str, bool, bool]:
        """(id, created, write) of one entry's request."""
        if method == "POST" and url == rtype:
            if not if_none_exist:
                return uuid.uuid4().hex, True, True
            found = self._one_match(rtype, unquote(if_none_exist), f"ifNoneExist {if_none_exist!r}", f"ifNoneExist {if_none_exist!r}")
            # conditional create: the existing resource, unchanged
            return (found, False, False) if found else (uuid.uuid4().hex, True, True)
        if method == "PUT" and url.startswith(f"{rtype}?"):
            found = self._one_match(rtype, url.split("?", 1)[1], f"entry url {url!r}", url)
            return (found, False, True) if found else (uuid.uuid4().hex, True, True)
        if method == "PUT" and url.startswith(f"{rtype}/"):
            rid = url.split("/", 1)[1]
            if not _ID.fullmatch(rid):
                raise _Refused(400, "invalid", f"entry url {url!r}: not a valid FHIR id")
            if "id" in resource and resource["id"] != rid:
                raise _Refused(400, "invalid", f"entry url {url!r}: the resource's id is {resource['id']!r}")
            return rid, rid not in self.resources.get(rtype, {}), True
        raise _Refused(400, "not-supported", f"entry {method} {url!r}: only PUT (by id or condition) and POST")

    def _one_match(self, rtype: str, query: str, what: str, matched: str) -> str | None:
        """The id of the one stored resource the search matches (None: none), else refused (400 bad query, 412 several)."""
        try:
            hits = self.search(rtype, _query(query))
        except ValueError as exc:
            raise _Refused(400, "invalid", f"{what}: {exc}") from exc
        if len(hits) > 1:
            raise _Refused(412, "multiple-matches", f"{matched} matches {len(hits)} resources")
        return hits[0]["id"] if hits else None

    def _staged(
        self, entries: list[dict[str, Any]], targets: list[tuple[str, str, bool, bool]], resolved: dict[str, str],
    ) -> list[tuple[str, str, bool, int | None, dict[str, Any]]]:
        """Each entry's resource as it would be stored, references resolved and validated (version None: reused as it is)."""
        in_bundle = {f"{rtype}/{rid}" for rtype, rid, _, _ in targets}
        staged: list[tuple[str, str, bool, int | None, dict[str, Any]]] = []
        for entry, (rtype, rid, created, write) in zip(entries, targets, strict=True):
            if not write:
                staged.append((rtype, rid, created, None, self.resources[rtype][rid]))
                continue
            try:
                resource = self._resolve(json.loads(json.dumps(entry["resource"])), resolved, in_bundle)
            except _Unresolvable as exc:
                raise _Refused(exc.status, exc.code, f"{rtype}: {exc}") from exc
            old = self.resources.get(rtype, {}).get(rid)
            version = int(old["meta"]["versionId"]) + 1 if old else 1
            resource["id"] = rid
            resource["meta"] = {**resource.get("meta", {}), "versionId": str(version), "lastUpdated": datetime.now(UTC).isoformat()}
            try:
                validate(resource, self.version)
            except ValidationError as exc:
                raise _Refused(400, "structure", f"invalid {rtype}: {exc}") from exc
            staged.append((rtype, rid, created, version, resource))
        return staged

    def _store(self, staged: list[tuple[str, str, bool, int | None, dict[str, Any]]]) -> list[dict[str, Any]]:
        """All or nothing, like a transaction: called only once every entry is valid."""
        response_entries = []
        for rtype, rid, created, new_version, resource in staged:
            if new_version is not None:
                self.resources.setdefault(rtype, {})[rid] = resource
                self.history.setdefault(rtype, {}).setdefault(rid, []).append(json.loads(json.dumps(resource)))
            stored_version = new_version if new_version is not None else int(resource["meta"]["versionId"])
            response_entries.append(
                {"response": {"status": "201 Created" if created else "200 OK", "location": f"{rtype}/{rid}/_history/{stored_version}"}}
            )
        return response_entries

    def _resolve(self, node: Any, resolved: dict[str, str], in_bundle: set[str]) -> Any:
        """References resolved the way HAPI does in a transaction: a urn:uuid must be an entry's
        fullUrl; a conditional reference (`Type?identifier=...`) must match exactly one stored
        resource (none: 400, several: 412); a literal `Type/id` must be stored or written by this
        transaction. Contained (`#id`) and other servers' absolute references are left alone."""
        if isinstance(node, list):
            return [self._resolve(v, resolved, in_bundle) for v in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out[key] = self._resolve_reference(value, resolved, in_bundle)
            else:
                out[key] = self._resolve(value, resolved, in_bundle)
        return out

    def _resolve_reference(self, ref: str, resolved: dict[str, str], in_bundle: set[str]) -> str:
        if ref in resolved:
            return resolved[ref]
        if ref.startswith("urn:"):
            raise _Unresolvable(400, "not-found", f"reference {ref!r} names no entry of the transaction")
        if ref.startswith("#"):
            return ref
        local = ref
        if ref.startswith(("http://", "https://")):
            if not (self.base_url and ref.startswith(self.base_url + "/")):
                return ref  # another server's resource
            local = ref[len(self.base_url) + 1:]
        rtype, sep, rest = local.partition("?")
        if sep:
            try:
                hits = self.search(rtype, _query(rest))
            except ValueError as exc:
                raise _Unresolvable(400, "invalid", f"conditional reference {ref!r}: {exc}") from None
            if len(hits) != 1:
                status = 412 if hits else 400
                raise _Unresolvable(status, "multiple-matches" if hits else "not-found", f"conditional reference {ref!r} matches {len(hits)} resources")
            return f"{rtype}/{hits[0]['id']}"
        parts = local.split("/")
        if len(parts) not in (2, 4) or not _ID.fullmatch(parts[1]) or (len(parts) == 4 and parts[2] != "_history"):
            raise _Unresolvable(400, "invalid", f"reference {ref!r} is not Type/id")
        if f"{parts[0]}/{parts[1]}" not in in_bundle and parts[1] not in self.resources.get(parts[0], {}):
            raise _Unresolvable(404, "not-found", f"reference {ref!r} does not resolve")
        return local

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


class _Refused(Exception):
    """A transaction refused: the HTTP status and OperationOutcome code to answer with."""

    def __init__(self, status: int, code: str, text: str) -> None:
        super().__init__(text)
        self.status, self.code = status, code


class _Unresolvable(_Refused):
    """A reference in an entry that the server cannot resolve."""


#: FHIR id and urn:uuid syntax.
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _query(query: str) -> dict[str, str]:
    params = {}
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"malformed search {query!r}")
        params[unquote(name)] = unquote(value)
    return params
