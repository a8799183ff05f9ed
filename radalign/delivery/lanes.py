"""One lane per destination: its own workers, timeout, circuit breaker and dead letters.

The delivery stage only queues a report version per destination (`radalign.delivery.outbox`);
a lane drains its destination's rows, STAT first, with `queue.concurrency` sends in flight, each
bounded by `retry.timeout_s`. A failed send is retried later with backoff; consecutive failures
open the circuit (no sends, one probe after the cool-down). A row that waited longer than
`queue.dead_letter_after_s` is dead-lettered to radalign.dlq.delivery.v1 with the destination and
the reason class, and counted in radalign_delivery_dead_letters_total; when the destination
answers again the lane queues its dead rows once more, so it catches up by itself
(`radalign dlq replay delivery` does the same by hand). A refusal of the content is
dead-lettered at once and never requeued.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

from radalign.delivery import metrics as delivery_metrics
from radalign.delivery.breaker import CircuitBreaker
from radalign.delivery.core import STAGE, DeliveryCore, DestinationResult
from radalign.delivery.destinations import QueuePolicy, RetryPolicy
from radalign.delivery.outbox import DeliveryQueue, QueuedDelivery, ReasonClass
from radalign.delivery.version import ReportVersion
from radalign.framework import metrics
from radalign.framework.retry import PermanentError
from schemas.events import DeadLetter

log = logging.getLogger(__name__)

#: Turns a queued row back into the version to send (decodes the payload; a signed version
#: looks up its draft and signers). PermanentError: the row can never be sent.
Resolver = Callable[[QueuedDelivery], Awaitable[ReportVersion]]
#: Publishes a dead letter and returns once the broker acknowledged it.
DeadLetterSink = Callable[[DeadLetter], Awaitable[None]]


#: The dead letter's error type per reason class (the rest: a dependency that did not answer).
_ERROR_TYPES: dict[str, Literal["refused", "validation"]] = {"refused": "refused", "invalid": "validation"}


def dead_letter_for(row: QueuedDelivery, reason_class: ReasonClass, detail: str) -> DeadLetter:
    """The dead letter of one (report, destination): the original record, for replay."""
    return DeadLetter(
        stage=STAGE, destination=row.destination, reason=f"{row.destination}: {reason_class}: {detail}"[:4000] or reason_class,
        error_type=_ERROR_TYPES.get(reason_class, "dependency"),
        source_topic=row.source_topic, key=row.study_key, attempts=max(1, row.attempts), failed_at=datetime.now(UTC),
        payload_b64=base64.b64encode(row.payload).decode(),
    )


def reason_of(result: DestinationResult) -> ReasonClass:
    return "timeout" if "Timeout" in result.error_class else "unavailable"


class DestinationLane:
    def __init__(
        self, name: str, core: DeliveryCore, queue: DeliveryQueue, resolve: Resolver, dead_letters: DeadLetterSink,
        policy: QueuePolicy, retry: RetryPolicy, *, poll_s: float = 0.5,
    ) -> None:
        self.name, self.core, self.queue, self.resolve, self.dead_letters = name, core, queue, resolve, dead_letters
        self.policy, self.retry, self.poll_s = policy, retry, poll_s
        self.breaker = CircuitBreaker(policy.breaker_failures, policy.breaker_cooldown_s)
        # A claim is leased past the send's timeout: a worker that dies mid-send frees it again.
        self.lease_s = retry.timeout_s + 30.0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll (another replica's rows
        are found by the poll)."""
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: `concurrency` workers on this destination's rows."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self.policy.concurrency):
                group.create_task(self._worker())

    async def _worker(self) -> None:
        while True:
            try:
                if not await self.step():
                    await self._idle()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database or the broker is down: the rows stay queued; try again
                log.exception("delivery lane %s: a step failed; retrying", self.name)
                await asyncio.sleep(self.poll_s * 4)

    async def _idle(self) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), self.poll_s)
        except TimeoutError:
            pass
        self._wake.clear()

    async def step(self) -> bool:
        """One claim and send; False when there was nothing to do now."""
        delivery_metrics.CIRCUIT_OPEN.labels(destination=self.name).set(0 if self.breaker.state == "closed" else 1)
        if not self.breaker.allow():
            await self.expire()
            return False
        probing = self.breaker.state != "closed"
        row = await self.queue.claim(self.name, self.lease_s, dead_too=probing)
        if row is None:
            if probing:
                self.breaker.release()
            await self.expire()
            return False
        await self.process(row)
        return True

    async def process(self, row: QueuedDelivery) -> None:
        try:
            item = await self.resolve(row)
            result = await self.core.deliver_to(self.name, item, attempts=1)
        except PermanentError as exc:  # e.g. no identity mapping: no destination could take it
            await self._dead(row, "invalid", exc.reason)
            return
        if result.outcome in ("delivered", "skipped", "refused"):
            if self.breaker.success():  # it was open: the destination is back, catch up
                back = await self.queue.requeue_dead(self.name)
                delivery_metrics.CAUGHT_UP.labels(destination=self.name).inc(back)
                log.info("delivery lane %s: the destination answers again; %d dead-lettered versions queued again", self.name, back)
            if result.outcome == "refused":
                await self._dead(row, "refused", result.detail)
            else:
                await self.queue.done(row)
            return
        if self.breaker.failure():
            log.warning("delivery lane %s: circuit open after %d failed sends", self.name, self.policy.breaker_failures)
        if row.status == "queued" and self._age_s(row) > self.policy.dead_letter_after_s:  # a dead row's probe: lettered already
            await self._dead(row, reason_of(result), result.detail)
        else:
            await self.queue.retry_later(row, self._backoff_s(row.attempts), result.detail)

    async def expire(self) -> None:
        """Dead-letter what waited past the budget while nothing could be sent."""
        for row in await self.queue.expired(self.name, self.policy.dead_letter_after_s):
            await self._dead(row, "circuit_open" if self.breaker.state != "closed" else "unavailable", row.last_error or "no answer")

    async def _dead(self, row: QueuedDelivery, reason_class: ReasonClass, detail: str) -> None:
        # The letter first, then the row: a crash between them re-sends a letter, never loses one.
        await self.dead_letters(dead_letter_for(row, reason_class, detail))
        await self.queue.dead(row, reason_class, detail)
        delivery_metrics.DEAD_LETTERED.labels(destination=self.name, reason=reason_class).inc()
        metrics.DEAD_LETTERS.labels(stage=STAGE, error_type=_ERROR_TYPES.get(reason_class, "dependency")).inc()
        log.warning("delivery lane %s dead-lettered a report version (%s)", self.name, reason_class)

    def _age_s(self, row: QueuedDelivery) -> float:
        return (datetime.now(UTC) - row.enqueued_at).total_seconds() if row.enqueued_at else 0.0

    def _backoff_s(self, attempts: int) -> float:
        """Full-jitter exponential backoff between claims, capped by the destination's policy."""
        return random.uniform(0, min(self.retry.max_delay_s, self.retry.base_delay_s * 2 ** min(attempts, 16)))
