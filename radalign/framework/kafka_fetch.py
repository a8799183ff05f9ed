"""Faust's Kafka transport with the consumers' fetch wait taken from the settings.

Faust creates every worker's aiokafka consumer with `fetch_max_wait_ms=1500` and has no setting
for it. A Kafka broker answers a waiting fetch as soon as a record arrives, so there the wait only
paces an idle consumer's polling. The dev and CI broker (tansu, memory storage) answers only when
the wait runs out: a record took p50 314 ms, up to 687 ms, to reach an idle consumer
(`benchmarks/broker_fetch_latency.py`; 16 ms at a 100 ms wait), on each of an idle study's five
hops, and STAT studies met it under load too (their own topic's consumer is often idle).
`Settings.kafka_fetch_max_wait_ms` replaces it. Its default, 500 ms, is a trade measured with
`radalign bench` on the dev broker (600 studies; STAT with 1,000 routine studies queued):

| fetch wait | pipeline, studies/s | machine CPU per study | STAT idle p50 / p99 | STAT under the backlog p50 / p99 |
|---|---:|---:|---:|---:|
| 1,500 ms (Faust's) | 19.29 | 99.9 ms | 2.07 / 3.68 s | 2.50 / 4.71 s |
| 500 ms (default) | 17.84 | 109.4 ms | 0.94 / 1.20 s | 1.16 / 3.05 s |
| 100 ms | 14.85 | 131.2 ms | 0.79 / 0.87 s | 0.94 / 3.87 s |

A shorter wait means more empty fetches from every idle consumer (each worker's STAT lanes, the
signed-report input), which the broker and the workers pay for in CPU. Against a Kafka cluster a
waiting fetch is answered when data arrives, so there the wait costs only those empty polls.
aiokafka reads the wait when the consumer starts, from an
attribute Faust's constructor call sets; `tests/unit/framework/test_kafka_fetch.py` fails if a
Faust or aiokafka upgrade stops honouring it.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


def transport_with_fetch_wait(app: faust.App, fetch_max_wait_ms: int) -> faust_aiokafka.Transport:
    """A transport for `app` (its consumer URLs) whose worker consumers wait `fetch_max_wait_ms`."""

    class FetchWaitThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by AIOKafkaConsumer.start() (module docstring)
            return consumer

    class FetchWaitConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> FetchWaitThread:
            return FetchWaitThread(self, loop=self.loop, beacon=self.beacon)

    class FetchWaitTransport(faust_aiokafka.Transport):
        Consumer = FetchWaitConsumer

    return FetchWaitTransport(app.conf.broker_consumer, app)
