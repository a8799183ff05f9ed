"""The whole pipeline on the real embedded stack: tansu, PostgreSQL + pgvector, Triton, five workers.

Studies enter through the gateway's HTTP API, as a client would send them, and are followed to
the report topic, the reports store and the read API.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from radalign.config import Settings
from radalign.framework import codec
from radalign.pipeline import STAGES
from radalign.samples import chest_jpeg_files
from radalign.testing.stack import running_workers
from schemas.events import DeadLetter, Priority, ReportDrafted, StudyPreprocessed
from schemas.topics import CONCEPTS_INFERRED, REPORT_DRAFTED, STUDY_PREPROCESSED, STUDY_RECEIVED, dead_letter_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CASES_FOR_TESTS = 400  # enough IU reports for retrieval to find label-agreeing cases, quick to embed
REPORT_TIMEOUT_S = 240.0


def _worker_alive(settings: Settings, stage: str) -> psutil.Process | None:
    from radalign.stack import running
    from radalign.stack.workers import worker_name

    return running(worker_name(stage), settings)


@pytest.fixture(scope="module")
def pipeline(embedded_triton: Settings) -> Iterator[Settings]:
    from radalign.demo import ensure_iu_cases

    settings = embedded_triton
    total = asyncio.run(ensure_iu_cases(settings, limit=CASES_FOR_TESTS))
    assert total >= CASES_FOR_TESTS * 0.9
    with running_workers(settings):
        yield settings


def post_image(settings: Settings, path: Path, study_id: str, priority: str = "routine") -> str:
    r = httpx.post(
        f"http://127.0.0.1:{settings.gateway_port}/v1/studies",
        data={"study_id": study_id, "patient_id": f"PAT-{study_id}", "view_position": "AP", "priority": priority},
        files={"file": (path.name, path.read_bytes(), "image/jpeg")},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    return r.json()["study_key"]


async def read_until(
    settings: Settings, topics: list[str], done: Callable[[dict[str, list]], bool], timeout_s: float = REPORT_TIMEOUT_S
) -> dict[str, list]:
    """Read the topics from the beginning until `done(records by topic)` or the timeout."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=settings.kafka_bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    seen: dict[str, list] = defaultdict(list)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(seen):
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                seen[tp.topic].extend(messages)
    finally:
        await consumer.stop()
    return seen


def reports_by_key(seen: dict[str, list]) -> dict[str, list[ReportDrafted]]:
    out: dict[str, list[ReportDrafted]] = defaultdict(list)
    for msg in seen.get(REPORT_DRAFTED.name, []):
        report = codec.decode(ReportDrafted, msg.value)
        out[report.study.study_key].append(report)
    return out


def test_one_study_flows_from_gateway_to_report(pipeline: Settings) -> None:
    settings = pipeline
    key = post_image(settings, chest_jpeg_files()[1], "IT-FLOW-1")
    seen = asyncio.run(read_until(settings, [REPORT_DRAFTED.name], lambda s: key in reports_by_key(s)))
    [report] = reports_by_key(seen)[key][:1]
    # One figure per stage, owned by the runner, with the sub-stage timings the stages measured.
    assert [t.stage for t in report.timings if "." not in t.stage] == ["preprocess", "concepts", "retrieval", "drafting"]
    assert {"preprocess.decode", "preprocess.select+fetch", "preprocess.resize+store"} <= {t.stage for t in report.timings}
    # Only the observations the shipped model learnt are reported (the rest are "not assessed").
    assert 1 <= len(report.concepts) <= 14
    assert len({c.observation for c in report.concepts}) == len(report.concepts)
    assert report.findings.strip() and report.impression.strip()
    # The structured draft: nothing claimed about what the model did not assess (the footer lists it).
    from radalign.labeler import label_sections
    from schemas.events import Certainty, Observation

    assert set(report.not_assessed) == set(Observation) - {c.observation for c in report.concepts}
    assert (report.sections or report.ood) and report.phrase_table_version == "phrases-v1"
    read = label_sections(report.findings, report.impression)
    assert not [o for o in report.not_assessed if o is not Observation.NO_FINDING and read.get(o) in (Certainty.PRESENT, Certainty.UNCERTAIN)]
    assert report.case_keys, "retrieval grounded the draft in historical cases"
    assert report.model_name == "concept_model" and report.model_version not in ("", "unknown")
    assert "IT-FLOW-1" not in report.model_dump_json(), "no identifier in the report event"

    # The reports store and the read API have it, in JSON and as FHIR.
    base = f"http://127.0.0.1:{settings.web_port('drafting')}/v1/studies/{key}/report"
    as_json = httpx.get(base, timeout=10)
    assert as_json.status_code == 200 and as_json.json()["report_id"] == report.report_id
    fhir = httpx.get(base, params={"format": "fhir"}, timeout=30)
    assert fhir.status_code == 200, fhir.text
    assert fhir.json()["resourceType"] == "DiagnosticReport" and fhir.json()["status"] == "preliminary"
    assert httpx.get(base.replace(key, "st-0000000000000000"), timeout=10).status_code == 404

    # Every stage counted it in its metrics.
    for stage in ("preprocess", "concepts", "retrieval", "drafting"):
        body = httpx.get(f"http://127.0.0.1:{settings.web_port(stage)}/metrics", timeout=10).text
        assert f'radalign_events_total{{lane="routine",outcome="ok",stage="{stage}"}}' in body


def test_malformed_event_is_dead_lettered_and_the_rest_keeps_flowing(pipeline: Settings) -> None:
    settings = pipeline

    async def produce_garbage() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(STUDY_RECEIVED.name, b'{"study": "not a study"}', key=b"st-garbage00000001")
        finally:
            await producer.stop()

    asyncio.run(produce_garbage())
    key = post_image(settings, chest_jpeg_files()[2], "IT-AFTER-GARBAGE")
    dlq = dead_letter_topic("preprocess").name

    def done(seen: dict[str, list]) -> bool:
        return key in reports_by_key(seen) and any(m.key == b"st-garbage00000001" for m in seen.get(dlq, []))

    seen = asyncio.run(read_until(settings, [REPORT_DRAFTED.name, dlq], done))
    letters = [codec.decode(DeadLetter, m.value) for m in seen[dlq] if m.key == b"st-garbage00000001"]
    assert letters, "the malformed record reached the preprocess dead-letter topic"
    letter = letters[0]
    assert letter.stage == "preprocess" and letter.error_type == "validation"
    assert "study_received" in letter.reason and letter.source_topic == STUDY_RECEIVED.name
    assert key in reports_by_key(seen), "the valid study behind it still got its report"


def test_stat_study_travels_the_stat_lane(pipeline: Settings) -> None:
    settings = pipeline
    key = post_image(settings, chest_jpeg_files()[3], "IT-STAT-1", priority="stat")
    stat_topic = STUDY_PREPROCESSED.lane(Priority.STAT)
    seen = asyncio.run(
        read_until(settings, [stat_topic, REPORT_DRAFTED.name], lambda s: key in reports_by_key(s) and any(m.key == key.encode() for m in s.get(stat_topic, [])))
    )
    preprocessed = [codec.decode(StudyPreprocessed, m.value) for m in seen[stat_topic] if m.key == key.encode()]
    assert preprocessed and preprocessed[0].study.priority == Priority.STAT
    assert reports_by_key(seen)[key][0].study.priority == Priority.STAT


def test_worker_killed_mid_stream_resumes_without_losing_or_duplicating(pipeline: Settings) -> None:
    from radalign.stack.workers import start_workers

    settings = pipeline
    files = chest_jpeg_files()
    keys = [post_image(settings, files[i % len(files)], f"IT-RESTART-{i}") for i in range(10)]

    # Kill the concept stage hard (no graceful commit) once the batch is flowing through it, then restart it.
    victim = _worker_alive(settings, "concepts")
    assert victim is not None
    first = CONCEPTS_INFERRED.name
    asyncio.run(read_until(settings, [first], lambda s: any(m.key.decode() in keys for m in s.get(first, [])), timeout_s=120))
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    start_workers(settings, ["concepts"])

    seen = asyncio.run(read_until(settings, [REPORT_DRAFTED.name], lambda s: set(keys) <= set(reports_by_key(s)), timeout_s=360))
    reports = reports_by_key(seen)
    missing = set(keys) - set(reports)
    assert not missing, f"{len(missing)} studies lost"
    for key in keys:
        # At-least-once may redeliver, but a redelivery is the same report (same deterministic id).
        assert len({r.report_id for r in reports[key]}) == 1

    async def stored_rows() -> dict[str, int]:
        from radalign.db import open_pool

        pool = await open_pool(settings)
        try:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT study_key, count(*) FROM reports WHERE study_key = ANY(%s) GROUP BY study_key", (keys,))
                return {k: n for k, n in await cur.fetchall()}
        finally:
            await pool.close()

    rows = asyncio.run(stored_rows())
    assert rows == {k: 1 for k in keys}, "the reports store holds exactly one report per study"


def test_stage_health_and_metrics_endpoints(pipeline: Settings) -> None:
    for stage in STAGES:
        port = pipeline.web_port(stage)
        live = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5)
        assert live.status_code == 200, (stage, live.text)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert metrics.status_code == 200 and "# TYPE" in metrics.text
        assert "PAT-IT" not in metrics.text and "IT-FLOW" not in metrics.text, "no identifiers in metrics"
    ready = httpx.get(f"http://127.0.0.1:{pipeline.web_port('concepts')}/health/ready", timeout=5).json()
    assert ready["partitions"] and "triton" in ready["dependencies"]


def test_outage_dead_letters_then_replay_delivers_the_report(pipeline: Settings) -> None:
    """Triton down: the concept stage retries, then parks the study with the reason; once Triton
    is back, `radalign dlq replay` re-publishes it and the report arrives. Runs last: it restarts Triton."""
    from radalign.framework.deadletters import list_dead_letters, replay_dead_letters
    from radalign.stack import stop
    from radalign.stack.manager import up

    settings = pipeline
    dlq = dead_letter_topic("concepts").name
    stop("triton", settings)
    try:
        key = post_image(settings, chest_jpeg_files()[5], "IT-OUTAGE-1")
        seen = asyncio.run(read_until(settings, [dlq], lambda s: any(m.key == key.encode() for m in s.get(dlq, [])), timeout_s=180))
        letter = next(codec.decode(DeadLetter, m.value) for m in seen[dlq] if m.key == key.encode())
        assert letter.error_type == "dependency" and "triton" in letter.reason
        assert letter.attempts == settings.retry_attempts
    finally:
        up(settings, ["triton"])

    parked = asyncio.run(list_dead_letters(settings, "concepts"))
    assert any(p.letter.key == key for p in parked)
    replayed = asyncio.run(replay_dead_letters(settings, "concepts", {"dependency"})).replayed
    assert key in {r.letter.key for r in replayed}
    seen = asyncio.run(read_until(settings, [REPORT_DRAFTED.name], lambda s: key in reports_by_key(s), timeout_s=180))
    assert key in reports_by_key(seen), "the parked study was drafted after the replay"
    # A second replay finds nothing new: each dead letter is replayed once.
    assert asyncio.run(replay_dead_letters(settings, "concepts", {"dependency"})).replayed == []
