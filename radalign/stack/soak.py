"""Fault-injection soak on a private embedded stack: stream studies, break something, count at every sink.

For each fault a batch of studies is sent over HTTP the way a real sender does (a 503 or a
refused connection is retried after Retry-After until a deadline), the fault is injected while
studies are inside the stages, the stack recovers (the supervisor restarts what was killed;
outages end after their duration), dead letters of type `dependency` are replayed once, and then
it counts over the studies the gateway acknowledged, at each sink read independently of the
pipeline's own records (`radalign.stack.soak_sinks`): the report topic, the PACS (Orthanc, where
installed) and the FHIR server (a loopback one the soak runs):

- accepted: 202 answers; reported: studies with a report in the reports store;
- per sink: delivered, lost, duplicated (one version as two documents) and redelivered (the same
  document written again: at-least-once); the row's `lost` and `duplicated` are the worst sink's;
- dead-lettered: studies with a dead letter in any stage; replayed: of those, replayed;
- kills: SIGKILLs sent, per component; detected: for the broker kill, whether the supervisor
  reported that the broker came back empty;
- for the hung PACS: FHIR reports delivered while the PACS was frozen (it must delay only itself).

Faults: `concepts_kill9`, `triton_down` and `postgres_down` (once studies are inside the stages),
`broker_kill9`, `gateway_kill9_quiet` (SIGKILL of the gateway right after its last
acknowledgement, inside the quiet window), `random_kills` (SIGKILL of every stage's worker in a
shuffled round, again and again, until the last study reached the last sink), `pacs_sigstop`
(Orthanc frozen with SIGSTOP, then resumed) and `orthanc_kill9` (the supervisor restarts it).
A run fails on any loss or duplicate at any sink, and on a broker loss the supervisor missed.

    python benchmarks/soak.py                 # every fault, 40 studies each
    python benchmarks/soak.py --short         # the CI subset (tests/integration/test_soak.py)
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from radalign.config import Settings
from radalign.pipeline import CONSUMER_STAGES, STAGES
from radalign.stack.soak_sinks import SinkTally, fhir_studies, fhir_writes, pacs_studies, pacs_writes, read_topic, tally

FAULTS = ("concepts_kill9", "triton_down", "postgres_down", "broker_kill9", "gateway_kill9_quiet", "random_kills",
          "pacs_sigstop", "orthanc_kill9")
SHORT_FAULTS = ("gateway_kill9_quiet", "postgres_down", "concepts_kill9")
#: Faults that need the PACS (skipped, with the reason, where Orthanc is not installed).
PACS_FAULTS = ("pacs_sigstop", "orthanc_kill9")


@dataclass
class FaultResult:
    fault: str
    accepted: int = 0
    reported: int = 0
    dead_lettered: int = 0
    replayed: int = 0
    sinks: list[SinkTally] = field(default_factory=list)
    refused_503: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    detected: str = "-"
    delivered_while_frozen: str = "-"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return max([self.accepted - self.reported, *(s.lost for s in self.sinks)])

    @property
    def duplicated(self) -> int:
        return max([0, *(s.duplicated for s in self.sinks)])

    @property
    def redelivered(self) -> int:
        return sum(s.redelivered for s in self.sinks)

    @property
    def failed(self) -> bool:
        """Any loss or duplicate at any sink, or a broker loss the supervisor did not see. The one
        loss allowed: the report topic's history when the embedded broker came back empty and the
        supervisor said so (tansu keeps topics in memory; a replicated Kafka keeps them); every
        study must still reach the PACS and the FHIR server."""
        sinks = [s for s in self.sinks if not (s.sink == "topic" and self.detected == "yes")]
        lost = max([self.accepted - self.reported, *(s.lost for s in sinks)])
        return bool(lost or self.duplicated or self.detected == "NO")


@dataclass
class SoakStack:
    """The private stack's settings (destinations included) and the sinks the soak reads."""

    settings: Settings
    fhir: Any = None  # the loopback FHIR server (radalign.loopback.fhir_server.LoopbackFhirServer)
    pacs_url: str | None = None  # Orthanc's REST API, where Orthanc is installed

    def fhir_reports(self) -> list[dict[str, Any]]:
        for _ in range(5):  # the server thread may be adding one while we copy
            try:
                return list(self.fhir.all("DiagnosticReport")) if self.fhir else []
            except RuntimeError:
                time.sleep(0.05)
        return []

    def stop(self) -> None:
        if self.fhir is not None:
            self.fhir.stop()


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


def _signal(settings: Settings, name: str, sig: signal.Signals) -> int | None:
    from radalign.stack import running

    proc = running(name, settings)
    if proc is None:
        return None
    os.kill(proc.pid, sig)
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


async def _dead_letter_keys(settings: Settings, keys: set[str]) -> set[str]:
    from radalign.framework.deadletters import list_dead_letters

    found: set[str] = set()
    for stage in CONSUMER_STAGES:
        try:
            found |= {r.letter.key for r in await list_dead_letters(settings, stage) if r.letter.key in keys}
        except Exception:  # noqa: BLE001 - a topic not there (yet) holds no letter
            continue
    return found


async def _replay(settings: Settings, keys: set[str]) -> int:
    from radalign.framework.deadletters import replay_dead_letters

    replayed = 0
    for stage in CONSUMER_STAGES:
        report = await replay_dead_letters(settings, stage, {"dependency"})
        replayed += sum(1 for r in report.replayed if r.letter.key in keys)
    return replayed


@dataclass
class Batch:
    """One fault's stream as it goes: what the gateway acknowledged, and how far it got."""

    stack: SoakStack
    total: int
    accepted: dict[str, str] = field(default_factory=dict)  # study key -> the sender's study id
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self) -> int:
        return len(self.accepted)

    def reported(self) -> int:
        return len(_reports(self.stack.settings, list(self.accepted)))

    def last_sink_count(self) -> int:
        """Studies at the last sink: the FHIR server where there is one, else the reports store."""
        if self.stack.fhir is None:
            return self.reported()
        return len(fhir_studies(self.stack.fhir_reports(), dict(self.accepted)))

    def everywhere(self) -> int:
        """Studies that reached every sink the soak reads (what settling waits for)."""
        done = self.last_sink_count()
        if self.stack.pacs_url and done:
            try:
                done = min(done, len(pacs_studies(self.stack.pacs_url, dict(self.accepted))))
            except httpx.HTTPError:  # the PACS may be the fault: not there yet
                return 0
        return done


def _inside_the_stages(batch: Batch) -> bool:
    """Wait until studies are inside the stages: a third sent and the first one reported."""
    return _wait(lambda: batch.sent() >= max(1, batch.total // 3) and batch.reported() >= 1, 300, 0.5)


def _outage(stack: SoakStack, fault: str, outage_s: float, log: Callable[[str], None]) -> None:
    from radalign.stack import postgres, stop
    from radalign.stack.manager import up
    from radalign.stack.process import StatePaths

    settings = stack.settings
    if fault == "triton_down":
        stop("triton", settings)
        log(f"triton stopped for {outage_s:.0f} s")
        time.sleep(outage_s)
        up(settings, ["triton"])
    else:
        postgres.stop_postgres(settings, StatePaths.of(settings.state_dir))
        log(f"postgres stopped for {outage_s:.0f} s")
        time.sleep(outage_s)
        postgres.start_postgres(settings, StatePaths.of(settings.state_dir))
    log(f"{fault.removesuffix('_down')} back")


def _random_kills(batch: Batch, result: FaultResult, log: Callable[[str], None], deadline: float) -> None:
    """Every stage's worker in a shuffled round, round after round, until the last study reached
    the last sink: kills land mid-stage over the whole run, at least one per stage."""
    from radalign.stack.workers import worker_name

    rng = random.Random(7)
    _wait(lambda: batch.sent() >= 1, 120, 0.2)
    while time.monotonic() < deadline:
        victims = list(STAGES)
        rng.shuffle(victims)
        for stage in victims:
            if _signal(batch.stack.settings, worker_name(stage), signal.SIGKILL) is not None:
                result.kills[stage] += 1
                log(f"kill -9 worker-{stage}")
            time.sleep(rng.uniform(2, 5))
        if batch.sent() >= batch.total and batch.everywhere() >= batch.sent():
            return


def _freeze_pacs(batch: Batch, result: FaultResult, outage_s: float, log: Callable[[str], None]) -> None:
    """SIGSTOP Orthanc: a hung destination. FHIR deliveries must go on meanwhile."""
    _wait(lambda: batch.last_sink_count() >= 1, 300, 0.5)
    before = batch.last_sink_count()
    _signal(batch.stack.settings, "orthanc", signal.SIGSTOP)
    log(f"orthanc frozen (SIGSTOP) for {outage_s:.0f} s")
    time.sleep(outage_s)
    during = batch.last_sink_count() - before
    _signal(batch.stack.settings, "orthanc", signal.SIGCONT)
    result.delivered_while_frozen = str(during)
    log(f"orthanc resumed; {during} report(s) reached FHIR while it was frozen")


def _inject(batch: Batch, result: FaultResult, fault: str, outage_s: float, log: Callable[[str], None], deadline: float) -> None:
    """Runs beside the sender and breaks something while studies are inside the stages."""
    from radalign.stack.workers import worker_name

    settings = batch.stack.settings
    if fault == "gateway_kill9_quiet":
        return  # done by run_fault once the whole batch is acknowledged
    if fault == "random_kills":
        return _random_kills(batch, result, log, deadline)
    if fault == "pacs_sigstop":
        return _freeze_pacs(batch, result, outage_s, log)
    _inside_the_stages(batch)
    if fault in ("concepts_kill9", "broker_kill9", "orthanc_kill9"):
        name = {"concepts_kill9": worker_name("concepts"), "broker_kill9": "broker", "orthanc_kill9": "orthanc"}[fault]
        if _signal(settings, name, signal.SIGKILL) is not None:
            result.kills[name.removeprefix("worker-")] += 1
            log(f"kill -9 {name}")
    else:
        _outage(batch.stack, fault, outage_s, log)


def _send_batch(batch: Batch, fault: str, token: str | None, deadline: float) -> int:
    """Stream the batch from two sender threads; returns the 503s the gateway answered."""
    sender = Sender(batch.stack.settings, token)
    images = _images(batch.total)
    run = f"{fault}-{int(time.time())}"

    def send(i: int) -> None:
        study_id = f"SOAK-{run}-{i}"
        key = sender.post(study_id, *images[i], deadline=deadline)
        if key:
            with batch.lock:
                batch.accepted[key] = study_id
        if fault != "gateway_kill9_quiet":
            time.sleep(0.2)  # a stream, not a single burst: the fault lands mid-stream

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(send, range(batch.total)))
    return sender.refused_503


def _sink_tallies(stack: SoakStack, accepted: dict[str, str]) -> list[SinkTally]:
    keys = set(accepted)
    tallies = [tally("topic", keys, read_topic(stack.settings, keys))]
    if stack.pacs_url:
        tallies.append(tally("pacs", keys, pacs_writes(stack.pacs_url, accepted)))
    if stack.fhir is not None:
        history = lambda rid: stack.fhir.versions("DiagnosticReport", rid)  # noqa: E731 - one line
        tallies.append(tally("fhir", keys, fhir_writes(stack.fhir_reports(), history, accepted)))
    return tallies


def _settle(batch: Batch, result: FaultResult, settle_s: float, log: Callable[[str], None]) -> None:
    """Wait until every study reached the last sink or a dead-letter topic; replay `dependency`
    dead letters once; wait again."""
    settings, keys = batch.stack.settings, set(batch.accepted)

    def settled() -> bool:
        done = batch.everywhere() >= len(keys)
        return done or len(set(_reports(settings, list(keys))) | asyncio.run(_dead_letter_keys(settings, keys))) >= len(keys)

    _wait(settled, settle_s / 2, 3.0)
    dead = asyncio.run(_dead_letter_keys(settings, keys))
    result.dead_lettered = len(dead)
    if dead:
        result.replayed = asyncio.run(_replay(settings, keys))
        log(f"replayed {result.replayed} dead letter(s) of type dependency")
    _wait(lambda: batch.everywhere() >= len(keys), settle_s / 2, 2.0)


def run_fault(stack: SoakStack, fault: str, studies: int, *, outage_s: float, token: str | None,
              log: Callable[[str], None] = print, settle_s: float = 300.0) -> FaultResult:
    from radalign.stack.process import StatePaths
    from radalign.stack.supervisor import read_state
    from radalign.stack.workers import worker_name

    settings = stack.settings
    result = FaultResult(fault)
    began = time.monotonic()
    lost_before = len(read_state(StatePaths.of(settings.state_dir)).broker_data_lost)
    batch = Batch(stack, studies)
    deadline = time.monotonic() + settle_s
    injector = threading.Thread(target=_inject, args=(batch, result, fault, outage_s, log, deadline), daemon=True)
    injector.start()
    result.refused_503 = _send_batch(batch, fault, token, deadline)
    if fault == "gateway_kill9_quiet" and _signal(settings, worker_name("gateway"), signal.SIGKILL) is not None:
        result.kills["gateway"] += 1
        log("kill -9 worker-gateway right after the last 202")
    injector.join()
    result.accepted = len(batch.accepted)
    _settle(batch, result, settle_s, log)
    result.reported = len(_reports(settings, list(batch.accepted)))
    result.sinks = _sink_tallies(stack, dict(batch.accepted))
    if fault == "broker_kill9":
        lost_now = len(read_state(StatePaths.of(settings.state_dir)).broker_data_lost)
        result.detected = "yes" if lost_now > lost_before else "NO"
    result.seconds = time.monotonic() - began
    return result


def _destinations(settings: Settings, fhir_url: str, pacs: bool) -> str:
    destinations: list[dict[str, Any]] = [
        {"name": "fhir", "kind": "fhir", "base_url": fhir_url, "version": "R4", "patient": "create", "order": "identifier"}
    ]
    if pacs:
        destinations.insert(0, {"name": "pacs", "kind": "dicom", "ae_title": settings.orthanc_ae_title,
                                "host": "127.0.0.1", "port": settings.orthanc_dicom_port})
    return json.dumps({"destinations": destinations})


def start_stack(settings: Settings, cases: int, log: Callable[[str], None] = print) -> SoakStack:
    """Broker, PostgreSQL, Triton, Orthanc (where installed), a loopback FHIR server, and every
    worker under the supervisor, delivering to the PACS and the FHIR server."""
    from radalign.kb.ingest import ensure_iu_cases
    from radalign.loopback.fhir_server import LoopbackFhirServer
    from radalign.stack import orthanc
    from radalign.stack.manager import up

    begin = time.monotonic()
    pacs = orthanc.installed()
    up(settings, ["broker", "postgres", "triton", *(["orthanc"] if pacs else [])], supervise=False)
    if not pacs:
        log("Orthanc is not installed: the soak counts the topic and the FHIR server only, and skips the PACS faults")
    fhir = LoopbackFhirServer("R4")
    fhir.start()
    settings = settings.model_copy(update={"delivery_destinations": _destinations(settings, fhir.base_url, pacs)})
    total = asyncio.run(ensure_iu_cases(settings, limit=cases))
    up(settings, ["workers"], supervise=True)
    log(f"stack up with {total} cases in {time.monotonic() - begin:.0f} s ({settings.state_dir})")
    return SoakStack(settings, fhir, orthanc.http_url(settings) if pacs else None)


def table(results: list[FaultResult]) -> str:
    sinks = sorted({s.sink for r in results for s in r.sinks}, key=["topic", "pacs", "fhir"].index)
    head = ("| fault | accepted | reported | dead-lettered | replayed | "
            + " | ".join(f"{s} lost / dup / redelivered" for s in sinks)
            + " | kills | 503s | broker loss detected | FHIR while PACS frozen | s |")
    lines = [head, "|---|" + "---:|" * (4 + len(sinks)) + "---|---:|---|---:|---:|"]
    for r in results:
        by_sink = {s.sink: s for s in r.sinks}
        cells = [f"{by_sink[s].lost} / {by_sink[s].duplicated} / {by_sink[s].redelivered}" if s in by_sink else "-" for s in sinks]
        kills = ", ".join(f"{k} {n}" for k, n in sorted(r.kills.items())) or "-"
        lines.append(f"| {r.fault} | {r.accepted} | {r.reported} | {r.dead_lettered} | {r.replayed} | " + " | ".join(cells)
                     + f" | {kills} | {r.refused_503} | {r.detected} | {r.delivered_while_frozen} | {r.seconds:.0f} |")
    return "\n".join(lines)
