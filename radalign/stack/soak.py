"""Fault-injection soak on a private embedded stack: stream studies, break something, count.

For each fault a batch of studies is sent over HTTP the way a real sender does (a 503 or a
refused connection is retried after Retry-After until a deadline), the fault is injected while
the batch flows, the stack recovers (the supervisor restarts what was killed; outages end after
their duration), dead letters of type `dependency` are replayed once, and then it counts, over
the studies the gateway acknowledged:

- accepted: 202 answers; reported: studies with a report in the reports store;
- dead-lettered: studies with a dead letter in any stage; replayed: of those, replayed;
- lost: accepted and never reported; duplicated: studies with more than one distinct report id
  (redeliveries of the same report, same id, are at-least-once and de-duplicated by consumers;
  they are counted apart as `redelivered`);
- detected: for the broker kill, whether the supervisor reported that the broker came back empty.

Faults: `concepts_kill9`, `triton_down`, `postgres_down`, `broker_kill9`, `gateway_kill9_quiet`
(SIGKILL of the gateway right after its last acknowledgement, inside the quiet window) and
`random_kills` (SIGKILL of a random worker every few seconds during a longer stream).

    python benchmarks/soak.py                 # every fault, 40 studies each
    python benchmarks/soak.py --short         # the CI subset (tests/integration/test_soak.py)
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import numpy as np

from radalign.config import Settings

FAULTS = ("concepts_kill9", "triton_down", "postgres_down", "broker_kill9", "gateway_kill9_quiet", "random_kills")
SHORT_FAULTS = ("gateway_kill9_quiet", "postgres_down", "concepts_kill9")
CONSUMERS = ("preprocess", "concepts", "retrieval", "drafting")


@dataclass
class FaultResult:
    fault: str
    accepted: int = 0
    reported: int = 0
    dead_lettered: int = 0
    replayed: int = 0
    lost: int = 0
    duplicated: int = 0
    redelivered: int = 0
    refused_503: int = 0
    detected: str = "-"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _images(n: int) -> list[tuple[bytes, str]]:
    try:
        from radalign.samples import chest_jpeg_files

        files = chest_jpeg_files()
        return [(files[i % len(files)].read_bytes(), "image/jpeg") for i in range(n)]
    except (FileNotFoundError, ImportError, ModuleNotFoundError):
        from PIL import Image

        out = []
        for i in range(n):
            buffer = io.BytesIO()
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (256, 256), dtype=np.uint8)).save(buffer, format="PNG")
            out.append((buffer.getvalue(), "image/png"))
        return out


class Sender:
    """Posts studies like a real sender: retries 503 (after Retry-After) and refused connections."""

    def __init__(self, settings: Settings, token: str | None) -> None:
        self.base = f"http://127.0.0.1:{settings.gateway_port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.refused_503 = 0
        self._lock = threading.Lock()

    def post(self, study_id: str, image: bytes, media: str, deadline: float) -> str | None:
        while time.monotonic() < deadline:
            try:
                r = httpx.post(f"{self.base}/v1/studies", headers=self.headers, timeout=30,
                               data={"study_id": study_id, "view_position": "PA"}, files={"file": ("x", image, media)})
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if r.status_code == 202:
                return r.json()["study_key"]
            if r.status_code == 503:
                with self._lock:
                    self.refused_503 += 1
                time.sleep(min(2.0, float(r.headers.get("Retry-After", "1"))))
                continue
            raise RuntimeError(f"gateway answered {r.status_code}: {r.text[:200]}")
        return None


def _kill9(settings: Settings, name: str) -> int | None:
    from radalign.stack import running

    proc = running(name, settings)
    if proc is None:
        return None
    os.kill(proc.pid, signal.SIGKILL)
    return proc.pid


def _wait(condition: Callable[[], bool], timeout_s: float, interval_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


def _reports(settings: Settings, keys: list[str]) -> dict[str, str]:
    from radalign.db import connect

    try:
        with connect(settings.dsn, settings=settings) as conn:
            rows = conn.execute("SELECT study_key, report_id FROM reports WHERE study_key = ANY(%s)", (keys,)).fetchall()
    except Exception:  # noqa: BLE001 - PostgreSQL may be the fault: "nothing yet"
        return {}
    return dict(rows)


async def _topic_report_ids(settings: Settings, keys: set[str]) -> dict[str, list[str]]:
    from aiokafka import AIOKafkaConsumer

    from radalign.framework import codec
    from schemas.events import ReportDrafted
    from schemas.topics import REPORT_DRAFTED

    consumer = AIOKafkaConsumer(*REPORT_DRAFTED.names, **settings.kafka_client_kwargs(), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: dict[str, list[str]] = {}
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=700)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for r in records:
                    key = (r.key or b"").decode()
                    if key in keys:
                        found.setdefault(key, []).append(codec.decode(ReportDrafted, r.value).report_id)
    finally:
        await consumer.stop()
    return found


async def _dead_letter_keys(settings: Settings, keys: set[str]) -> set[str]:
    from radalign.framework.deadletters import list_dead_letters

    found: set[str] = set()
    for stage in CONSUMERS:
        try:
            found |= {r.letter.key for r in await list_dead_letters(settings, stage) if r.letter.key in keys}
        except Exception:  # noqa: BLE001, S112 - a topic not there (yet) holds no letter
            continue
    return found


async def _replay(settings: Settings, keys: set[str]) -> int:
    from radalign.framework.deadletters import replay_dead_letters

    replayed = 0
    for stage in CONSUMERS:
        report = await replay_dead_letters(settings, stage, {"dependency"})
        replayed += sum(1 for r in report.replayed if r.letter.key in keys)
    return replayed


def _inject(settings: Settings, fault: str, outage_s: float, sent: Callable[[], int], total: int, log: Callable[[str], None]) -> None:
    """Runs beside the sender: waits until part of the batch is in, then breaks something."""
    from radalign.stack import postgres, stop
    from radalign.stack.manager import up
    from radalign.stack.process import StatePaths
    from radalign.stack.workers import STAGES, worker_name

    if fault == "gateway_kill9_quiet":
        return  # done by run_fault once the whole batch is acknowledged
    _wait(lambda: sent() >= max(1, total // 3), 300, 0.1)
    if fault == "concepts_kill9":
        log(f"kill -9 worker-concepts (pid {_kill9(settings, worker_name('concepts'))})")
    elif fault == "broker_kill9":
        # Once the first studies left the quiet window, so that events are in flight between stages.
        time.sleep(settings.study_quiet_s + 3.0)
        log(f"kill -9 broker (pid {_kill9(settings, 'broker')})")
    elif fault == "triton_down":
        stop("triton", settings)
        log(f"triton stopped for {outage_s:.0f} s")
        time.sleep(outage_s)
        up(settings, ["triton"])
        log("triton back")
    elif fault == "postgres_down":
        postgres.stop_postgres(settings, StatePaths.of(settings.state_dir))
        log(f"postgres stopped for {outage_s:.0f} s")
        time.sleep(outage_s)
        postgres.start_postgres(settings, StatePaths.of(settings.state_dir))
        log("postgres back")
    elif fault == "random_kills":
        rng = random.Random(7)
        while sent() < total:
            victim = worker_name(rng.choice([s for s in STAGES]))
            log(f"kill -9 {victim} (pid {_kill9(settings, victim)})")
            time.sleep(rng.uniform(4, 8))


def run_fault(settings: Settings, fault: str, studies: int, *, outage_s: float, token: str | None,
              log: Callable[[str], None] = print, settle_s: float = 300.0) -> FaultResult:
    from radalign.stack.process import StatePaths
    from radalign.stack.supervisor import read_state

    result = FaultResult(fault)
    began = time.monotonic()
    lost_before = len(read_state(StatePaths.of(settings.state_dir)).broker_data_lost)
    sender = Sender(settings, token)
    images = _images(studies)
    run = f"{fault}-{int(time.time())}"
    accepted: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + settle_s

    def send(i: int) -> None:
        key = sender.post(f"SOAK-{run}-{i}", *images[i], deadline=deadline)
        if key:
            with lock:
                accepted.append(key)
        if fault != "gateway_kill9_quiet":
            time.sleep(0.2)  # a stream, not a single burst: the fault lands mid-stream

    injector = threading.Thread(target=_inject, args=(settings, fault, outage_s, lambda: len(accepted), studies, log), daemon=True)
    injector.start()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(send, range(studies)))
    if fault == "gateway_kill9_quiet":
        from radalign.stack.workers import worker_name

        log(f"kill -9 worker-gateway right after the last 202 (pid {_kill9(settings, worker_name('gateway'))})")
    injector.join()
    keys = sorted(set(accepted))
    result.accepted, result.refused_503 = len(keys), sender.refused_503

    def settled() -> bool:  # every study reported or parked in a dead-letter topic
        reported = set(_reports(settings, keys))
        return len(reported) == len(keys) or reported | asyncio.run(_dead_letter_keys(settings, set(keys))) >= set(keys)

    _wait(settled, settle_s / 2, 3.0)
    dead = asyncio.run(_dead_letter_keys(settings, set(keys)))
    result.dead_lettered = len(dead)
    if dead - set(_reports(settings, keys)):
        result.replayed = asyncio.run(_replay(settings, set(keys)))
        log(f"replayed {result.replayed} dead letter(s) of type dependency")
        _wait(lambda: len(_reports(settings, keys)) == len(keys), settle_s / 2, 2.0)

    reports = _reports(settings, keys)
    result.reported = len(reports)
    result.lost = len(keys) - len(reports)
    ids = asyncio.run(_topic_report_ids(settings, set(keys)))
    result.duplicated = sum(1 for v in ids.values() if len(set(v)) > 1)
    result.redelivered = sum(len(v) - 1 for v in ids.values())
    if fault == "broker_kill9":
        lost_now = len(read_state(StatePaths.of(settings.state_dir)).broker_data_lost)
        result.detected = "yes" if lost_now > lost_before else "NO"
    result.seconds = time.monotonic() - began
    return result


def start_stack(settings: Settings, cases: int, log: Callable[[str], None] = print) -> None:
    from radalign.demo import ensure_iu_cases
    from radalign.stack.manager import up

    begin = time.monotonic()
    up(settings, ["broker", "postgres", "triton"], supervise=False)
    total = asyncio.run(ensure_iu_cases(settings, limit=cases))
    up(settings, ["workers"], supervise=True)
    log(f"stack up with {total} cases in {time.monotonic() - begin:.0f} s ({settings.state_dir})")


def table(results: list[FaultResult]) -> str:
    head = "| fault | accepted | reported | dead-lettered | replayed | lost | duplicated | redelivered (same id) | 503s | broker loss detected | s |"
    lines = [head, "|---|" + "---:|" * 10]
    for r in results:
        lines.append(f"| {r.fault} | {r.accepted} | {r.reported} | {r.dead_lettered} | {r.replayed} | {r.lost} | {r.duplicated} "
                     f"| {r.redelivered} | {r.refused_503} | {r.detected} | {r.seconds:.0f} |")
    return "\n".join(lines)
