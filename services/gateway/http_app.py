"""The gateway's HTTP adapter (aiohttp): STOW-RS, a plain image form, health and metrics.

- `POST /dicomweb/studies`: STOW-RS (PS3.18 10.5), body `multipart/related; type="application/dicom"`.
  Answers the store-instances response data set as `application/dicom+json`: accepted objects
  in ReferencedSOPSequence (0008,1199), refused ones in FailedSOPSequence (0008,1198) with
  FailureReason (0008,1197) from `radalign.ingest.refusal.DICOM_STATUS`. HTTP 200 when all were
  stored, 202 when some failed, 409 when none was stored. An object of a class the pipeline does
  not process (SR, KOS, presentation state: `radalign.ingest.dicom.IGNORED_SOP_CLASSES`) is
  reported stored, dropped and counted, as over C-STORE.
- `POST /v1/studies`: `multipart/form-data` with `file` (PNG or JPEG) and fields `study_id`
  (required), `patient_id` (with optional `issuer`, its namespace) or `patient_key`, `view_position`,
  `priority` (`stat`|`routine`).
  Answers 202 with the pseudonymous keys.
- Every refusal of a whole request (auth, content type, size, form fields, unknown route) is
  RFC 7807 `application/problem+json` with `reason` from the refusal table.
  One exception: a request line or header over aiohttp's parser limits (8 KiB per field) is
  answered `400` by the HTTP parser itself before any application code runs.
- The whole body is read (bounded by `gateway_max_bytes`) before any instance is ingested, so a
  request that breaks a limit leaves nothing behind: no partial study.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.helpers import parse_mimetype
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radalign.blobstore import BlobStore
from radalign.config import Settings
from radalign.framework.auth import parse_tokens
from radalign.framework.http import Probes, auth_middleware, probe_routes, problem
from radalign.framework.producer import EventPublisher
from radalign.framework.retry import Backoff
from radalign.ingest.gateway import GatewayCore, parse_priority
from radalign.ingest.outbox import Outbox
from radalign.ingest.pseudonyms import PseudonymStore
from radalign.ingest.refusal import HTTP_STATUS, RETRY_AFTER_S, Refusal, RefusalReason

log = logging.getLogger(__name__)

CORE_KEY = web.AppKey("gateway_core", GatewayCore)
_ASSEMBLER_TASK = web.AppKey("assembler_task", asyncio.Task)
DICOM_JSON = "application/dicom+json"
#: Between restarts of a crashed study assembler.
ASSEMBLER_RESTARTS = Backoff(start_s=0.5, max_s=30.0)
_FORM_FIELDS = {"study_id", "patient_id", "patient_key", "issuer", "view_position", "priority"}
_MAX_FIELD_BYTES = 1024


def refusal_response(refusal: Refusal) -> web.Response:
    response = problem(refusal.http_status, refusal.reason.value.replace("_", " "), refusal.detail, refusal.reason.value)
    if refusal.http_status == 503:  # the gateway cannot take work now: tell the client when to come back
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _source_of(request: web.Request) -> str:
    return "dicomweb-stow" if request.path.startswith("/dicomweb") else "http"


@web.middleware
async def _problem_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    core = request.app[CORE_KEY]
    try:
        return await handler(request)
    except Refusal as refusal:
        return refusal_response(core.refused(_source_of(request), refusal))
    except web.HTTPRequestEntityTooLarge:
        return refusal_response(core.refused(_source_of(request), Refusal(RefusalReason.TOO_LARGE, "request body exceeds the size limit")))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.reason, exc.text or exc.reason, f"http_{exc.status}")


def _check_length(request: web.Request, limit: int) -> None:
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(RefusalReason.TOO_LARGE, f"Content-Length {request.content_length} exceeds the {limit}-byte limit")


async def _read_part(part: BodyPartReader, budget: int) -> bytes:
    """The part's decoded body, refusing once the request's remaining byte budget is spent."""
    chunks, total = [], 0
    while chunk := await part.read_chunk(256 * 1024):
        total += len(chunk)
        if total > budget:
            raise Refusal(RefusalReason.TOO_LARGE, "request body exceeds the size limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart(request: web.Request) -> MultipartReader:
    try:
        return await request.multipart()
    except (AssertionError, ValueError, KeyError) as exc:
        raise Refusal(RefusalReason.UNSUPPORTED_MEDIA_TYPE, "the body is not a valid multipart message") from exc


async def stow_rs(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    limit = core.settings.gateway_max_bytes
    _check_length(request, limit)
    mime = parse_mimetype(request.headers.get("Content-Type", ""))
    part_type = mime.parameters.get("type", "").strip('"').lower()
    if (mime.type, mime.subtype) != ("multipart", "related") or part_type != "application/dicom":
        raise Refusal(RefusalReason.UNSUPPORTED_MEDIA_TYPE, 'STOW-RS takes multipart/related; type="application/dicom"')
    stat = parse_priority(request.headers.get("X-Priority") or request.query.get("priority"))

    reader = await _multipart(request)
    parts: list[tuple[str, bytes]] = []
    budget = limit
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise Refusal(RefusalReason.UNSUPPORTED_MEDIA_TYPE, "nested multipart bodies are not accepted")
            data = await _read_part(part, budget)
            budget -= len(data)
            parts.append((part.headers.get("Content-Type", "application/dicom").split(";")[0].strip().lower(), data))
    except (ValueError, AssertionError) as exc:
        raise Refusal(RefusalReason.UNREADABLE, "the multipart body is malformed") from exc
    if not parts:
        raise Refusal(RefusalReason.UNREADABLE, "the request holds no DICOM instance")

    response = Dataset()
    response.ReferencedSOPSequence = Sequence()
    response.FailedSOPSequence = Sequence()
    for content_type, data in parts:
        item = Dataset()
        try:
            if content_type != "application/dicom":
                raise core.refused("dicomweb-stow", Refusal(RefusalReason.UNSUPPORTED_MEDIA_TYPE, f"part of type {content_type}"))
            accepted = await core.ingest_dicom(data, "dicomweb-stow", stat=stat)
        except Refusal as refusal:
            item.FailureReason = refusal.dicom_status
            response.FailedSOPSequence.append(item)
            continue
        item.ReferencedSOPClassUID = accepted.sop_class_uid
        item.ReferencedSOPInstanceUID = accepted.sop_instance_uid
        response.ReferencedSOPSequence.append(item)
    stored, failed = len(response.ReferencedSOPSequence), len(response.FailedSOPSequence)
    status = 200 if failed == 0 else (202 if stored else 409)
    if not failed:
        del response.FailedSOPSequence
    return web.Response(status=status, text=json.dumps(response.to_json_dict()), content_type=DICOM_JSON)


async def post_study_image(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    limit = core.settings.gateway_max_bytes
    _check_length(request, limit)
    if request.content_type != "multipart/form-data":
        raise Refusal(RefusalReason.UNSUPPORTED_MEDIA_TYPE, "POST /v1/studies takes multipart/form-data")
    reader = await _multipart(request)
    fields: dict[str, str] = {}
    image: bytes | None = None
    budget = limit
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.name:
                raise Refusal(RefusalReason.INVALID_METADATA, "every form part needs a name")
            if part.name == "file":
                image = await _read_part(part, budget)
                budget -= len(image)
            elif part.name in _FORM_FIELDS:
                raw = await _read_part(part, min(budget, _MAX_FIELD_BYTES))
                budget -= len(raw)
                fields[part.name] = raw.decode("utf-8", errors="strict")
            else:
                raise Refusal(RefusalReason.INVALID_METADATA, f"unknown form field {part.name[:40]!r}")
    except UnicodeDecodeError as exc:
        raise Refusal(RefusalReason.INVALID_METADATA, "form fields must be UTF-8") from exc
    if image is None:
        raise Refusal(RefusalReason.INVALID_METADATA, "the form has no `file` part")
    accepted = await core.ingest_image(
        image,
        study_id=fields.get("study_id", ""),
        patient_id=fields.get("patient_id") or None,
        patient_key=fields.get("patient_key") or None,
        issuer=fields.get("issuer") or None,
        view_position=fields.get("view_position") or None,
        stat=parse_priority(fields.get("priority")),
    )
    body = {
        "status": "duplicate" if accepted.duplicate else "accepted",
        "study_key": accepted.study_key,
        "patient_key": accepted.patient_key,
        "instance_key": accepted.instance_key,
    }
    return web.json_response(body, status=202)


def gateway_probes(core: GatewayCore, checks: dict[str, Callable[[], Awaitable[bool]]]) -> Probes:
    """Live while the study assembler runs (the gateway must not take work it cannot publish; an
    orchestrator restarts it, and on start it publishes what the outbox holds); ready while the
    assembler runs and every dependency check answers."""
    assembler = core.assembler

    async def live() -> tuple[bool, dict[str, object]]:
        return (True, {"status": "live"}) if assembler.alive else (False, {"status": "assembler not running"})

    async def ready() -> tuple[bool, dict[str, object]]:
        failing = [name for name, check in checks.items() if not await _answers(check)]
        if not assembler.alive:
            failing.append("assembler")
        return (False, {"status": "not-ready", "failing": failing}) if failing else (True, {"status": "ready"})

    async def before_scrape() -> None:
        from radalign.ingest import metrics as gateway_metrics

        since = assembler.failing_since
        gateway_metrics.ASSEMBLER_FAILING_S.set(time.monotonic() - since if since is not None else 0.0)
        try:  # the backlog an outage leaves behind; a scrape must not hang on a database that is down
            gateway_metrics.OUTBOX_PENDING.set(await asyncio.wait_for(assembler.pending_studies(), timeout=1.0))
        except Exception:  # noqa: BLE001 - the gauge keeps its last value; readiness reports the database
            pass

    return Probes(live, ready, before_scrape)


async def _answers(check: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return bool(await asyncio.wait_for(check(), timeout=2.0))
    except Exception:  # noqa: BLE001 - readiness must answer, not raise
        return False


def _refuse_unauthorized(request: web.Request) -> web.StreamResponse:
    # a refusal like any other: counted and answered by the problem middleware
    raise Refusal(RefusalReason.UNAUTHORIZED, "a valid bearer token is required")


async def _supervise_assembler(core: GatewayCore, stop: asyncio.Event) -> None:
    """Restart the assembler loop, with backoff, should it ever end before `stop` (a bug)."""
    delay = ASSEMBLER_RESTARTS.start_s
    while True:
        try:
            await core.run_assembler(stop)
        except Exception:  # the assembler is supervised: any crash is logged and it restarts
            log.exception("study assembler crashed; restarting in %.1f s", delay)
        if stop.is_set():
            return
        await asyncio.sleep(delay)
        delay = ASSEMBLER_RESTARTS.after_failure(delay)


async def _assembler_ctx(app: web.Application) -> AsyncIterator[None]:
    stop = asyncio.Event()
    app[_ASSEMBLER_TASK] = asyncio.create_task(_supervise_assembler(app[CORE_KEY], stop), name="study-assembler")
    yield
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(app[_ASSEMBLER_TASK], timeout=30)


def build_gateway_app(
    settings: Settings,
    publisher: EventPublisher,
    blobs: BlobStore,
    pseudonyms: PseudonymStore,
    *,
    outbox: Outbox | None = None,
    ready_checks: dict[str, Callable[[], Awaitable[bool]]] | None = None,
) -> web.Application:
    """The HTTP app; its lifecycle also runs the study assembler (started on startup, flushed on cleanup).

    The `GatewayCore` is `app[CORE_KEY]` (the DICOM SCP feeds the same core).
    """
    tokens = parse_tokens(settings.gateway_tokens)
    # client_max_size bounds any body aiohttp reads on its own (json(), post()); our handlers stream parts.
    app = web.Application(
        middlewares=[_problem_middleware, auth_middleware(tokens, refused=_refuse_unauthorized)],
        client_max_size=settings.gateway_max_bytes,
    )
    app[CORE_KEY] = core = GatewayCore(settings, publisher, blobs, pseudonyms, outbox)
    app.cleanup_ctx.append(_assembler_ctx)
    app.router.add_post("/dicomweb/studies", stow_rs)
    app.router.add_post("/v1/studies", post_study_image)
    app.add_routes(probe_routes(gateway_probes(core, dict(ready_checks or {}))))
    return app


__all__ = ["CORE_KEY", "HTTP_STATUS", "build_gateway_app", "problem"]
