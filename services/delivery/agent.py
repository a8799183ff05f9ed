"""Delivery stage adapter: radalign.report.drafted.v1 / report.final.v1 -> PACS / FHIR / RIS.

Isolated per destination: `handle` queues the report version once per destination in PostgreSQL
(`delivery_queue`) and returns, so the Faust adapter commits the offset only once every
destination's work is durable (at-least-once), and never waits on a destination. Each
destination's lane (radalign.delivery.lanes) sends its own rows, STAT first, with its own
concurrency, timeout and circuit breaker; a destination down past its budget dead-letters
(report, destination) to radalign.dlq.delivery.v1 and catches up when it returns. Every
destination is idempotent per report version (delivery records + conditional updates + version-
derived SOP Instance UIDs), so a redelivered event or a replay (`radalign dlq replay delivery`)
sends only to the destinations still missing it. Serves the delivery records:

    GET /v1/studies/{study_key}/deliveries   (bearer tokens as the read API)
"""

from __future__ import annotations

import functools
import json

from aiohttp import web

from radalign.config import Settings, get_settings
from radalign.db import open_pool, pool_ready
from radalign.delivery.core import DeliveryCore
from radalign.delivery.destinations import load_config
from radalign.delivery.lanes import DestinationLane
from radalign.delivery.outbox import DeliveryQueue, PostgresDeliveryQueue, QueuedDelivery, queued_rows
from radalign.delivery.records import PostgresDeliveryRecords
from radalign.delivery.senders import build_sender
from radalign.delivery.version import ReportVersion, co_signer_keys, final_version
from radalign.framework import codec
from radalign.framework.faust_app import run_worker
from radalign.framework.http import problem
from radalign.framework.producer import KafkaEventPublisher
from radalign.framework.retry import PermanentError, call_with_retry
from radalign.framework.stage import BackgroundTask, Output, Stage
from radalign.reports.reidentification import PostgresReidentifier
from radalign.reports.store import ReportStore
from radalign.review.signers import PostgresSigners, Signer
from radalign.review.store import ReviewStore
from schemas.events import KEY_RE, DeadLetter, ReportDrafted, ReportFinal
from schemas.topics import REPORT_FINAL, dead_letter_topic


class DeliveryStage(Stage[ReportDrafted | ReportFinal]):
    name = "delivery"
    concurrency = 2

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings_for_routes = settings or get_settings()
        # Parsed at construction: a bad destination file stops the worker at start, with the reason.
        self.config = load_config(self.settings_for_routes.delivery_destinations)
        self.core: DeliveryCore | None = None
        self.records: PostgresDeliveryRecords | None = None
        self.reports: ReportStore | None = None
        self.signers: PostgresSigners | None = None
        self.review: ReviewStore | None = None
        self.lanes: dict[str, DestinationLane] = {}

    async def setup(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = await open_pool(settings, name="delivery")
        self.records = PostgresDeliveryRecords(self.pool)
        self.reports = ReportStore(self.pool)
        self.signers = PostgresSigners(self.pool)
        self.review = ReviewStore(self.pool)
        self.queue: DeliveryQueue = PostgresDeliveryQueue(self.pool)
        senders = {d.name: build_sender(d) for d in self.config.destinations}
        self.core = DeliveryCore(senders, self.records, PostgresReidentifier(self.pool), settings)
        self.publisher = KafkaEventPublisher(settings, stage=self.name)
        await self.publisher.start()
        self.lanes = {
            d.name: DestinationLane(d.name, self.core, self.queue, self.version_of, self._dead_letter, d.queue, d.retry)
            for d in self.config.destinations
        }

    def background_tasks(self) -> list[BackgroundTask]:
        """One lane per destination, each its own loop beside the consumer: a slow or hung
        destination holds only its own lane (the runner restarts a lane that fails)."""
        return [BackgroundTask(f"delivery-lane-{d.name}", functools.partial(self._run_lane, d.name), every_s=1.0)
                for d in self.config.destinations]

    async def _run_lane(self, name: str) -> None:
        await self.lanes[name].run()

    async def close(self) -> None:
        if self.core is not None:
            await self.core.close()
        if getattr(self, "publisher", None) is not None:
            await self.publisher.stop()
        await self.pool.close()

    async def ready(self) -> tuple[bool, str]:
        ok, detail = await pool_ready(self.pool)
        lanes = ", ".join(f"{lane.name} ({lane.breaker.state})" for lane in self.lanes.values()) or "none configured"
        return ok, f"{detail}; destinations: {lanes}"

    async def handle(self, event: ReportDrafted | ReportFinal) -> list[Output]:
        """Queue the version for every destination; the lanes send it."""
        rows = queued_rows(event, [d.name for d in self.config.destinations])
        if rows:
            queue = self.queue
            await call_with_retry("postgres", lambda: queue.enqueue(rows), self.settings, stage=self.name, timeout_s=10)
            for lane in self.lanes.values():
                lane.wake()
        return []

    async def _dead_letter(self, letter: DeadLetter) -> None:
        await self.publisher.publish(dead_letter_topic(self.name), letter, ev_id=f"dl-{self.name}-{letter.destination}-{letter.failed_at.timestamp()}")

    async def version_of(self, row: QueuedDelivery) -> ReportVersion:
        """The deliverable version of a queued row: the AI's draft, or a signed version."""
        assert self.reports is not None
        reports = self.reports
        if row.source_topic not in REPORT_FINAL.names:
            return ReportVersion(codec.decode(ReportDrafted, row.payload))
        event = codec.decode(ReportFinal, row.payload)
        # A signed version: the draft it replaces, with the signed text, status and labels, and
        # its signers re-identified (the reviewer mapping, as the patient's) — never a pseudonym.
        stored = await call_with_retry("postgres", lambda: reports.get_stored(event.study.study_key), self.settings, stage=self.name, timeout_s=10)
        if stored is None or stored.report.report_id != event.report_id:
            raise PermanentError(f"no stored draft {event.report_id} for this signed report", "validation")
        signer, co_signers = await self._signers(event)
        return final_version(stored.report, event, signer, co_signers)

    async def _signers(self, event: ReportFinal) -> tuple[Signer, list[Signer]]:
        """The signer and, for a co-signature, the residents whose preliminary versions it releases."""
        assert self.signers is not None and self.review is not None
        signers, review = self.signers, self.review

        async def lookup(key: str) -> Signer:
            found = await call_with_retry("postgres", lambda: signers.lookup(key), self.settings, stage=self.name, timeout_s=10)
            if found is None:
                raise PermanentError("no reviewer mapping for the signer: a pseudonym is never delivered as a signer", "validation")
            return found

        signer = await lookup(event.signer_key)
        co_signers: list[Signer] = []
        if event.replaces_version is not None:
            finals = await call_with_retry("postgres", lambda: review.finals(event.study.study_key), self.settings, stage=self.name, timeout_s=10)
            co_signers = [await lookup(key) for key in co_signer_keys(event, [f for f, _ in finals])]
        return signer, co_signers

    def routes(self) -> list:
        stage = self
        routes = web.RouteTableDef()

        @routes.get("/v1/studies/{study_key}/deliveries")
        async def deliveries(request: web.Request) -> web.StreamResponse:
            study_key = request.match_info["study_key"]
            if not KEY_RE.fullmatch(study_key):
                return problem(404, "Not Found", "no deliveries for this study key")
            if stage.records is None:
                return problem(503, "Service Unavailable", "the delivery stage is starting")
            rows = await stage.records.for_study(study_key)
            body = {"study_key": study_key, "deliveries": [r.as_json() for r in rows]}
            return web.Response(text=json.dumps(body), content_type="application/json", headers={"Cache-Control": "no-store"})

        return list(routes)  # behind the read API's bearer tokens: the runner's auth middleware (Stage.middlewares)


def main(settings: Settings) -> None:
    run_worker(DeliveryStage(settings), settings)
