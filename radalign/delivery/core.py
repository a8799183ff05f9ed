"""The delivery core: one report version to every configured destination, without Kafka.

For each destination: look at its delivery record; skip a version it already delivered (a
redelivered event, counted in radalign_duplicates_skipped_total) and a stale preliminary draft
after a signed version went out (and an older signed version after a newer one); otherwise send it with the destination's bounded retries and
backoff (radalign.framework.retry) and record the outcome. Destinations are independent: one
that is down does not hold up the others. `deliver` sends to every destination at once and raises if
any failed (tools and tests); the stage instead queues a report per destination and each
destination's lane (radalign.delivery.lanes) calls `deliver_to`, so a hung destination delays
only itself. A replay of a dead letter sends only to the destinations still missing the version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from radalign.config import Settings
from radalign.delivery import metrics as delivery_metrics
from radalign.delivery.records import DeliveryRecord, DeliveryRecords
from radalign.delivery.senders import Sender
from radalign.delivery.version import ReportVersion, signed_number
from radalign.framework import metrics
from radalign.framework.retry import DependencyUnavailable, PermanentError, call_with_retry
from radalign.reports.reidentification import Reidentifier, StudyIdentity

log = logging.getLogger(__name__)

STAGE = "delivery"
Outcome = Literal["delivered", "skipped", "failed", "refused"]


@dataclass(frozen=True)
class DestinationResult:
    destination: str
    outcome: Outcome
    detail: str = ""
    #: The exception class of a failure (TimeoutError, ConnectError ...): a lane's reason class.
    error_class: str = ""


class DeliveryFailed(DependencyUnavailable):
    """Some destinations did not take the report after their retries (they are recorded)."""

    def __init__(self, results: list[DestinationResult]) -> None:
        self.results = results
        failed = [r for r in results if r.outcome in ("failed", "refused")]
        super().__init__("; ".join(f"{r.destination}: {r.detail}" for r in failed)[:3500])

    @property
    def permanent(self) -> bool:
        """Every failure was a refusal of the content (replaying unchanged will not help)."""
        return all(r.outcome == "refused" for r in self.results if r.outcome in ("failed", "refused"))


def skip_reason(record: DeliveryRecord | None, item: ReportVersion) -> str | None:
    """Why this version need not be sent to this destination (None: send it)."""
    if record is None:
        return None
    if record.report_version == item.version and record.status == "delivered":
        return "this version was delivered already"
    if record.status != "delivered":
        return None
    delivered = signed_number(record.report_version, record.report_status)
    if delivered is not None and item.signed_version is None:
        return "a signed version was delivered; the AI's draft never replaces it"
    if delivered is not None and item.signed_version is not None and item.signed_version < delivered:
        return f"signed version {delivered} was delivered; an earlier version never replaces it"
    return None


class DeliveryCore:
    def __init__(self, senders: Mapping[str, Sender], records: DeliveryRecords, reidentifier: Reidentifier, settings: Settings) -> None:
        self.senders = dict(senders)
        self.records = records
        self.reidentifier = reidentifier
        self.settings = settings

    async def _db(self, what: str, call):  # noqa: ANN001, ANN202 - a coroutine factory and its result
        return await call_with_retry(what, call, self.settings, stage=STAGE, timeout_s=10)

    async def identity_of(self, item: ReportVersion) -> StudyIdentity:
        """The study's re-identification (patient, study UID): without it nothing can be routed."""
        key = item.report.study.study_key
        identity = await self._db("postgres", lambda: self.reidentifier.lookup(key))
        if identity is None:
            raise PermanentError("no identity mapping for the study: the report cannot be routed to any destination")
        return identity

    async def deliver(self, item: ReportVersion) -> list[DestinationResult]:
        """Every destination at once, each with its bounded retries (tests and tools; the stage
        queues per destination instead: radalign.delivery.lanes)."""
        if not self.senders:
            return []
        identity = await self.identity_of(item)
        results = await asyncio.gather(*(self.deliver_to(name, item, identity) for name in self.senders))
        if any(r.outcome in ("failed", "refused") for r in results):
            failure = DeliveryFailed(list(results))
            if failure.permanent:
                raise PermanentError(str(failure), "refused")
            raise failure
        return list(results)

    async def deliver_to(
        self, name: str, item: ReportVersion, identity: StudyIdentity | None = None, *, attempts: int | None = None
    ) -> DestinationResult:
        """One destination: skip what it has, else send (`attempts`: override the destination's
        retry count; a lane makes one attempt per claim and backs off between claims) and record."""
        sender = self.senders[name]
        report = item.report
        if getattr(sender, "signed_only", False) and item.signature is None:
            delivery_metrics.DELIVERIES.labels(destination=sender.name, kind=sender.kind, outcome="skipped").inc()
            return DestinationResult(sender.name, "skipped", "this destination takes signed versions only")
        record = await self._db("postgres", lambda: self.records.get(report.report_id, sender.name))
        if (reason := skip_reason(record, item)) is not None:
            metrics.DUPLICATES.labels(stage=STAGE).inc()
            delivery_metrics.DELIVERIES.labels(destination=sender.name, kind=sender.kind, outcome="skipped").inc()
            return DestinationResult(sender.name, "skipped", reason)
        identity = identity or await self.identity_of(item)
        if record is not None and record.status == "delivered" and record.remote_ref:
            item = replace(item, predecessor_ref=record.remote_ref)  # a new version replaces what it holds
        previous = 0 if record is None or record.report_version != item.version else record.attempts
        pending = DeliveryRecord(
            report_id=report.report_id, destination=sender.name, study_key=report.study.study_key, kind=sender.kind,
            report_version=item.version, report_status=item.status, status="pending", attempts=previous,
        )
        await self._db("postgres", lambda: self.records.save(pending))
        return await self._send(sender, item, identity, pending, attempts)

    async def _send(
        self, sender: Sender, item: ReportVersion, identity: StudyIdentity, pending: DeliveryRecord, attempts: int | None
    ) -> DestinationResult:
        counter = {"n": 0}

        async def attempt() -> str:
            counter["n"] += 1
            return await sender.send(item, identity)

        policy = getattr(getattr(sender, "destination", None), "retry", None)
        settings = self.settings
        if policy is not None:
            settings = settings.model_copy(update={"retry_base_delay_s": policy.base_delay_s, "retry_max_delay_s": policy.max_delay_s})
        begin = time.perf_counter()
        try:
            remote = await call_with_retry(
                f"delivery:{sender.name}", attempt, settings, stage=STAGE,
                timeout_s=policy.timeout_s if policy else 30.0, attempts=attempts or (policy.attempts if policy else None),
            )
        except (PermanentError, DependencyUnavailable) as exc:
            outcome: Outcome = "refused" if isinstance(exc, PermanentError) else "failed"
            detail = exc.reason if isinstance(exc, PermanentError) else str(exc)
            log.warning("delivery of report %s to %s %s: %s", pending.report_id, sender.name, outcome, detail[:300])
            failed = replace(pending, status="failed", attempts=pending.attempts + counter["n"], last_error=detail[:1000])
            await self._db("postgres", lambda: self.records.save(failed))
            delivery_metrics.DELIVERIES.labels(destination=sender.name, kind=sender.kind, outcome=outcome).inc()
            cause = exc.__cause__ if isinstance(exc, DependencyUnavailable) else exc
            return DestinationResult(sender.name, outcome, detail, type(cause).__name__ if cause else "")
        delivery_metrics.DELIVERY_SECONDS.labels(destination=sender.name, kind=sender.kind).observe(time.perf_counter() - begin)
        done = replace(pending, status="delivered", attempts=pending.attempts + counter["n"], remote_ref=remote, delivered_at=datetime.now(UTC))
        await self._db("postgres", lambda: self.records.save(done))
        delivery_metrics.DELIVERIES.labels(destination=sender.name, kind=sender.kind, outcome="delivered").inc()
        return DestinationResult(sender.name, "delivered", remote)

    async def close(self) -> None:
        for sender in self.senders.values():
            await sender.close()
