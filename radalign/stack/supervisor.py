"""Supervision of the embedded stack: restart crashed components, notice a broker that lost its data.

`stack up` starts this as one more stack process (`supervisor`, running `main()` here).
Every `CHECK_S` seconds it looks at each component `up` started (broker, PostgreSQL, Triton, the
workers); one that is no longer running is restarted, with exponential backoff per component
(1 s doubling to 60 s, reset after 5 minutes up). What it did is written to
`run/supervisor.json`, which `stack status` shows (restarts, last restart, next attempt).

The embedded broker keeps topics in memory, so a broker that restarts comes back empty: in-flight
events, dead letters and the report history are gone. `stack up` writes a marker record with a
random epoch to `MARKER_TOPIC` and keeps the epoch in `run/broker-epoch`; the supervisor (and
`stack status`) look for it, and when it is missing they say so loudly (an ERROR in the log,
`broker_data_lost` in the state file, the broker row of `stack status` unhealthy with "came back
EMPTY") and write a new marker so the next loss is seen too. Then it makes every study the
gateway outbox published in the last day without a report pending again, so that the gateway
publishes it once more: the loss is detected, reported and repaired from PostgreSQL (dead
letters and the report topic's history before the loss stay lost). A real Kafka with
replication does not have this failure mode; this is a dev/CI safeguard, not a guarantee.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from radalign.config import Settings, get_settings
from radalign.framework.logredact import install_log_redaction
from radalign.framework.retry import Backoff
from radalign.stack.process import StatePaths, live_process, read_pid_file

log = logging.getLogger("radalign.supervisor")

NAME = "supervisor"
MARKER_TOPIC = "radalign.stack.marker.v1"
CHECK_S = 2.0
#: Between restarts of one component that keeps dying.
RESTART_BACKOFF = Backoff(start_s=1.0, max_s=60.0)
STABLE_S = 300.0


@dataclass
class ComponentRecord:
    restarts: int = 0
    last_restart: float | None = None
    last_error: str = ""
    backoff_s: float = RESTART_BACKOFF.start_s
    next_attempt: float = 0.0


@dataclass
class SupervisorState:
    components: dict[str, ComponentRecord] = field(default_factory=dict)
    #: Wall-clock times at which the broker was found to have lost its data.
    broker_data_lost: list[float] = field(default_factory=list)
    heartbeat: float = 0.0


def state_file(paths: StatePaths) -> Path:
    return paths.run_dir / "supervisor.json"


def epoch_file(paths: StatePaths) -> Path:
    return paths.run_dir / "broker-epoch"


def read_state(paths: StatePaths) -> SupervisorState:
    try:
        raw = json.loads(state_file(paths).read_text())
    except (OSError, ValueError):
        return SupervisorState()
    return SupervisorState(
        components={k: ComponentRecord(**v) for k, v in raw.get("components", {}).items()},
        broker_data_lost=list(raw.get("broker_data_lost", [])),
        heartbeat=float(raw.get("heartbeat", 0.0)),
    )


def write_state(paths: StatePaths, state: SupervisorState) -> None:
    path = state_file(paths)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"components": {k: asdict(v) for k, v in state.components.items()},
                               "broker_data_lost": state.broker_data_lost, "heartbeat": state.heartbeat}, indent=1))
    tmp.replace(path)


# --- the broker marker ---------------------------------------------------------------------------


async def _write_marker(settings: Settings, epoch: str) -> None:
    from aiokafka import AIOKafkaProducer

    from radalign.stack.broker import create_topics

    await create_topics(settings.kafka_bootstrap, {MARKER_TOPIC: 1})
    producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), acks="all", enable_idempotence=False, request_timeout_ms=5000)
    await producer.start()
    try:
        await producer.send_and_wait(MARKER_TOPIC, epoch.encode(), key=b"epoch")
    finally:
        await producer.stop()


async def _read_markers(settings: Settings, timeout_s: float = 5.0) -> set[str] | None:
    """Every epoch in the marker topic; None when the broker does not answer."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**settings.kafka_client_kwargs(), group_id=None, enable_auto_commit=False, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(consumer.start(), timeout=timeout_s)
    except Exception:  # noqa: BLE001 - a broker that does not answer is "unknown", not "empty"
        await consumer.stop()
        return None
    try:
        tp = TopicPartition(MARKER_TOPIC, 0)
        topics = await asyncio.wait_for(consumer.topics(), timeout=timeout_s)
        if MARKER_TOPIC not in topics:
            return set()
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while await consumer.position(tp) < end and time.monotonic() < deadline:
            for message in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                found.add(message.value.decode())
        return found
    except Exception:  # noqa: BLE001 - a broker that does not answer: "unknown", checked again next round
        return None
    finally:
        await consumer.stop()


def mark_broker(settings: Settings) -> str:
    """Write a new epoch marker (after `up` started the broker) and remember it."""
    from radalign.stack.broker import run_coroutine

    epoch = uuid.uuid4().hex
    run_coroutine(_write_marker(settings, epoch))
    path = epoch_file(StatePaths.of(settings.state_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(epoch)
    return epoch


def broker_kept_its_data(settings: Settings) -> bool | None:
    """True when the marker `up` wrote is still there, False when the broker lost it (came back
    empty), None when there is no marker to check or the broker does not answer."""
    from radalign.stack.broker import run_coroutine

    try:
        epoch = epoch_file(StatePaths.of(settings.state_dir)).read_text().strip()
    except OSError:
        return None
    markers = run_coroutine(_read_markers(settings))
    if markers is None:
        return None
    return epoch in markers


# --- the loop ------------------------------------------------------------------------------------


@contextmanager
def _try_stack_lock(paths: StatePaths) -> Iterator[bool]:
    """The lock `up`/`down` hold; the supervisor skips a round instead of waiting for it."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    with (paths.run_dir / "stack.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _supervised(settings: Settings, paths: StatePaths) -> list[str]:
    """Components `up` started here (they have PID files) and that are not external."""
    from radalign.stack.components import SERVICES, external_components
    from radalign.stack.workers import PREFIX, STAGES

    external = external_components(settings)
    known = {*SERVICES, *(f"{PREFIX}{s}" for s in STAGES)}  # other start_process names are not ours to restart
    return [n for n in paths.names() if n in known and n not in external]


def _restart(settings: Settings, paths: StatePaths, name: str) -> None:
    """Start `name` again the way `up` started it: every component `up` starts, Orthanc and the
    identity provider included, and every worker."""
    from radalign.stack import workers
    from radalign.stack.components import SERVICES, start_service

    if name.startswith(workers.PREFIX):
        workers.start_workers(settings, [name.removeprefix(workers.PREFIX)])
        return
    if name not in SERVICES:
        raise ValueError(f"{name} is not a component the supervisor knows how to start")
    repo_file = paths.run_dir / "triton-model-repo"
    repo = repo_file.read_text().strip() if name == "triton" and repo_file.exists() else ""
    start_service(settings, paths, name, Path(repo) if repo else None)


def _requeue_unreported(settings: Settings) -> int | None:
    """The gateway outbox still holds every study it published: those without a report are
    published again (radalign.ingest.outbox.requeue_unreported). None when the database is down."""
    from radalign.db import connect
    from radalign.ingest.outbox import requeue_unreported

    try:
        with connect(settings.dsn, settings=settings, autocommit=True) as conn:
            return requeue_unreported(conn, delivering=bool(settings.delivery_destinations.strip()))
    except Exception as exc:  # noqa: BLE001 - the supervisor must survive a database outage; it says so and retries
        log.error("could not re-queue unreported studies (%s); run the supervisor round again once PostgreSQL is up", type(exc).__name__)
        return None


def check_once(settings: Settings, state: SupervisorState, now: float | None = None) -> SupervisorState:
    """One supervision round: restart what died (respecting its backoff), check the broker marker."""
    paths = StatePaths.of(settings.state_dir)
    now = time.time() if now is None else now
    with _try_stack_lock(paths) as locked:
        if not locked:
            return state  # an up/down is running
        for name in _supervised(settings, paths):
            record = state.components.setdefault(name, ComponentRecord())
            if live_process(read_pid_file(paths.pid_file(name))) is not None:
                if record.last_restart is not None and now - record.last_restart > STABLE_S:
                    record.backoff_s = RESTART_BACKOFF.start_s
                continue
            if now < record.next_attempt:
                continue
            log.error("%s is not running; restarting it (restart %d)", name, record.restarts + 1)
            record.restarts += 1
            record.last_restart = now
            try:
                _restart(settings, paths, name)
                record.last_error = ""
            except Exception as exc:  # noqa: BLE001 - next attempt after the backoff
                record.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.error("restarting %s failed: %s", name, record.last_error)
            record.next_attempt = now + record.backoff_s
            record.backoff_s = RESTART_BACKOFF.after_failure(record.backoff_s)
    if "broker" in _supervised(settings, paths) and broker_kept_its_data(settings) is False:
        state.broker_data_lost.append(now)
        log.error(
            "THE BROKER CAME BACK EMPTY: its marker record is gone, so every in-flight event, dead letter and "
            "report-history record it held before is lost (the embedded broker keeps topics in memory). "
            "Re-send the studies accepted since the last known-good point; production uses a replicated Kafka."
        )
        mark_broker(settings)
        requeued = _requeue_unreported(settings)
        if requeued is not None:
            log.error("re-queued %d published but unreported studies from the gateway outbox for publishing again", requeued)
    state.heartbeat = now
    write_state(paths, state)
    return state


def run(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # a line per marker read otherwise
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    paths = StatePaths.of(settings.state_dir)
    state = read_state(paths)
    log.info("supervising the stack in %s every %.0f s", paths.root, CHECK_S)
    while not stop["now"]:
        try:
            state = check_once(settings, state)
        except Exception:  # the supervisor must outlive its own bugs
            log.exception("supervision round failed")
        for _ in range(int(CHECK_S / 0.1)):
            if stop["now"]:
                break
            time.sleep(0.1)


def main() -> None:
    run(get_settings())
    sys.exit(0)


if __name__ == "__main__":
    main()
