from __future__ import annotations

import pytest

from radalign.ingest.assembly import MAX_INSTANCES, ReceivedInstance, StudyAssembler
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
    return ReceivedInstance(study, "pt-0000000000000001", inst, modality, "dicom-cstore", stat)  # type: ignore[arg-type]


def _assembler(clock: Clock, sent: list[StudyReceived], quiet: float = 2.0, **kw) -> StudyAssembler:
    async def publish(event: StudyReceived) -> None:
        sent.append(event)

    return StudyAssembler(quiet, publish, pipeline_version="radalign-test", clock=clock, **kw)


async def test_study_is_published_once_quiet_with_all_its_instances() -> None:
    clock, sent = Clock(), []
    asm = _assembler(clock, sent)
    asm.add(_item("st-000000000000000a", 1))
    clock.now = 1.5
    asm.add(_item("st-000000000000000a", 2))
    clock.now = 3.0  # 1.5 s after the last instance: not quiet yet
    assert await asm.flush() == [] and asm.pending_studies == 1
    clock.now = 3.6
    [event] = await asm.flush()
    assert [i.instance_key for i in event.instances] == ["in-0000000000000001", "in-0000000000000002"]
    assert event.study_version == 1 and event.study.priority is Priority.ROUTINE and event.modality == "CR"
    assert asm.pending_studies == 0 and await asm.flush(force=True) == []


async def test_late_instance_reopens_as_next_version_and_resends_are_ignored() -> None:
    clock, sent = Clock(), []
    asm = _assembler(clock, sent)
    assert asm.add(_item("st-000000000000000a", 1))
    clock.now = 5
    await asm.flush()
    assert not asm.add(_item("st-000000000000000a", 1))  # same instance again: nothing re-opens
    assert asm.pending_studies == 0
    assert asm.add(_item("st-000000000000000a", 2, stat=True))
    clock.now = 10
    [v2] = await asm.flush()
    assert v2.study_version == 2 and len(v2.instances) == 2 and v2.study.priority is Priority.STAT
    assert [e.study_version for e in sent] == [1, 2]


async def test_version_continues_from_the_store_after_a_restart() -> None:
    clock, sent = Clock(), []

    async def stored_version(study_key: str) -> int:
        return 3

    asm = _assembler(clock, sent, published_version=stored_version)
    asm.add(_item("st-000000000000000b", 7))
    [event] = await asm.flush(force=True)
    assert event.study_version == 4


async def test_failed_publish_keeps_the_study_pending_and_retries() -> None:
    clock, sent = Clock(), []
    calls = {"n": 0}

    async def flaky(event: StudyReceived) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("down")
        sent.append(event)

    asm = StudyAssembler(1.0, flaky, pipeline_version="radalign-test", clock=clock)
    asm.add(_item("st-000000000000000c", 1))
    clock.now = 2
    assert await asm.flush() == [] and asm.pending_studies == 1
    [event] = await asm.flush()
    assert event.study_version == 1 and sent == [event]


async def test_a_study_holds_at_most_the_contract_limit() -> None:
    asm = _assembler(Clock(), [])
    for n in range(MAX_INSTANCES):
        asm.add(_item("st-000000000000000d", n))
    with pytest.raises(Refusal):
        asm.add(_item("st-000000000000000d", MAX_INSTANCES))
