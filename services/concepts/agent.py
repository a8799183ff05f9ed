"""Concept-inference stage adapter: StudyPreprocessed -> ConceptsInferred via Triton (async gRPC).

Concurrency matters here: several records in flight at once let Triton's dynamic batcher form
batches, which is where the CPU/GPU gains (benchmarks/triton_bench.py).
"""

from __future__ import annotations

import asyncio

import numpy as np
from psycopg_pool import AsyncConnectionPool

from radalign.blobstore import BlobIntegrityError, BlobStore, open_blob_store
from radalign.concepts.client import TritonConceptClient
from radalign.concepts.gate import ServedGate
from radalign.concepts.inference import (
    InvalidModelInput,
    build_concepts_event,
    load_model_input,
    not_chest_radiograph_event,
    select_gate,
)
from radalign.concepts.metrics_site import SHADOW_UNRECORDED, record_site_scores
from radalign.config import Settings, get_settings
from radalign.db import open_pool
from radalign.framework.faust_app import run_worker
from radalign.framework.retry import PermanentError, call_with_retry
from radalign.framework.stage import Output, Stage
from radalign.sites import shadow
from radalign.sites.shadow import ShadowRow, shadow_row
from schemas.events import Priority, StudyPreprocessed
from schemas.topics import CONCEPTS_INFERRED


def fetch_model_input(blobs: BlobStore, event: StudyPreprocessed) -> np.ndarray:
    """The model input from the claim check. Missing or corrupt blobs are permanent failures;
    anything else (a bucket that does not answer) is left to the caller's retry."""
    try:
        data = blobs.get(event.model_input)
    except FileNotFoundError as exc:  # BlobNotFound: the store lost it or is not there yet; replayable
        raise PermanentError(f"model input missing: {exc}", "dependency") from exc
    except BlobIntegrityError as exc:  # corrupt, or a reference outside the store (BlobRefused)
        raise PermanentError(f"model input unreadable: {type(exc).__name__}: {exc}", "validation") from exc
    try:
        return load_model_input(data)
    except InvalidModelInput as exc:
        raise PermanentError(str(exc), "validation") from exc


class ConceptsStage(Stage[StudyPreprocessed]):
    name = "concepts"

    def __init__(self, settings: Settings | None = None) -> None:
        self.concurrency = (settings or get_settings()).triton_concurrency

    async def setup(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: AsyncConnectionPool | None = None  # opened at the first shadow record
        self.blobs = open_blob_store(settings.blob_root, settings.s3_endpoint_url, max_bytes=16 * 1024 * 1024)
        self.client = TritonConceptClient(settings.triton_grpc_url, settings.triton_model, settings.triton_timeout_s)
        try:
            await self.client.ready()  # learns the served checkpoint's version
        except Exception:  # noqa: BLE001 - Triton may come up later; readiness reports it
            pass

    async def record_shadow(self, row: ShadowRow) -> None:
        """Record a shadow-scored study (bounded retries). The study's own draft never waits on
        its shadow: a record that cannot be written is counted, and the study goes on."""
        try:
            if self.pool is None:
                self.pool = await open_pool(self.settings, min_size=0, max_size=2, name="radalign-concepts-shadow")
            pool = self.pool
            await call_with_retry("postgres", lambda: shadow.record(pool, row), self.settings, stage=self.name, timeout_s=10, attempts=3)
        except Exception:  # noqa: BLE001 - a shadow record is evidence for a later promotion, never a reason to hold a study
            SHADOW_UNRECORDED.labels(row.site).inc()

    async def close(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            await pool.close()
        await super().close()

    async def ready(self) -> tuple[bool, str]:
        try:
            ok = await self.client.ready()
        except Exception as exc:  # noqa: BLE001 - readiness must answer, not raise
            return False, f"triton: {type(exc).__name__}"
        return ok, "triton ready" if ok else "triton model not ready"

    async def handle(self, event: StudyPreprocessed) -> list[Output]:
        if event.not_chest_radiograph:  # the header says so: nothing to ask the model (no Triton call)
            return [Output(CONCEPTS_INFERRED, not_chest_radiograph_event(event, self.settings.triton_model, str(self.client.model_version)))]
        image = await call_with_retry(
            "blob store", lambda: asyncio.to_thread(fetch_model_input, self.blobs, event), self.settings, stage=self.name, timeout_s=30
        )
        site = event.site or self.settings.concepts_default_site or None
        served = await call_with_retry(
            "triton", lambda: self.client.infer(image, site, stat=event.study.priority == Priority.STAT), self.settings, stage=self.name, timeout_s=self.settings.triton_timeout_s
        )
        if self.client.supported is None:
            await self.client.ready()  # Triton restarted or came up after us: learn version and concepts
        version = str(self.client.model_version)
        gate: ServedGate | None
        if served.head is not None:  # the site's promoted model: its own gate and claim policy
            gate = served.head.gate
        else:
            profiles = self.settings.concepts_site_profiles_dir or self.settings.state_dir / "site_profiles"
            gate = select_gate(self.client.gate, site, profiles, version)
        record_site_scores(site, served)
        out = build_concepts_event(
            event, served.probabilities, served.embedding, self.settings.triton_model, version, supported=self.client.supported, gate=gate,
            ood_score=served.ood_score, site_head=served.head,
        )
        if site and served.shadow_head is not None and served.shadow_probabilities is not None and served.shadow_ood_score is not None:
            row = shadow_row(event.study.study_key, site, served.probabilities, {c.observation.value: c.state for c in out.concepts},
                             out.ood is not None, served.head, served.shadow_head, served.shadow_probabilities, served.shadow_ood_score)
            await self.record_shadow(row)
        return [Output(CONCEPTS_INFERRED, out)]


def main(settings: Settings) -> None:
    run_worker(ConceptsStage(settings), settings)
