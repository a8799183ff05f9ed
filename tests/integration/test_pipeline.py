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
import pydicom
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from radalign.config import Settings
from radalign.framework import codec
from radalign.pipeline import STAGES
from radalign.samples import as_new_study, chest_jpeg_files
from radalign.testing.ingest import send_cstore
from radalign.testing.stack import IU_CASES_FOR_TESTS, running_workers, write_audit_profile
from schemas.events import DeadLetter, Priority, ReportDrafted, StudyPreprocessed
from schemas.topics import CONCEPTS_INFERRED, REPORT_DRAFTED, STUDY_PREPROCESSED, STUDY_RECEIVED, dead_letter_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPORT_TIMEOUT_S = 240.0


def _worker_alive(settings: Settings, stage: str) -> psutil.Process | None:
    from radalign.stack import running
    from radalign.stack.workers import worker_name

    return running(worker_name(stage), settings)


#: C-STORE sender whose studies belong to an audited site (RADALIGN_PATIENT_ISSUERS names the site).
SITE_AE, SITE = "IT-SITE", "IT-SITE-A"


def write_site_profile(settings: Settings) -> list[str]:
    """A site audit profile for SITE that assesses Edema (the shipped generic model, under its
    claim policy, assesses nothing), so the test can see a profile applied."""
    return write_audit_profile(settings, SITE, ("Edema",))


@pytest.fixture(scope="module")
def pipeline(embedded_triton: Settings) -> Iterator[Settings]:
    from radalign.kb.ingest import ensure_iu_cases

    settings = embedded_triton.model_copy(update={
        "patient_issuers": f"dicom-cstore:{SITE_AE}={SITE}",
        "concepts_site_profiles_dir": embedded_triton.state_dir / "site_profiles",
    })
    write_site_profile(settings)
    total = asyncio.run(ensure_iu_cases(settings, limit=IU_CASES_FOR_TESTS))
    assert total >= IU_CASES_FOR_TESTS * 0.9
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
    for msg in [m for name in REPORT_DRAFTED.names for m in seen.get(name, [])]:
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
    # Only what the served model's gate and claim policy allow is claimed (the rest are "not
    # assessed"); the shipped generic model earns no claim, so its draft says so.
    from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
    from radalign.drafting.phrases import load_phrase_table

    gate = load_checkpoint(DEFAULT_CHECKPOINT).gate
    assert gate is not None and {c.observation.value for c in report.concepts} <= set(gate.assessed)
    assert len({c.observation for c in report.concepts}) == len(report.concepts)
    if not report.concepts and report.ood is None:
        assert report.impression == load_phrase_table().impression["nothing_claimed"]
    assert report.findings.strip() and report.impression.strip()
    # The structured draft: nothing claimed about what the model did not assess (the footer lists it).
    from radalign.labeler import label_sections
    from schemas.events import Certainty, Observation

    assert set(report.not_assessed) == set(Observation) - {c.observation for c in report.concepts}
    assert (report.sections or report.ood or not report.concepts) and report.phrase_table_version == "phrases-v1.1"
    read = label_sections(report.findings, report.impression)
    assert not [o for o in report.not_assessed if o is not Observation.NO_FINDING and read.get(o) in (Certainty.PRESENT, Certainty.UNCERTAIN)]
    assert bool(report.case_keys) == bool(report.concepts), "retrieval grounds a draft in cases by what the model claimed, and only then"
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


def test_site_profile_and_header_check_from_cstore_to_report(pipeline: Settings) -> None:
    """Three C-STORE studies from the audited site's AE: a chest CR gets the site's profile; a real
    extremity CR (BodyPartExamined=EXTREMITY), and the chest film relabelled BodyPartExamined=KNEE
    (the header decides, not the pixels), get no assessment (`not_chest_radiograph`), no model
    call (empty embedding), and a draft that says so and needs review."""

    from radalign.samples import chest_cr_path
    from schemas.events import ConceptsInferred

    path, extremity_path = chest_cr_path("RG1_UNCI.dcm"), chest_cr_path("RG3_UNCI.dcm")  # pydicom-data's chest and extremity CRs
    if path is None or extremity_path is None:
        pytest.skip("pydicom-data is not installed")
    assessed = write_site_profile(pipeline)  # what the fixture wrote (the same file)

    def copy(source: Path = path, **changes: str) -> pydicom.Dataset:
        (ds,) = as_new_study([source])
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        return ds

    from radalign.pseudonymizer import Pseudonymizer

    keys = Pseudonymizer(pipeline.deid_secret)
    chest, knee, extremity = copy(BodyPartExamined="CHEST"), copy(BodyPartExamined="KNEE"), copy(extremity_path)
    assert extremity.BodyPartExamined == "EXTREMITY"
    chest_key, knee_key, extremity_key = (keys.study_key(ds.StudyInstanceUID) for ds in (chest, knee, extremity))
    statuses = [send_cstore(pipeline.dicom_port, ds, calling_ae=SITE_AE, called_ae=pipeline.dicom_ae_title) for ds in (chest, knee, extremity)]
    assert statuses == [0x0000] * 3
    topics = [*STUDY_PREPROCESSED.names, CONCEPTS_INFERRED.name, REPORT_DRAFTED.name]
    seen = asyncio.run(read_until(pipeline, topics, lambda s: {chest_key, knee_key, extremity_key} <= set(reports_by_key(s))))
    preprocessed = {
        e.study.study_key: e for e in (codec.decode(StudyPreprocessed, m.value) for t in STUDY_PREPROCESSED.names for m in seen.get(t, []))
    }
    concepts = {e.study.study_key: e for e in (codec.decode(ConceptsInferred, m.value) for m in seen.get(CONCEPTS_INFERRED.name, []))}
    reports = reports_by_key(seen)
    assert {preprocessed[k].site for k in (chest_key, knee_key, extremity_key)} == {SITE}
    assert [preprocessed[k].not_chest_radiograph for k in (chest_key, knee_key, extremity_key)] == [False, True, True]

    film = concepts[chest_key]
    assert film.site_profile == SITE
    if film.ood is None:  # the site's narrower gate was applied, not the shipped one
        assert {c.observation.value for c in film.concepts} == set(assessed)
    assert film.ood is None or film.ood.reason != "not_chest_radiograph"

    for key in (knee_key, extremity_key):
        abstained = concepts[key]
        assert abstained.ood is not None and abstained.ood.reason == "not_chest_radiograph"
        assert abstained.concepts == [] and len(abstained.not_assessed) == 14 and abstained.image_embedding == []
        [report] = reports[key][:1]
        assert report.ood is not None and report.ood.reason == "not_chest_radiograph"
        assert report.needs_review and report.concepts == [] and not report.case_keys
        assert "not recognised as a frontal chest radiograph" in report.findings


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
        read_until(settings, [stat_topic, *REPORT_DRAFTED.names], lambda s: key in reports_by_key(s) and any(m.key == key.encode() for m in s.get(stat_topic, [])))
    )
    preprocessed = [codec.decode(StudyPreprocessed, m.value) for m in seen[stat_topic] if m.key == key.encode()]
    assert preprocessed and preprocessed[0].study.priority == Priority.STAT
    assert reports_by_key(seen)[key][0].study.priority == Priority.STAT
    # the drafted report travels the STAT lane too: delivery reads it before the routine backlog
    assert any(m.key == key.encode() for m in seen.get(REPORT_DRAFTED.lane(Priority.STAT), []))


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


def _get_when(settings: Settings, stage: str, path: str, ok: Callable[[httpx.Response], bool], timeout_s: float = 60.0) -> httpx.Response:
    """GET a stage's route until `ok` holds, bounded: the test before this one kills and restarts a
    worker, and on a loaded 2-core machine a stage may still be coming up (nothing listening, its
    loop not yet ticking, its partitions not yet assigned after the rebalance). A stage that does
    not get there fails with the last answer, its process state and the end of its log."""
    from radalign.stack.process import StatePaths
    from radalign.stack.workers import worker_name

    url = f"http://127.0.0.1:{settings.web_port(stage)}{path}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            last = httpx.get(url, timeout=5)
            if ok(last):
                return last
            answer = f"HTTP {last.status_code}: {last.text[:300]}"
        except httpx.TransportError as exc:
            answer = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            log = StatePaths.of(settings.state_dir).log_file(worker_name(stage))
            tail = log.read_text(errors="replace")[-3000:] if log.is_file() else "(no log)"
            pytest.fail(f"stage {stage}: {url} not as expected after {timeout_s:.0f} s (last: {answer}); process alive: "
                        f"{_worker_alive(settings, stage) is not None}; log tail:\n{tail}")
        time.sleep(0.5)


def test_stage_health_and_metrics_endpoints(pipeline: Settings) -> None:
    for stage in STAGES:
        _get_when(pipeline, stage, "/health/live", lambda r: r.status_code == 200)
        metrics = _get_when(pipeline, stage, "/metrics", lambda r: r.status_code == 200)
        assert "# TYPE" in metrics.text
        assert "PAT-IT" not in metrics.text and "IT-FLOW" not in metrics.text, "no identifiers in metrics"
    # ready = partitions assigned and dependencies answering (a restarted stage reports "starting" first)
    ready = _get_when(pipeline, "concepts", "/health/ready", lambda r: r.status_code == 200).json()
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
    # Each dead letter is replayed once: a second replay takes none of the first one's again. (It may
    # take letters parked since: studies of earlier tests still in flight met the stopped Triton too.)
    again = asyncio.run(replay_dead_letters(settings, "concepts", {"dependency"})).replayed
    assert not {r.offset for r in again} & {r.offset for r in replayed} and key not in {r.letter.key for r in again}


def test_site_model_in_shadow_is_recorded_then_promoted_and_rolled_back(pipeline: Settings) -> None:
    """A candidate for the site runs in shadow on live traffic: the study is drafted from the live
    (generic) model and the candidate's answer lands in PostgreSQL for `radalign sites compare`;
    promoted, the next study of the site is scored by it (ConceptsInferred names it); rolled back,
    the generic model serves the site again. No restart anywhere."""
    import json

    from radalign.db import connect
    from radalign.pseudonymizer import Pseudonymizer
    from radalign.samples import chest_cr_path
    from radalign.sites.registry import SHIPPED_DIR, SiteRegistry
    from radalign.sites.shadow import comparison
    from schemas.events import ConceptsInferred

    path = chest_cr_path("RG1_UNCI.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    registry = SiteRegistry(pipeline.sites_dir)
    head = sorted((SHIPPED_DIR / "nih-cxr800").glob("*.pt"))[-1]
    version = registry.add_candidate(SITE, head, by="test")
    keys = Pseudonymizer(pipeline.deid_secret)

    def send_and_read() -> ConceptsInferred:
        (ds,) = as_new_study([path])
        key = keys.study_key(ds.StudyInstanceUID)
        assert send_cstore(pipeline.dicom_port, ds, calling_ae=SITE_AE, called_ae=pipeline.dicom_ae_title) == 0x0000
        seen = asyncio.run(read_until(pipeline, [CONCEPTS_INFERRED.name, REPORT_DRAFTED.name], lambda s: key in reports_by_key(s)))
        [concepts] = [e for e in (codec.decode(ConceptsInferred, m.value) for m in seen[CONCEPTS_INFERRED.name]) if e.study.study_key == key][:1]
        return concepts

    time.sleep(2)  # Triton re-reads a changed registry within a second
    shadowed = send_and_read()
    assert shadowed.site_head is None  # drafted from the live model, never the candidate
    with connect(settings=pipeline) as conn:
        rows = conn.execute(
            "SELECT live_probabilities, live_states, candidate_probabilities, candidate_states, live_ood, candidate_ood, NULL AS signed_labels "
            "FROM site_shadow_scores WHERE study_key = %s AND candidate_version = %s", (shadowed.study.study_key, version),
        ).fetchall()
    assert len(rows) == 1
    names = ["live_probabilities", "live_states", "candidate_probabilities", "candidate_states", "live_ood", "candidate_ood", "signed_labels"]
    figures = comparison([dict(zip(names, r, strict=True)) for r in rows])
    assert figures["studies"] == 1 and figures["signed"] == 0
    candidate_meta = json.loads(head.with_suffix(".json").read_text())
    assert set(rows[0][3]) <= set(candidate_meta["summary"]["assessed"])  # the candidate claims only what its policy allows

    registry.promote(SITE, version, by="test")
    try:
        time.sleep(2)
        promoted = send_and_read()
        assert (promoted.site_head, promoted.site_head_version) == (SITE, version)
        assert {c.observation.value for c in promoted.concepts} <= set(candidate_meta["summary"]["assessed"])
    finally:
        registry.rollback(SITE, by="test")
    time.sleep(2)
    assert send_and_read().site_head is None


def test_no_identifier_reaches_any_workers_log(pipeline: Settings) -> None:
    """Studies carrying identifying names, ids and UIDs go through every stage (C-STORE and HTTP);
    then every log file of the stack is scanned for them: none may appear anywhere (our code,
    pydicom's and highdicom's warnings, Faust, Triton)."""
    from radalign.pseudonymizer import Pseudonymizer
    from radalign.samples import chest_cr_path

    path = chest_cr_path("RG1_UNCI.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    (ds,) = as_new_study([path])
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "Zzyzx^Identifiable", "MRN-LOGSCAN-9917", "ACC-LOGSCAN-9917"
    secrets = ["Zzyzx", "Identifiable", "MRN-LOGSCAN-9917", "ACC-LOGSCAN-9917", str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)]
    dicom_key = Pseudonymizer(pipeline.deid_secret).study_key(ds.StudyInstanceUID)
    assert send_cstore(pipeline.dicom_port, ds, calling_ae=SITE_AE, called_ae=pipeline.dicom_ae_title) == 0x0000
    r = httpx.post(
        f"http://127.0.0.1:{pipeline.gateway_port}/v1/studies",
        data={"study_id": "LOGSCAN-HTTP-9918", "patient_id": "MRN-LOGSCAN-9918", "view_position": "PA"},
        files={"file": ("film.jpg", chest_jpeg_files()[2].read_bytes(), "image/jpeg")}, timeout=30,
    )
    assert r.status_code == 202, r.text
    secrets += ["LOGSCAN-HTTP-9918", "MRN-LOGSCAN-9918"]
    http_key = r.json()["study_key"]
    asyncio.run(read_until(pipeline, [REPORT_DRAFTED.name], lambda s: {dicom_key, http_key} <= set(reports_by_key(s))))
    time.sleep(3)  # delivery and review log after the draft
    logs = sorted((pipeline.state_dir / "logs").glob("*.log"))
    assert logs, "the stack's workers write their logs under the state folder"
    found = {f"{log.name}: {secret}" for log in logs for secret in secrets if secret in log.read_text(errors="replace")}
    assert not found, f"identifiers in the logs: {sorted(found)}"
