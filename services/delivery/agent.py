"""Delivery stage adapter: radalign.report.drafted.v1 -> PACS / FHIR destinations.

At-least-once: the Faust adapter commits a report's offset only after `handle` returned; every
destination is idempotent per report version (delivery records + conditional updates + version-
derived SOP Instance UIDs), so a redelivered event changes nothing. A destination that stays down
or refuses the content dead-letters the event to radalign.dlq.delivery.v1 (`radalign dlq replay
delivery` resends to the destinations still missing it). Serves the delivery records:

    GET /v1/studies/{study_key}/deliveries   (bearer tokens as the read API)
"""

from __future__ import annotations

import json

from aiohttp import web

from radalign.config import Settings, get_settings
from radalign.db import open_pool, pool_ready
from radalign.delivery.core import DeliveryCore
from radalign.delivery.destinations import load_config
from radalign.delivery.records import PostgresDeliveryRecords
from radalign.delivery.senders import build_sender
from radalign.delivery.version import ReportVersion, co_signer_keys, final_version
from radalign.framework.faust_app import run_worker
from radalign.framework.http import problem
from radalign.framework.retry import PermanentError, call_with_retry
from radalign.framework.stage import Output, Stage
from radalign.reports.reidentification import PostgresReidentifier
from radalign.reports.store import ReportStore
from radalign.review.signers import PostgresSigners, Signer
from radalign.review.store import ReviewStore
from schemas.events import KEY_RE, ReportDrafted, ReportFinal


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

    async def setup(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = await open_pool(settings, name="delivery")
        self.records = PostgresDeliveryRecords(self.pool)
        self.reports = ReportStore(self.pool)
        self.signers = PostgresSigners(self.pool)
        self.review = ReviewStore(self.pool)
        senders = {d.name: build_sender(d) for d in self.config.destinations}
        self.core = DeliveryCore(senders, self.records, PostgresReidentifier(self.pool), settings)

    async def close(self) -> None:
        if self.core is not None:
            await self.core.close()
        await self.pool.close()

    async def ready(self) -> tuple[bool, str]:
        ok, detail = await pool_ready(self.pool)
        return ok, f"{detail}; destinations: {', '.join(d.name for d in self.config.destinations) or 'none configured'}"

    async def handle(self, event: ReportDrafted | ReportFinal) -> list[Output]:
        assert self.core is not None and self.reports is not None
        reports = self.reports
        if isinstance(event, ReportDrafted):
            await self.core.deliver(ReportVersion(event))
            return []
        # A signed version: the draft it replaces, with the signed text, status and labels, and
        # its signers re-identified (the reviewer mapping, as the patient's) — never a pseudonym.
        stored = await call_with_retry("postgres", lambda: reports.get_stored(event.study.study_key), self.settings, stage=self.name, timeout_s=10)
        if stored is None or stored.report.report_id != event.report_id:
            raise PermanentError(f"no stored draft {event.report_id} for this signed report", "validation")
        signer, co_signers = await self._signers(event)
        await self.core.deliver(final_version(stored.report, event, signer, co_signers))
        return []

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
