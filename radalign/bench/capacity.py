"""Capacity arithmetic for docs/capacity-plan.md: from a daily volume, a burst factor and each
stage's measured (or estimated) per-replica rate, the replicas, partitions, KEDA lag thresholds and
the cost per 1,000 studies. Pure; unit-tested (tests/unit/bench/test_capacity.py).

    PYTHONPATH=. python -m radalign.bench.capacity        # prints the plan table (markdown)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SECONDS_PER_DAY = 86_400


def per_second(studies_per_day: float) -> float:
    return studies_per_day / SECONDS_PER_DAY


def replicas(rate_per_s: float, per_replica_per_s: float, utilisation: float = 0.7) -> int:
    """Replicas so that each runs at no more than `utilisation` of what one replica was measured
    to sustain (headroom for noise, rebalances and retries); at least one."""
    if per_replica_per_s <= 0 or not 0 < utilisation <= 1:
        raise ValueError("per-replica rate must be positive and utilisation within (0, 1]")
    return max(1, math.ceil(rate_per_s / (per_replica_per_s * utilisation)))


def partitions(max_replicas: int, step: int = 4) -> int:
    """Partitions of a stage's input topic: a consumer group uses at most one consumer per
    partition, so at least the burst replica count, rounded up to a multiple of `step` (even
    spreading when KEDA scales by halves)."""
    if max_replicas < 1 or step < 1:
        raise ValueError("max_replicas and step must be >= 1")
    return step * math.ceil(max_replicas / step)


def keda_lag_threshold(per_replica_per_s: float, drain_target_s: float) -> int:
    """KEDA's Kafka scaler adds a replica per `lagThreshold` records of consumer lag: the lag one
    replica clears within the drain target."""
    return max(1, int(per_replica_per_s * drain_target_s))


@dataclass(frozen=True)
class StageCapacity:
    """One stage: what one replica sustains and what it costs per hour."""

    name: str
    per_replica_per_s: float
    #: Share of an instance one replica takes (vCPUs / the instance's vCPUs, or GPUs / GPUs).
    instance_share: float
    instance: str
    usd_per_instance_hour: float
    source: str = "measured"

    @property
    def usd_per_replica_hour(self) -> float:
        return self.instance_share * self.usd_per_instance_hour


@dataclass(frozen=True)
class StagePlan:
    stage: StageCapacity
    sustained_replicas: int
    burst_replicas: int
    partitions: int
    lag_threshold: int

    @property
    def usd_per_hour_sustained(self) -> float:
        return self.sustained_replicas * self.stage.usd_per_replica_hour


def plan(stages: Sequence[StageCapacity], studies_per_day: float, burst: float = 10.0,
         utilisation: float = 0.7, drain_target_s: float = 30.0, min_replicas: int = 1) -> list[StagePlan]:
    """Per stage: replicas at the sustained rate (at least `min_replicas`, 2 for availability in
    production), at the burst, the input topic's partitions and KEDA's lag threshold."""
    sustained = per_second(studies_per_day)
    out = []
    for s in stages:
        low = max(min_replicas, replicas(sustained, s.per_replica_per_s, utilisation))
        high = max(low, replicas(sustained * burst, s.per_replica_per_s, utilisation))
        out.append(StagePlan(s, low, high, partitions(high), keda_lag_threshold(s.per_replica_per_s, drain_target_s)))
    return out


def cost_per_1000(plans: Sequence[StagePlan], studies_per_day: float) -> float:
    """USD per 1,000 studies at the sustained rate with the sustained replicas running all day."""
    per_hour = sum(p.usd_per_hour_sustained for p in plans)
    studies_per_hour = per_second(studies_per_day) * 3600
    return per_hour / (studies_per_hour / 1000)


# --- The plan in docs/capacity-plan.md -------------------------------------------------------
# Prices: AWS us-east-1 on-demand Linux list prices as published (assumptions, checked against
# the public price list as remembered on 2026-12-07; re-check before quoting): c7i.2xlarge
# 8 vCPU $0.357/h; g6.xlarge (1x L4 24 GB) $0.805/h; g5.xlarge (1x A10G 24 GB) $1.006/h.
C7I_2XL = ("c7i.2xlarge", 0.357, 8)
G6_XL = ("g6.xlarge", 0.805)
G5_XL = ("g5.xlarge", 1.006)


def cpu_stage(name: str, per_replica_per_s: float, vcpus: float, source: str = "measured") -> StageCapacity:
    instance, price, instance_vcpus = C7I_2XL
    return StageCapacity(name, per_replica_per_s, vcpus / instance_vcpus, instance, price, source)


def markdown_table(plans: Sequence[StagePlan], studies_per_day: float) -> str:
    rows = ["| stage | per replica (studies/s) | source | sustained replicas | burst replicas (10x) | partitions | KEDA lagThreshold | instance | $/h sustained |",
            "|---|---:|---|---:|---:|---:|---:|---|---:|"]
    for p in plans:
        s = p.stage
        rows.append(f"| {s.name} | {s.per_replica_per_s:,.1f} | {s.source} | {p.sustained_replicas} | {p.burst_replicas} | "
                    f"{p.partitions} | {p.lag_threshold} | {s.instance} x{s.instance_share:g} | {p.usd_per_hour_sustained:.2f} |")
    rows.append(f"\nCost per 1,000 studies at {studies_per_day:,.0f} studies/day sustained: "
                f"${cost_per_1000(plans, studies_per_day):.3f} (sustained replicas all day; bursts add while they last).")
    return "\n".join(rows)


def production_stages(alone: dict[str, float], llm_drafts_per_gpu_s: float | None = None, concepts_on_gpu: bool = True) -> list[StageCapacity]:
    """The production shape from this machine's stage-alone rates (`radalign bench`, studies/s of
    one worker on this 2-core machine, so one replica = 2 vCPU here): CPU stages on c7i.2xlarge
    shares, the concept model on one GPU (estimated from the H200 measurement), and optionally an
    LLM rewrite on g5.xlarge GPUs (estimated)."""
    stages = [cpu_stage(name, alone[name], 2.0, "measured here (2 vCPU, shared)")
              for name in ("gateway", "preprocess", "retrieval", "drafting", "review", "delivery") if name in alone]
    # Concept model on a GPU: 5,158 images/s on an H200 through a Triton Python backend (host <->
    # device copies included, batch 32); an L4 estimated at a quarter of that. Decode stays in
    # preprocess, on CPU.
    if concepts_on_gpu:
        name, price = G6_XL
        stages.insert(2, StageCapacity("concepts (Triton, L4)", 5158 / 4, 1.0, name, price, "estimated from H200"))
    else:  # the concepts worker and CPU Triton as measured here (the worker alone, Triton beside it)
        stages.insert(2, cpu_stage("concepts (Triton on CPU)", alone["concepts"], 2.0, "measured here (2 vCPU, shared)"))
    if llm_drafts_per_gpu_s:
        name, price = G5_XL
        stages.append(StageCapacity("LLM rewrite (8B, vLLM)", llm_drafts_per_gpu_s, 1.0, name, price, "estimated"))
    return stages


if __name__ == "__main__":  # pragma: no cover
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, default=Path("docs/bench/bench.json"), help="a `radalign bench` JSON")
    parser.add_argument("--per-day", type=float, default=1_000_000)
    parser.add_argument("--burst", type=float, default=10.0)
    parser.add_argument("--llm-drafts-per-gpu-s", type=float, default=None)
    parser.add_argument("--concepts-on-cpu", action="store_true")
    parser.add_argument("--min-replicas", type=int, default=2)
    args = parser.parse_args()
    alone = json.loads(args.bench.read_text())["alone"]["studies_per_s"]
    stages = production_stages(alone, args.llm_drafts_per_gpu_s, concepts_on_gpu=not args.concepts_on_cpu)
    plans = plan(stages, args.per_day, args.burst, min_replicas=args.min_replicas)
    print(markdown_table(plans, args.per_day))
