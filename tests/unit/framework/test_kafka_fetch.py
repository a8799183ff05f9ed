"""The workers' Kafka consumers wait `kafka_fetch_max_wait_ms` for a fetch, not Faust's fixed
1,500 ms (radalign/framework/kafka_fetch.py): checked on the consumer Faust builds, before it
starts (no broker needed), where aiokafka keeps the value its fetcher is built with."""

from __future__ import annotations

import faust

from radalign.config import Settings
from radalign.framework.kafka_fetch import transport_with_fetch_wait


async def test_the_worker_consumer_waits_what_the_settings_say() -> None:
    app = faust.App("radalign-fetch-test", broker="kafka://127.0.0.1:9")
    app.transport = transport_with_fetch_wait(app, 123)
    thread = app.consumer._thread  # type: ignore[attr-defined]  # Faust's aiokafka consumer delegates to this thread
    client = thread._create_worker_consumer(app.transport)
    assert client._fetch_max_wait_ms == 123


async def test_faust_alone_would_wait_1500_ms() -> None:
    # What the override is for: if Faust ever makes this configurable, the override can go.
    app = faust.App("radalign-fetch-test-plain", broker="kafka://127.0.0.1:9")
    thread = app.consumer._thread  # type: ignore[attr-defined]  # as above
    assert thread._create_worker_consumer(app.transport)._fetch_max_wait_ms == 1500


def test_the_default_wait_is_shorter_than_fausts() -> None:
    assert Settings().kafka_fetch_max_wait_ms < 1500
