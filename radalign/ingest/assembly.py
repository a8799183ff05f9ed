"""Study assembly: instances arrive one by one (C-STORE, STOW-RS, HTTP); the pipeline wants studies.

A study (all instances with one `study_key`) is published once no new instance of it has arrived
for `quiet_s` seconds. An instance that arrives after its study was published re-opens it: the
study is published again as `study_version + 1` with every instance known so far (earlier ones
included, so the preprocess stage can pick the best view among all of them). An instance sent
again unchanged (same `instance_key`) does not re-open anything: senders retry.

State lives in an `Outbox` (`radalign.ingest.outbox`; PostgreSQL in production), written before
the sender is acknowledged. The assembler only reads it: it survives its own restarts, a database
outage (the loop backs off and resumes) and a broker outage (a failed publish leaves the study
pending, retried with a per-study backoff). Running it under `run` is the supervision: no
exception ends the loop; `alive` tells the liveness probe whether the loop still turns. The same
loop applies the outbox retention (`retention_s`): every `PRUNE_EVERY_S` it deletes the studies
published and quiet for longer (see `Outbox.prune`), so the outbox does not grow forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal, cast

from radalign.framework.retry import Backoff
from radalign.ingest import metrics
from radalign.ingest.outbox import MAX_INSTANCES, DueStudy, InMemoryOutbox, Outbox, OutboxItem
from schemas.events import Priority, StudyReceived, StudyRef

log = logging.getLogger(__name__)

Source = Literal["dicom-cstore", "dicomweb-stow", "http"]
#: One accepted instance on its way into the outbox (kept under its historical name).
ReceivedInstance = OutboxItem

__all__ = ["MAX_INSTANCES", "ReceivedInstance", "Source", "StudyAssembler"]

#: Backoff of the assembler loop after a failed tick (database down): doubling up to the cap.
#: Between failed ticks (database or broker down).
TICK_BACKOFF = Backoff(start_s=0.5, max_s=15.0)
#: Outbox retention: how often the loop prunes, and how much one pass deletes at most (a larger
#: backlog continues at the next tick, so publishing never waits long behind it).
PRUNE_EVERY_S = 3600.0
PRUNE_BATCH = 1000
PRUNE_MAX_BATCHES = 10


class StudyAssembler:
    def __init__(
        self,
        quiet_s: float,
        publish: Callable[[StudyReceived], Awaitable[None]],
        *,
        pipeline_version: str,
        outbox: Outbox | None = None,
        clock: Callable[[], float] = time.monotonic,
        stall_s: float = 60.0,
        retention_s: float = 0.0,
    ) -> None:
        self.quiet_s = quiet_s
        self._publish = publish
        self._pipeline_version = pipeline_version
        self.outbox: Outbox = outbox if outbox is not None else InMemoryOutbox(clock)
        self._lock = asyncio.Lock()
        self._stall_s = stall_s
        self._task: asyncio.Task | None = None
        self._heartbeat = time.monotonic()
        self.failing_since: float | None = None  # monotonic time of the first failed tick in a row
        self.last_error = ""
        self.retention_s = retention_s  # 0: the outbox keeps everything
        self._next_prune = 0.0  # monotonic time of the next prune; the first tick prunes

    async def add(self, item: ReceivedInstance) -> bool:
        """Store an instance durably. False when it is a resend of an instance already known.
        Raises `Refusal` (too many instances) or the outbox's error (database down)."""
        return await self.outbox.add(item)

    async def pending_studies(self) -> int:
        return await self.outbox.pending_count()

    def _build(self, due: DueStudy, version: int) -> StudyReceived:
        # The outbox stores plain strings; StudyReceived validates the literals at runtime.
        modality = cast(Literal["CR", "DX", "OT"], next((m for m in due.modalities if m in ("CR", "DX")), "OT"))
        return StudyReceived(
            study=StudyRef(
                study_key=due.study_key,
                patient_key=due.patient_key,
                priority=Priority.STAT if due.stat else Priority.ROUTINE,
                received_at=datetime.now(UTC),
                pipeline_version=self._pipeline_version,
                version=version,
            ),
            modality=modality,
            source=cast(Source, due.source),
            instances=due.instances[:MAX_INSTANCES],
            study_version=version,
            site=due.site,
        )

    async def flush(self, *, force: bool = False) -> list[StudyReceived]:
        """Publish every study quiet for `quiet_s` (every pending study when `force`).

        A failed publish leaves the study pending (retried after a backoff); an outbox error
        (database down) propagates to the caller."""
        async with self._lock:
            sent: list[StudyReceived] = []
            for due in await self.outbox.due(self.quiet_s, force=force):
                # A study re-queued with nothing new (its events were lost with a broker) is
                # republished as the same version; new instances make the next version.
                version = due.published_version + 1 if due.pending_keys or not due.published_version else due.published_version
                event = self._build(due, version)
                try:
                    await self._publish(event)
                except Exception as exc:  # noqa: BLE001 - broker down: keep it pending, retry later
                    log.warning("publishing study %s v%d failed (%s); kept pending", due.study_key, version, type(exc).__name__)
                    await self.outbox.release(due.study_key, f"{type(exc).__name__}: {exc}"[:300], retry_in_s=max(1.0, self.quiet_s))
                    continue
                # Published: a failure from here on re-publishes the same version (same event id),
                # which consumers de-duplicate.
                await self.outbox.mark_published(due.study_key, version, due.pending_keys)
                sent.append(event)
            return sent

    async def prune(self) -> int:
        """Delete the outbox studies published and quiet for longer than `retention_s`; returns how many.
        Pending studies are kept whatever their age. Counted in `radalign_gateway_outbox_pruned_total`."""
        if self.retention_s <= 0:
            return 0
        pruned = await self.outbox.prune(self.retention_s, batch=PRUNE_BATCH, max_batches=PRUNE_MAX_BATCHES)
        if pruned:
            metrics.OUTBOX_PRUNED.inc(pruned)
            log.info("outbox retention: pruned %d published studies", pruned)
        return pruned

    async def _prune_if_due(self) -> None:
        now = time.monotonic()
        if self.retention_s <= 0 or now < self._next_prune:
            return
        try:
            pruned = await self.prune()
        except Exception as exc:  # noqa: BLE001 - retention is housekeeping: never stop publishing for it
            log.warning("outbox retention failed (%s); retrying later", type(exc).__name__)
            self._next_prune = now + min(PRUNE_EVERY_S, 60.0)
            return
        # A full pass means more is left: continue at the next tick.
        self._next_prune = now if pruned >= PRUNE_BATCH * PRUNE_MAX_BATCHES else now + PRUNE_EVERY_S

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def alive(self) -> bool:
        """The loop runs and has turned recently (liveness); False before `run` or after it ended."""
        if self._task is None or self._task.done():
            return False
        return time.monotonic() - self._heartbeat < self._stall_s

    async def run(self, stop: asyncio.Event, tick_s: float | None = None) -> None:
        """Flush quiet studies until `stop` is set, then try once to flush what is left.

        No error ends the loop: a failed tick (database or broker down) is logged once per
        outage and retried with exponential backoff; studies accepted meanwhile are in the outbox.
        """
        self._task = asyncio.current_task()
        tick = tick_s if tick_s is not None else max(0.05, min(0.5, self.quiet_s / 4))
        delay = tick
        while not stop.is_set():
            self._heartbeat = time.monotonic()
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            if stop.is_set():
                break
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - supervision: the loop outlives every outage
                error = f"{type(exc).__name__}: {exc}"[:300]
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    log.error("study assembler tick failed (%s); retrying with backoff", error)
                self.last_error = error
                delay = TICK_BACKOFF.after_failure(delay)
                continue
            if self.failing_since is not None:
                log.warning("study assembler recovered after %.1f s", time.monotonic() - self.failing_since)
                self.failing_since, self.last_error = None, ""
            delay = tick
            await self._prune_if_due()
        self._heartbeat = time.monotonic()
        try:
            # A durable outbox keeps what is still inside its quiet window for the next start (or
        # another replica): forcing it out now would split a study that is still arriving.
            await asyncio.wait_for(self.flush(force=not getattr(self.outbox, "durable", False)), timeout=10)
        except Exception as exc:  # noqa: BLE001 - shutting down: what is not flushed stays in the outbox
            log.warning("final flush failed (%s); pending studies stay in the outbox", type(exc).__name__)
