"""`run_review`: the review process (web app + preprocessed-topic consumer + outbox) on real dependencies.

The consumer records which model input each study was read from (`review_images`), committing
offsets only after the row is written (at-least-once; the upsert is idempotent). A record that
does not match its contract goes to `radalign.dlq.review.v1` with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from datetime import UTC, datetime

from aiohttp import web

from radalign.config import Settings
from radalign.framework import codec
from radalign.framework import metrics as stage_metrics
from radalign.framework.logredact import install_log_redaction
from radalign.framework.retry import call_with_retry
from radalign.review.core import STAGE, ReviewCore
from schemas.events import DeadLetter, StudyPreprocessed
from schemas.topics import STUDY_PREPROCESSED, dead_letter_topic
from services.review.app import build_review_app

log = logging.getLogger(__name__)

CONSUMER_GROUP = "radalign-review"
HOUSEKEEPING_S = 5.0


async def consume_preprocessed(settings: Settings, core: ReviewCore, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *STUDY_PREPROCESSED.names,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=CONSUMER_GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_ms,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=50)
            for messages in batches.values():
                for msg in messages:
                    await _record(settings, core, msg)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()


async def _record(settings: Settings, core: ReviewCore, msg) -> None:
    try:
        event = codec.decode(StudyPreprocessed, msg.value)
    except codec.ContractViolation as exc:
        await _dead_letter(core, msg, str(exc), "validation")
        return
    try:
        await call_with_retry("postgres", lambda: core.store.record_image(event), settings, stage=STAGE, timeout_s=10)
    except Exception as exc:  # noqa: BLE001 - retries exhausted: park it, keep the partition flowing
        await _dead_letter(core, msg, f"{type(exc).__name__}: {exc}"[:500], "dependency", attempts=settings.retry_attempts)


async def _dead_letter(core: ReviewCore, msg, reason: str, error_type: str, attempts: int = 1) -> None:
    log.warning("review dead-lettered a preprocessed record (%s): %s", error_type, reason[:200])
    stage_metrics.DEAD_LETTERS.labels(stage=STAGE, error_type=error_type).inc()
    letter = DeadLetter(
        stage=STAGE, reason=reason[:4000], error_type=error_type, source_topic=msg.topic,  # type: ignore[arg-type]  # error_type is one of the Literal values
        source_partition=msg.partition, source_offset=msg.offset, key=msg.key.decode("utf-8", "replace") if msg.key else None,
        attempts=attempts, failed_at=datetime.now(UTC), payload_b64=base64.b64encode((msg.value or b"")[:1_000_000]).decode(),
    )
    await core.publisher.publish(dead_letter_topic(STAGE), letter, ev_id=f"dl-{STAGE}-{msg.topic}-{msg.partition}-{msg.offset}")


async def housekeeping(core: ReviewCore, stop: asyncio.Event) -> None:
    """Outbox flush, learning-loop ingest and queue gauges, every few seconds."""
    while not stop.is_set():
        jobs = (("outbox", core.flush_outbox), ("case store", core.ingest_pending), ("gauges", core.refresh_gauges), ("agreement", core.agreement))
        for name, job in jobs:
            try:
                await job()
            except Exception:
                log.exception("review housekeeping (%s) failed; retrying in %.0f s", name, HOUSEKEEPING_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=HOUSEKEEPING_S)


async def run_review(settings: Settings, stop: asyncio.Event | None = None, *, learn: bool = True) -> None:
    """Serve until `stop` is set (or cancelled)."""
    from radalign.blobstore import open_blob_store
    from radalign.db import apply_migrations, open_pool
    from radalign.framework.producer import KafkaEventPublisher
    from radalign.kb.store import CaseStore
    from radalign.reports.reidentification import PostgresReidentifier
    from radalign.review.oidc import OidcClient, oidc_settings
    from radalign.review.signers import PostgresSigners
    from radalign.review.store import ReviewStore

    stop = stop or asyncio.Event()
    await asyncio.to_thread(apply_migrations, settings.dsn)
    pool = await open_pool(settings, min_size=1, max_size=6, name="review")
    try:
        async with KafkaEventPublisher(settings, stage=STAGE) as publisher:
            case_store = CaseStore(pool, search_timeout_ms=settings.db_statement_timeout_ms) if learn else None
            core = ReviewCore(settings, ReviewStore(pool), open_blob_store(settings.blob_root, settings.s3_endpoint_url), publisher,
                              case_store=case_store, reidentifier=PostgresReidentifier(pool), signers=PostgresSigners(pool))
            port = settings.web_port(STAGE)
            oidc_config = oidc_settings(settings, port)
            oidc = OidcClient(oidc_config) if oidc_config is not None else None
            app = build_review_app(core, settings, oidc=oidc)
            if oidc is not None:
                app.on_cleanup.append(lambda _app: oidc.close())
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, settings.web_host, port).start()
            log.info("review serving on http://%s:%d", settings.web_host, port)
            tasks = [asyncio.create_task(consume_preprocessed(settings, core, stop)), asyncio.create_task(housekeeping(core, stop))]
            try:
                done, _ = await asyncio.wait([asyncio.create_task(stop.wait()), *tasks], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task in tasks and task.exception():
                        raise task.exception()  # type: ignore[misc]  # the task finished with an exception (checked on the line above)
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await runner.cleanup()
    finally:
        await pool.close()


def main(settings: Settings) -> None:
    """`radalign worker review`: run until SIGTERM / Ctrl+C."""
    import signal

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_review(settings, stop)

    asyncio.run(_main())
