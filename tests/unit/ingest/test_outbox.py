"""Outbox retention (`Outbox.prune`) on the in-memory outbox, and the assembler loop that runs it.
The PostgreSQL outbox is tested the same way in tests/integration/test_outbox_retention.py."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from radalign.ingest.assembly import ReceivedInstance, StudyAssembler
from radalign.ingest.outbox import InMemoryOutbox
from schemas.events import BlobRef, Instance, StudyReceived

DAY = 86400.0
OLD, RECENT, PENDING = "st-00000000000000a1", "st-00000000000000a2", "st-00000000000000a3"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _item(study: str, n: int) -> ReceivedInstance:
    blob = BlobRef(uri=f"file:///b/{n}", sha256=f"{n:064x}", size=1, media_type="application/dicom")
    inst = Instance(instance_key=f"in-{n:016x}", source_format="dicom", view_position="PA", blob=blob, rows=1, columns=1)
    return ReceivedInstance(study, "pt-0000000000000001", inst, "CR", "dicom-cstore")


def _assembler(clock: Clock, sent: list[StudyReceived], outbox: InMemoryOutbox, retention_s: float = 0.0) -> StudyAssembler:
    async def publish(event: StudyReceived) -> None:
        sent.append(event)

    return StudyAssembler(2.0, publish, pipeline_version="radalign-test", outbox=outbox, retention_s=retention_s)


async def _old_recent_and_pending(clock: Clock, asm: StudyAssembler) -> None:
    """OLD published 40 days ago, PENDING received 40 days ago and never published (broker down
    since), RECENT published yesterday; `clock` ends at day 41."""
    await asm.add(_item(OLD, 1))
    clock.now = 10
    assert [e.study.study_key for e in await asm.flush()] == [OLD]
    await asm.add(_item(PENDING, 2))
    asm.outbox.studies[PENDING].claimed_until = 1e12  # its publish keeps failing: never published
    clock.now = 40 * DAY
    await asm.add(_item(RECENT, 3))
    clock.now = 40 * DAY + 10
    assert [e.study.study_key for e in await asm.flush()] == [RECENT]
    clock.now = 41 * DAY


async def test_prune_deletes_old_published_studies_and_keeps_pending_and_recent_ones() -> None:
    clock, sent = Clock(), []
    outbox = InMemoryOutbox(clock)
    asm = _assembler(clock, sent, outbox)
    await _old_recent_and_pending(clock, asm)
    assert await outbox.prune(30 * DAY) == 1
    assert set(outbox.studies) == {RECENT, PENDING}  # pending: kept whatever its age
    assert await outbox.pending_count() == 1
    assert await outbox.prune(30 * DAY) == 0  # nothing left to prune
    clock.now = 80 * DAY
    assert await outbox.prune(30 * DAY) == 1 and set(outbox.studies) == {PENDING}


async def test_retention_zero_keeps_everything() -> None:
    clock, sent = Clock(), []
    outbox = InMemoryOutbox(clock)
    asm = _assembler(clock, sent, outbox, retention_s=0.0)
    await _old_recent_and_pending(clock, asm)
    clock.now = 1000 * DAY
    assert await outbox.prune(0) == 0 and await asm.prune() == 0
    assert set(outbox.studies) == {OLD, RECENT, PENDING}


async def test_a_late_instance_after_pruning_is_the_next_version_with_only_the_known_instances() -> None:
    clock, sent = Clock(), []
    outbox = InMemoryOutbox(clock)
    asm = _assembler(clock, sent, outbox)
    await asm.add(_item(OLD, 1))
    await asm.add(_item(OLD, 2))
    clock.now = 10
    await asm.flush()
    await asm.add(_item(OLD, 3))  # re-opened within the retention: v2 carries all three
    clock.now = 20
    [v2] = await asm.flush()
    assert v2.study_version == 2 and len(v2.instances) == 3
    assert v2.study.version == 2
    clock.now = 40 * DAY
    assert await outbox.prune(30 * DAY) == 1 and OLD not in outbox.studies
    assert await asm.add(_item(OLD, 4))  # a late instance after the retention
    clock.now = 40 * DAY + 10
    [v3] = await asm.flush()
    # never v1 again (consumers would drop it as a duplicate event): the version continues
    assert v3.study_version == 3 and [i.instance_key for i in v3.instances] == ["in-0000000000000004"]


async def test_prune_deletes_in_bounded_passes() -> None:
    clock, sent = Clock(), []
    outbox = InMemoryOutbox(clock)
    asm = _assembler(clock, sent, outbox)
    for n in range(25):
        await asm.add(_item(f"st-{n + 0xb00:016x}", n))
    clock.now = 10
    assert len(await asm.flush()) == 25
    clock.now = 2 * DAY
    assert await outbox.prune(DAY, batch=5, max_batches=2) == 10
    assert await outbox.prune(DAY, batch=5, max_batches=2) == 10
    assert await outbox.prune(DAY, batch=5, max_batches=2) == 5 and outbox.studies == {}


def _pruned_total() -> float:
    return REGISTRY.get_sample_value("radalign_gateway_outbox_pruned_total") or 0.0


async def test_the_assembler_loop_prunes_and_counts_it() -> None:
    clock, sent = Clock(), []
    outbox = InMemoryOutbox(clock)
    asm = _assembler(clock, sent, outbox, retention_s=30 * DAY)
    await _old_recent_and_pending(clock, asm)
    before = _pruned_total()
    stop = asyncio.Event()
    task = asyncio.create_task(asm.run(stop, tick_s=0.01))
    for _ in range(300):
        await asyncio.sleep(0.01)
        if OLD not in outbox.studies:
            break
    stop.set()
    await task
    assert set(outbox.studies) == {RECENT, PENDING}
    assert _pruned_total() - before == 1
