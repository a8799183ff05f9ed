"""The stage contract and its Kafka-free runner.

A stage is a small class: `handle(event) -> [Output]` over one validated input contract. The runner
does what every stage needs, identically: validate the record against its contract, time the
stage, append the stage's timing to the outputs, encode them with deterministic event ids and
trace headers, and turn every failure into a dead-letter record that names the stage and the
reason. It never raises for bad data, so one poison record cannot stop a partition. The Faust
adapter (`radalign.framework.faust_app`) only moves records between Kafka and this runner.
"""

from __future__ import annotations

import base64
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from radalign.config import Settings
from radalign.framework import codec, metrics
from radalign.framework.auth import parse_tokens
from radalign.framework.http import auth_middleware
from radalign.framework.producer import record_key, topic_for
from radalign.framework.retry import DependencyUnavailable, PermanentError
from radalign.pipeline import stage_spec
from schemas.events import Contract, DeadLetter, StageTiming
from schemas.topics import TopicSpec, dead_letter_topic

log = logging.getLogger("radalign.stage")


@dataclass(frozen=True)
class Output:
    spec: TopicSpec
    event: Contract


@dataclass(frozen=True)
class Record:
    """A consumed record, as any Kafka client hands it over."""

    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    headers: codec.Headers


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: codec.Headers


@dataclass(frozen=True)
class BackgroundTask:
    """Work a stage repeats beside its consumer (the review service's outbox and queue gauges):
    the runner calls `run` every `every_s` seconds once setup is done, logging a failure and trying
    again next round, until the worker stops."""

    name: str
    run: Callable[[], Awaitable[object]]
    every_s: float = 5.0


#: The input contract a stage handles.
InT = TypeVar("InT", bound=Contract)


class Stage(ABC, Generic[InT]):
    """One pipeline stage. Subclasses set `name` (an entry of `radalign.pipeline.GRAPH`, which
    declares what it reads) and implement `handle`."""

    name: str

    @property
    def input(self) -> TopicSpec:
        spec = stage_spec(self.name).input
        if spec is None:
            raise TypeError(f"stage {self.name} consumes no topic")
        return spec

    @property
    def inputs(self) -> tuple[TopicSpec, ...]:
        """Every topic the stage consumes (the graph's input and extra inputs)."""
        return stage_spec(self.name).inputs or (self.input,)

    def input_for(self, topic: str) -> TopicSpec:
        """The input whose routine or STAT topic `topic` is (its contract decodes the record)."""
        return next((spec for spec in self.inputs if topic in spec.names), self.input)
    #: Records processed at once per lane (concept inference raises it so that Triton can batch).
    concurrency: int = 1

    async def setup(self, settings: Settings) -> None:
        """Open clients and pools (called once per worker before consuming)."""

    async def close(self) -> None:
        """Release what setup opened."""

    async def ready(self) -> tuple[bool, str]:
        """Are this stage's dependencies reachable? (readiness probe)"""
        return True, "ok"

    def routes(self) -> list[Any]:
        """Extra aiohttp routes served beside /metrics and /health (drafting's read API, the
        review app's pages)."""
        return []

    def middlewares(self, settings: Settings) -> list[Any]:
        """aiohttp middlewares in front of every route: by default the read API's bearer tokens
        (the probes and metrics stay open). The review app adds its sign-in session."""
        return [auth_middleware(parse_tokens(settings.read_api_tokens))]

    def background_tasks(self) -> list[BackgroundTask]:
        """Periodic work the runner runs beside the consumer (none by default)."""
        return []

    async def before_scrape(self) -> None:
        """Refresh gauges computed on demand, just before /metrics renders."""

    @abstractmethod
    async def handle(self, event: InT) -> list[Output]:
        """Process one valid input event. Raise PermanentError for bad input."""


class StageRunner:
    def __init__(self, stage: Stage[Any], settings: Settings) -> None:
        self.stage = stage
        self.settings = settings
        self.dead_letter_spec = dead_letter_topic(stage.name)

    async def process(self, record: Record) -> list[OutgoingRecord]:
        started = time.perf_counter()
        started_at = datetime.now(UTC)
        lane = TopicSpec.lane_of(record.topic).value
        metrics.IN_FLIGHT.labels(stage=self.stage.name).inc()
        try:
            try:
                event = codec.decode(self.stage.input_for(record.topic).contract, record.value)
            except codec.ContractViolation as exc:
                return [self._dead_letter(record, str(exc), "validation")]
            try:
                outputs = await self.stage.handle(event)
            except PermanentError as exc:
                return [self._dead_letter(record, exc.reason, exc.error_type)]
            except DependencyUnavailable as exc:
                return [self._dead_letter(record, str(exc), "dependency", attempts=self.settings.retry_attempts)]
            except Exception as exc:  # a bug or unforeseen input: park it, keep the partition flowing
                log.exception("stage %s failed on a record", self.stage.name)
                return [self._dead_letter(record, f"{type(exc).__name__}: {exc}", "processing")]
            if (undeclared := self._undeclared(outputs)) is not None:
                return [self._dead_letter(record, undeclared, "processing")]
            elapsed = time.perf_counter() - started
            timing = StageTiming(stage=self.stage.name, started_at=started_at, duration_ms=round(elapsed * 1000, 3))
            parent = codec.header(record.headers, "traceparent")
            outgoing = [self._encode(out, event, timing, parent) for out in outputs]
            metrics.STAGE_LATENCY.labels(stage=self.stage.name).observe(elapsed)
            received_at = getattr(getattr(event, "study", None), "received_at", None)
            if received_at is not None:
                metrics.END_TO_END.labels(stage=self.stage.name, lane=lane).observe(
                    max(0.0, (datetime.now(UTC) - received_at).total_seconds())
                )
            metrics.EVENTS.labels(stage=self.stage.name, lane=lane, outcome="ok").inc()
            return outgoing
        finally:
            metrics.IN_FLIGHT.labels(stage=self.stage.name).dec()

    def _undeclared(self, outputs: list[Output]) -> str | None:
        """Why the outputs break the graph, or None: a stage writes only the topics its
        `radalign.pipeline.GRAPH` entry declares (a wrong wire is refused, never published)."""
        declared = {spec.name for spec in stage_spec(self.stage.name).outputs}
        wrong = sorted({out.spec.name for out in outputs} - declared)
        if not wrong:
            return None
        log.error("stage %s wrote undeclared topics %s", self.stage.name, wrong)
        return (f"stage {self.stage.name} wrote {', '.join(wrong)}, which its radalign.pipeline.GRAPH entry does not declare "
                f"(declared outputs: {', '.join(sorted(declared)) or 'none'})")

    def _encode(self, out: Output, source: Contract, timing: StageTiming, parent: str | None) -> OutgoingRecord:
        event = out.event
        if "timings" in type(event).model_fields:
            event = event.model_copy(update={"timings": self._timings(source, event, timing)})
        study = event.study  # type: ignore[attr-defined]  # every stage output carries its StudyRef; the Contract base (shared with DeadLetter) does not
        # per study version: a re-opened study's new outputs (its next draft) get new CloudEvents ids
        version: int = getattr(source, "study_version", 0) or getattr(getattr(source, "study", None), "version", 1)
        ev_id = codec.event_id(self.stage.name, study.study_key, study.pipeline_version, version)
        headers = codec.build_headers(event, stage=self.stage.name, ev_id=ev_id, traceparent=codec.child_traceparent(parent))
        return OutgoingRecord(topic_for(out.spec, event), record_key(event), codec.encode(event), headers)

    def _timings(self, source: Contract, event: Contract, timing: StageTiming) -> list[StageTiming]:
        """The input's timings, then the sub-stage timings the stage measured (named
        `<stage>.<part>`), then the runner's own timing of the whole stage, which is the one
        figure per stage that dashboards and the demo add up."""
        previous = list(getattr(source, "timings", []) or [])
        prefix = f"{self.stage.name}."
        parts = [
            t if t.stage.startswith(prefix) else t.model_copy(update={"stage": prefix + t.stage})
            for t in list(getattr(event, "timings", []) or [])[len(previous):]
            if t.stage != self.stage.name
        ]
        return [*previous, *parts, timing]

    def _dead_letter(self, record: Record, reason: str, error_type: str, attempts: int = 1) -> OutgoingRecord:
        metrics.DEAD_LETTERS.labels(stage=self.stage.name, error_type=error_type).inc()
        lane = TopicSpec.lane_of(record.topic).value
        metrics.EVENTS.labels(stage=self.stage.name, lane=lane, outcome="dead_letter").inc()
        key = record.key.decode("utf-8", "replace") if record.key else None
        log.warning("stage %s dead-lettered a record (%s): %s", self.stage.name, error_type, reason[:300])
        letter = DeadLetter(
            stage=self.stage.name,
            reason=reason[:4000],
            error_type=error_type,  # type: ignore[arg-type]  # a Literal; every caller passes one of its values
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            key=key,
            attempts=attempts,
            failed_at=datetime.now(UTC),
            payload_b64=base64.b64encode((record.value or b"")[:1_000_000]).decode(),
        )
        ev_id = f"dl-{self.stage.name}-{record.topic}-{record.partition}-{record.offset}"
        headers = codec.build_headers(letter, stage=self.stage.name, ev_id=ev_id, traceparent=codec.header(record.headers, "traceparent"))
        return OutgoingRecord(self.dead_letter_spec.name, record.key, codec.encode(letter), headers)
