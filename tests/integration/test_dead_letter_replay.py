"""`radalign dlq replay` on the real broker and PostgreSQL (issue 12): letters left out by an
error-type filter stay pending, each letter is replayed once, and a poison record (one that
keeps coming back) is replayed at most `max_replays` times."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from radalign.config import Settings
from radalign.framework import codec
from radalign.framework.deadletters import replay_dead_letters
from radalign.stack.testing import fresh_database
from schemas.events import DeadLetter
from schemas.topics import dead_letter_topic

pytestmark = pytest.mark.integration
STAGE = "retrieval"  # nothing consumes its topics in this session's stack
SOURCE = "radalign.test.replay-source.v1"


def _letter(payload: bytes, error_type: str, key: str) -> DeadLetter:
    return DeadLetter(stage=STAGE, reason="test", error_type=error_type, source_topic=SOURCE, source_partition=0,  # type: ignore[arg-type]
                      source_offset=0, key=key, attempts=1, failed_at=datetime.now(UTC),
                      payload_b64=base64.b64encode(payload).decode())


async def _park(settings: Settings, letters: list[DeadLetter]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for letter in letters:
            await producer.send_and_wait(dead_letter_topic(STAGE).name, codec.encode(letter), key=(letter.key or "").encode())
    finally:
        await producer.stop()


async def _source_records(settings: Settings, run: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(SOURCE, bootstrap_servers=settings.kafka_bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: list[bytes] = []
        for _ in range(6):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(r.value for r in records if run.encode() in r.value)
        return found
    finally:
        await consumer.stop()


async def test_filter_once_only_and_poison_limit(embedded_stack: Settings) -> None:
    from radalign.stack.broker import create_topics

    await create_topics(embedded_stack.kafka_bootstrap, {SOURCE: 1})
    run = uuid.uuid4().hex
    with fresh_database(embedded_stack, "dlq") as settings:
        outage = _letter(f"{run}-outage".encode(), "dependency", "st-0000000000000001")
        bad = _letter(f"{run}-bad".encode(), "validation", "st-0000000000000002")
        await _park(settings, [outage, bad])

        first = await replay_dead_letters(settings, STAGE, {"dependency"})
        mine = [r for r in first.replayed if run.encode() in base64.b64decode(r.letter.payload_b64)]
        assert [r.letter.error_type for r in mine] == ["dependency"]
        assert any(run.encode() in base64.b64decode(r.letter.payload_b64) for r in first.left), "the filtered letter stays pending"

        second = await replay_dead_letters(settings, STAGE)  # no filter: only what is still pending
        mine = [r for r in second.replayed if run.encode() in base64.b64decode(r.letter.payload_b64)]
        assert [r.letter.error_type for r in mine] == ["validation"]

        # The outage payload fails again and again: it comes back as new letters each time.
        for attempt in range(4):
            await _park(settings, [outage])
            report = await replay_dead_letters(settings, STAGE, max_replays=3)
            replayed = [r for r in report.replayed if run.encode() in base64.b64decode(r.letter.payload_b64)]
            exhausted = [r for r in report.exhausted if run.encode() in base64.b64decode(r.letter.payload_b64)]
            if attempt < 2:
                assert len(replayed) == 1 and not exhausted
            else:
                assert not replayed and len(exhausted) == 1
        records = await _source_records(settings, run)
    assert records.count(f"{run}-bad".encode()) == 1
    assert records.count(f"{run}-outage".encode()) == 3  # first replay + two more, then given up
