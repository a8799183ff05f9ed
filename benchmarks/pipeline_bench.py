"""Pipeline throughput beside each stage's own throughput, in one run on one machine.

1. Starts a private embedded stack (broker, PostgreSQL, Triton, the five workers) on free ports
   and loads IU reports into the case store.
2. Pipeline: posts N chest images to the gateway (HTTP, a few clients) and measures studies/s
   from the first post to the last report on the report topic.
3. Each stage alone: stops the workers, reads the N records each stage consumed from its input
   topic, and feeds them to that stage's own code (the same Stage class the worker runs, with its
   real dependencies: blob store, Triton, PostgreSQL) with the worker's concurrency, no Kafka.
4. Prints studies/s per stage, the pipeline's, and the ratio pipeline / slowest stage.

    .venv/bin/python benchmarks/pipeline_bench.py --studies 200

`radalign bench` (radalign/bench/) runs the same comparison to the delivered report (PACS and FHIR
acknowledged), with a sequential baseline, latency per lane and STAT under a routine backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

# `radalign bench` supersedes this script; the record reader and the image pool are its own, so
# both measure the same records the same way.
from radalign.bench.run import images, read_topic
from radalign.config import Settings
from radalign.framework import codec
from radalign.framework.stage import Record, Stage, StageRunner
from schemas.events import ReportDrafted
from schemas.topics import CASES_RETRIEVED, CONCEPTS_INFERRED, REPORT_DRAFTED, STUDY_PREPROCESSED, STUDY_RECEIVED


def post_all(settings: Settings, files: list[Path], clients: int, tag: str) -> list[str]:
    local = threading.local()
    payloads = {p: p.read_bytes() for p in set(files)}  # read once: the client should cost little

    def post(item: tuple[int, Path]) -> str:
        i, path = item
        media = "image/png" if path.suffix == ".png" else "image/jpeg"
        if not hasattr(local, "client"):  # one keep-alive connection per client thread
            local.client = httpx.Client(base_url=f"http://127.0.0.1:{settings.gateway_port}", timeout=60)
        r = local.client.post(
            "/v1/studies",
            data={"study_id": f"BENCH-{tag}-{i}", "patient_id": f"BENCH-P-{tag}-{i}", "view_position": "PA"},
            files={"file": (path.name, payloads[path], media)},
        )
        r.raise_for_status()
        return r.json()["study_key"]

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(post, enumerate(files)))


async def stage_alone(stage: Stage, settings: Settings, records: list[Record]) -> float:
    """Studies/s of one stage's own code over the records, with the worker's concurrency per lane."""
    await stage.setup(settings)
    runner = StageRunner(stage, settings)
    try:
        await runner.process(records[0])  # warm (connections, model)
        queue: asyncio.Queue[Record] = asyncio.Queue()
        for r in records:
            queue.put_nowait(r)

        async def lane_worker() -> None:
            while not queue.empty():
                outs = await runner.process(queue.get_nowait())
                assert outs and "dlq" not in outs[0].topic, outs[0].value[:300] if outs else "no output"

        begin = time.perf_counter()
        await asyncio.gather(*(lane_worker() for _ in range(stage.concurrency)))
        return len(records) / (time.perf_counter() - begin)
    finally:
        await stage.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--cases", type=int, default=1000, help="IU reports loaded into the case store")
    args = parser.parse_args()

    from radalign.kb.ingest import ensure_iu_cases
    from radalign.pipeline import STAGES
    from radalign.stack import down, stop, up
    from radalign.stack.workers import worker_name
    from radalign.testing.stack import short_state_dir, stack_settings
    from services.concepts.agent import ConceptsStage
    from services.drafting.agent import DraftingStage
    from services.preprocess.agent import PreprocessStage
    from services.retrieval.agent import RetrievalStage

    state = short_state_dir("radalign-bench-")
    settings = stack_settings(state, study_quiet_s=0.5)
    try:
        print(f"[1/4] stack up in {state} ...", flush=True)
        up(settings)
        print(f"      {asyncio.run(ensure_iu_cases(settings, limit=args.cases))} cases in the store", flush=True)
        print("[2/4] warm-up study ...", flush=True)
        warm = post_all(settings, images(1), 1, "warm")
        asyncio.run(read_topic(settings, (REPORT_DRAFTED.name,), set(warm), 180))

        files = images(args.studies)
        print(f"[3/4] pipeline: {len(files)} studies through the gateway ({args.clients} HTTP clients) ...", flush=True)
        begin = time.time()
        keys = post_all(settings, files, args.clients, "run")
        posted = time.time()
        arrival: dict[str, float] = {}
        reports = asyncio.run(read_topic(settings, (REPORT_DRAFTED.name,), set(keys), 900, times=arrival))
        if len(reports) < len(keys):
            print(f"only {len(reports)}/{len(keys)} reports arrived", file=sys.stderr)
            return 1
        last = max(arrival.values())
        pipeline_rate = len(keys) / (last - begin)
        latencies = []
        for rec in reports.values():
            report = codec.decode(ReportDrafted, rec.value)
            latencies.append(arrival[report.study.study_key] - report.study.received_at.timestamp())
        print(f"      posted in {posted - begin:.1f} s; last report after {last - begin:.1f} s", flush=True)

        print("[4/4] each stage alone (workers stopped, same records, real dependencies) ...", flush=True)
        for stage in STAGES:
            if stage != "gateway":
                stop(worker_name(stage), settings)
        inputs = {
            "preprocess": STUDY_RECEIVED,
            "concepts": STUDY_PREPROCESSED,
            "retrieval": CONCEPTS_INFERRED,
            "drafting": CASES_RETRIEVED,
        }
        stages = {"preprocess": PreprocessStage(), "concepts": ConceptsStage(settings), "retrieval": RetrievalStage(), "drafting": DraftingStage(settings)}
        alone: dict[str, float] = {}
        # The gateway alone: the same uploads with no consumer running (events wait in Kafka).
        t0 = time.time()
        post_all(settings, files, args.clients, "gateway-alone")
        alone["gateway"] = len(files) / (time.time() - t0)
        print(f"      {'gateway':<10} {alone['gateway']:8.1f} studies/s (HTTP intake to the study topic)", flush=True)
        for name, spec in inputs.items():
            records = list(asyncio.run(read_topic(settings, spec.names, set(keys), 120)).values())
            alone[name] = asyncio.run(stage_alone(stages[name], settings, records))
            print(f"      {name:<10} {alone[name]:8.1f} studies/s over {len(records)} records", flush=True)

        slowest = min(alone, key=alone.get)
        # On one machine every stage shares the same cores, so the bound is the sum of the stages'
        # costs per study, not the slowest stage alone (in production each stage has its own pods).
        shared_bound = 1.0 / sum(1.0 / r for r in alone.values())
        print()
        print(f"{'stage':<28}{'studies/s':>12}")
        for name, rate in alone.items():
            print(f"{name + ' alone':<28}{rate:>12.2f}")
        print(f"{'pipeline (gateway->report)':<28}{pipeline_rate:>12.2f}")
        print(f"{'bound when stages share cores':<28}{shared_bound:>12.2f}")
        print(f"pipeline / slowest stage ({slowest}): {pipeline_rate / alone[slowest]:.2f}")
        print(f"pipeline / shared-core bound: {pipeline_rate / shared_bound:.2f}")
        print(f"end-to-end latency: median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s "
              f"(includes the gateway's {settings.study_quiet_s} s study-assembly quiet period)")
        return 0
    finally:
        down(settings)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
