"""The stage runner without Kafka: outputs, timings, headers and dead letters."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from radalign.config import Settings
from radalign.framework import codec
from radalign.framework.retry import DependencyUnavailable, PermanentError, call_with_retry
from radalign.framework.stage import Output, Record, Stage, StageRunner
from schemas.events import DeadLetter, Priority, StageTiming, StudyPreprocessed, StudyReceived
from schemas.examples import EXAMPLES
from schemas.topics import STUDY_PREPROCESSED


class EchoStage(Stage):
    name = "preprocess"  # its input (STUDY_RECEIVED) comes from the stage graph

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.seen: list[StudyReceived] = []
        self.sub_timings: list[StageTiming] = []

    async def handle(self, event):
        self.seen.append(event)
        if self.fail:
            raise self.fail
        inst = event.instances[0]
        out = StudyPreprocessed(
            study=event.study, instance_key=inst.instance_key, view_position=inst.view_position, model_input=inst.blob,
            input_shape=[1, 224, 224], original_rows=10, original_columns=10, preprocess_version="t",
            timings=self.sub_timings,
        )
        return [Output(STUDY_PREPROCESSED, out)]


def _record(payload: dict | bytes, topic: str = "radalign.study.received.v1") -> Record:
    value = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    tp = codec.new_traceparent()
    return Record(topic, 2, 17, b"st-5f0c2a9e41b7d3c8", value, [("traceparent", tp.encode())])


def _payload(priority: str = "routine") -> dict:
    p = json.loads(json.dumps(EXAMPLES["study_received"][0]))
    p["study"]["priority"] = priority
    return p


async def test_valid_record_gives_output_with_timing_and_trace():
    runner = StageRunner(EchoStage(), Settings())
    rec = _record(_payload())
    [out] = await runner.process(rec)
    assert out.topic == "radalign.study.preprocessed.v1"
    assert out.key == b"st-5f0c2a9e41b7d3c8"
    event = codec.decode(StudyPreprocessed, out.value)
    assert [t.stage for t in event.timings] == ["preprocess"]
    assert event.timings[0].duration_ms >= 0
    parent = codec.header(rec.headers, "traceparent").split("-")[1]
    assert codec.header(out.headers, "traceparent").split("-")[1] == parent, "trace id propagates"
    assert codec.header(out.headers, "ce_type") == StudyPreprocessed.event_type
    # Deterministic id: a redelivery produces the same ce_id, so consumers can de-duplicate.
    [again] = await runner.process(rec)
    assert codec.header(again.headers, "ce_id") == codec.header(out.headers, "ce_id")


async def test_sub_stage_timings_reach_the_output_before_the_stage_timing():
    stage = EchoStage()
    now = datetime.now(UTC)
    stage.sub_timings = [StageTiming(stage="decode", started_at=now, duration_ms=3.0),
                         StageTiming(stage="preprocess.resize", started_at=now, duration_ms=1.0),
                         StageTiming(stage="preprocess", started_at=now, duration_ms=9.0)]
    [out] = await StageRunner(stage, Settings()).process(_record(_payload()))
    event = codec.decode(StudyPreprocessed, out.value)
    # Parts are named under the stage; the stage's own figure is the runner's, once.
    assert [t.stage for t in event.timings] == ["preprocess.decode", "preprocess.resize", "preprocess"]
    assert event.timings[-1].started_at > now


def test_stage_input_comes_from_the_graph():
    assert EchoStage().input.name == "radalign.study.received.v1"


async def test_stat_study_goes_to_stat_lane():
    [out] = await StageRunner(EchoStage(), Settings()).process(_record(_payload("stat"), "radalign.study.received.v1.stat"))
    assert out.topic == "radalign.study.preprocessed.v1.stat"
    assert codec.decode(StudyPreprocessed, out.value).study.priority == Priority.STAT


@pytest.mark.parametrize(
    ("value", "failure", "error_type", "reason_part"),
    [
        (b"{not json", None, "validation", "does not match study_received"),
        (json.dumps({**_payload(), "modality": "CT"}).encode(), None, "validation", "modality"),
        (None, PermanentError("no pixel data", "decode"), "decode", "no pixel data"),
        (None, DependencyUnavailable("triton failed after retries"), "dependency", "triton failed"),
        (None, ZeroDivisionError("boom"), "processing", "ZeroDivisionError: boom"),
    ],
)
async def test_failures_become_dead_letters_naming_stage_and_reason(value, failure, error_type, reason_part):
    stage = EchoStage(fail=failure)
    rec = _record(value if value is not None else _payload())
    [out] = await StageRunner(stage, Settings()).process(rec)
    assert out.topic == "radalign.dlq.preprocess.v1"
    letter = codec.decode(DeadLetter, out.value)
    assert letter.stage == "preprocess"
    assert letter.error_type == error_type
    assert reason_part in letter.reason
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (rec.topic, 2, 17)
    assert base64.b64decode(letter.payload_b64) == rec.value, "the original record is kept for replay"


async def test_retry_is_bounded_and_permanent_errors_are_not_retried():
    settings = Settings(retry_attempts=3, retry_base_delay_s=0.001, retry_max_delay_s=0.002)
    calls = {"n": 0}

    async def flaky():
        calls["n"] += 1
        raise ConnectionError("down")

    with pytest.raises(DependencyUnavailable, match="triton failed after retries"):
        await call_with_retry("triton", flaky, settings, stage="concepts", timeout_s=1)
    assert calls["n"] == 3

    calls["n"] = 0

    async def bad():
        calls["n"] += 1
        raise PermanentError("bad input")

    with pytest.raises(PermanentError):
        await call_with_retry("triton", bad, settings, stage="concepts", timeout_s=1)
    assert calls["n"] == 1

    async def slow():
        import asyncio

        await asyncio.sleep(5)

    with pytest.raises(DependencyUnavailable, match="TimeoutError"):
        await call_with_retry("llm", slow, settings, stage="drafting", timeout_s=0.01, attempts=2)


class TwoInputStage(Stage):
    """Named "delivery": the graph gives it the drafted topic and the signed-report topic."""

    name = "delivery"

    def __init__(self) -> None:
        self.seen: list[object] = []

    async def handle(self, event):
        self.seen.append(event)
        return []


async def test_a_stage_with_two_inputs_decodes_each_record_by_its_topic():
    from schemas.events import ReportDrafted, ReportFinal

    stage = TwoInputStage()
    runner = StageRunner(stage, Settings())
    assert [s.name for s in stage.inputs] == ["radalign.report.drafted.v1", "radalign.report.final.v1"]
    for topic, contract in (("radalign.report.drafted.v1", ReportDrafted), ("radalign.report.final.v1", ReportFinal)):
        payload = json.dumps(EXAMPLES[contract.schema_name][0]).encode()
        assert await runner.process(Record(topic, 0, 1, b"k", payload, [])) == []
        assert isinstance(stage.seen[-1], contract)
    # A record of the wrong contract on a topic is a dead letter, not a crash.
    [letter] = await runner.process(Record("radalign.report.final.v1", 0, 2, b"k", json.dumps(EXAMPLES["report_drafted"][0]).encode(), []))
    assert letter.topic == "radalign.dlq.delivery.v1"


class MiswiredStage(EchoStage):
    """Writes a topic the graph does not give preprocess: the runner must not publish it."""

    async def handle(self, event):
        from schemas.topics import CONCEPTS_INFERRED

        [out] = await super().handle(event)
        return [out, Output(CONCEPTS_INFERRED, out.event)]


async def test_an_output_the_graph_does_not_declare_is_refused():
    [letter] = await StageRunner(MiswiredStage(), Settings()).process(_record(_payload()))
    assert letter.topic == "radalign.dlq.preprocess.v1", "an undeclared output must not be published"
    parked = codec.decode(DeadLetter, letter.value)
    assert parked.error_type == "processing"
    assert "radalign.study.concepts.v1" in parked.reason and "does not declare" in parked.reason
