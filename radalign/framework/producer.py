"""Publishing contracts to Kafka with aiokafka: the gateway's producer, also used by the demo and tests."""

from __future__ import annotations

from typing import Protocol

from aiokafka import AIOKafkaProducer

from radalign.config import Settings
from radalign.framework import codec
from schemas.events import Contract
from schemas.topics import TopicSpec


class EventPublisher(Protocol):
    """What publishes events (the one protocol: the gateway, the review service and their fakes).
    `traceparent` continues a trace; `ev_id` fixes the CloudEvents id (a dead letter's, a signed
    version's) instead of deriving it."""

    async def publish(self, spec: TopicSpec, event: Contract, *, traceparent: str | None = None, ev_id: str | None = None) -> None: ...


def topic_for(spec: TopicSpec, event: Contract) -> str:
    """The concrete topic: the STAT twin for STAT studies where the topic has one."""
    study = getattr(event, "study", None)
    return spec.lane(study.priority) if study is not None else spec.name


def record_key(event: Contract) -> bytes | None:
    study = getattr(event, "study", None)
    return study.study_key.encode() if study is not None else None


class KafkaEventPublisher:
    """acks=all and wait for each delivery: the caller only answers its client once Kafka has the event."""

    def __init__(self, settings: Settings, stage: str = "gateway") -> None:
        self.settings = settings
        self.stage = stage
        self._producer = AIOKafkaProducer(
            **settings.kafka_client_kwargs(),  # bootstrap servers, TLS / SASL
            acks="all",
            request_timeout_ms=15000,
            linger_ms=0,
            # Idempotent producers fail against tansu (InitProducerId); sinks are idempotent by key
            # and the delivery stage skips report versions it delivered already.
            enable_idempotence=False,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> KafkaEventPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, spec: TopicSpec, event: Contract, *, traceparent: str | None = None, ev_id: str | None = None) -> None:
        """`ev_id`: the CloudEvents id when the default (per stage, study and study version) would
        collide, e.g. successive signed versions of one report."""
        study = getattr(event, "study", None)
        ev_id = ev_id or (
            codec.event_id(self.stage, study.study_key, study.pipeline_version, getattr(event, "study_version", 1))
            if study is not None
            else codec.new_traceparent()
        )
        headers = codec.build_headers(event, stage=self.stage, ev_id=ev_id, traceparent=traceparent)
        await self._producer.send_and_wait(topic_for(spec, event), codec.encode(event), key=record_key(event), headers=headers)
