"""Conformance documents under `docs/conformance/`, generated from the code (`radalign conformance render`).

- `openapi-<service>.json`: an OpenAPI 3.1 document per HTTP API (gateway, drafting read API,
  delivery records API, review service); the paths are read from the aiohttp apps' own routers, so a
  route added in code and not described here still appears (with a generic description) and the
  committed file goes stale;
- `asyncapi.json`: an AsyncAPI 2.6 document with a channel per concrete Kafka topic of the
  catalogue (`radalign.pipeline.ALL_TOPICS`, STAT twins included), each message's payload the
  contract's JSON Schema (`schemas/json/`);
- `dicom-conformance-statement.md`: SOP classes and transfer syntaxes of the gateway's SCP and the
  delivery stage's SCU (their own constants), AE configuration and the de-identification profile;
- `fhir-capability-statement.json`: a FHIR CapabilityStatement of the read API (server) and the
  delivery stage (client).

`radalign conformance check` (and tests/unit/conformance) fails when a committed file is stale.
It lives in `services/`, not `radalign/`: it reads the services' routers, and the runtime package
never imports `services` (tests/unit/architecture).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from radalign import __version__, generated

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_DIR = "docs/conformance"
TITLE = "RadAlign Stream"

Doc = dict[str, Any]

# --- HTTP routes, from the apps' routers --------------------------------------------------------


def http_routes() -> dict[str, list[tuple[str, str]]]:
    """(method, path) of every HTTP route of each service, read from the aiohttp routers (HEAD dropped)."""
    from radalign.config import Settings
    from radalign.pipeline import CONSUMER_STAGES
    from services.delivery.agent import DeliveryStage
    from services.drafting.read_api import build_read_routes
    from services.gateway.http_app import build_gateway_app
    from services.review.app import build_review_app

    settings = Settings()
    out: dict[str, list[tuple[str, str]]] = {}
    gateway = build_gateway_app(settings, None, None, None)  # type: ignore[arg-type]  # routes only: never started
    out["gateway"] = [(r.method, r.resource.canonical) for r in gateway.router.routes() if r.method != "HEAD" and r.resource is not None]
    out["drafting"] = [(r.method, r.path) for r in build_read_routes(None, None) if r.method != "HEAD"]  # type: ignore[arg-type, attr-defined]
    out["delivery"] = [(r.method, r.path) for r in DeliveryStage(settings).routes() if r.method != "HEAD"]
    review = build_review_app(None, settings)  # type: ignore[arg-type]
    out["review"] = [(r.method, r.resource.canonical) for r in review.router.routes() if r.method != "HEAD" and r.resource is not None]
    # every stage's worker also serves /health/live, /health/ready, /metrics (radalign.framework.http)
    for service in [name for name in out if name in CONSUMER_STAGES]:
        out[service] += [("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/metrics")]
    return {k: sorted(set(v), key=lambda mr: (mr[1], mr[0])) for k, v in out.items()}


PROBLEM = {"description": "an RFC 9457 problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
JSON_ANY = {"application/json": {"schema": {"type": "object"}}}


def _ok(description: str, media: str = "application/json") -> Doc:
    return {"description": description, "content": {media: {"schema": {"type": "string", "format": "binary"} if "json" not in media else {"type": "object"}}}}


#: What each route does, its body and answers (service, "METHOD path"). A route of a router missing here
#: is still documented, with a generic description.
ROUTES: dict[tuple[str, str], Doc] = {
    ("gateway", "POST /v1/studies"): {
        "summary": "Submit a study's image(s) as multipart/form-data (PNG/JPEG/DICOM parts, metadata part)",
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object"}}}},
        "responses": {"202": {"description": "accepted: the study key and what was received", "content": JSON_ANY}, "4XX": PROBLEM},
        "security": "ingest",
    },
    ("gateway", "POST /dicomweb/studies"): {
        "summary": "STOW-RS (PS3.18 10.5): store DICOM instances",
        "requestBody": {"required": True, "content": {"multipart/related; type=\"application/dicom\"": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": _ok("the Store Instances response (ReferencedSOPSequence / FailedSOPSequence)", "application/dicom+json"),
                      "202": _ok("some instances refused (FailedSOPSequence)", "application/dicom+json"), "4XX": PROBLEM},
        "security": "ingest",
    },
    ("drafting", "GET /v1/studies/{study_key}/report"): {
        "summary": "The study's report, re-identified: JSON, FHIR Bundle or DICOM Basic Text SR (Accept or ?format=json|fhir|sr); the latest signed version unless ?version=N",
        "parameters": [
            {"name": "format", "in": "query", "required": False, "schema": {"type": "string", "enum": ["json", "fhir", "sr"]}},
            {"name": "version", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
        ],
        "responses": {"200": {"description": "the report", "content": {"application/json": {"schema": {"type": "object"}},
                                                                         "application/fhir+json": {"schema": {"type": "object"}},
                                                                         "application/dicom": {"schema": {"type": "string", "format": "binary"}}}},
                      "404": PROBLEM, "406": PROBLEM},
        "security": "read",
    },
    ("delivery", "GET /v1/studies/{study_key}/deliveries"): {
        "summary": "Delivery records of the study: per destination and report version, the outcome and reason",
        "responses": {"200": {"description": "study_key and deliveries", "content": JSON_ANY}, "404": PROBLEM, "503": PROBLEM},
        "security": "read",
    },
    ("review", "GET /api/worklist"): {
        "summary": "The worklist as JSON (STAT and review-routed first)",
        "responses": {"200": {"description": "worklist items", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}}},
        "security": "review",
    },
    ("review", "GET /api/studies/{study_key}/audit"): {
        "summary": "The study's review audit trail",
        "responses": {"200": {"description": "audit rows", "content": JSON_ANY}, "404": PROBLEM},
        "security": "review",
    },
    ("review", "POST /studies/{study_key}/sign"): {
        "summary": "Sign the study's report (form fields from the study page; a review session and its CSRF token)",
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
        "responses": {
            "201": {"description": "signed (a JSON caller): final_id, version, status, replaces_version, published, edit_distance", "content": JSON_ANY},
            "303": {"description": "signed (a browser): back to the study page"},
            "401": PROBLEM, "403": PROBLEM, "404": PROBLEM, "409": PROBLEM, "422": PROBLEM,
        },
        "security": "session",
    },
    ("review", "GET /"): {"summary": "The worklist page", "html": True, "security": "review"},
    ("review", "GET /studies/{study_key}"): {"summary": "The study page: film, heatmaps, draft, sign-off form", "html": True, "security": "review"},
    ("review", "GET /studies/{study_key}/image.png"): {"summary": "The study's model input as PNG", "media": "image/png", "security": "review"},
    ("review", "GET /studies/{study_key}/heatmaps/{index}.png"): {"summary": "A concept attention heatmap overlay as PNG", "media": "image/png", "security": "review"},
    ("review", "GET /agreement"): {"summary": "Agreement of drafted concepts with signed labels (page)", "html": True, "security": "review"},
    ("review", "GET /login"): {"summary": "Sign in: the IdP redirect, or the dev login form", "html": True},
    ("review", "POST /login"): {"summary": "The dev form login (no IdP)", "html": True},
    ("review", "GET /auth/callback"): {"summary": "OIDC authorization code callback (PKCE, state, nonce)", "html": True},
    ("review", "POST /logout"): {"summary": "End the review session", "html": True, "security": "session"},
    ("review", "GET /static/review.css"): {"summary": "Stylesheet", "media": "text/css"},
    ("review", "GET /static/review.js"): {"summary": "Script", "media": "text/javascript"},
    ("*", "GET /health/live"): {"summary": "Liveness", "responses": {"200": {"description": "alive", "content": JSON_ANY}, "503": {"description": "not alive"}}},
    ("*", "GET /health/ready"): {
        "summary": "Readiness: every dependency answers",
        "responses": {"200": {"description": "ready", "content": JSON_ANY}, "503": {"description": "a dependency fails (named in the body)"}},
    },
    ("*", "GET /metrics"): {"summary": "Prometheus metrics", "media": "text/plain; version=0.0.4"},
}

API_TITLES = {
    "gateway": ("Gateway ingest API", "Studies in: form upload and STOW-RS. Bearer tokens: RADALIGN_GATEWAY_TOKENS. DICOM C-STORE: see the DICOM Conformance Statement."),
    "drafting": ("Drafting read API", "Drafted and signed reports, re-identified, for report readers. Bearer tokens: RADALIGN_READ_API_TOKENS."),
    "delivery": ("Delivery records API", "What reached each PACS / FHIR / RIS destination. Bearer tokens: RADALIGN_READ_API_TOKENS."),
    "review": ("Review service", "The radiologists' web app (HTML pages) and its JSON routes. A session cookie (OIDC or dev login) or a read-API bearer token."),
}
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "ingest": [{"ingestToken": []}],
    "read": [{"readToken": []}],
    "review": [{"reviewSession": []}, {"readToken": []}],
    "session": [{"reviewSession": []}],
}


def _operation(service: str, method: str, path: str) -> Doc:
    spec = ROUTES.get((service, f"{method} {path}")) or ROUTES.get(("*", f"{method} {path}")) or {"summary": f"{method} {path}"}
    op: Doc = {"operationId": f"{service}_{method.lower()}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '').replace('.', '_') or 'root'}",
               "summary": spec["summary"]}
    params = [{"name": p.split(":")[0], "in": "path", "required": True, "schema": {"type": "string"}}
              for p in _path_params(path)]
    params += spec.get("parameters", [])
    if params:
        op["parameters"] = params
    if "requestBody" in spec:
        op["requestBody"] = spec["requestBody"]
    if "responses" in spec:
        op["responses"] = spec["responses"]
    elif spec.get("html"):
        op["responses"] = {"200": {"description": "an HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}}
    else:
        op["responses"] = {"200": _ok("the resource", spec.get("media", "application/json"))}
    security = spec.get("security")
    if security:
        op["responses"].setdefault("401", PROBLEM)
        op["security"] = SECURITY[security]
    else:
        op["security"] = []
    return op


def _path_params(path: str) -> list[str]:
    import re

    return re.findall(r"\{([^}]+)\}", path)


def openapi(service: str, routes: list[tuple[str, str]]) -> Doc:
    from schemas.events import KEY_PATTERN

    title, description = API_TITLES[service]
    paths: Doc = {}
    for method, path in routes:
        op = _operation(service, method, path)
        for p in op.get("parameters", []):
            if p["name"] == "study_key":
                p["schema"] = {"type": "string", "pattern": KEY_PATTERN, "description": "the study pseudonym"}
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{TITLE}: {title}", "version": __version__, "description": description},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ingestToken": {"type": "http", "scheme": "bearer", "description": "RADALIGN_GATEWAY_TOKENS"},
                "readToken": {"type": "http", "scheme": "bearer", "description": "RADALIGN_READ_API_TOKENS"},
                "reviewSession": {"type": "apiKey", "in": "cookie", "name": _session_cookie(), "description": "signed session cookie of the review service"},
            },
            "schemas": {"Problem": {"type": "object", "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                                                        "status": {"type": "integer"}, "detail": {"type": "string"}}}},
        },
    }


def _session_cookie() -> str:
    from services.review.app import SESSION_COOKIE

    return SESSION_COOKIE


# --- AsyncAPI: every topic ----------------------------------------------------------------------


def asyncapi() -> Doc:
    from radalign.pipeline import ALL_TOPICS, GRAPH
    from schemas.events import schema_file
    from schemas.topics import TopicSpec

    producers: dict[str, list[str]] = {}
    consumers: dict[str, list[str]] = {}
    for stage in GRAPH:
        for t in stage.outputs:
            producers.setdefault(t.name, []).append(stage.name)
        producers.setdefault(stage.dead_letters.name, []).append(stage.name)
        for t in stage.inputs:
            consumers.setdefault(t.name, []).append(stage.name)

    def channel(spec: TopicSpec, name: str) -> Doc:
        contract = spec.contract.__name__
        lane = "STAT lane" if name.endswith(".stat") else "routine lane" if spec.has_stat_lane else "single lane"
        return {
            "description": f"{spec.contract.__doc__.strip().splitlines()[0] if spec.contract.__doc__ else contract} ({lane}). "
            f"Produced by: {', '.join(producers.get(spec.name, [])) or 'none'}; consumed by: {', '.join(consumers.get(spec.name, [])) or 'downstream systems'}.",
            "subscribe": {"operationId": f"receive_{name.replace('.', '_')}", "message": {"$ref": f"#/components/messages/{contract}"}},
            "bindings": {"kafka": {"topic": name, "partitions": spec.partitions, "bindingVersion": "0.4.0"}},
        }

    channels = {name: channel(spec, name) for spec in ALL_TOPICS for name in spec.names}
    messages: Doc = {}
    for spec in ALL_TOPICS:
        c = spec.contract
        messages[c.__name__] = {
            "name": c.__name__,
            "contentType": "application/json",
            "payload": {"$ref": f"../../schemas/json/{schema_file(c).name}"},
            "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
            "bindings": {"kafka": {"key": {"type": "string", "description": "the study pseudonym (study.study_key)"}, "bindingVersion": "0.4.0"}},
        }
    ce = {k: {"type": "string"} for k in ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "ce_dataschema", "content-type", "traceparent")}
    return {
        "asyncapi": "2.6.0",
        "info": {"title": f"{TITLE} event topics", "version": __version__,
                 "description": "Kafka topics of the pipeline (schemas/topics.py): key = study pseudonym, "
                 "value = UTF-8 JSON of the topic's contract (JSON Schema 2020-12 files in schemas/json/, referenced), "
                 "CloudEvents binary-mode headers plus W3C trace context. STAT twins (`.stat`) carry STAT studies."},
        "servers": {"production": {"url": "radalign-kafka-kafka-bootstrap:9093", "protocol": "kafka-secure", "description": "Strimzi TLS listener (mutual TLS)"}},
        "defaultContentType": "application/json",
        "channels": channels,
        "components": {"messages": messages, "schemas": {"CloudEventsHeaders": {"type": "object", "properties": ce}}},
    }


# --- DICOM Conformance Statement (Markdown) ----------------------------------------------------


def _uid_name(u: str) -> str:
    from pydicom.uid import UID

    return UID(u).name


def dicom_conformance_statement() -> str:
    lines = _dicom_ae_section() + _dicom_scp_section() + _dicom_scu_section() + _deid_section()
    return "\n".join(lines)


def _dicom_ae_section() -> list[str]:
    from radalign.config import Settings

    fields = Settings.model_fields
    return [
        f"# {TITLE} {__version__}: DICOM Conformance Statement",
        "",
        "Generated by `radalign conformance render` from the gateway's and the delivery stage's own constants",
        "(`services/gateway/dicom_scp.py`, `radalign/ingest/dicom.py`, `radalign/delivery/senders.py`, `radalign/ingest/deid.py`).",
        "",
        "## 1. Application Entities",
        "",
        "| AE | Role | Network services | Port | AE title |",
        "|---|---|---|---|---|",
        f"| Gateway | SCP | Storage (C-STORE), Verification (C-ECHO) | {fields['dicom_port'].default} (`RADALIGN_DICOM_PORT`) | "
        f"`{fields['dicom_ae_title'].default}` (`RADALIGN_DICOM_AE_TITLE`) |",
        "| Delivery | SCU | Storage (C-STORE of the report SR), Verification (C-ECHO, `radalign delivery check`) | the destination's | "
        "calling: the destination's `calling_ae_title` (default `RADALIGN`) |",
        "",
        "Associations accepted by the gateway: at most `RADALIGN_DICOM_MAX_ASSOCIATIONS` "
        f"(default {fields['dicom_max_associations'].default}) at once; calling AE titles limited to `RADALIGN_DICOM_ALLOWED_AES` "
        "when set (others rejected at association time). ACSE, DIMSE and network timeouts: 30 s. "
        f"A data set over `RADALIGN_GATEWAY_MAX_BYTES` (default {fields['gateway_max_bytes'].default} bytes) aborts the association.",
        "",
    ]


def _dicom_scp_section() -> list[str]:
    from pydicom import uid

    from radalign.ingest.dicom import ACCEPTED_SOP_CLASSES, IGNORED_SOP_CLASSES
    from services.gateway import dicom_scp

    lines = [
        "## 2. Gateway SCP: SOP classes",
        "",
        "| SOP class | UID | Transfer syntaxes | Handling |",
        "|---|---|---|---|",
    ]
    for sop in ACCEPTED_SOP_CLASSES:
        lines.append(f"| {_uid_name(sop)} | `{sop}` | uncompressed + compressed (2.2) | processed: a chest radiograph for drafting |")
    for sop, kind in IGNORED_SOP_CLASSES.items():
        lines.append(f"| {_uid_name(sop)} | `{sop}` | uncompressed | accepted (0x0000) and ignored ({kind}) |")
    lines.append(f"| {_uid_name(uid.UID('1.2.840.10008.1.1'))} | `1.2.840.10008.1.1` | Implicit/Explicit VR Little Endian | C-ECHO answered |")
    lines += [
        "",
        "Any other SOP class is refused during association negotiation.",
        "",
        "### 2.2 Transfer syntaxes (storage SOP classes processed)",
        "",
        "| Transfer syntax | UID | Offered |",
        "|---|---|---|",
    ]
    for ts in dicom_scp._UNCOMPRESSED:
        lines.append(f"| {_uid_name(ts)} | `{ts}` | always |")
    for ts in dicom_scp._COMPRESSED:
        lines.append(f"| {_uid_name(ts)} | `{ts}` | when its pydicom pixel decoder is installed |")
    lines += [
        "",
        "Deflated Explicit VR Little Endian is not offered (unbounded inflation).",
        "",
        "### 2.3 C-STORE response statuses",
        "",
        "| Status | Meaning |",
        "|---|---|",
        "| 0x0000 | stored (also a duplicate, and an ignored SOP class) |",
        "| 0xA700 | out of resources: too large |",
        "| 0xA900 | data set does not match SOP class: modality not CR/DX/SC/OT, no pixel data, missing UID |",
        "| 0xC000 | cannot understand: unreadable or truncated |",
        "| 0xC001 | no decoder for the transfer syntax |",
        "| 0x0122 | SOP class not supported |",
        "| 0x0110 | processing failure: the gateway did not answer in time or a dependency failed |",
        "",
    ]
    return lines


def _dicom_scu_section() -> list[str]:
    from pydicom import uid

    from radalign.reports.sr import BASIC_TEXT_SR

    return [
        "## 3. Delivery SCU",
        "",
        "| SOP class | UID | Transfer syntaxes proposed |",
        "|---|---|---|",
        f"| {_uid_name(BASIC_TEXT_SR)} | `{BASIC_TEXT_SR}` | Explicit VR Little Endian, Implicit VR Little Endian |",
        f"| {_uid_name(uid.UID('1.2.840.10008.1.1'))} | `1.2.840.10008.1.1` | pynetdicom defaults (`radalign delivery check`) |",
        "",
        "Drafts are sent as SR with CompletionFlag PARTIAL / VerificationFlag UNVERIFIED; signed versions as VERIFIED,",
        "with the verifying observer. A rejection of the association is a permanent failure (check AE titles); a lost",
        "association is retried (destination `retry`). Accepted C-STORE statuses: 0x0000, 0xB000, 0xB006, 0xB007.",
        "The same SR is sent by STOW-RS to DICOMweb destinations (`kind: stow`).",
        "",
    ]


def _deid_section() -> list[str]:
    from radalign.ingest import deid

    return [
        "## 4. De-identification",
        "",
        "Every instance is de-identified at the gateway before anything is stored or published, following the",
        "Basic Application Level Confidentiality Profile (PS3.15 E.1, code `113100` DCM), with an allow-list:",
        "only the attributes below travel on, text values only from closed sets or patterns; identifiers are",
        "replaced by HMAC-SHA256 pseudonyms (`RADALIGN_DEID_SECRET`); the original identifiers are kept only in",
        "the gateway's pseudonym store for re-identification by the read API and delivery.",
        "",
        "PatientIdentityRemoved = YES; DeidentificationMethod and DeidentificationMethodCodeSequence are set.",
        "",
        "Retained attributes:",
        "",
        ", ".join(f"`{k}`" for k in deid.RETAINED_KEYWORDS),
        "",
        "Emptied attributes:",
        "",
        ", ".join(f"`{k}`" for k in deid.EMPTIED_KEYWORDS),
        "",
    ]


# --- FHIR CapabilityStatement -----------------------------------------------------------------


def fhir_capability_statement() -> Doc:
    from radalign.reports import fhir

    version = {"R5": "5.0.0", "R4": "4.0.1"}
    return {
        "resourceType": "CapabilityStatement",
        "id": "radalign-stream",
        "url": "urn:radalign:fhir:CapabilityStatement:radalign-stream",
        "version": __version__,
        "name": "RadAlignStream",
        "title": f"{TITLE}: FHIR interactions",
        "status": "active",
        "date": "2026-01-01",
        "publisher": "RadAlign Stream",
        "kind": "instance",
        "software": {"name": TITLE, "version": __version__},
        "fhirVersion": version["R5"],
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "The drafting read API: GET /v1/studies/{study_key}/report with Accept: application/fhir+json (or "
                "?format=fhir) returns a Bundle (DiagnosticReport, Observations, Device, Provenance) of the study's report, "
                "R5 by default (R4 when configured). Bearer tokens (RADALIGN_READ_API_TOKENS). Not a generic FHIR server: "
                "no search, no resource-level read.",
                "security": {"cors": False, "description": "Bearer token"},
                "resource": [
                    {"type": "Bundle", "interaction": [{"code": "read", "documentation": "the study's report Bundle"}]},
                ],
            },
            {
                "mode": "client",
                "documentation": "The delivery stage (kind: fhir): one transaction Bundle per report version, each entry a "
                "conditional update (PUT with identifier search), to the destination's base_url; R5 or R4 per destination; "
                "OAuth 2.0 client credentials (SMART Backend Services) or a bearer token. `radalign delivery check` reads "
                "GET [base]/metadata.",
                "security": {"cors": False, "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}]},
                "resource": [
                    {"type": t, "interaction": [{"code": "update"}], "conditionalUpdate": True}
                    for t in ("DiagnosticReport", "Observation", "Device", "Provenance")
                ],
                "interaction": [{"code": "transaction"}],
            },
        ],
        "extension": [{"url": "urn:radalign:fhir:report-version-extension", "valueUri": fhir.VERSION_EXTENSION}],
    }


# --- files --------------------------------------------------------------------------------------


def _json(doc: Doc) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    routes = http_routes()
    out = {f"{DOCS_DIR}/openapi-{service}.json": _json(openapi(service, r)) for service, r in routes.items()}
    out[f"{DOCS_DIR}/asyncapi.json"] = _json(asyncapi())
    out[f"{DOCS_DIR}/dicom-conformance-statement.md"] = dicom_conformance_statement()
    out[f"{DOCS_DIR}/fhir-capability-statement.json"] = _json(fhir_capability_statement())
    return out


def stale_files(root: Path | None = None, rendered: dict[str, str] | None = None) -> list[str]:
    return generated.stale(rendered if rendered is not None else render_all(), root or REPO_ROOT)


conformance_app = generated.generated_files_app(
    "Conformance documents (OpenAPI, AsyncAPI, DICOM, FHIR) under docs/conformance.", render_all, lambda: REPO_ROOT, "radalign conformance render"
)


if __name__ == "__main__":  # pragma: no cover - `python -m services.conformance render|check`
    conformance_app()
