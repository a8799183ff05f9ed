"""Review core: what the pages show and what a sign-off does, over the store, blobs, broker and model.

Sign-off is an outbox: the signed version is stored first (with who and when), then published
on `radalign.report.final.v1` and marked published on the broker's ack. A publish that fails is
retried by `flush_outbox` (every few seconds and at start), so the final event is delivered at
least once; its `ce_id` is deterministic per version, so consumers drop duplicates. The case
store learns from the signed text in the background (`ingest_pending`), also retried until done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from radalign.concepts.heatmaps import AttentionMaps, ConceptAttention, image_png, overlay_png
from radalign.config import Settings
from radalign.framework import codec
from radalign.framework.producer import EventPublisher
from radalign.framework.retry import call_with_retry
from radalign.labeler import label_sections
from radalign.review import metrics
from radalign.review.agreement import AgreementTable, agreement_over_time, drafted_states
from radalign.review.lifecycle import RELEASED, ChangeKind, LifecycleError, next_transition
from radalign.review.signers import LOCAL_IDENTIFIER_SYSTEM, Signer
from radalign.review.signoff import SignOffError, build_final, draft_findings_text, reviewer_key
from radalign.review.store import ReviewStore, VersionConflict
from radalign.review.worklist import WorklistItem, order_worklist
from schemas.events import BlobRef, Certainty, ConceptScore, Observation, Priority, ReportDrafted, ReportFinal, ReviewRole

log = logging.getLogger(__name__)

STAGE = "review"


class BlobReader(Protocol):
    def get(self, ref: BlobRef) -> bytes: ...


@dataclass(frozen=True)
class ConceptRow:
    observation: Observation
    state: str  # present / uncertain / absent / not_assessed
    probability: float | None
    present_threshold: float | None
    absent_threshold: float | None
    claim_precision: float | None = None  # lower bound of how often this claim was right on validation patients
    claim_films: int | None = None

    @property
    def index(self) -> int:
        return list(Observation).index(self.observation)


@dataclass
class StudyView:
    draft: ReportDrafted
    findings_text: str
    concepts: list[ConceptRow]
    cases: list[dict[str, Any]]
    finals: list[tuple[ReportFinal, str]]
    has_image: bool
    heatmap_model_version: str | None
    opened_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    impression_text: str = ""

    @property
    def released(self) -> bool:
        """An attending signed a version: a further change amends or corrects it."""
        return any(f.status in RELEASED for f, _ in self.finals)

    @property
    def awaiting_cosign(self) -> bool:
        return bool(self.finals) and self.finals[-1][0].status == "preliminary"


def concept_rows(report: ReportDrafted) -> list[ConceptRow]:
    """All 14 observations in CheXpert order: the draft's scores, or not assessed."""
    scores: dict[Observation, ConceptScore] = {c.observation: c for c in report.concepts}
    rows = []
    for obs in Observation:
        c = scores.get(obs)
        if c is None:
            rows.append(ConceptRow(obs, "not_assessed", None, None, None))
        else:
            rows.append(ConceptRow(obs, c.state.value, c.probability, c.present_threshold, c.absent_threshold, c.claim_precision, c.claim_films))
    return rows


class ReviewCore:
    def __init__(
        self,
        settings: Settings,
        store: ReviewStore,
        blobs: BlobReader,
        publisher: EventPublisher,
        *,
        attention: ConceptAttention | None = None,
        case_store: Any = None,
        reidentifier: Any = None,
        final_topic: Any = None,
        signers: Any = None,
    ) -> None:
        from schemas.topics import REPORT_FINAL

        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.publisher = publisher
        self.attention = attention or ConceptAttention()
        self.case_store = case_store
        self.reidentifier = reidentifier  # radalign.reports.reidentification.Reidentifier: identifiers to redact
        self.final_topic = final_topic or REPORT_FINAL
        self.signers = signers  # radalign.review.signers: pseudonym -> the signer's name and identifier
        self._maps: OrderedDict[str, AttentionMaps] = OrderedDict()
        self._inputs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._model_lock = asyncio.Semaphore(1)  # one model run at a time: the CPUs are shared
        self._encoder: Any = None

    # -- reading --------------------------------------------------------------------------

    async def worklist(self) -> list[WorklistItem]:
        drafts = await self.store.unsigned_drafts()
        return order_worklist(WorklistItem.from_report(d) for d in drafts)

    async def study(self, study_key: str) -> StudyView | None:
        draft = await self.store.latest_draft(study_key)
        if draft is None:
            return None
        ref = await self.store.model_input(study_key, draft.study.pipeline_version)
        cases = await self.store.cases(list(draft.case_keys))
        finals = await self.store.finals(study_key)
        latest = finals[-1][0] if finals and finals[-1][0].report_id == draft.report_id else None
        # The editor starts from the latest signed text (a co-signature or an amendment edits it).
        return StudyView(
            draft=draft,
            findings_text=latest.findings if latest else draft_findings_text(draft),
            impression_text=latest.impression if latest else draft.impression,
            concepts=concept_rows(draft),
            cases=[{"case_key": k, **cases[k]} for k in draft.case_keys if k in cases],
            finals=finals,
            has_image=ref is not None,
            heatmap_model_version=self.attention.model_version if ref is not None else None,
        )

    async def _model_input(self, study_key: str, pipeline_version: str) -> np.ndarray | None:
        if study_key in self._inputs:
            self._inputs.move_to_end(study_key)
            return self._inputs[study_key]
        ref = await self.store.model_input(study_key, pipeline_version)
        if ref is None:
            return None
        from radalign.ingest.images import decode_npy

        data = await call_with_retry("blobstore", lambda: asyncio.to_thread(self.blobs.get, ref), self.settings, stage=STAGE, timeout_s=15)
        array = np.asarray(decode_npy(data), dtype=np.float32)
        self._inputs[study_key] = array
        while len(self._inputs) > 64:
            self._inputs.popitem(last=False)
        return array

    async def image(self, study_key: str) -> bytes | None:
        draft = await self.store.latest_draft(study_key)
        pixels = await self._model_input(study_key, draft.study.pipeline_version) if draft else None
        return None if pixels is None else await asyncio.to_thread(image_png, pixels)

    async def heatmap(self, study_key: str, observation: Observation) -> bytes | None:
        draft = await self.store.latest_draft(study_key)
        pixels = await self._model_input(study_key, draft.study.pipeline_version) if draft else None
        if pixels is None:
            return None
        maps = self._maps.get(study_key)
        if maps is None:
            async with self._model_lock:
                maps = self._maps.get(study_key)
                if maps is None:
                    begin = time.perf_counter()
                    maps = await asyncio.wait_for(asyncio.to_thread(self.attention.maps, pixels), timeout=60)
                    metrics.HEATMAP_SECONDS.observe(time.perf_counter() - begin)
                    self._maps[study_key] = maps
                    while len(self._maps) > 32:
                        self._maps.popitem(last=False)
        return await asyncio.to_thread(overlay_png, pixels, maps.map_for(observation))

    # -- signing --------------------------------------------------------------------------

    async def sign(
        self,
        study_key: str,
        *,
        findings: str,
        impression: str,
        signer_name: str,
        signer_role: ReviewRole,
        report_id: str,
        opened_at: datetime | None = None,
        signer_identifier: str = "",
        signer_identifier_system: str = LOCAL_IDENTIFIER_SYSTEM,
        family_name: str = "",
        given_name: str = "",
        change: ChangeKind = "amended",
    ) -> tuple[ReportFinal, bool]:
        """Store and publish the signed report as a new version (status from the lifecycle:
        a resident's signature is preliminary, an attending's final, a later change amended or
        corrected). Returns (final, published now). Raises SignOffError for unusable input, a
        signer who may not sign now, or a draft that changed since the page was opened.

        The signer's pseudonym is the HMAC of the identifier the identity provider gives (the
        name when none); the pseudonym -> name/identifier mapping is recorded for the delivery."""
        draft = await self.store.latest_draft(study_key)
        if draft is None:
            raise LookupError("no drafted report for this study")
        if draft.report_id != report_id:
            raise SignOffError("the draft changed since this page was opened; reload it and review the new draft")
        try:
            transition = next_transition(await self.store.history(study_key), signer_role, change=change)
        except LifecycleError as exc:
            raise SignOffError(str(exc)) from exc
        labels: dict[Observation, Certainty] = await asyncio.to_thread(label_sections, findings.strip(), impression.strip())
        identifier = signer_identifier.strip() or signer_name.strip()
        key = self.signer_key(signer_name, signer_identifier, signer_identifier_system)
        final = build_final(
            draft, findings=findings, impression=impression, signer_key=key,
            signer_role=signer_role, version=transition.version, labels=labels, opened_at=opened_at,
            status=transition.status, replaces_version=transition.replaces_version,
        )
        if self.signers is not None:
            try:
                signer = Signer(key, signer_name.strip(), identifier, signer_identifier_system, signer_role.value, family_name.strip(), given_name.strip())
            except ValueError as exc:
                raise SignOffError(str(exc)) from exc
            await self.signers.record(signer)
        begin = time.perf_counter()
        try:
            await self.store.insert_final(final, signer_name=signer_name, opened_at=opened_at, draft_concepts=drafted_states(draft))
        except VersionConflict as exc:
            raise SignOffError(str(exc)) from exc
        published = await self._publish(final)
        metrics.SIGN_TO_PUBLISH.observe(time.perf_counter() - begin)
        priority = draft.study.priority.value
        metrics.SIGNED.labels(outcome="accepted" if final.accepted_unchanged else "edited").inc()
        metrics.EDIT_DISTANCE.observe(final.edit_distance)
        metrics.TURNAROUND.labels(priority=priority).observe(max(0.0, (final.signed_at - draft.study.received_at).total_seconds()))
        if opened_at is not None:
            metrics.TIME_TO_SIGN.labels(priority=priority).observe(max(0.0, (final.signed_at - opened_at).total_seconds()))
        return final, published

    def signer_key(self, name: str, identifier: str = "", system: str = LOCAL_IDENTIFIER_SYSTEM) -> str:
        """The reviewer's pseudonym: HMAC of the identity provider's (issuer, subject), or of the
        name for a dev login without an identifier."""
        return reviewer_key(f"{system}|{identifier.strip()}" if identifier.strip() else name, self.settings.deid_secret)

    async def audit(self, action: str, study_key: str | None, session: dict[str, Any] | None, via: str = "", **detail: Any) -> None:
        """Record who did what to which study (review_audit); never fails the request it records."""
        record = getattr(self.store, "audit", None)
        if record is None:
            return
        who = role = None
        if session:
            who = self.signer_key(str(session.get("name", "")), str(session.get("identifier", "")),
                                  str(session.get("identifier_system") or LOCAL_IDENTIFIER_SYSTEM))
            role = str(session.get("role", ""))
        try:
            await record(action, study_key, who, role, via or str((session or {}).get("via", "bearer")), detail)
        except Exception:  # an audit row lost is logged, the reviewer's work goes on
            log.exception("review audit (%s) not recorded", action)

    async def _publish(self, final: ReportFinal) -> bool:
        ev_id = codec.event_id(STAGE, final.study.study_key, final.study.pipeline_version, final.version)
        try:
            await call_with_retry(
                "kafka", lambda: self.publisher.publish(self.final_topic, final, ev_id=ev_id), self.settings, stage=STAGE, timeout_s=15,
                attempts=2,
            )
        except Exception as exc:  # noqa: BLE001 - the outbox retries it; the signature is stored either way
            log.warning("final report %s not published yet (%s); the outbox will retry", final.final_id, type(exc).__name__)
            return False
        await self.store.mark_published(final.final_id)
        return True

    async def flush_outbox(self) -> int:
        """Publish signed versions whose publish failed; returns how many went out."""
        sent = 0
        for final in await self.store.unpublished():
            sent += int(await self._publish(final))
        return sent

    # -- learning loop ----------------------------------------------------------------------

    async def ingest_pending(self) -> int:
        """Signed reports not yet in the case store: label (done at sign-off), embed, upsert."""
        if self.case_store is None:
            return 0
        pending = await self.store.kb_pending()
        if not pending:
            return 0
        from radalign.review.learning import ingest_signed

        if self._encoder is None:
            from radalign.text_encoder import get_text_encoder

            self._encoder = await asyncio.to_thread(get_text_encoder)
        from radalign.review.learning import known_identifiers

        image_refs, identifiers = {}, {}
        for final in pending:
            if self.reidentifier is not None:
                identifiers[final.study.study_key] = known_identifiers(await self.reidentifier.lookup(final.study.study_key))
            path = await self._model_input_file(final.study.study_key, final.study.pipeline_version)
            if path is not None:
                image_refs[final.study.study_key] = path
        done = await ingest_signed(
            self.case_store, pending, self.settings.deid_secret, encoder=self._encoder, image_refs=image_refs,
            image_embedder=self._embed_model_inputs, identifiers=identifiers,
        )
        for final_id, case_key in done:
            await self.store.mark_ingested(final_id, case_key)
        metrics.KB_INGESTED.inc(len(done))
        return len(done)

    async def _model_input_file(self, study_key: str, pipeline_version: str) -> str | None:
        """The study's model input as a local .npy (stable name: its checksum), for the kb's image embedder."""
        ref = await self.store.model_input(study_key, pipeline_version)
        if ref is None:
            return None
        path = self.settings.state_dir.resolve() / "review" / "model_inputs" / f"{ref.sha256}.npy"
        if not path.is_file():
            data = await call_with_retry("blobstore", lambda: asyncio.to_thread(self.blobs.get, ref), self.settings, stage=STAGE, timeout_s=15)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return str(path)

    def _embed_model_inputs(self, paths: Sequence[str]) -> np.ndarray:
        """kb image embedder over model-input files: the concept model's aligned embedding, the
        same vector the concepts stage sends with a study, so the next similar film finds this case."""
        from radalign.ingest.images import decode_npy

        return np.stack([self.attention.embedding(decode_npy(Path(p).read_bytes())) for p in paths])

    async def agreement(self) -> tuple[AgreementTable, dict[str, AgreementTable]]:
        """(all time, per ISO week) agreement of drafted concepts with signed labels; latest version per study."""
        from radalign.review.manifest import latest_versions

        rows = latest_versions(await self.store.signed_rows())
        overall = AgreementTable()
        for r in rows:
            overall.add(r.draft_concepts, r.final.labels)
        weeks = agreement_over_time(
            (f"{r.signed_at.isocalendar().year}-W{r.signed_at.isocalendar().week:02d}", r.draft_concepts, r.final.labels) for r in rows
        )
        for obs, row in overall.by_observation.items():
            metrics.AGREEMENT_COMPARED.labels(observation=obs.value).set(row.compared)
            if row.rate is not None:
                metrics.AGREEMENT.labels(observation=obs.value).set(row.rate)
        return overall, weeks

    async def refresh_gauges(self) -> None:
        depth, age = await self.store.queue()
        metrics.QUEUE_DEPTH.set(depth)
        metrics.QUEUE_AGE.set(age)
        by_priority = getattr(self.store, "queue_age_by_priority", None)  # stores without it (test doubles) skip the gauge
        if by_priority is not None:
            ages = await by_priority()
            for priority in Priority:  # a priority with nothing waiting reads 0, not its last value
                metrics.QUEUE_AGE_BY_PRIORITY.labels(priority=priority.value).set(ages.get(priority.value, 0.0))
