"""Inspecting and replaying dead letters, so that a record parked by an outage is not lost.

A replay re-publishes each dead letter's original record (key, value, trace header) to the topic
it came from; stages are idempotent per study and pipeline version, so a replayed study yields the
same report id. What was replayed is recorded in PostgreSQL (migration 050):

- a letter is handled once it was replayed; letters left out by an `--error-type` filter are not
  touched and a later replay (of their type, or of every type) still finds them;
- a record that fails again comes back as a new letter with the same payload: replays are counted
  per payload digest, and one replayed `max_replays` times already is marked `exhausted` instead
  of being replayed again (a poison record cannot loop through the pipeline forever).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from radalign.config import Settings
from radalign.db import connect_kwargs
from radalign.framework import codec
from schemas.events import DeadLetter
from schemas.topics import dead_letter_topic

REPLAYED_HEADER = "radalign-replayed-from"


@dataclass(frozen=True)
class ParkedRecord:
    offset: int
    letter: DeadLetter
    traceparent: str | None


@dataclass
class ReplayReport:
    replayed: list[ParkedRecord] = field(default_factory=list)
    #: Poison: their payload was replayed `max_replays` times already; marked handled, not replayed.
    exhausted: list[ParkedRecord] = field(default_factory=list)
    #: Left out by the error-type filter: still pending.
    left: list[ParkedRecord] = field(default_factory=list)
    #: Handled by an earlier replay.
    already: int = 0


def payload_digest(letter: DeadLetter) -> str:
    return hashlib.sha256(base64.b64decode(letter.payload_b64)).hexdigest()


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


async def _connect(settings: Settings) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(settings.dsn, autocommit=True, **connect_kwargs(settings))


async def handled_offsets(settings: Settings, stage: str) -> dict[int, str]:
    """offset -> outcome (replayed / exhausted) of the stage's handled dead letters."""
    topic = dead_letter_topic(stage).name
    async with await _connect(settings) as conn:
        rows = await (await conn.execute(
            "SELECT dlq_offset, outcome FROM dead_letter_handled WHERE dlq_topic = %s AND dlq_partition = 0", (topic,))).fetchall()
    return {int(offset): outcome for offset, outcome in rows}


async def replay_dead_letters(
    settings: Settings, stage: str, error_types: set[str] | None = None, *, max_replays: int = 3
) -> ReplayReport:
    """Re-publish the stage's pending dead letters (optionally only some error types), each
    payload at most `max_replays` times in all. Each letter is recorded as handled only after
    the broker acknowledged its replay."""
    topic = dead_letter_topic(stage).name
    report = ReplayReport()
    parked = await list_dead_letters(settings, stage)
    producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), acks="all", enable_idempotence=False)
    async with await _connect(settings) as conn:
        done = await handled_offsets(settings, stage)
        await producer.start()
        try:
            for record in parked:
                if record.offset in done:
                    report.already += 1
                    continue
                if error_types and record.letter.error_type not in error_types:
                    report.left.append(record)
                    continue
                digest = payload_digest(record.letter)
                row = await (await conn.execute(
                    "SELECT replays FROM dead_letter_replay_counts WHERE stage = %s AND payload_sha256 = %s", (stage, digest))).fetchone()
                if row is not None and row[0] >= max_replays:
                    outcome = "exhausted"
                    report.exhausted.append(record)
                else:
                    letter = record.letter
                    headers = [(REPLAYED_HEADER, f"{topic}:{record.offset}".encode())]
                    if record.traceparent:
                        headers.append(("traceparent", record.traceparent.encode()))
                    await producer.send_and_wait(
                        letter.source_topic, base64.b64decode(letter.payload_b64),
                        key=letter.key.encode() if letter.key else None, headers=headers,
                    )
                    await conn.execute(
                        """INSERT INTO dead_letter_replay_counts (stage, payload_sha256, replays) VALUES (%s, %s, 1)
                           ON CONFLICT (stage, payload_sha256) DO UPDATE SET replays = dead_letter_replay_counts.replays + 1,
                           last_replayed_at = now()""",
                        (stage, digest),
                    )
                    outcome = "replayed"
                    report.replayed.append(record)
                await conn.execute(
                    """INSERT INTO dead_letter_handled (dlq_topic, dlq_partition, dlq_offset, stage, payload_sha256, outcome)
                       VALUES (%s, 0, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                    (topic, record.offset, stage, digest, outcome),
                )
        finally:
            await producer.stop()
    return report
