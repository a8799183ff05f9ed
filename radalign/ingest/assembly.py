"""Study assembly: instances arrive one by one (C-STORE, STOW-RS, HTTP); the pipeline wants studies.

A study (all instances with one `study_key`) is published once no instance of it has arrived
for `quiet_s` seconds. An instance that arrives after its study was published re-opens it: the
study is published again as `study_version + 1` with every instance known so far (earlier ones
included, so the preprocess stage can pick the best view among all of them). An instance sent
again unchanged (same `instance_key`) does not re-open anything: senders retry.

Published versions are remembered in memory (bounded) and in the pseudonym store, so a gateway
restart still numbers a late instance's study after the versions already published; in that
case the new version carries only the instances received since the restart.
A publish that fails leaves the study pending; it is retried on the next tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from radalign.ingest.refusal import Refusal, RefusalReason
from schemas.events import Instance, Priority, StudyReceived, StudyRef

log = logging.getLogger(__name__)

Source = Literal["dicom-cstore", "dicomweb-stow", "http"]
MAX_INSTANCES = 64  # StudyReceived.instances max_length


@dataclass(frozen=True)
class ReceivedInstance:
    study_key: str
    patient_key: str
    instance: Instance
    modality: Literal["CR", "DX", "OT"]
    source: Source
    stat: bool = False


@dataclass
class _Pending:
    patient_key: str
    source: Source
    instances: dict[str, Instance] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=list)
    stat: bool = False
    last_seen: float = 0.0
    version: int | None = None  # known when re-opened from memory


@dataclass
class _Published:
    version: int
    instances: dict[str, Instance]


class StudyAssembler:
    def __init__(
        self,
        quiet_s: float,
        publish: Callable[[StudyReceived], Awaitable[None]],
        *,
        pipeline_version: str,
        published_version: Callable[[str], Awaitable[int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        remember: int = 50_000,
    ) -> None:
        self.quiet_s = quiet_s
        self._publish = publish
        self._published_version = published_version
        self._clock = clock
        self._pipeline_version = pipeline_version
        self._remember = remember
        self._pending: dict[str, _Pending] = {}
        self._published: OrderedDict[str, _Published] = OrderedDict()
        self._lock = asyncio.Lock()

    @property
    def pending_studies(self) -> int:
        return len(self._pending)

    def add(self, item: ReceivedInstance) -> bool:
        """Queue an instance. False when it is a resend of an instance already published or queued."""
        key = item.instance.instance_key
        pending = self._pending.get(item.study_key)
        published = self._published.get(item.study_key)
        if pending is None:
            if published is not None and key in published.instances:
                return False
            pending = _Pending(patient_key=item.patient_key, source=item.source)
            if published is not None:
                pending.instances.update(published.instances)
                pending.version = published.version + 1
            self._pending[item.study_key] = pending
        elif key in pending.instances:
            pending.last_seen = self._clock()
            return False
        if len(pending.instances) >= MAX_INSTANCES:
            raise Refusal(RefusalReason.TOO_LARGE, f"a study holds at most {MAX_INSTANCES} instances")
        pending.instances[key] = item.instance
        pending.modalities.append(item.modality)
        pending.stat = pending.stat or item.stat
        pending.last_seen = self._clock()
        return True

    def _build(self, study_key: str, pending: _Pending, version: int) -> StudyReceived:
        modality = next((m for m in pending.modalities if m != "OT"), "OT")
        return StudyReceived(
            study=StudyRef(
                study_key=study_key,
                patient_key=pending.patient_key,
                priority=Priority.STAT if pending.stat else Priority.ROUTINE,
                received_at=datetime.now(UTC),
                pipeline_version=self._pipeline_version,
            ),
            modality=modality,
            source=pending.source,
            instances=list(pending.instances.values()),
            study_version=version,
        )

    async def flush(self, *, force: bool = False) -> list[StudyReceived]:
        """Publish every study quiet for `quiet_s` (every pending study when `force`)."""
        async with self._lock:
            now = self._clock()
            due = [k for k, p in self._pending.items() if force or now - p.last_seen >= self.quiet_s]
            sent: list[StudyReceived] = []
            for study_key in due:
                pending = self._pending[study_key]
                version = pending.version
                if version is None:
                    previous = await self._published_version(study_key) if self._published_version else 0
                    version = previous + 1
                event = self._build(study_key, pending, version)
                try:
                    await self._publish(event)
                except Exception:
                    log.exception("publishing study %s v%d failed; kept pending", study_key, version)
                    continue
                sent_instances = {i.instance_key: i for i in event.instances}
                if len(pending.instances) > len(sent_instances):
                    # Instances arrived while the publish was in flight: they make the next version.
                    pending.version = version + 1
                else:
                    del self._pending[study_key]
                self._published[study_key] = _Published(version, sent_instances)
                self._published.move_to_end(study_key)
                while len(self._published) > self._remember:
                    self._published.popitem(last=False)
                sent.append(event)
            return sent

    async def run(self, stop: asyncio.Event, tick_s: float | None = None) -> None:
        """Flush quiet studies until `stop` is set, then flush what is left."""
        tick = tick_s if tick_s is not None else max(0.05, min(0.5, self.quiet_s / 4))
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=tick)
            except TimeoutError:
                pass
            await self.flush()
        await self.flush(force=True)
