"""Inspecting and replaying dead letters, so that a record parked by an outage is not lost.

A replay re-publishes each dead letter's original record (key, value, trace header) to the topic
it came from; stages are idempotent per study and pipeline version, so a replayed study yields the
same report id. Replays are tracked by a consumer group per stage (`radalign-dlq-replay-<stage>`):
a dead letter is replayed once, and a second `replay` only picks up letters that arrived since
(letters left out by an `--error-type` filter count as handled too).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from radalign.config import Settings
from radalign.framework import codec
from schemas.events import DeadLetter
from schemas.topics import dead_letter_topic

REPLAYED_HEADER = "radalign-replayed-from"


@dataclass(frozen=True)
class ParkedRecord:
    offset: int
    letter: DeadLetter
    traceparent: str | None


def replay_group(stage: str) -> str:
    return f"radalign-dlq-replay-{stage}"


def selected(records: Iterable[ParkedRecord], error_types: set[str] | None) -> list[ParkedRecord]:
    return [r for r in records if not error_types or r.letter.error_type in error_types]


async def _read_to_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> list[ParkedRecord]:
    end = (await consumer.end_offsets([tp]))[tp]
    parked: list[ParkedRecord] = []
    while await consumer.position(tp) < end:
        for message in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
            parked.append(ParkedRecord(message.offset, codec.decode(DeadLetter, message.value), codec.header(message.headers, "traceparent")))
    return parked


async def list_dead_letters(settings: Settings, stage: str) -> list[ParkedRecord]:
    """Every dead letter of a stage, oldest first (reads the whole topic; it is small by design)."""
    tp = TopicPartition(dead_letter_topic(stage).name, 0)
    consumer = AIOKafkaConsumer(**settings.kafka_client_kwargs(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        return await _read_to_end(consumer, tp)
    finally:
        await consumer.stop()


async def replay_dead_letters(settings: Settings, stage: str, error_types: set[str] | None = None) -> list[ParkedRecord]:
    """Re-publish the dead letters not replayed before (optionally only some error types) and
    commit the replay position. Returns what was replayed."""
    tp = TopicPartition(dead_letter_topic(stage).name, 0)
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_kwargs(), group_id=replay_group(stage), enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), acks="all", enable_idempotence=False)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([tp])
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)
        parked = await _read_to_end(consumer, tp)
        chosen = selected(parked, error_types)
        for record in chosen:
            letter = record.letter
            headers = [(REPLAYED_HEADER, f"{tp.topic}:{record.offset}".encode())]
            if record.traceparent:
                headers.append(("traceparent", record.traceparent.encode()))
            await producer.send_and_wait(
                letter.source_topic, base64.b64decode(letter.payload_b64), key=letter.key.encode() if letter.key else None, headers=headers
            )
        if parked:  # commit only after every chosen record was acknowledged by the broker
            await consumer.commit({tp: parked[-1].offset + 1})
        return chosen
    finally:
        await producer.stop()
        await consumer.stop()
