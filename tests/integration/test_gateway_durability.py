"""Durable before acknowledged (issue 12), on the real broker and PostgreSQL with the gateway as
its own OS process (`radalign worker gateway`):

- kill -9 of the gateway inside the quiet window: every study it acknowledged is published after
  the restart, once;
- PostgreSQL down for a few seconds under a stream of uploads: the gateway answers 503 with
  Retry-After meanwhile (never success for what it could not store), keeps running, and every
  study it acknowledged is published once."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from PIL import Image

from radalign.config import Settings
from radalign.framework import codec
from radalign.stack import postgres as embedded_postgres
from radalign.stack import process as stack_process
from radalign.stack.workers import settings_env, worker_argv
from radalign.testing.stack import free_port, fresh_database
from schemas.events import StudyReceived
from schemas.topics import STUDY_RECEIVED

pytestmark = pytest.mark.integration
TOKEN = "durability-token"


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _start_gateway(settings: Settings, name: str):
    paths = stack_process.StatePaths.of(settings.state_dir)
    proc = stack_process.start_process(paths, name, worker_argv("gateway"), settings_env(settings))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{settings.gateway_port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"gateway never became ready:\n{paths.log_file(name).read_text()[-3000:]}")


def _upload(settings: Settings, study_id: str, seed: int, *, retry_until: float = 0.0) -> tuple[int, str | None, int]:
    """POST one image; with `retry_until`, retry 503s (honouring Retry-After, capped) until then.
    Returns (final status, study_key or None, number of 503s seen)."""
    unavailable = 0
    while True:
        try:
            resp = httpx.post(
                f"http://127.0.0.1:{settings.gateway_port}/v1/studies", headers={"Authorization": f"Bearer {TOKEN}"},
                files={"file": ("a.png", _png(seed), "image/png")}, data={"study_id": study_id, "view_position": "PA"},
                timeout=30,
            )
        except httpx.HTTPError:
            if time.monotonic() < retry_until:
                time.sleep(0.5)
                continue
            raise
        if resp.status_code == 503:
            unavailable += 1
            assert resp.headers.get("Retry-After") and resp.headers["content-type"].startswith("application/problem+json")
            if time.monotonic() < retry_until:
                time.sleep(min(1.0, float(resp.headers["Retry-After"])))
                continue
        return resp.status_code, (resp.json().get("study_key") if resp.status_code == 202 else None), unavailable


async def _published(settings: Settings, keys: set[str], timeout_s: float) -> dict[str, list[int]]:
    """study_key -> versions published, for `keys`, reading the topics from the beginning."""
    consumer = AIOKafkaConsumer(
        *STUDY_RECEIVED.names, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, list[int]] = {}
    try:
        deadline = time.monotonic() + timeout_s
        quiet_since = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    event = codec.decode(StudyReceived, r.value)
                    if event.study.study_key in keys:
                        found.setdefault(event.study.study_key, []).append(event.study_version)
            if set(found) >= keys:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 2.0:  # anything duplicated would have come by now
                    break
    finally:
        await consumer.stop()
    return found


@pytest.fixture
def gateway_settings(embedded_stack: Settings, tmp_path: Path):
    with fresh_database(embedded_stack, "durability") as db_settings:
        yield db_settings.model_copy(update={
            "gateway_tokens": TOKEN, "deid_secret": "durability-secret", "blob_url": (tmp_path / "blobs").as_uri(),
            "gateway_port": free_port(), "dicom_port": free_port(), "study_quiet_s": 3.0,
        })


async def test_kill_9_inside_the_quiet_window_loses_nothing(gateway_settings: Settings) -> None:
    settings = gateway_settings
    name = "durability-gateway"
    proc = _start_gateway(settings, name)
    try:
        answers = [_upload(settings, f"KILL-{os.getpid()}-{n}", n) for n in range(10)]
        assert all(status == 202 for status, _, _ in answers)
        os.kill(proc.pid, signal.SIGKILL)  # well inside the 3 s quiet window
        proc.wait(10)
        keys = {key for _, key, _ in answers if key}
        assert await _published(settings, keys, timeout_s=2) == {}, "nothing could have been published yet"
        proc = _start_gateway(settings, name)
        published = await _published(settings, keys, timeout_s=30)
    finally:
        stack_process.stop_process(stack_process.StatePaths.of(settings.state_dir), name, 10)
    assert set(published) == keys, f"lost {len(keys - set(published))} of {len(keys)}"
    assert all(versions == [1] for versions in published.values()), published


async def test_postgres_outage_loses_nothing(gateway_settings: Settings) -> None:
    settings = gateway_settings.model_copy(update={"study_quiet_s": 0.5})
    name = "durability-gateway-pg"
    paths = stack_process.StatePaths.of(settings.state_dir)
    _start_gateway(settings, name)
    accepted: set[str] = set()
    refused_503 = 0
    try:
        async def stream(count: int, offset: int) -> None:
            nonlocal refused_503
            for n in range(count):
                status, key, unavailable = await asyncio.to_thread(
                    _upload, settings, f"PG-{os.getpid()}-{offset + n}", offset + n, retry_until=time.monotonic() + 60)
                refused_503 += unavailable
                assert status == 202, status
                accepted.add(key)
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(stream(40, 0))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(embedded_postgres.stop_postgres, settings, paths)
        await asyncio.sleep(6.0)
        await asyncio.to_thread(embedded_postgres.start_postgres, settings, paths)
        await sender
        health = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{settings.gateway_port}/health/live", timeout=5)
        assert health.status_code == 200  # the assembler survived the outage
        published = await _published(settings, accepted, timeout_s=60)
    finally:
        stack_process.stop_process(paths, name, 10)
        if not embedded_postgres.postgres_healthy(settings):
            embedded_postgres.start_postgres(settings, paths)
    assert len(accepted) == 40
    assert refused_503 > 0, "the outage never reached the gateway"
    assert set(published) == accepted, f"lost {len(accepted - set(published))} of {len(accepted)}"
    assert all(versions == [1] for versions in published.values()), {k: v for k, v in published.items() if v != [1]}


async def test_two_gateway_replicas_publish_each_study_once(gateway_settings: Settings) -> None:
    """Two assemblers (two gateway replicas) on one PostgreSQL outbox: the claims (FOR UPDATE SKIP
    LOCKED) give each due study to one of them; a re-opened study continues its version."""
    from radalign.db import open_pool
    from radalign.ingest.assembly import ReceivedInstance, StudyAssembler
    from radalign.ingest.outbox import PostgresOutbox
    from schemas.events import BlobRef, Instance

    settings = gateway_settings
    pool = await open_pool(settings, min_size=2, max_size=6)
    sent: list[tuple[str, StudyReceived]] = []

    def assembler(name: str) -> StudyAssembler:
        async def publish(event: StudyReceived) -> None:
            await asyncio.sleep(0.05)  # a broker round trip, so that the two overlap
            sent.append((name, event))

        return StudyAssembler(0.0, publish, pipeline_version="it", outbox=PostgresOutbox(pool))

    def item(study: int, n: int) -> ReceivedInstance:
        blob = BlobRef(uri=f"file:///b/{n}", sha256=f"{n:064x}", size=1, media_type="application/dicom")
        inst = Instance(instance_key=f"in-{n:016x}", source_format="dicom", view_position="PA", blob=blob)
        return ReceivedInstance(f"st-{study:016x}", "pt-0000000000000001", inst, "CR", "dicom-cstore")

    try:
        a, b = assembler("a"), assembler("b")
        for study in range(20):
            assert await a.add(item(study, study))
        assert not await b.add(item(3, 3))  # a resend through the other replica is a duplicate
        await asyncio.gather(a.flush(), b.flush(), a.flush(), b.flush())
        assert sorted(e.study.study_key for _, e in sent) == sorted(f"st-{s:016x}" for s in range(20))
        assert await b.add(item(5, 100))  # a late instance re-opens study 5
        await asyncio.gather(a.flush(), b.flush())
        assert len(sent) == 21
        _, reopened = sent[-1]
        assert reopened.study.study_key == f"st-{5:016x}" and reopened.study_version == 2 and len(reopened.instances) == 2
    finally:
        await pool.close()


async def test_requeue_unreported_republishes_what_a_broker_lost(gateway_settings: Settings) -> None:
    """After a broker lost what it acknowledged, the outbox re-queues published studies that have
    no report (and only those), and the assembler publishes them again."""
    from radalign.db import connect, open_pool
    from radalign.ingest.assembly import ReceivedInstance, StudyAssembler
    from radalign.ingest.outbox import PostgresOutbox, requeue_unreported
    from schemas.events import BlobRef, Instance

    settings = gateway_settings
    pool = await open_pool(settings, min_size=1, max_size=2)
    sent: list[StudyReceived] = []

    async def publish(event: StudyReceived) -> None:
        sent.append(event)

    try:
        asm = StudyAssembler(0.0, publish, pipeline_version="it", outbox=PostgresOutbox(pool))
        for study in (1, 2):
            blob = BlobRef(uri=f"file:///b/{study}", sha256=f"{study:064x}", size=1, media_type="application/dicom")
            inst = Instance(instance_key=f"in-{study:016x}", source_format="dicom", blob=blob)
            await asm.add(ReceivedInstance(f"st-{study:016x}", "pt-0000000000000001", inst, "CR", "http"))
        assert len(await asm.flush()) == 2
        with connect(settings.dsn, settings=settings, autocommit=True) as conn:
            conn.execute(  # study 1 got its report; study 2's events were lost with the broker
                "INSERT INTO reports (study_key, pipeline_version, report_id, drafter, needs_review, payload, content_hash) "
                "VALUES (%s, 'it', 'r-1', 'deterministic', false, '{}'::jsonb, 'h')", (f"st-{1:016x}",))
            assert requeue_unreported(conn) == 1
        [again] = await asm.flush()
        # the same version again (nothing new arrived): a redelivery consumers de-duplicate
        assert again.study.study_key == f"st-{2:016x}" and again.study_version == 1 and len(again.instances) == 1
        assert await asm.flush() == []
        with connect(settings.dsn, settings=settings, autocommit=True) as conn:
            # study 2 is reported and delivered this time; study 1's report never reached delivery
            conn.execute(
                "INSERT INTO reports (study_key, pipeline_version, report_id, drafter, needs_review, payload, content_hash) "
                "VALUES (%s, 'it', 'r-2', 'deterministic', false, '{}'::jsonb, 'h')", (f"st-{2:016x}",))
            conn.execute(
                "INSERT INTO deliveries (report_id, destination, study_key, kind, report_version, report_status, status) "
                "VALUES ('r-2', 'pacs', %s, 'dicom', 'v', 'preliminary', 'delivered')", (f"st-{2:016x}",))
            assert requeue_unreported(conn) == 0 and requeue_unreported(conn, delivering=True) == 1
        [delivered_again] = await asm.flush()
        assert delivered_again.study.study_key == f"st-{1:016x}" and delivered_again.study_version == 1
    finally:
        await pool.close()
