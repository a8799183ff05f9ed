"""Review stage adapter: the radiologist's review web app, run like every stage by the Faust runner.

It consumes the preprocessed topic to record which model input each study was read from
(`review_images`; the upsert is idempotent, the offset is committed after it: at-least-once), and a
record that does not match its contract, or cannot be written after retries, is dead-lettered by
the shared runner to `radalign.dlq.review.v1`. Its web server serves the review app's pages and
API (`services.review.app`) beside the probes and metrics every stage serves; its background tasks
flush the signed-report outbox, feed the case store (the learning loop) and refresh the queue
gauges. Signed reports are published to `radalign.report.final.v1` by the sign route.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiohttp import web

from radalign.config import Settings, get_settings
from radalign.framework.faust_app import run_worker
from radalign.framework.producer import KafkaEventPublisher
from radalign.framework.retry import call_with_retry
from radalign.framework.stage import BackgroundTask, Output, Stage
from radalign.review.core import STAGE, ReviewCore
from radalign.review.oidc import OidcClient, oidc_settings
from schemas.events import StudyPreprocessed
from services.review.app import refresh_gauges_quietly, review_middlewares, review_routes

#: How often the housekeeping jobs run (outbox, case store, gauges, agreement).
HOUSEKEEPING_S = 5.0


class _StartedCore:
    """The core exists only after setup; the routes are built before it. A request that comes in
    between is answered 503 (the worker is starting), like a probe that is not ready yet."""

    def __init__(self, stage: ReviewStage) -> None:
        self._stage = stage

    def __getattr__(self, name: str) -> Any:
        if self._stage.core is None:
            raise web.HTTPServiceUnavailable(text="the review service is starting")
        return getattr(self._stage.core, name)


class ReviewStage(Stage[StudyPreprocessed]):
    name = STAGE

    def __init__(self, settings: Settings | None = None, *, learn: bool = True) -> None:
        self.settings = settings or get_settings()
        self.learn = learn  # feed signed reports into the case store (off in some tests)
        self.core: ReviewCore | None = None
        config = oidc_settings(self.settings, self.settings.web_port(STAGE))
        self.oidc = OidcClient(config) if config is not None else None
        self._pool: Any = None
        self._publisher: KafkaEventPublisher | None = None

    async def setup(self, settings: Settings) -> None:
        from radalign.blobstore import open_blob_store
        from radalign.db import apply_migrations, open_pool
        from radalign.kb.store import CaseStore
        from radalign.reports.reidentification import PostgresReidentifier
        from radalign.review.signers import PostgresSigners
        from radalign.review.store import ReviewStore

        await asyncio.to_thread(apply_migrations, settings.dsn)
        self._pool = pool = await open_pool(settings, min_size=1, max_size=6, name="review")
        self._publisher = KafkaEventPublisher(settings, stage=STAGE)
        await self._publisher.start()
        case_store = CaseStore(pool, search_timeout_ms=settings.db_statement_timeout_ms) if self.learn else None
        self.core = ReviewCore(settings, ReviewStore(pool), open_blob_store(settings.blob_root, settings.s3_endpoint_url), self._publisher,
                               case_store=case_store, reidentifier=PostgresReidentifier(pool), signers=PostgresSigners(pool))

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()
        if self._publisher is not None:
            await self._publisher.stop()
        if self._pool is not None:
            await self._pool.close()

    async def ready(self) -> tuple[bool, str]:
        try:
            await self._core().refresh_gauges()  # reads the database
        except Exception as exc:  # noqa: BLE001 - readiness must answer, not raise
            return False, f"database: {type(exc).__name__}"
        return True, "database ready"

    def _core(self) -> ReviewCore:
        return cast(ReviewCore, _StartedCore(self))  # forwards to the core once setup made it

    def routes(self) -> list[Any]:
        return list(review_routes(self._core(), self.settings, oidc=self.oidc))

    def middlewares(self, settings: Settings) -> list[Any]:
        return review_middlewares(settings, oidc=self.oidc)

    def background_tasks(self) -> list[BackgroundTask]:
        core = self._core()  # each job looks the core up when it runs (after setup)
        return [
            BackgroundTask("outbox", lambda: core.flush_outbox(), HOUSEKEEPING_S),
            BackgroundTask("case store", lambda: core.ingest_pending(), HOUSEKEEPING_S),
            BackgroundTask("gauges", lambda: core.refresh_gauges(), HOUSEKEEPING_S),
            BackgroundTask("agreement", lambda: core.agreement(), HOUSEKEEPING_S),
        ]

    async def before_scrape(self) -> None:
        await refresh_gauges_quietly(self._core())

    async def handle(self, event: StudyPreprocessed) -> list[Output]:
        core = self._core()
        await call_with_retry("postgres", lambda: core.store.record_image(event), self.settings, stage=self.name, timeout_s=10)
        return []  # signed reports are published by the sign route, not per consumed record


def main(settings: Settings) -> None:
    """`radalign worker review`: run until SIGTERM / Ctrl+C."""
    run_worker(ReviewStage(settings), settings)
