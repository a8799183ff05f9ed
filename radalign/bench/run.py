"""`radalign bench`: the whole pipeline, gateway to delivered report, beside each stage alone and a
sequential in-process baseline, and STAT turnaround under a routine backlog, in one run on one
machine. Writes bench.json and bench.png.

Phases (one private embedded stack: broker, PostgreSQL, Triton, Orthanc, every worker; a loopback
FHIR server in its own process):

1. pipeline: N studies posted to the gateway (HTTP, a few clients; every `stat_every`-th one
   STAT) until each is delivered, i.e. acknowledged by every destination (Orthanc by STOW-RS or
   C-STORE, and the FHIR server): studies/s from the first post to the last acknowledgement,
   end-to-end latency per lane (post to last acknowledgement, the gateway's study-assembly quiet
   period included), throughput and latency over time.
2. STAT idle: STAT studies one at a time into the idle pipeline.
3. STAT under a backlog: `backlog` routine studies posted as fast as the gateway takes them, then
   STAT studies injected every `stat_interval_s` while the backlog drains.
4. each stage alone: workers stopped; a fresh set of N uploads through the gateway (its own rate,
   no consumer running), then each consuming stage's own code (the Stage class its worker runs,
   with its real dependencies: blob store, Triton, PostgreSQL, Orthanc, FHIR) over the records the
   stage before it produced alone, with the worker's concurrency, no Kafka.
5. sequential baseline: another set uploaded by one client, then every stage in one process, one
   study after another (no Kafka, no concurrency).

Ratios: pipeline / the shared-core bound (1 / the sum of each stage's cost per study: on one
machine the stages share the cores) and pipeline / the slowest stage alone.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radalign.bench import stats
from radalign.config import Settings


def machine_load() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    return {"load_1m": one, "load_5m": five, "load_15m": fifteen, "cpus": os.cpu_count(),
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}


def machine_busy_s() -> float:
    """CPU seconds the machine has been busy since boot, all cores and processes (Linux)."""
    with open("/proc/stat") as f:
        return stats.busy_cpu_s(f.readline(), os.sysconf("SC_CLK_TCK"))


def cpu_by_component() -> dict[str, float]:
    """CPU seconds each component of the stack has used so far, its processes summed (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            name = stats.component_of((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            if name is not None:
                out[name] = out.get(name, 0.0) + stats.process_cpu_s((proc / "stat").read_text(), ticks)
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
    return out


def progress(total: int, desc: str):
    """tqdm where installed, else a plain progress line."""
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="study", file=sys.stderr, mininterval=1.0)
    except ImportError:  # pragma: no cover
        class Line:
            n = 0

            def update(self, k: int) -> None:
                self.n += k
                print(f"\r{desc}: {self.n}/{total}", end="", file=sys.stderr, flush=True)

            def close(self) -> None:
                print(file=sys.stderr)

        return Line()


# --- inputs ------------------------------------------------------------------------------------

def images(n: int) -> list[Path]:
    from radalign.samples import chest_jpeg_files, shared_data_dir

    pool = list(chest_jpeg_files())
    data = shared_data_dir()
    if data is not None:  # more variety (sizes, views) where the team's data is present
        pool += sorted((data / "cxr-public" / "images").glob("*.png"))[:200]
    return [pool[i % len(pool)] for i in range(n)]


@dataclass(frozen=True)
class Posted:
    key: str
    lane: str
    sent: float  # epoch seconds the upload began


def post_studies(settings: Settings, files: Sequence[Path], clients: int, tag: str,
                 lane_of: Callable[[int], str] = lambda i: "routine", bar: bool = True) -> list[Posted]:
    """Upload each file as a new study (HTTP, `clients` keep-alive connections)."""
    import httpx

    local = threading.local()
    payloads = {p: p.read_bytes() for p in set(files)}  # read once: the client should cost little
    pbar = progress(len(files), f"post {tag}") if bar else None
    lock = threading.Lock()

    def post(item: tuple[int, Path]) -> Posted:
        i, path = item
        media = "image/png" if path.suffix == ".png" else "image/jpeg"
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=f"http://127.0.0.1:{settings.gateway_port}", timeout=120)
        lane = lane_of(i)
        sent = time.time()
        r = local.client.post(
            "/v1/studies",
            data={"study_id": f"BENCH-{tag}-{i}", "patient_id": f"BENCH-P-{tag}-{i}", "view_position": "PA", "priority": lane},
            files={"file": (path.name, payloads[path], media)},
        )
        r.raise_for_status()
        if pbar is not None:
            with lock:
                pbar.update(1)
        return Posted(r.json()["study_key"], lane, sent)

    try:
        with ThreadPoolExecutor(clients) as pool:
            return list(pool.map(post, enumerate(files)))
    finally:
        if pbar is not None:
            pbar.close()


# --- completion: the delivery records ----------------------------------------------------------

class Deliveries:
    """When each study was acknowledged by every destination (`deliveries`, status delivered)."""

    def __init__(self, settings: Settings, destinations: int) -> None:
        import psycopg

        self.conn = psycopg.connect(settings.dsn, autocommit=True)
        self.destinations = destinations

    def done(self, keys: Sequence[str]) -> dict[str, float]:
        rows = self.conn.execute(
            "SELECT study_key, max(delivered_at) FROM deliveries WHERE study_key = ANY(%s) AND status = 'delivered' "
            "GROUP BY study_key HAVING count(*) >= %s",
            (list(keys), self.destinations),
        ).fetchall()
        return {key: at.timestamp() for key, at in rows}

    def wait(self, posted: Sequence[Posted], timeout_s: float, desc: str, poll_s: float = 0.5) -> dict[str, float]:
        pending = {p.key for p in posted}
        found: dict[str, float] = {}
        pbar = progress(len(pending), desc)
        deadline = time.monotonic() + timeout_s
        try:
            while pending and time.monotonic() < deadline:
                new = self.done(sorted(pending))
                found.update(new)
                pending -= new.keys()
                pbar.update(len(new))
                if pending:
                    time.sleep(poll_s)
        finally:
            pbar.close()
        return found

    def forget(self, keys: Sequence[str]) -> None:
        self.conn.execute("DELETE FROM deliveries WHERE study_key = ANY(%s)", (list(keys),))

    def close(self) -> None:
        self.conn.close()


def latencies(posted: Sequence[Posted], done: dict[str, float]) -> list[dict[str, Any]]:
    return [{"key": p.key, "lane": p.lane, "sent": p.sent, "done": done[p.key], "latency_s": done[p.key] - p.sent}
            for p in posted if p.key in done]


# --- stages alone and the sequential baseline --------------------------------------------------

async def read_topic(settings: Settings, topics: Sequence[str], keys: set[str], timeout_s: float,
                     times: dict[str, float] | None = None) -> dict[str, Any]:
    """The first record per study key among `keys`, from the beginning of the topics (and, into
    `times`, its broker timestamp in epoch seconds)."""
    from aiokafka import AIOKafkaConsumer

    from radalign.framework.stage import Record

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=settings.kafka_bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, Record] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while len(found) < len(keys) and time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                for m in messages:
                    key = (m.key or b"").decode()
                    if key in keys and key not in found:
                        found[key] = Record(tp.topic, tp.partition, m.offset, m.key, m.value, list(m.headers or []))
                        if times is not None:
                            times[key] = m.timestamp / 1000
    finally:
        await consumer.stop()
    return found


def build_stages(settings: Settings) -> dict[str, Any]:
    """Every consuming stage in graph order, as its worker builds it (`main(settings)` of the
    stage's adapter module runs `run_worker(<Stage>(settings), settings)`)."""
    from radalign.pipeline import CONSUMER_STAGES
    from services.concepts.agent import ConceptsStage
    from services.delivery.agent import DeliveryStage
    from services.drafting.agent import DraftingStage
    from services.preprocess.agent import PreprocessStage
    from services.retrieval.agent import RetrievalStage
    from services.review.agent import ReviewStage

    built = {"preprocess": PreprocessStage(), "concepts": ConceptsStage(settings), "retrieval": RetrievalStage(),
             "drafting": DraftingStage(settings), "review": ReviewStage(settings), "delivery": DeliveryStage(settings)}
    if set(built) != set(CONSUMER_STAGES):  # a stage added to the graph must be benchmarked too
        raise RuntimeError(f"the bench builds {sorted(built)}, the graph has {sorted(CONSUMER_STAGES)}")
    return {name: built[name] for name in CONSUMER_STAGES}


def _as_record(out: Any, i: int) -> Any:
    from radalign.framework.stage import Record

    return Record(out.topic, 0, i, out.key, out.value, list(out.headers))


async def _run_one(runner: Any, record: Any, produced: list[Any]) -> None:
    """One record through a stage; every output kept for the stages after it."""
    outs = await runner.process(record)
    assert not any("dlq" in o.topic for o in outs), outs[0].value[:300]
    produced.extend(_as_record(o, len(produced)) for o in outs)


async def _drain(queue: asyncio.Queue[Any], runner: Any, pbar: Any, produced: list[Any]) -> None:
    """One lane of a stage alone: process queued records."""
    while not queue.empty():
        await _run_one(runner, queue.get_nowait(), produced)
        pbar.update(1)


async def _until_delivered(deliveries: Deliveries, keys: list[str], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while len(await asyncio.to_thread(deliveries.done, keys)) < len(keys):
        if time.monotonic() > deadline:
            raise RuntimeError("the delivery lanes did not deliver every study alone")
        await asyncio.sleep(0.1)


async def _one_stage_alone(settings: Settings, stage: Any, records: list[Any], deliveries: Deliveries,
                           produced: list[Any]) -> tuple[float, float, float]:
    """Seconds, this process's CPU seconds and the machine's CPU seconds for `records` through
    one stage with the worker's concurrency (delivery: until every destination acknowledged)."""
    from radalign.framework.stage import StageRunner

    await stage.setup(settings)
    runner = StageRunner(stage, settings)
    try:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for r in records:
            queue.put_nowait(r)
        pbar = progress(len(records), f"{stage.name} alone")
        busy0, cpu0, begin = machine_busy_s(), time.process_time(), time.perf_counter()
        lanes = [asyncio.create_task(task.run()) for task in stage.background_tasks()] if stage.name == "delivery" else []
        await asyncio.gather(*(_drain(queue, runner, pbar, produced) for _ in range(stage.concurrency)))
        if lanes:
            await _until_delivered(deliveries, [r.key.decode() for r in records])
            for lane in lanes:
                lane.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
        pbar.close()
        return time.perf_counter() - begin, time.process_time() - cpu0, machine_busy_s() - busy0
    finally:
        await stage.close()


async def chain_alone(settings: Settings, received: list[Any], deliveries: Deliveries) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Each consuming stage of the graph alone over what the stages before it produced alone:
    studies/s per stage with the worker's concurrency, the CPU seconds per study this process
    spent in it, and those the whole machine spent (Triton, PostgreSQL, Orthanc, the FHIR server
    included). Delivery alone is its consumer queueing each version and its lanes sending it,
    until every destination acknowledged every study (what it does in the pipeline)."""
    from radalign.pipeline import stage_spec

    rates: dict[str, float] = {}
    cpu: dict[str, float] = {}
    machine_cpu: dict[str, float] = {}
    produced: list[Any] = list(received)
    for name, stage in build_stages(settings).items():
        spec = stage_spec(name)
        assert spec.input is not None
        records = [r for r in produced if r.topic in spec.input.names]
        elapsed, used, busy = await _one_stage_alone(settings, stage, records, deliveries, produced)
        rates[name] = len(records) / elapsed
        cpu[name] = used / len(records)
        machine_cpu[name] = busy / len(records)
    return rates, cpu, machine_cpu


async def sequential(settings: Settings, records: list[Any]) -> float:
    """Seconds for every study through every stage in this process, one after another (to the
    acknowledgement of every destination)."""
    from radalign.framework.stage import StageRunner
    from radalign.pipeline import stage_spec
    from services.delivery.agent import DeliveryStage

    stages = build_stages(settings)
    runners = []
    for stage in stages.values():
        await stage.setup(settings)
        runners.append(StageRunner(stage, settings))
    try:
        pbar = progress(len(records), "sequential")
        begin = time.perf_counter()
        for record in records:
            produced = [record]
            for runner in runners:
                wanted = stage_spec(runner.stage.name).input
                assert wanted is not None
                for current in [r for r in produced if r.topic in wanted.names]:
                    await _run_one(runner, current, produced)
                if isinstance(runner.stage, DeliveryStage):  # queued: its lanes send it, one after the other
                    for lane in runner.stage.lanes.values():
                        while await lane.step():
                            pass
            pbar.update(1)
        pbar.close()
        return time.perf_counter() - begin
    finally:
        for stage in stages.values():
            await stage.close()


# --- the run -----------------------------------------------------------------------------------

@dataclass
class Options:
    studies: int = 200
    clients: int = 4
    cases: int = 1000
    stat_every: int = 10
    idle_stat: int = 15
    backlog: int = 1000
    backlog_stat: int = 20
    stat_interval_s: float = 3.0
    baseline_studies: int = 60
    pacs: str = "stow"  # stow (DICOMweb STOW-RS) or dicom (C-STORE)
    out: Path = Path(".radalign/reports/bench")
    skip: set[str] = field(default_factory=set)  # phases to skip: stat, alone, baseline


def start_fhir_server() -> tuple[subprocess.Popen[str], str]:
    """The loopback FHIR server in its own process, so that it does not share this process's GIL."""
    code = ("import sys,time\nfrom radalign.loopback.fhir_server import LoopbackFhirServer\n"
            "s=LoopbackFhirServer('R4'); print(s.start(), flush=True)\nwhile True: time.sleep(3600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError("the loopback FHIR server did not start")
    return proc, url


def destinations(settings: Settings, fhir_url: str, pacs: str) -> list[dict[str, Any]]:
    from radalign.stack import orthanc

    if pacs == "dicom":
        pacs_dest = {"name": "pacs", "kind": "dicom", "ae_title": settings.orthanc_ae_title, "host": "127.0.0.1", "port": settings.orthanc_dicom_port}
    else:
        pacs_dest = {"name": "pacs", "kind": "stow", "url": orthanc.dicomweb_url(settings)}
    fhir = {"name": "ehr", "kind": "fhir", "base_url": fhir_url, "patient_identifier_system": "urn:oid:1.2.3.4.5",
            "patient": "create", "order": "identifier"}
    return [pacs_dest, fhir]


def run(opts: Options) -> dict[str, Any]:
    """The whole run on a private stack: the pipeline, STAT idle and under a backlog, each stage
    alone, the sequential baseline (each phase one helper below)."""
    from radalign.kb.ingest import ensure_iu_cases
    from radalign.pipeline import CONSUMER_STAGES
    from radalign.stack import down, orthanc, stop, up
    from radalign.stack.workers import worker_name
    from radalign.testing.stack import short_state_dir, stack_settings

    if not orthanc.installed() or orthanc.dicomweb_plugin() is None:
        raise SystemExit("Orthanc with its DICOMweb plugin is needed (apt-get install orthanc orthanc-dicomweb)")
    result: dict[str, Any] = {"options": {k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else v)
                                          for k, v in opts.__dict__.items()},
                              "load": {"start": machine_load()}}
    state = short_state_dir("radalign-bench-")
    fhir_proc, fhir_url = start_fhir_server()
    settings = stack_settings(state, study_quiet_s=0.5)
    dests = destinations(settings, fhir_url, opts.pacs)
    settings = settings.model_copy(update={"delivery_destinations": json.dumps({"destinations": dests})})
    result["destinations"] = [d["kind"] for d in dests]
    deliveries: Deliveries | None = None
    try:
        print(f"[1/6] stack up in {state} (broker, PostgreSQL, Triton, Orthanc, workers; FHIR at {fhir_url}) ...", flush=True)
        up(settings)
        print(f"      {asyncio.run(ensure_iu_cases(settings, limit=opts.cases))} cases in the store", flush=True)
        deliveries = Deliveries(settings, len(dests))
        deliveries.wait(post_studies(settings, images(2), 2, "warm", bar=False), 300, "warm-up")
        files = images(opts.studies)
        result["pipeline"] = pipeline_phase(settings, deliveries, files, opts)
        if "stat" not in opts.skip:
            result["stat"] = stat_phases(settings, deliveries, opts)
        for name in CONSUMER_STAGES:
            stop(worker_name(name), settings)
        if "alone" not in opts.skip:
            result["alone"] = alone_phase(settings, deliveries, files, opts, result["pipeline"])
        if "baseline" not in opts.skip:
            result["baseline"] = baseline_phase(settings, files, opts)
        result["load"]["end"] = machine_load()
        return result
    finally:
        if deliveries is not None:
            deliveries.close()
        down(settings)
        fhir_proc.kill()
        fhir_proc.wait()
        shutil.rmtree(state, ignore_errors=True)


def pipeline_phase(settings: Settings, deliveries: Deliveries, files: list[Any], opts: Options) -> dict[str, Any]:
    """The pipeline, gateway to delivered (and the same run up to the drafted report)."""
    from schemas.topics import REPORT_DRAFTED

    print(f"[2/6] pipeline: {len(files)} studies, gateway -> delivered ({opts.clients} HTTP clients, every {opts.stat_every}th STAT) ...", flush=True)
    load0, busy0, by_component0 = machine_load(), machine_busy_s(), cpu_by_component()
    posted = post_studies(settings, files, opts.clients, "run", lambda i: "stat" if i % opts.stat_every == opts.stat_every - 1 else "routine")
    done = deliveries.wait(posted, 1800, "delivered")
    busy, by_component = machine_busy_s() - busy0, cpu_by_component()
    if len(done) < len(posted):
        raise RuntimeError(f"only {len(done)}/{len(posted)} studies were delivered")
    lat = latencies(posted, done)
    first, last = min(p.sent for p in posted), max(done.values())
    pipeline_rate = stats.rate(len(posted), first, last)
    phase: dict[str, Any] = {"studies": len(posted), "studies_per_s": pipeline_rate, "elapsed_s": last - first,
                             "steady_studies_per_s": stats.steady_rate(list(done.values())),
                             # where the gap to the CPU bound goes: more CPU per study, or idle cores
                             "machine_cpu_s_per_study": busy / len(posted),
                             "cpu_s_per_study_by_component": dict(sorted(
                                 ((k, (v - by_component0.get(k, 0.0)) / len(posted)) for k, v in by_component.items()),
                                 key=lambda kv: -kv[1])),
                             "cpu_utilisation": busy / ((time.time() - first) * (os.cpu_count() or 1)),
                             "latency_by_lane": stats.by_lane((x["lane"], x["latency_s"]) for x in lat),
                             "series": stats.time_series(((x["done"], x["latency_s"]) for x in lat), first, 2.0),
                             "samples": lat, "load": [load0, machine_load()]}
    # The same run up to the drafted report (what benchmarks/pipeline_bench.py measured), for
    # the comparison with the figures before delivery was in the benchmark.
    drafted: dict[str, float] = {}
    asyncio.run(read_topic(settings, REPORT_DRAFTED.names, {p.key for p in posted}, 120, drafted))
    phase["to_drafted"] = {
        "studies_per_s": stats.rate(len(drafted), first, max(drafted.values())) if drafted else math.nan,
        "steady_studies_per_s": stats.steady_rate(list(drafted.values())),
        "latency_by_lane": stats.by_lane((p.lane, drafted[p.key] - p.sent) for p in posted if p.key in drafted),
    }
    print(f"      {pipeline_rate:.2f} studies/s ({phase['steady_studies_per_s']:.2f} while full); latency {fmt_lanes(phase['latency_by_lane'])}", flush=True)
    return phase


def alone_phase(settings: Settings, deliveries: Deliveries, files: list[Any], opts: Options, pipeline: dict[str, Any]) -> dict[str, Any]:
    """Each stage alone (workers stopped) over fresh studies, and the ratios to the pipeline."""
    from schemas.topics import STUDY_RECEIVED

    print(f"[5/6] each stage alone over {len(files)} fresh studies (workers stopped) ...", flush=True)
    load0 = machine_load()
    t0, busy0 = time.time(), machine_busy_s()
    fresh = post_studies(settings, files, opts.clients, "alone")
    alone = {"gateway": len(fresh) / (time.time() - t0)}
    machine_cpu = {"gateway": (machine_busy_s() - busy0) / len(fresh)}
    received = asyncio.run(read_topic(settings, STUDY_RECEIVED.names, {p.key for p in fresh}, 120))
    rates, cpu, stage_cpu = asyncio.run(chain_alone(settings, [received[p.key] for p in fresh if p.key in received], deliveries))
    alone |= rates
    machine_cpu |= stage_cpu
    bound = stats.cpu_bound(machine_cpu, os.cpu_count() or 1)
    r = stats.ratios(pipeline["studies_per_s"], alone)
    to_drafted = {k: v for k, v in alone.items() if k not in ("review", "delivery")}  # the stages the drafted report passed
    r_drafted = stats.ratios(pipeline["to_drafted"]["studies_per_s"], to_drafted)
    print(f"      {', '.join(f'{k} {v:.1f}' for k, v in alone.items())} studies/s", flush=True)
    cpu_ratios = {"machine_cpu_s_per_study": machine_cpu, "cpu_bound_studies_per_s": bound,
                  "pipeline_over_cpu_bound": pipeline["studies_per_s"] / bound,
                  "steady_pipeline_over_cpu_bound": pipeline["steady_studies_per_s"] / bound,
                  "pipeline_machine_cpu_s_per_study": pipeline["machine_cpu_s_per_study"],
                  "stages_machine_cpu_s_per_study": sum(machine_cpu.values())}
    return {"studies_per_s": alone, "cpu_s_per_study_in_bench_process": cpu, "ratios": r.as_json(), "cpu": cpu_ratios,
            "ratios_to_drafted": r_drafted.as_json(),
            # the same while the pipeline is full (fill and drain left out: stats.steady_rate)
            "ratios_steady": stats.ratios(pipeline["steady_studies_per_s"], alone).as_json(),
            "ratios_to_drafted_steady": stats.ratios(pipeline["to_drafted"]["steady_studies_per_s"], to_drafted).as_json(),
            "load": [load0, machine_load()]}


def baseline_phase(settings: Settings, files: list[Any], opts: Options) -> dict[str, Any]:
    """The sequential in-process baseline: one study at a time through every stage."""
    from schemas.topics import STUDY_RECEIVED

    n = min(opts.baseline_studies, len(files))
    print(f"[6/6] sequential in-process baseline over {n} studies ...", flush=True)
    load0 = machine_load()
    t0 = time.time()
    base = post_studies(settings, files[:n], 1, "seq")
    gateway_s = time.time() - t0
    received = asyncio.run(read_topic(settings, STUDY_RECEIVED.names, {p.key for p in base}, 120))
    chain_s = asyncio.run(sequential(settings, [received[p.key] for p in base if p.key in received]))
    return {"studies": n, "gateway_s": gateway_s, "stages_s": chain_s,
            "studies_per_s": n / (gateway_s + chain_s), "load": [load0, machine_load()]}


def stat_phases(settings: Settings, deliveries: Deliveries, opts: Options) -> dict[str, Any]:
    print(f"[3/6] STAT idle: {opts.idle_stat} STAT studies one at a time ...", flush=True)
    out: dict[str, Any] = {}
    idle: list[Posted] = []
    for i, path in enumerate(images(opts.idle_stat)):
        (p,) = post_studies(settings, [path], 1, f"idle{i}", lambda _: "stat", bar=False)
        idle.append(p)
        deliveries.wait([p], 120, f"STAT idle {i + 1}/{opts.idle_stat}")
    done = deliveries.done([p.key for p in idle])
    idle_lat = [x["latency_s"] for x in latencies(idle, done)]
    out["idle"] = stats.latency_summary(idle_lat) | {"samples": idle_lat, "where_time_went_s": where_time_went(settings, idle, done)}

    print(f"[4/6] STAT under a backlog: {opts.backlog} routine studies, then {opts.backlog_stat} STAT every {opts.stat_interval_s} s ...", flush=True)
    load0 = machine_load()
    backlog = post_studies(settings, images(opts.backlog), opts.clients, "backlog")
    backlog_posted = time.time()
    stat: list[Posted] = []
    depth: list[int] = []
    for i, path in enumerate(images(opts.backlog_stat)):
        depth.append(len(backlog) - len(deliveries.done([p.key for p in backlog])))
        (p,) = post_studies(settings, [path], 1, f"burst{i}", lambda _: "stat", bar=False)
        stat.append(p)
        time.sleep(opts.stat_interval_s)
    done = deliveries.wait(stat, 900, "STAT under backlog delivered")
    stat_lat = latencies(stat, done)
    routine_done = deliveries.done([p.key for p in backlog])
    backlog_lat = latencies(backlog, routine_done)
    out["backlog"] = {
        "routine_studies": len(backlog), "routine_posted_in_s": backlog_posted - min(p.sent for p in backlog),
        "routine_still_queued_at_each_stat": depth,
        "routine_delivered_by_end": len(routine_done),
        "stat": stats.latency_summary([x["latency_s"] for x in stat_lat]) | {"samples": stat_lat, "where_time_went_s": where_time_went(settings, stat, done)},
        "routine": stats.latency_summary([x["latency_s"] for x in backlog_lat]),
        "routine_series": stats.time_series(((x["done"], x["latency_s"]) for x in backlog_lat), min(p.sent for p in backlog), 5.0),
        "load": [load0, machine_load()],
    }
    if stat_lat and idle_lat:
        out["stat_vs_idle"] = stats.stat_vs_idle(out["idle"], out["backlog"]["stat"])
        print(f"      STAT idle p50 {out['idle']['p50']:.2f} s p99 {out['idle']['p99']:.2f} s; under the backlog "
              f"p50 {out['backlog']['stat']['p50']:.2f} s p99 {out['backlog']['stat']['p99']:.2f} s "
              f"(routine still queued: {depth[0]} -> {depth[-1]})", flush=True)
        for label, waits in (("idle", out["idle"]["where_time_went_s"]), ("backlog", out["backlog"]["stat"]["where_time_went_s"])):
            print(f"      STAT {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in waits.items()), flush=True)
    return out


def where_time_went(settings: Settings, posted: Sequence[Posted], done: dict[str, float]) -> dict[str, float]:
    """Mean seconds per stage, waiting and working, of these studies (from the drafted reports'
    stage timings; `wait.preprocess` holds the gateway: upload, study-assembly quiet period, publish)."""
    from radalign.framework import codec
    from schemas.events import ReportDrafted
    from schemas.topics import REPORT_DRAFTED

    records = asyncio.run(read_topic(settings, REPORT_DRAFTED.names, {p.key for p in posted}, 60))
    rows = []
    for p in posted:
        if p.key in records and p.key in done:
            report = codec.decode(ReportDrafted, records[p.key].value)
            timings = [(t.stage, t.started_at.timestamp(), t.duration_ms / 1000) for t in report.timings]
            rows.append(stats.stage_waits(p.sent, timings, done[p.key]))
    return stats.mean_by_key(rows)


def fmt_lanes(lanes: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{lane} p50 {s['p50']:.2f} / p95 {s['p95']:.2f} / p99 {s['p99']:.2f} s (n={s['n']})" for lane, s in lanes.items())


def summary(result: dict[str, Any]) -> str:
    lines = [f"machine: {result['load']['start']['uptime']}"]
    p = result["pipeline"]
    lines.append(f"pipeline (gateway -> delivered to {' + '.join(result['destinations'])}): {p['studies_per_s']:.2f} studies/s over {p['studies']}")
    lines.append(f"end-to-end latency: {fmt_lanes(p['latency_by_lane'])}")
    if "alone" in result:
        for name, r in result["alone"]["studies_per_s"].items():
            lines.append(f"  {name + ' alone':<18}{r:9.1f} studies/s")
        ra = result["alone"]["ratios"]
        lines.append(f"bound when stages share the cores: {ra['shared_core_bound_studies_per_s']:.2f} studies/s")
        lines.append(f"pipeline / shared-core bound: {ra['pipeline_over_shared_bound']:.2f}")
        lines.append(f"pipeline / slowest stage ({ra['slowest_stage']}): {ra['pipeline_over_slowest_stage']:.2f}")
        lines.append("machine CPU ms per study in the pipeline, by component: " + ", ".join(
            f"{k} {1000 * v:.1f}" for k, v in p["cpu_s_per_study_by_component"].items() if v >= 0.0005))
        c = result["alone"]["cpu"]
        lines.append("machine CPU ms per study alone: " + ", ".join(f"{k} {1000 * v:.1f}" for k, v in c["machine_cpu_s_per_study"].items())
                     + f"; sum {1000 * c['stages_machine_cpu_s_per_study']:.1f}, in the pipeline {1000 * c['pipeline_machine_cpu_s_per_study']:.1f} "
                     f"(cores {100 * p['cpu_utilisation']:.0f} % busy)")
        lines.append(f"CPU bound (cores / summed CPU per study): {c['cpu_bound_studies_per_s']:.2f} studies/s; "
                     f"pipeline / CPU bound {c['pipeline_over_cpu_bound']:.2f} ({c['steady_pipeline_over_cpu_bound']:.2f} while full)")
        rs = result["alone"]["ratios_steady"]
        lines.append(f"while full (10th-90th percentile of completions): {rs['pipeline_studies_per_s']:.2f} studies/s, "
                     f"/ bound {rs['pipeline_over_shared_bound']:.2f}, / slowest {rs['pipeline_over_slowest_stage']:.2f}")
        rd, rds = result["alone"]["ratios_to_drafted"], result["alone"]["ratios_to_drafted_steady"]
        lines.append(f"up to the drafted report (delivery left out, as pipeline_bench measured): {rd['pipeline_studies_per_s']:.2f} studies/s, "
                     f"bound {rd['shared_core_bound_studies_per_s']:.2f}, ratio {rd['pipeline_over_shared_bound']:.2f} "
                     f"({rds['pipeline_studies_per_s']:.2f} / {rds['pipeline_over_shared_bound']:.2f} while full); "
                     f"latency {fmt_lanes(p['to_drafted']['latency_by_lane'])}")
    if "baseline" in result:
        b = result["baseline"]
        lines.append(f"sequential in-process baseline: {b['studies_per_s']:.2f} studies/s (pipeline / baseline {p['studies_per_s'] / b['studies_per_s']:.2f})")
    if "stat" in result and "stat_vs_idle" in result["stat"]:
        s = result["stat"]
        lines.append(f"STAT idle: p50 {s['idle']['p50']:.2f} s, p99 {s['idle']['p99']:.2f} s; under {s['backlog']['routine_studies']} routine: "
                     f"p50 {s['backlog']['stat']['p50']:.2f} s, p99 {s['backlog']['stat']['p99']:.2f} s "
                     f"({s['stat_vs_idle']['p50_ratio']:.2f}x / {s['stat_vs_idle']['p99_ratio']:.2f}x; target <= 2x: "
                     f"{'met' if s['stat_vs_idle']['within_target'] else 'NOT met'})")
    lines.append(f"machine at the end: {result['load']['end']['uptime']}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no PNG"
    fig, axes = plt.subplots(1, 4, figsize=(22, 4.8))
    p = result["pipeline"]
    series = p["series"]
    ax = axes[0]
    ax.plot([b["t"] for b in series], [b["per_s"] for b in series], label="pipeline run (2 s bins)")
    routine_series = result.get("stat", {}).get("backlog", {}).get("routine_series", [])
    if routine_series:
        ax.plot([b["t"] for b in routine_series], [b["per_s"] for b in routine_series], label="backlog run (5 s bins)")
    ax.set(title="delivered studies/s over time", xlabel="s since first post", ylabel="studies/s")
    ax.legend()
    ax = axes[1]
    first = min(x["sent"] for x in p["samples"])
    for lane, colour in (("routine", "tab:blue"), ("stat", "tab:red")):
        xs = [(x["done"] - first, x["latency_s"]) for x in p["samples"] if x["lane"] == lane]
        ax.scatter([a for a, _ in xs], [b for _, b in xs], s=8, c=colour, label=f"pipeline {lane}")
    if "stat" in result:
        b = result["stat"]["backlog"]["stat"]["samples"]
        if b:
            start = min(x["sent"] for x in b)
            ax.scatter([x["done"] - start for x in b], [x["latency_s"] for x in b], s=24, marker="x", c="black",
                       label=f"STAT under {result['stat']['backlog']['routine_studies']} routine")
    ax.set(title="end-to-end latency (post -> delivered)", xlabel="s since first post", ylabel="s")
    ax.legend(fontsize=8)
    ax = axes[2]
    if "alone" in result:
        alone = result["alone"]["studies_per_s"]
        names = [*alone, "shared bound", "pipeline"] + (["sequential"] if "baseline" in result else [])
        values = [*alone.values(), result["alone"]["ratios"]["shared_core_bound_studies_per_s"], p["studies_per_s"]]
        if "baseline" in result:
            values.append(result["baseline"]["studies_per_s"])
        ax.barh(names, values, color=["tab:gray"] * len(alone) + ["tab:orange", "tab:green"] + (["tab:purple"] if "baseline" in result else []))
        ax.set_xscale("log")
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.1f}", va="center", fontsize=8)
        ax.set(title="studies/s: each stage alone, bound, pipeline", xlabel="studies/s (log)")
    ax = axes[3]
    by_component = p.get("cpu_s_per_study_by_component", {})
    if by_component:
        names = list(by_component)[::-1]
        ax.barh(names, [1000 * by_component[n] for n in names], color="tab:blue")
        for i, n in enumerate(names):
            ax.text(1000 * by_component[n], i, f" {1000 * by_component[n]:.1f}", va="center", fontsize=8)
        ax.set(title=f"machine CPU per study in the pipeline ({1000 * p['machine_cpu_s_per_study']:.0f} ms)", xlabel="ms")
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"radalign bench ({result['load']['start']['uptime'].split('load')[-1].strip()})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def main(opts: Options) -> int:
    result = run(opts)
    opts.out.mkdir(parents=True, exist_ok=True)
    result["png"] = plot(result, opts.out / "bench.png")
    (opts.out / "bench.json").write_text(json.dumps(result, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))
    print()
    print(summary(result))
    print(f"wrote {opts.out / 'bench.json'} and {result['png']}")
    return 0
