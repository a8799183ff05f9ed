from __future__ import annotations

import asyncio

import pytest

from radalign.ingest.assembly import MAX_INSTANCES, ReceivedInstance, StudyAssembler
from radalign.ingest.outbox import InMemoryOutbox
from radalign.ingest.refusal import Refusal
from schemas.events import BlobRef, Instance, Priority, StudyReceived


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _item(study: str, n: int, *, stat: bool = False, modality: str = "CR") -> ReceivedInstance:
    blob = BlobRef(uri=f"file:///b/{n}", sha256=f"{n:064x}", size=1, media_type="application/dicom")
    inst = Instance(instance_key=f"in-{n:016x}", source_format="dicom", view_position="PA", blob=blob, rows=1, columns=1)
    return ReceivedInstance(study, "pt-0000000000000001", inst, modality, "dicom-cstore", stat)


def _assembler(clock: Clock, sent: list[StudyReceived], quiet: float = 2.0, outbox: InMemoryOutbox | None = None) -> StudyAssembler:
    async def publish(event: StudyReceived) -> None:
        sent.append(event)

    return StudyAssembler(quiet, publish, pipeline_version="radalign-test", outbox=outbox or InMemoryOutbox(clock))


async def test_study_is_published_once_quiet_with_all_its_instances() -> None:
    clock, sent = Clock(), []
    asm = _assembler(clock, sent)
    await asm.add(_item("st-000000000000000a", 1))
    clock.now = 1.5
    await asm.add(_item("st-000000000000000a", 2))
    clock.now = 3.0  # 1.5 s after the last instance: not quiet yet
    assert await asm.flush() == [] and await asm.pending_studies() == 1
    clock.now = 3.6
    [event] = await asm.flush()
    assert [i.instance_key for i in event.instances] == ["in-0000000000000001", "in-0000000000000002"]
    assert event.study_version == 1 and event.study.priority is Priority.ROUTINE and event.modality == "CR"
    assert await asm.pending_studies() == 0 and await asm.flush(force=True) == []


async def test_late_instance_reopens_as_next_version_and_resends_are_ignored() -> None:
    clock, sent = Clock(), []
    asm = _assembler(clock, sent)
    assert await asm.add(_item("st-000000000000000a", 1))
    clock.now = 5
    await asm.flush()
    assert not await asm.add(_item("st-000000000000000a", 1))  # same instance again: nothing re-opens
    assert await asm.pending_studies() == 0
    assert await asm.add(_item("st-000000000000000a", 2, stat=True))
    clock.now = 10
    [v2] = await asm.flush()
    assert v2.study_version == 2 and len(v2.instances) == 2 and v2.study.priority is Priority.STAT
    assert [e.study_version for e in sent] == [1, 2]
    assert [e.study.version for e in sent] == [1, 2]  # the version travels with the study to the draft (its draft_version)


async def test_a_restarted_assembler_publishes_what_the_outbox_holds() -> None:
    """The outbox, not the assembler, holds the state: a new assembler (a gateway restart) on the
    same outbox publishes the studies accepted before, and numbers re-opened ones on."""
    clock, outbox = Clock(), None
    outbox = InMemoryOutbox(clock)
    first_sent: list[StudyReceived] = []
    first = _assembler(clock, first_sent, outbox=outbox)
    await first.add(_item("st-000000000000000b", 7))
    clock.now = 5
    await first.flush()
    await first.add(_item("st-000000000000000b", 8))  # accepted, then the gateway dies in the quiet window
    second_sent: list[StudyReceived] = []
    second = _assembler(clock, second_sent, outbox=outbox)
    clock.now = 10
    [event] = await second.flush()
    assert event.study_version == 2 and {i.instance_key for i in event.instances} == {"in-0000000000000007", "in-0000000000000008"}


async def test_failed_publish_keeps_the_study_pending_and_retries_after_a_backoff() -> None:
    clock, sent = Clock(), []
    calls = {"n": 0}

    async def flaky(event: StudyReceived) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("down")
        sent.append(event)

    asm = StudyAssembler(1.0, flaky, pipeline_version="radalign-test", outbox=InMemoryOutbox(clock))
    await asm.add(_item("st-000000000000000c", 1))
    clock.now = 2
    assert await asm.flush() == [] and await asm.pending_studies() == 1
    assert await asm.flush() == []  # backing off
    clock.now = 3.5
    [event] = await asm.flush()
    assert event.study_version == 1 and sent == [event]


async def test_a_study_holds_at_most_the_contract_limit() -> None:
    asm = _assembler(Clock(), [])
    for n in range(MAX_INSTANCES):
        await asm.add(_item("st-000000000000000d", n))
    with pytest.raises(Refusal):
        await asm.add(_item("st-000000000000000d", MAX_INSTANCES))


class _BrokenOutbox(InMemoryOutbox):
    """An outbox whose database is down for the first `failures` reads."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def due(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down (simulated)")
        return await super().due(*args, **kwargs)


async def test_the_loop_survives_database_errors_and_publishes_afterwards() -> None:
    """The original bug: one database error in a flush ended the assembler for good."""
    sent: list[StudyReceived] = []
    outbox = _BrokenOutbox(failures=3)
    asm = _assembler(Clock(), sent, quiet=0.0, outbox=outbox)
    from radalign.framework.retry import Backoff
    from radalign.ingest import assembly

    assembly_backoff = assembly.TICK_BACKOFF
    assembly.TICK_BACKOFF = Backoff(start_s=0.01, max_s=assembly_backoff.max_s)
    try:
        await asm.add(_item("st-000000000000000e", 1))
        stop = asyncio.Event()
        task = asyncio.create_task(asm.run(stop, tick_s=0.01))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if sent:
                break
        assert asm.alive and outbox.failures == 0 and len(sent) == 1
        await asm.add(_item("st-000000000000000f", 2))  # accepted after the recovery: published too
        for _ in range(500):
            await asyncio.sleep(0.01)
            if len(sent) == 2:
                break
        stop.set()
        await task
    finally:
        assembly.TICK_BACKOFF = assembly_backoff
    assert [e.study.study_key for e in sent] == ["st-000000000000000e", "st-000000000000000f"]
    assert not asm.alive  # the loop ended: the liveness probe now fails


async def test_a_study_keeps_the_site_of_its_first_instance() -> None:
    clock, sent = Clock(), []
    asm = _assembler(clock, sent)
    first = _item("st-000000000000000e", 1)
    await asm.add(ReceivedInstance(first.study_key, first.patient_key, first.instance, "CR", "dicom-cstore", False, "HOSP-A"))
    second = _item("st-000000000000000e", 2)
    await asm.add(ReceivedInstance(second.study_key, second.patient_key, second.instance, "CR", "dicom-cstore", False, "HOSP-B"))
    await asm.add(_item("st-000000000000000f", 3))
    [a, b] = await asm.flush(force=True)
    assert {a.study.study_key: a.site, b.study.study_key: b.site} == {"st-000000000000000e": "HOSP-A", "st-000000000000000f": None}
