"""Read API of drafted reports (aiohttp), mounted by the drafting stage's web server.

    GET /v1/studies/{study_key}/report[?format=json|fhir|sr]

`{study_key}` is the study's pseudonym (`st-` + 16 hex, as in every event), never the
StudyInstanceUID: a caller learns it from the gateway's ingest answer or the drafted topic.
The format comes from `?format=` or else from the `Accept` header:

- `json` / application/json: the ReportDrafted event (pseudonymous);
- `fhir` / application/fhir+json: a FHIR DiagnosticReport, re-identified here;
- `sr` / application/dicom: a DICOM Basic Text SR (Part 10), re-identified here.

Errors are RFC 7807 problem documents (application/problem+json): 404 when the study has no
report (or, for fhir/sr, no identity mapping), 406 when no offered format is acceptable.
Responses carry `Cache-Control: no-store` (FHIR and SR hold identifiers).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

from aiohttp import web

from radalign.drafting.fhir import FhirVersion, diagnostic_report_json
from radalign.drafting.identity import Reidentifier
from radalign.drafting.sr import basic_text_sr_bytes
from radalign.drafting.store import ReportStore, StoredReport
from radalign.framework.http import problem

log = logging.getLogger(__name__)

MEDIA_TYPES = {"json": "application/json", "fhir": "application/fhir+json", "sr": "application/dicom"}
_BY_MEDIA_TYPE = {v: k for k, v in MEDIA_TYPES.items()}
_STUDY_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{7,127}$")


def negotiate(accept: str | None, query_format: str | None) -> str | None:
    """The format to serve (json, fhir, sr) or None when nothing acceptable is offered."""
    if query_format is not None:
        return query_format if query_format in MEDIA_TYPES else None
    if not accept or not accept.strip():
        return "json"
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(accept.split(",")):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        q = 1.0
        for param in fields[1:]:
            if param.lower().startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        if media in _BY_MEDIA_TYPE:
            fmt = _BY_MEDIA_TYPE[media]
        elif media in ("*/*", "application/*"):
            fmt = "json"
        else:
            continue
        candidate = (q, -position, fmt)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best else None


def build_read_routes(
    store: ReportStore, reidentifier: Reidentifier, *, fhir_version: FhirVersion = "R5",
    render_timeout_s: float = 10.0,
) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    async def render(fn: Callable[[], bytes | str]) -> bytes | str:
        # highdicom/fhir.resources validation is CPU work: off the event loop, with a deadline.
        return await asyncio.wait_for(asyncio.to_thread(fn), timeout=render_timeout_s)

    @routes.get("/v1/studies/{study_key}/report")
    async def get_report(request: web.Request) -> web.StreamResponse:
        study_key = request.match_info["study_key"]
        fmt = negotiate(request.headers.get("Accept"), request.query.get("format"))
        if fmt is None:
            return problem(406, "Not Acceptable", f"formats offered: {', '.join(f'{k} ({v})' for k, v in MEDIA_TYPES.items())}")
        stored: StoredReport | None = await store.get_stored(study_key) if _STUDY_KEY.match(study_key) else None
        if stored is None:
            return problem(404, "Not Found", "no drafted report for this study key")
        report = stored.report
        headers = {"Cache-Control": "no-store", "Vary": "Accept", "ETag": f'"{report.report_id}-{int(stored.updated_at.timestamp())}"'}
        if fmt == "json":
            return web.Response(text=report.model_dump_json(), content_type="application/json", headers=headers)
        identity = await reidentifier.lookup(study_key)
        if identity is None:
            return problem(404, "Not Found", "the study's identity mapping is gone; only format=json is available")
        if fmt == "fhir":
            body = await render(lambda: diagnostic_report_json(report, identity, issued=stored.updated_at, version=fhir_version))
            return web.Response(text=str(body), content_type="application/fhir+json", headers=headers)
        data = await render(lambda: basic_text_sr_bytes(report, identity, created=stored.updated_at))
        headers["Content-Disposition"] = f'attachment; filename="{report.report_id}.dcm"'
        return web.Response(body=data, content_type="application/dicom", headers=headers)

    return routes
