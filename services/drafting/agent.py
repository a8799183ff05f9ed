"""Drafting stage adapter: CasesRetrieved -> ReportDrafted (+ review topic), reports store, read API.

The report is upserted into the reports store (idempotent per study and pipeline version) before
it is published, and it is published on every delivery, redeliveries included: the report_id is
deterministic, so consumers de-duplicate, and a crash between store and publish loses nothing.
"""

from __future__ import annotations

from radalign.config import Settings, get_settings
from radalign.db import open_pool, pool_ready
from radalign.drafting.core import DraftingCore, build_backend
from radalign.framework.faust_app import run_worker
from radalign.framework.retry import call_with_retry
from radalign.framework.stage import Output, Stage
from radalign.reports.reidentification import PostgresReidentifier
from radalign.reports.store import ReportStore
from radalign.review.signers import PostgresSigners
from radalign.review.store import ReviewStore
from schemas.events import CasesRetrieved
from schemas.topics import REPORT_DRAFTED, REPORT_REVIEW
from services.drafting.read_api import build_read_routes


class DraftingStage(Stage[CasesRetrieved]):
    name = "drafting"
    concurrency = 2

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings_for_routes = settings or get_settings()
        self.store: ReportStore | None = None
        self.reidentifier: PostgresReidentifier | None = None
        self.review: ReviewStore | None = None  # signed versions (the pull API serves the latest)
        self.signers: PostgresSigners | None = None

    async def setup(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = await open_pool(settings, name="drafting")
        self.store = ReportStore(self.pool)
        self.reidentifier = PostgresReidentifier(self.pool)
        self.review = ReviewStore(self.pool)
        self.signers = PostgresSigners(self.pool)
        self.core = DraftingCore(settings, build_backend(settings))

    async def close(self) -> None:
        await self.pool.close()

    async def ready(self) -> tuple[bool, str]:
        return await pool_ready(self.pool)

    def routes(self) -> list:
        stage = self

        class _Lazy:
            """The store exists only after setup; the routes are registered before it."""

            async def get_stored(self, *args, **kwargs):
                return await stage.store.get_stored(*args, **kwargs) if stage.store else None

            async def lookup(self, study_key: str):
                return await stage.reidentifier.lookup(study_key) if stage.reidentifier else None

            async def finals(self, study_key: str):
                # the review service's signed versions: the pull API serves the latest one
                return await stage.review.finals(study_key) if stage.review else []

            async def signer(self, reviewer_key: str):
                return await stage.signers.lookup(reviewer_key) if stage.signers else None

        lazy = _Lazy()
        # The read API returns re-identified FHIR/SR: behind the read API's own tokens, never the
        # ingest ones (issue 12), which the runner's auth middleware checks (Stage.middlewares).
        return list(build_read_routes(lazy, lazy, signed=lazy))  # type: ignore[arg-type]  # _Lazy stands in for the store and the reidentifier

    async def handle(self, event: CasesRetrieved) -> list[Output]:
        report = await self.core.draft(event)  # LLM calls carry their own timeout/retry/fallback
        store = self.store
        assert store is not None  # setup() creates it before the first event
        await call_with_retry("postgres", lambda: store.upsert(report), self.settings, stage=self.name, timeout_s=10)
        outputs = [Output(REPORT_DRAFTED, report)]
        if report.needs_review:
            outputs.append(Output(REPORT_REVIEW, report))
        return outputs


def main(settings: Settings) -> None:
    run_worker(DraftingStage(settings), settings)
