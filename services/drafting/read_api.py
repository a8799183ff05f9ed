"""Read API of drafted reports (aiohttp), mounted by the drafting stage's web server.

    GET /v1/studies/{study_key}/report[?format=json|fhir|sr][&version=N]

The latest version of the report: once a radiologist signed, the latest signed version (a
resident's preliminary one, the attending's final, an amendment ...), never the superseded AI
draft; before that, the AI draft. `?version=N` reads an earlier signed version (every version is
kept). Every answer names what it is: `X-Report-Status` (preliminary, final, amended,
corrected; `draft` for the AI's unsigned draft) and `X-Report-Version` (the signed version
number, 0 for the draft).

`{study_key}` is the study's pseudonym (`st-` + 16 hex, as in every event), never the
StudyInstanceUID: a caller learns it from the gateway's ingest answer or the drafted topic.
The format comes from `?format=` or else from the `Accept` header:

- `json` / application/json: the ReportDrafted event, or the ReportFinal event of a signed
  version (pseudonymous; `status` and `version` in the body);
- `fhir` / application/fhir+json: a FHIR DiagnosticReport, re-identified here (the patient and,
  for a signed version, the signers as `performer` / `resultsInterpreter`);
- `sr` / application/dicom: a DICOM Basic Text SR (Part 10), re-identified here.

Errors are RFC 7807 problem documents (application/problem+json): 404 when the study has no
report (or, for fhir/sr, no identity mapping), 406 when no offered format is acceptable.
Responses carry `Cache-Control: no-store` (FHIR and SR hold identifiers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from radalign.delivery.senders import sr_kwargs
from radalign.delivery.version import ReportVersion, co_signer_keys, final_version
from radalign.framework.http import problem
from radalign.reports.fhir import FhirVersion, diagnostic_report, diagnostic_report_json
from radalign.reports.reidentification import Reidentifier
from radalign.reports.sr import basic_text_sr_bytes
from radalign.reports.store import ReportStore, StoredReport
from radalign.review.signers import Signer
from schemas.events import KEY_RE, ReportDrafted, ReportFinal


class SignedVersions(Protocol):
    """The review service's signed versions (ReviewStore.finals) and reviewer mapping (PostgresSigners.lookup)."""

    async def finals(self, study_key: str) -> list[tuple[ReportFinal, str]]: ...
    async def signer(self, reviewer_key: str) -> Signer | None: ...

log = logging.getLogger(__name__)

MEDIA_TYPES = {"json": "application/json", "fhir": "application/fhir+json", "sr": "application/dicom"}
_BY_MEDIA_TYPE = {v: k for k, v in MEDIA_TYPES.items()}


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
    render_timeout_s: float = 10.0, signed: SignedVersions | None = None,
) -> web.RouteTableDef:
    routes = web.RouteTableDef()
    handlers = _ReportReader(store, reidentifier, fhir_version=fhir_version, render_timeout_s=render_timeout_s, signed=signed)
    routes.get("/v1/studies/{study_key}/report")(handlers.get_report)
    return routes


class _Unavailable(Exception):
    """What the read API cannot serve, as the problem document to answer with."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.response = problem(status, title, detail)


class _ReportReader:
    """GET /v1/studies/{study_key}/report over a report store, the re-identifier and the signed versions."""

    def __init__(
        self, store: ReportStore, reidentifier: Reidentifier, *, fhir_version: FhirVersion, render_timeout_s: float, signed: SignedVersions | None,
    ) -> None:
        self.store, self.reidentifier, self.signed = store, reidentifier, signed
        self.fhir_version, self.render_timeout_s = fhir_version, render_timeout_s

    async def render(self, fn: Callable[[], bytes | str]) -> bytes | str:
        # highdicom/fhir.resources validation is CPU work: off the event loop, with a deadline.
        return await asyncio.wait_for(asyncio.to_thread(fn), timeout=self.render_timeout_s)

    async def get_report(self, request: web.Request) -> web.StreamResponse:
        study_key = request.match_info["study_key"]
        fmt = negotiate(request.headers.get("Accept"), request.query.get("format"))
        if fmt is None:
            return problem(406, "Not Acceptable", f"formats offered: {', '.join(f'{k} ({v})' for k, v in MEDIA_TYPES.items())}")
        if not KEY_RE.fullmatch(study_key):
            return problem(404, "Not Found", "no drafted report for this study key")
        try:
            return await self._answer(study_key, fmt, request.query.get("version"))
        except _Unavailable as exc:
            return exc.response

    async def _answer(self, study_key: str, fmt: str, wanted: str | None) -> web.StreamResponse:
        finals, final = await self._final(study_key, wanted)
        stored = await self._stored(study_key, final)
        report = stored.report
        status = final.status if final is not None else "draft"
        headers = {
            "Cache-Control": "no-store", "Vary": "Accept", "X-Report-Status": status, "X-Report-Version": str(final.version if final else 0),
            "ETag": f'"{final.final_id}"' if final is not None else f'"{report.report_id}-{int(stored.updated_at.timestamp())}"',
        }
        if fmt == "json":
            body_json = final.model_dump_json() if final is not None else report.model_dump_json()
            return web.Response(text=body_json, content_type="application/json", headers=headers)
        identity = await self.reidentifier.lookup(study_key)
        if identity is None:
            raise _Unavailable(404, "Not Found", "the study's identity mapping is gone; only format=json is available")
        item = await self._version_item(report, final, finals)
        if fmt == "fhir":
            if item.signature is None:
                body = await self.render(lambda: diagnostic_report_json(report, identity, issued=stored.updated_at, version=self.fhir_version))
            else:
                body = await self.render(lambda: diagnostic_report(
                    item.report, identity, issued=item.issued, version=self.fhir_version, status=item.status, signature=item.signature,
                ).model_dump_json(exclude_none=True))
            return web.Response(text=str(body), content_type="application/fhir+json", headers=headers)
        if item.signature is None:
            data = await self.render(lambda: basic_text_sr_bytes(report, identity, created=stored.updated_at))
        else:
            data = await self.render(lambda: basic_text_sr_bytes(item.report, identity, created=item.issued, **sr_kwargs(item)))
        name = final.final_id if final is not None else report.report_id
        headers["Content-Disposition"] = f'attachment; filename="{name}.dcm"'
        return web.Response(body=data, content_type="application/dicom", headers=headers)

    async def _final(self, study_key: str, wanted: str | None) -> tuple[list[ReportFinal], ReportFinal | None]:
        """Every signed version, and the one asked for (`?version=N`), else the latest (None: never signed)."""
        if wanted is not None and not wanted.isdigit():
            raise _Unavailable(400, "Bad Request", "version is a signed version number (1, 2, 3 ...)")
        finals = [f for f, _ in await self.signed.finals(study_key)] if self.signed is not None else []
        if wanted is not None:
            final = next((f for f in finals if f.version == int(wanted)), None)
            if final is None:
                raise _Unavailable(404, "Not Found", f"no signed version {wanted} of this study")
            return finals, final
        return finals, max(finals, key=lambda f: f.version) if finals else None

    async def _stored(self, study_key: str, final: ReportFinal | None) -> StoredReport:
        """The drafted report: the one the signed version was signed from where it is still stored."""
        stored: StoredReport | None
        if final is not None:
            stored = await self.store.get_stored(study_key, final.study.pipeline_version)
            if stored is None or stored.report.report_id != final.report_id:
                stored = await self.store.get_stored(study_key)
        else:
            stored = await self.store.get_stored(study_key)
        if stored is None:
            raise _Unavailable(404, "Not Found", "no drafted report for this study key")
        return stored

    async def _version_item(self, report: ReportDrafted, final: ReportFinal | None, finals: list[ReportFinal]) -> ReportVersion:
        if final is None:
            return ReportVersion(report)
        assert self.signed is not None
        signer = await self.signed.signer(final.signer_key)
        co_signers = [await self.signed.signer(k) for k in co_signer_keys(final, finals)]
        if signer is None or any(c is None for c in co_signers):
            # never a pseudonym as the signer of a re-identified record
            raise _Unavailable(404, "Not Found", "the signer's identity mapping is gone; only format=json is available")
        return final_version(report, final, signer, [c for c in co_signers if c is not None])
