"""Outbox retention on the real PostgreSQL (migrations 050, 082): old published studies are pruned
with their instances, pending and recent ones kept; a late instance after pruning is still
published, as the next version (from study_pseudonyms) with only the instances still known."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from radalign.ingest.assembly import ReceivedInstance, StudyAssembler
from radalign.ingest.outbox import PostgresOutbox
from schemas.events import BlobRef, Instance, StudyReceived

pytestmark = pytest.mark.integration

DAY = 86400.0
PATIENT = "pt-00000000000000c0"
OLD, RECENT, PENDING = "st-00000000000000c1", "st-00000000000000c2", "st-00000000000000c3"


# `pool` (tests/integration/conftest.py): this module's database, these tables emptied per test.
DATABASE = "outbox_retention_it"
EMPTIED_TABLES = ("gateway_outbox_studies", "study_pseudonyms")


def _item(study: str, n: int) -> ReceivedInstance:
    blob = BlobRef(uri=f"file:///b/{n}", sha256=f"{n:064x}", size=1, media_type="application/dicom")
    inst = Instance(instance_key=f"in-{n:016x}", source_format="dicom", view_position="PA", blob=blob, rows=1, columns=1)
    return ReceivedInstance(study, PATIENT, inst, "CR", "dicom-cstore")


async def _add(pool, asm: StudyAssembler, study: str, n: int) -> None:
    # the gateway saves the study's pseudonym row before its outbox row (GatewayCore._accept)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO study_pseudonyms (study_key, patient_key, study_instance_uid, source) VALUES (%s, %s, %s, 'dicom-cstore')"
            " ON CONFLICT DO NOTHING", (study, PATIENT, f"1.2.3.{int(study[3:], 16)}"),
        )
    assert await asm.add(_item(study, n))


async def _age(pool, days: float, *studies: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE gateway_outbox_studies SET last_received_at = now() - make_interval(days => %s) WHERE study_key = ANY(%s)",
            (days, list(studies)),
        )


async def _rows(pool, sql: str) -> list[tuple]:
    async with pool.connection() as conn:
        return await (await conn.execute(sql)).fetchall()


async def test_old_published_studies_are_pruned_and_a_late_instance_is_still_published(pool) -> None:
    sent: list[StudyReceived] = []

    async def publish(event: StudyReceived) -> None:
        sent.append(event)

    asm = StudyAssembler(0.0, publish, pipeline_version="radalign-test", outbox=PostgresOutbox(pool), retention_s=30 * DAY)
    await _add(pool, asm, OLD, 1)
    await _add(pool, asm, OLD, 2)
    await _add(pool, asm, RECENT, 3)
    assert {e.study.study_key for e in await asm.flush()} == {OLD, RECENT}
    await _add(pool, asm, PENDING, 4)  # accepted, never published (say the broker was down since)
    await _age(pool, 40, OLD, PENDING)
    await _age(pool, 1, RECENT)

    before = REGISTRY.get_sample_value("radalign_gateway_outbox_pruned_total") or 0.0
    assert await asm.prune() == 1
    assert (REGISTRY.get_sample_value("radalign_gateway_outbox_pruned_total") or 0.0) - before == 1
    studies = await _rows(pool, "SELECT study_key, pending FROM gateway_outbox_studies ORDER BY study_key")
    assert studies == [(RECENT, False), (PENDING, True)]  # pending: kept although 40 days old
    assert await _rows(pool, f"SELECT count(*) FROM gateway_outbox_instances WHERE study_key = '{OLD}'") == [(0,)]  # cascade
    assert await asm.prune() == 0

    # a late instance for the pruned study: published as v2, carrying only what is still known
    await _add(pool, asm, OLD, 5)
    published = {e.study.study_key: e for e in await asm.flush()}
    assert set(published) == {OLD, PENDING}
    late = published[OLD]
    assert late.study_version == 2 and [i.instance_key for i in late.instances] == ["in-0000000000000005"]
    assert await _rows(pool, f"SELECT published_version FROM study_pseudonyms WHERE study_key = '{OLD}'") == [(2,)]
    assert await asm.outbox.pending_count() == 0


async def test_prune_works_in_bounded_batches_and_zero_is_off(pool) -> None:
    async def publish(event: StudyReceived) -> None:
        pass

    outbox = PostgresOutbox(pool)
    asm = StudyAssembler(0.0, publish, pipeline_version="radalign-test", outbox=outbox)
    keys = [f"st-{0xd00 + n:016x}" for n in range(25)]
    for n, key in enumerate(keys):
        await _add(pool, asm, key, n)
    assert len(await asm.flush()) == 25
    await _age(pool, 40, *keys)
    assert await asm.prune() == 0  # retention_s defaults to 0: off
    assert await outbox.prune(0) == 0
    assert await outbox.prune(30 * DAY, batch=10, max_batches=2) == 20
    assert await outbox.prune(30 * DAY, batch=10, max_batches=2) == 5
    assert await _rows(pool, "SELECT count(*) FROM gateway_outbox_studies") == [(0,)]
    assert await _rows(pool, "SELECT count(*) FROM gateway_outbox_instances") == [(0,)]
