"""The embedded stack end to end: up on private ports, each component answers, down leaves
nothing running. Prints the start time of each component."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from radalign.config import Settings
from radalign.db import connect, open_pool
from radalign.stack import down, running, start_process, status, up
from radalign.stack.process import StatePaths, processes_mentioning
from radalign.stack.readiness import StackStartError
from radalign.testing.stack import short_state_dir, stack_settings, write_add_one_model

pytestmark = pytest.mark.integration


@pytest.fixture
def private_settings() -> Iterator[Settings]:
    """A stack of the test's own (not the session one): it is taken down inside the test."""
    state_dir = short_state_dir("radalign-st-")
    settings = stack_settings(state_dir)
    try:
        yield settings
    finally:
        down(settings)  # safety net if the test failed half-way
        shutil.rmtree(state_dir, ignore_errors=True)


def _tree_pids(pid: int) -> set[int]:
    proc = psutil.Process(pid)
    return {pid, *(c.pid for c in proc.children(recursive=True))}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _kafka_round_trip(bootstrap: str) -> tuple[bytes, bytes]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = "radalign.study.received.v1"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await asyncio.wait_for(producer.start(), 10)
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b'{"hello": 1}', key=b"study-1"), 10)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await asyncio.wait_for(consumer.start(), 10)
    try:
        record = await asyncio.wait_for(consumer.getone(), 15)
    finally:
        await consumer.stop()
    return record.key, record.value


async def _delete_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await asyncio.wait_for(admin.start(), 10)
    try:
        await asyncio.wait_for(admin.delete_topics([topic]), 10)
    finally:
        await admin.close()


async def _pool_vector(settings: Settings) -> object:
    pool = await open_pool(settings, min_size=1, max_size=2)
    async with pool:
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT '[1,2,3]'::vector")).fetchone()
    return row[0]


def _triton_add_one(settings: Settings) -> np.ndarray:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{settings.triton_http_port}", connection_timeout=10, network_timeout=10)
    batch = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    inp = httpclient.InferInput("INPUT", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    return client.infer("add_one", [inp]).as_numpy("OUTPUT")


def test_up_serves_every_component_and_down_leaves_nothing(private_settings: Settings, tmp_path: Path) -> None:
    settings = private_settings
    repo = write_add_one_model(tmp_path / "models")

    rows = up(settings, ["broker", "postgres", "triton"], model_repo=repo)
    timings = {r.name: r.started_in_s for r in rows}
    print(f"\ncold start (s): {', '.join(f'{k} {v:.2f}' for k, v in timings.items())}")
    assert [r.name for r in rows] == ["broker", "postgres", "triton"]
    assert all(r.healthy and r.pid and r.started_in_s is not None for r in rows)

    # A supervised process with a child, like a worker: down must take both.
    worker = start_process(
        "worker-test",
        [sys.executable, "-c", "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c','import time; time.sleep(300)']); time.sleep(300)"],
        settings=settings,
    )
    deadline = time.monotonic() + 10
    while not worker.children() and time.monotonic() < deadline:
        time.sleep(0.05)

    pids: set[int] = set()
    for row in rows:
        pids |= _tree_pids(row.pid)
    pids |= _tree_pids(worker.pid)
    triton_children = psutil.Process(rows[2].pid).children(recursive=True)
    assert any("triton_python_backend_stub" in " ".join(p.cmdline()) for p in triton_children)

    assert {r.name: r.healthy for r in status(settings)} == {"broker": True, "postgres": True, "triton": True, "worker-test": True}

    key, value = asyncio.run(_kafka_round_trip(settings.kafka_bootstrap))
    assert (key, value) == (b"study-1", b'{"hello": 1}')

    with connect(settings=settings) as conn:
        assert conn.execute("SELECT '[1,2,3]'::vector::text").fetchone()[0] == "[1,2,3]"
        applied = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert applied[0] == "001_base"
    from pgvector import Vector

    pooled = asyncio.run(_pool_vector(settings))  # registered type: a Vector, not the text '[1,2,3]'
    assert isinstance(pooled, Vector) and pooled.to_list() == [1.0, 2.0, 3.0]

    np.testing.assert_array_equal(_triton_add_one(settings), np.array([[2.0, 3.0, 4.0]], dtype=np.float32))

    # up again: nothing restarted, but a topic missing from the running broker is created.
    asyncio.run(_delete_topic(settings.kafka_bootstrap, "radalign.dlq.gateway.v1"))
    again = up(settings, ["broker", "postgres", "triton"], model_repo=repo)
    assert [(r.pid, r.detail) for r in again] == [
        (rows[0].pid, "already running; created topics radalign.dlq.gateway.v1"),
        (rows[1].pid, "already running"),
        (rows[2].pid, "already running"),
    ]

    begin = time.monotonic()
    stopped = down(settings)
    print(f"down (s): {time.monotonic() - begin:.2f}")
    assert set(stopped) == {"worker-test", "triton", "postgres", "broker"}
    assert [p for p in pids if _alive(p)] == []
    assert processes_mentioning(f"{settings.state_dir.resolve()}/") == []
    assert StatePaths.of(settings.state_dir).names() == []
    assert not any(r.healthy for r in status(settings))

    # PostgreSQL keeps its data across a restart; migrations are not re-applied.
    warm = up(settings, ["postgres"])
    print(f"postgres warm start (s): {warm[0].started_in_s:.2f}")
    with connect(settings=settings) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")] == applied
    down(settings)
    assert running("postgres", settings) is None


def test_postgres_outlives_the_process_that_started_it(private_settings: Settings) -> None:
    import subprocess

    from radalign.stack.workers import settings_env

    env = settings_env(private_settings)
    code = "from radalign.config import Settings; from radalign.stack import up; up(Settings(), ['postgres'])"
    subprocess.run([sys.executable, "-c", code], env=env | {"PATH": "/usr/bin:/bin"}, check=True, timeout=120)
    # The starter has exited; the server still answers.
    assert {r.name: r.healthy for r in status(private_settings)}["postgres"] is True
    with connect(settings=private_settings) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # Our PID file lost: `up` adopts the server that serves the folder instead of failing.
    pid = running("postgres", private_settings).pid
    StatePaths.of(private_settings.state_dir).pid_file("postgres").unlink()
    assert up(private_settings, ["postgres"])[0].pid == pid
    assert down(private_settings) == ["postgres"]
    assert not _alive(pid)


_BROKEN_MODEL = "raise RuntimeError('model file is broken on purpose')\n"


def test_failed_triton_start_says_why_and_cleans_up(private_settings: Settings, tmp_path: Path) -> None:
    repo = write_add_one_model(tmp_path / "models", name="broken", model_py=_BROKEN_MODEL)
    with pytest.raises(StackStartError) as failure:
        up(private_settings, ["triton"], model_repo=repo)
    message = str(failure.value)
    assert "Triton" in message and "broken on purpose" in message  # the log tail is in the message
    assert running("triton", private_settings) is None
    assert processes_mentioning(f"{private_settings.state_dir.resolve()}/") == []


def test_port_in_use_is_reported(private_settings: Settings) -> None:
    import socket

    host, port = private_settings.kafka_bootstrap.split(":")
    with socket.socket() as blocker:
        blocker.bind((host, int(port)))
        blocker.listen()
        with pytest.raises(StackStartError, match="already taken"):
            up(private_settings, ["broker"])
    assert running("broker", private_settings) is None
