"""Delivery isolated per destination (issue 26) and STAT first (issue 25): a hung destination
delays only itself, times out, opens its circuit, dead-letters with its name and the reason,
and catches up by itself when it answers again."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from delivery_helpers import make_identity, make_report

from radalign.config import Settings
from radalign.delivery import metrics as delivery_metrics
from radalign.delivery.breaker import CircuitBreaker
from radalign.delivery.core import DeliveryCore
from radalign.delivery.destinations import QueuePolicy, RetryPolicy, load_config
from radalign.delivery.lanes import DestinationLane
from radalign.delivery.outbox import MemoryDeliveryQueue, QueuedDelivery, queued_rows
from radalign.delivery.records import MemoryDeliveryRecords
from radalign.delivery.version import ReportVersion
from radalign.framework import codec
from radalign.reports.reidentification import StaticReidentifier
from schemas.events import DeadLetter, Priority, ReportDrafted

RETRY = RetryPolicy(attempts=1, base_delay_s=0.01, max_delay_s=0.05, timeout_s=0.2)
POLICY = QueuePolicy(concurrency=2, breaker_failures=2, breaker_cooldown_s=0.3, dead_letter_after_s=0.8)


class FakeSender:
    """Records what it sent; with a gate, hangs until the gate opens (a SIGSTOPped peer)."""

    kind = "fhir"

    def __init__(self, name: str, gate: asyncio.Event | None = None) -> None:
        self.name = name
        self.destination = SimpleNamespace(retry=RETRY)
        self.gate = gate
        self.sent: list[ReportDrafted] = []

    async def send(self, item: ReportVersion, identity: object) -> str:
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append(item.report)
        return f"ref-{len(self.sent)}"

    async def close(self) -> None:
        return None


def _reports(n: int, stat: frozenset[int] | set[int] = frozenset()) -> list[ReportDrafted]:
    out = []
    for i in range(n):
        report = make_report(key=f"st-lane-{i:04d}-aa")
        if i in stat:
            report = report.model_copy(update={"study": report.study.model_copy(update={"priority": Priority.STAT})})
        out.append(report)
    return out


async def _resolve(row: QueuedDelivery) -> ReportVersion:
    return ReportVersion(codec.decode(ReportDrafted, row.payload))


def _setup(senders: list[FakeSender], reports: list[ReportDrafted], policy: QueuePolicy = POLICY):
    identities = StaticReidentifier({r.study.study_key: make_identity(r.study.study_key) for r in reports})
    core = DeliveryCore({s.name: s for s in senders}, MemoryDeliveryRecords(), identities, Settings())
    queue = MemoryDeliveryQueue()
    letters: list[DeadLetter] = []

    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    lanes = {s.name: DestinationLane(s.name, core, queue, _resolve, sink, policy, RETRY, poll_s=0.02) for s in senders}
    return queue, lanes, letters


async def _until(predicate, timeout_s: float) -> float:
    begin = time.monotonic()
    while not predicate():
        if time.monotonic() - begin > timeout_s:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - begin


def _dead_lettered(destination: str, reason: str) -> float:
    return delivery_metrics.DEAD_LETTERED.labels(destination=destination, reason=reason)._value.get()


async def test_a_hung_destination_delays_only_itself_dead_letters_and_catches_up():
    gate = asyncio.Event()
    pacs, ehr = FakeSender("pacs", gate), FakeSender("ehr")
    reports = _reports(6)
    queue, lanes, letters = _setup([pacs, ehr], reports)
    before = sum(_dead_lettered("pacs", r) for r in ("timeout", "circuit_open", "unavailable"))
    for report in reports:
        await queue.enqueue(queued_rows(report, ["pacs", "ehr"]))
    tasks = [asyncio.create_task(lane.run()) for lane in lanes.values()]
    try:
        # The working destination gets every report at once, however long the PACS hangs.
        took = await _until(lambda: len(ehr.sent) == 6, 5)
        assert took < 1.0, f"the FHIR server waited {took:.2f}s behind the hung PACS"
        # The hung one times out, opens its circuit and dead-letters each report past its budget.
        await _until(lambda: len(letters) == 6, 10)
        assert lanes["pacs"].breaker.state != "closed"
        assert {(x.stage, x.destination, x.error_type) for x in letters} == {("delivery", "pacs", "dependency")}
        assert all(x.reason.startswith(("pacs: timeout", "pacs: circuit_open")) for x in letters)
        assert {codec.decode(ReportDrafted, __import__("base64").b64decode(x.payload_b64)).report_id for x in letters} == {
            r.report_id for r in reports
        }
        after = sum(_dead_lettered("pacs", r) for r in ("timeout", "circuit_open", "unavailable"))
        assert after - before == 6
        assert not pacs.sent
        # The PACS answers again: a probe after the cool-down closes the circuit and it catches up.
        gate.set()
        await _until(lambda: len(pacs.sent) == 6, 10)
        await _until(lambda: not queue.rows, 5)
        assert lanes["pacs"].breaker.state == "closed"
        assert sorted(r.report_id for r in pacs.sent) == sorted(r.report_id for r in reports)
        assert len(ehr.sent) == 6  # nothing resent to the destination that had them
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_stat_reports_go_first_in_each_destination_queue():
    pacs = FakeSender("pacs")
    reports = _reports(6, stat={4, 5})
    queue, lanes, _ = _setup([pacs], reports, QueuePolicy(concurrency=1))
    for report in reports:  # the routine backlog was queued first
        await queue.enqueue(queued_rows(report, ["pacs"]))
    task = asyncio.create_task(lanes["pacs"].run())
    try:
        await _until(lambda: len(pacs.sent) == 6, 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [r.study.priority for r in pacs.sent[:2]] == [Priority.STAT, Priority.STAT]
    assert [r.study.study_key for r in pacs.sent[2:]] == [r.study.study_key for r in reports[:4]]


async def test_a_redelivered_record_is_queued_once_and_a_replay_requeues_a_dead_one():
    queue = MemoryDeliveryQueue()
    (report,) = _reports(1)
    rows = queued_rows(report, ["pacs", "ehr"])
    await queue.enqueue(rows)
    await queue.enqueue(rows)  # the same Kafka record, redelivered
    assert len(queue.rows) == 2
    claimed = await queue.claim("pacs", 30)
    assert claimed is not None and await queue.claim("pacs", 30) is None  # leased: not claimed twice
    await queue.dead(claimed, "timeout", "no answer")
    await queue.enqueue(rows)  # `radalign dlq replay delivery` re-publishes the record
    assert queue.rows[("pacs", claimed.work_id)].status == "queued"


async def test_a_refusal_is_dead_lettered_at_once_and_leaves_the_circuit_closed():
    from radalign.framework.retry import PermanentError

    class Refusing(FakeSender):
        async def send(self, item: ReportVersion, identity: object) -> str:
            raise PermanentError("ehr refused the content: HTTP 422", "refused")

    ehr = Refusing("ehr")
    reports = _reports(3)
    queue, lanes, letters = _setup([ehr], reports)
    for report in reports:
        await queue.enqueue(queued_rows(report, ["ehr"]))
    for _ in range(3):
        assert await lanes["ehr"].step()
    assert [x.error_type for x in letters] == ["refused"] * 3
    assert lanes["ehr"].breaker.state == "closed"
    assert await queue.requeue_dead("ehr") == 0  # a refusal is never resent by itself


def test_breaker_opens_after_consecutive_failures_and_probes_once_after_the_cool_down():
    now = [0.0]
    breaker = CircuitBreaker(3, 10.0, clock=lambda: now[0])
    assert not breaker.failure() and not breaker.failure()
    breaker.success()  # consecutive only
    assert [breaker.failure() for _ in range(3)] == [False, False, True]
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.5
    assert breaker.state == "half_open" and breaker.allow() and not breaker.allow()  # one probe
    breaker.failure()  # the probe failed: another cool-down
    assert breaker.state == "open"
    now[0] = 21.0
    assert breaker.allow() and breaker.success() and breaker.state == "closed"


def test_queue_policy_is_configured_per_destination_with_defaults():
    config = load_config(
        "destinations:\n"
        "  - {name: pacs, kind: dicom, ae_title: PACS, host: h, port: 104, retry: {timeout_s: 5},\n"
        "     queue: {concurrency: 1, breaker_failures: 3, breaker_cooldown_s: 60, dead_letter_after_s: 300}}\n"
        "  - {name: ehr, kind: fhir, base_url: 'http://ehr/fhir'}\n"
    )
    pacs, ehr = config.destinations
    assert (pacs.queue.concurrency, pacs.queue.breaker_failures, pacs.retry.timeout_s) == (1, 3, 5)
    assert ehr.queue == QueuePolicy() and ehr.retry.timeout_s == 30
    with pytest.raises(ValueError):
        load_config("destinations: [{name: x, kind: dicom, ae_title: A, host: h, port: 1, queue: {concurrency: 0}}]")


async def test_the_stage_queues_each_version_per_destination_and_returns_without_sending():
    """The offset may be committed once `handle` returned: the rows are durable, nothing was sent."""
    from services.delivery.agent import DeliveryStage

    destinations = (
        '{"destinations": [{"name": "pacs", "kind": "dicom", "ae_title": "PACS", "host": "127.0.0.1", "port": 1},'
        ' {"name": "ehr", "kind": "fhir", "base_url": "http://127.0.0.1:1/fhir"}]}'
    )
    settings = Settings(delivery_destinations=destinations)
    stage = DeliveryStage(settings)
    stage.settings, stage.queue, stage.lanes = settings, MemoryDeliveryQueue(), {}
    stage.core = cast(Any, object())  # never called: handle only queues
    (routine,), (stat,) = _reports(1), _reports(1, stat={0})
    stat = stat.model_copy(update={"report_id": "another-report"})
    for event in (routine, stat, routine):  # the last one: a redelivery
        assert await stage.handle(event) == []
    rows = sorted(stage.queue.rows.values(), key=lambda r: (r.destination, r.priority))
    assert [(r.destination, r.priority, r.source_topic) for r in rows] == [
        ("ehr", 0, "radalign.report.drafted.v1.stat"), ("ehr", 1, "radalign.report.drafted.v1"),  # a replay goes back to its lane
        ("pacs", 0, "radalign.report.drafted.v1.stat"), ("pacs", 1, "radalign.report.drafted.v1"),
    ]
    assert codec.decode(ReportDrafted, rows[1].payload) == routine


async def test_a_version_that_can_never_be_routed_is_dead_lettered_as_invalid_not_retried():
    ehr = FakeSender("ehr")
    (report,) = _reports(1)
    queue, lanes, letters = _setup([ehr], [])  # no identity mapping for the study
    await queue.enqueue(queued_rows(report, ["ehr"]))
    assert await lanes["ehr"].step()
    assert [(x.destination, x.error_type) for x in letters] == [("ehr", "validation")] and "ehr: invalid" in letters[0].reason
    assert not ehr.sent and await queue.claim("ehr", 30) is None and await queue.requeue_dead("ehr") == 0
