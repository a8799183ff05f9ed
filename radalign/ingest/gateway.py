"""Intake logic of the gateway stage: refuse, de-identify, store, assemble, publish. No sockets
here: the adapters in `services/gateway/` (C-STORE SCP, STOW-RS and HTTP server) call it.

Every source (C-STORE, STOW-RS, HTTP form) ends in `GatewayCore.ingest_dicom` or
`GatewayCore.ingest_image`; both either return an `Accepted` or raise a `Refusal` (see
`radalign.ingest.refusal` for the reasons and their HTTP/DICOM statuses). `ingest_dicom` returns
`Ignored` for a readable object of a class the pipeline does not process but a PACS routes with a
study (SR, Key Object Selection, presentation states: `radalign.ingest.dicom.IGNORED_SOP_CLASSES`):
answered success, stored nowhere, counted. Order of work per instance, so that no partial study
is ever published:
  1. size limit, parse, ignored classes, refusal rules (nothing stored yet);
  2. de-identify; write the cleaned object to the blob store (content-addressed, idempotent);
  3. upsert pseudonym -> identifiers in PostgreSQL (idempotent);
  4. add the instance to the outbox (PostgreSQL in production), durably: only then is the
     sender answered success; the study assembler publishes the study from there once it is
     quiet, after a restart too. When the assembler cannot run, new work is refused (HTTP 503
     with Retry-After, DICOM 0xA700) rather than accepted into a gateway that cannot publish it.
CPU-bound steps (parsing, encoding, hashing) run in worker threads to keep the loop responsive.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Literal

from radalign.blobstore import BlobStore
from radalign.config import Settings
from radalign.framework.producer import EventPublisher
from radalign.ingest import metrics
from radalign.ingest.assembly import ReceivedInstance, Source, StudyAssembler
from radalign.ingest.deid import OriginalIdentifiers, deidentify, encode_dicom
from radalign.ingest.dicom import ADULT_AGE_YEARS, check_dicom, ignored_kind, read_dicom, sop_class_of
from radalign.ingest.images import open_raster, set_pixel_limit, sniff_raster, strip_raster_metadata
from radalign.ingest.outbox import Outbox
from radalign.ingest.pseudonyms import PseudonymRecord, PseudonymStore
from radalign.ingest.refusal import Refusal, RefusalReason
from radalign.pseudonymizer import IssuerPolicy, Pseudonymizer
from schemas.events import KEY_RE, Instance, Priority, StudyReceived
from schemas.topics import STUDY_RECEIVED

log = logging.getLogger(__name__)

_VIEW_VALUES = {"PA", "AP", "LL", "RL", "LATERAL", "LAT"}


@dataclass(frozen=True)
class Accepted:
    study_key: str
    patient_key: str
    instance_key: str
    duplicate: bool
    #: The sender's own SOP class / instance UIDs, only for the STOW-RS response to that sender.
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None


@dataclass(frozen=True)
class Ignored:
    """An object accepted with success and dropped: a SOP class the pipeline does not process."""

    #: One of `radalign.ingest.dicom.IGNORED_KINDS` (a metric label).
    kind: str
    #: The sender's own SOP class / instance UIDs, only for the STOW-RS response to that sender.
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None


def _modality(value: str) -> Literal["CR", "DX", "OT"]:
    return value if value in ("CR", "DX") else "OT"  # type: ignore[return-value]  # narrowed by the membership test; mypy cannot see it


class GatewayCore:
    def __init__(
        self,
        settings: Settings,
        publisher: EventPublisher,
        blobs: BlobStore,
        pseudonyms: PseudonymStore,
        outbox: Outbox | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.blobs = blobs
        self.pseudonyms = pseudonyms
        self.pseudonymizer = Pseudonymizer(settings.deid_secret, settings.patient_issuer)
        self.issuers = IssuerPolicy.from_settings(settings)
        set_pixel_limit(settings.max_image_pixels)  # Pillow's own bomb guard, for every code path
        self.assembler = StudyAssembler(
            settings.study_quiet_s,
            self._publish_study,
            pipeline_version=settings.pipeline_version,
            outbox=outbox,
            retention_s=settings.outbox_retention_days * 86400.0,
        )

    async def _publish_study(self, event: StudyReceived) -> None:
        await self.publisher.publish(STUDY_RECEIVED, event)
        if not getattr(self.assembler.outbox, "durable", False):
            # The PostgreSQL outbox records the version in the same transaction as the outbox rows.
            await self.pseudonyms.mark_published(event.study.study_key, event.study_version)
        metrics.STUDIES_PUBLISHED.labels(
            event.source, event.study.priority.value, "new" if event.study_version == 1 else "reopened"
        ).inc()
        log.info(
            "published study %s v%d (%d instances, %s)",
            event.study.study_key, event.study_version, len(event.instances), event.study.priority.value,
        )

    def refused(self, source: str, refusal: Refusal) -> Refusal:
        """Count a refusal (also those decided by an adapter: auth, content type) and return it."""
        metrics.INSTANCES_REFUSED.labels(source, refusal.reason.value).inc()
        log.info("refused input from %s: %s", source, refusal.reason.value)
        return refusal

    def _check_size(self, size: int) -> None:
        if size > self.settings.gateway_max_bytes:
            raise Refusal(RefusalReason.TOO_LARGE, f"object of {size} bytes exceeds the {self.settings.gateway_max_bytes}-byte limit")

    def check_accepting(self) -> None:
        """Refuse new work while the assembler that would publish it is not running."""
        if self.assembler.started and not self.assembler.alive:
            raise Refusal(RefusalReason.UNAVAILABLE, "the gateway cannot publish studies right now; retry later")

    async def _accept(self, record: PseudonymRecord, item: ReceivedInstance) -> bool:
        self.check_accepting()
        try:
            await self.pseudonyms.save(record)
            return await self.assembler.add(item)
        except Refusal:
            raise
        except Exception as exc:
            log.error("pseudonym store / outbox unavailable (%s)", type(exc).__name__)
            raise Refusal(RefusalReason.UNAVAILABLE, "the gateway's database is unavailable; retry later") from exc

    async def ingest_dicom(
        self, data: bytes, source: Source, *, stat: bool = False, calling_ae: str | None = None
    ) -> Accepted | Ignored:
        """Accept one DICOM Part 10 object, ignore one of a class the pipeline does not process
        (`Ignored`), or raise `Refusal` (each counted in the metrics).
        `calling_ae` (C-STORE) selects a per-sender patient issuer and site (`radalign.pseudonymizer`)."""
        try:
            self.check_accepting()
            self._check_size(len(data))
            prepared = await asyncio.to_thread(self._prepare_dicom, data, source, calling_ae)
            if isinstance(prepared, Ignored):
                metrics.INSTANCES_IGNORED.labels(source, prepared.kind).inc()
                log.info("ignored a %s instance from %s (answered success, not processed)", prepared.kind, source)
                return prepared
            facts, clean_bytes, original, patient_key = prepared
            study_key = self.pseudonymizer.study_key(facts.study_uid)
            instance_key = self.pseudonymizer.instance_key(facts.sop_instance_uid)
            blob = await asyncio.to_thread(self.blobs.put, clean_bytes, "application/dicom")
            instance = Instance(
                instance_key=instance_key, source_format="dicom", view_position=facts.view_position,
                blob=blob, rows=facts.rows, columns=facts.columns, not_chest_radiograph=facts.not_chest_radiograph,
                child=facts.age_years is not None and facts.age_years < ADULT_AGE_YEARS,
            )
            site = self.issuers.site(source, calling_ae=calling_ae)
            item = ReceivedInstance(study_key, patient_key, instance, _modality(facts.modality), source, stat or facts.stat, site)
            record = PseudonymRecord(study_key, patient_key, instance_key, source, original)
            added = await self._accept(record, item)
        except Refusal as refusal:
            raise self.refused(source, refusal) from None
        (metrics.INSTANCES_ACCEPTED if added else metrics.INSTANCES_DUPLICATE).labels(source).inc()
        return Accepted(study_key, patient_key, instance_key, not added, facts.sop_class_uid, facts.sop_instance_uid)

    def _prepare_dicom(self, data: bytes, source: Source, calling_ae: str | None):
        ds = read_dicom(data)  # an ignored object must be readable DICOM too
        if (kind := ignored_kind(ds)) is not None:
            instance_uid = str(ds.get("SOPInstanceUID", "") or "").strip()
            if not instance_uid:
                raise Refusal(RefusalReason.MISSING_IDENTIFIER, "SOPInstanceUID is missing")
            return Ignored(kind, sop_class_of(ds), instance_uid)
        facts = check_dicom(ds, max_pixels=self.settings.max_image_pixels)
        issuer = self.issuers.issuer(source, declared=str(ds.get("IssuerOfPatientID", "") or ""), calling_ae=calling_ae)
        clean, original = deidentify(ds, self.pseudonymizer, issuer, refuse_burned_in=self.settings.deid_refuse_burned_in)
        patient_key = str(clean.PatientID)
        return facts, encode_dicom(clean), original, patient_key

    async def ingest_image(
        self,
        data: bytes,
        *,
        study_id: str,
        patient_id: str | None = None,
        patient_key: str | None = None,
        view_position: str | None = None,
        stat: bool = False,
        issuer: str | None = None,
    ) -> Accepted:
        """Accept one PNG/JPEG with its form metadata, or raise `Refusal`.

        `study_id` and `patient_id` are the sender's identifiers (pseudonymised here and kept in
        PostgreSQL); a sender that already pseudonymises passes `patient_key` instead. `issuer`
        names the namespace of `patient_id` like DICOM's IssuerOfPatientID (`radalign.pseudonymizer`).
        """
        source: Source = "http"
        try:
            self.check_accepting()
            self._check_size(len(data))
            study_id, patient_key, view = _checked_form(study_id, patient_id, patient_key, view_position, issuer)
            fmt = sniff_raster(data)
            if fmt is None:
                raise Refusal(RefusalReason.UNSUPPORTED_MEDIA_TYPE, "the file is not a PNG or JPEG image")
            image = open_raster(data, decode=False, max_pixels=self.settings.max_image_pixels)  # header only: pixels are decoded once, in preprocess
            try:
                clean = strip_raster_metadata(data)  # walks the whole container: refuses truncated files
            except ValueError as exc:
                raise Refusal(RefusalReason.UNREADABLE, f"image container is malformed ({exc})") from None
            study_key = self.pseudonymizer.study_key(f"http|{study_id}")
            namespace = self.issuers.issuer(source, declared=issuer)
            patient = patient_key or self._http_patient_key(study_id, patient_id, namespace)
            digest = hashlib.sha256(clean).hexdigest()
            instance_key = self.pseudonymizer.instance_key(f"http|{study_id}|{digest}")
            blob = await asyncio.to_thread(self.blobs.put, clean, f"image/{fmt}")
            instance = Instance(
                instance_key=instance_key, source_format=fmt, view_position=view, blob=blob,
                rows=image.height, columns=image.width,
            )
            original = OriginalIdentifiers(
                study_uid=study_id, patient_id=patient_id or "", patient_name="", accession_number="",
                routing={"source": "http", **({"IssuerOfPatientID": issuer.strip()} if issuer and issuer.strip() else {})},
            )
            item = ReceivedInstance(study_key, patient, instance, "OT", source, stat, self.issuers.site(source))
            added = await self._accept(PseudonymRecord(study_key, patient, instance_key, source, original), item)
        except Refusal as refusal:
            raise self.refused(source, refusal) from None
        (metrics.INSTANCES_ACCEPTED if added else metrics.INSTANCES_DUPLICATE).labels(source).inc()
        return Accepted(study_key, patient, instance_key, not added)

    def _http_patient_key(self, study_id: str, patient_id: str | None, namespace: str) -> str:
        if patient_id and patient_id.strip():
            return self.pseudonymizer.patient_key(patient_id, namespace)
        return self.pseudonymizer.unidentified_patient_key(f"http|{study_id}", namespace)

    async def flush(self, *, force: bool = False) -> list[StudyReceived]:
        return await self.assembler.flush(force=force)

    async def run_assembler(self, stop: asyncio.Event) -> None:
        await self.assembler.run(stop)


def _checked_form(
    study_id: str, patient_id: str | None, patient_key: str | None, view_position: str | None, issuer: str | None,
) -> tuple[str, str | None, str | None]:
    """An HTTP upload's form metadata checked (else `Refusal`): (study_id, patient_key, view), stripped."""
    study_id = (study_id or "").strip()
    if not study_id or len(study_id) > 128:
        raise Refusal(RefusalReason.INVALID_METADATA, "study_id is required (1-128 characters)")
    if issuer is not None and len(issuer.strip()) > 64:
        raise Refusal(RefusalReason.INVALID_METADATA, "issuer is at most 64 characters (DICOM LO)")
    if patient_key is not None and patient_id is not None:
        raise Refusal(RefusalReason.INVALID_METADATA, "give patient_id or patient_key, not both")
    if patient_key is not None:
        patient_key = patient_key.strip()
        if not KEY_RE.fullmatch(patient_key):
            raise Refusal(RefusalReason.INVALID_METADATA, "patient_key must match the pseudonym pattern")
    view = (view_position or "").strip().upper() or None
    if view is not None and view not in _VIEW_VALUES:
        raise Refusal(RefusalReason.INVALID_METADATA, f"view_position must be one of {', '.join(sorted(_VIEW_VALUES))}")
    return study_id, patient_key, view


def parse_priority(value: str | None) -> bool:
    """True for STAT from an HTTP field (`stat`, `STAT`, `Priority.STAT`)."""
    return (value or "").strip().lower() in (Priority.STAT.value, "priority.stat")
