"""Pure figures of a benchmark run: percentiles, lane summaries, the throughput bounds and ratios,
and time series for the plots. No I/O; unit-tested in tests/unit/bench/."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks (numpy's default,
    'linear'). NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    """n, p50, p95, p99 and max of latencies in seconds."""
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def by_lane(latencies: Iterable[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """Latency summary per lane from (lane, seconds) pairs, lanes in sorted order."""
    lanes: dict[str, list[float]] = {}
    for lane, seconds in latencies:
        lanes.setdefault(lane, []).append(seconds)
    return {lane: latency_summary(values) for lane, values in sorted(lanes.items())}


def shared_core_bound(alone: Mapping[str, float]) -> float:
    """Studies/s the stages can reach together when they share the same cores: each study costs
    the sum of every stage's time per study (1 / its rate alone), so the bound is the reciprocal
    of that sum. (On separate machines the bound would be the slowest stage alone.)"""
    if not alone or any(r <= 0 for r in alone.values()):
        raise ValueError("every stage needs a positive rate")
    return 1.0 / sum(1.0 / r for r in alone.values())


def busy_cpu_s(proc_stat_cpu_line: str, ticks_per_s: int) -> float:
    """CPU seconds the whole machine spent busy, all cores, from /proc/stat's first (`cpu`) line:
    user + nice + system + irq + softirq + steal (idle and iowait are not busy; guest time is
    already inside user)."""
    name, *fields = proc_stat_cpu_line.split()
    if name != "cpu" or len(fields) < 8:
        raise ValueError(f"not /proc/stat's cpu line: {proc_stat_cpu_line[:60]!r}")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / ticks_per_s


#: What a process of the benchmark's stack is, from its command line (first match wins).
_COMPONENTS: tuple[tuple[str, str], ...] = (
    ("radalign.cli worker ", ""),  # the stage's name follows
    ("radalign.cli bench", "bench (HTTP clients, polling)"),
    ("LoopbackFhirServer", "FHIR server (loopback)"),
    ("triton", "Triton"),
    ("postgres", "PostgreSQL"),
    ("Orthanc", "Orthanc"),
    ("tansu", "Kafka broker (tansu)"),
)


def component_of(cmdline: str) -> str | None:
    """The benchmark stack's component a process belongs to (None: not one of them)."""
    for marker, name in _COMPONENTS:
        if marker in cmdline:
            return name or f"worker {cmdline.split(marker, 1)[1].split()[0]}"
    return None


def process_cpu_s(stat_line: str, ticks_per_s: int) -> float:
    """User + system CPU seconds of one process from its /proc/<pid>/stat line (fields 14 and 15;
    the command name in parentheses may hold spaces, so fields are counted after its ')')."""
    fields = stat_line.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def cpu_bound(cpu_s_per_study: Mapping[str, float], cpus: int) -> float:
    """Studies/s the machine can reach when every core is busy and each study costs the sum of
    the CPU seconds (all processes: the worker, Triton, PostgreSQL, the broker, the peers) each
    stage spent per study alone. Unlike `shared_core_bound`, a stage that waits (delivery on its
    peers' answers) is charged only for the CPU it used, so the pipeline cannot beat this bound
    except by doing less work per study than the stages did alone (batching)."""
    # A stage can read 0: its CPU stayed under /proc/stat's resolution (10 ms) over a short run.
    if cpus <= 0 or any(c < 0 for c in cpu_s_per_study.values()) or sum(cpu_s_per_study.values()) <= 0:
        raise ValueError("need cpus > 0, no negative CPU cost and some CPU spent")
    return cpus / sum(cpu_s_per_study.values())


@dataclass(frozen=True)
class Ratios:
    pipeline: float
    shared_bound: float
    slowest_stage: str
    slowest_rate: float

    @property
    def vs_shared_bound(self) -> float:
        return self.pipeline / self.shared_bound

    @property
    def vs_slowest(self) -> float:
        return self.pipeline / self.slowest_rate

    def as_json(self) -> dict[str, float | str]:
        return {
            "pipeline_studies_per_s": self.pipeline,
            "shared_core_bound_studies_per_s": self.shared_bound,
            "slowest_stage": self.slowest_stage,
            "slowest_stage_studies_per_s": self.slowest_rate,
            "pipeline_over_shared_bound": self.vs_shared_bound,
            "pipeline_over_slowest_stage": self.vs_slowest,
        }


def ratios(pipeline: float, alone: Mapping[str, float]) -> Ratios:
    slowest = min(alone, key=lambda name: alone[name])
    return Ratios(pipeline, shared_core_bound(alone), slowest, alone[slowest])


def rate(count: int, first: float, last: float) -> float:
    """Events per second between two instants (count / elapsed); NaN when no time elapsed."""
    return count / (last - first) if last > first else math.nan


def steady_rate(completions: Sequence[float], lo: float = 0.1, hi: float = 0.9) -> float:
    """Completions per second while the pipeline is full: between the `lo` and `hi` quantiles of
    the completion times, leaving out the fill (the first study's own end-to-end time, when later
    stages wait for work) and the drain (the last stages finishing alone). NaN for fewer than
    two completions in the window."""
    if not 0 <= lo < hi <= 1:
        raise ValueError("need 0 <= lo < hi <= 1")
    times = sorted(completions)
    if len(times) < 2:
        return math.nan
    i, j = round(lo * (len(times) - 1)), round(hi * (len(times) - 1))
    return rate(j - i, times[i], times[j])


def time_series(events: Iterable[tuple[float, float]], start: float, bin_s: float = 1.0) -> list[dict[str, float]]:
    """Per bin of `bin_s` seconds after `start`: how many events completed (and the rate), and
    the median latency of those. `events` are (completion time, latency) pairs; bins with no
    event in between are kept (rate 0), so a stall shows as a gap in throughput."""
    if bin_s <= 0:
        raise ValueError("bin_s must be positive")
    bins: dict[int, list[float]] = {}
    for done, latency in events:
        bins.setdefault(int((done - start) // bin_s), []).append(latency)
    if not bins:
        return []
    out = []
    for i in range(min(bins), max(bins) + 1):
        lat = bins.get(i, [])
        out.append({"t": (i + 0.5) * bin_s, "completed": len(lat), "per_s": len(lat) / bin_s,
                    "latency_p50": percentile(lat, 50) if lat else math.nan})
    return out


def stat_vs_idle(idle: Mapping[str, float], backlog: Mapping[str, float], target: float = 2.0) -> dict[str, float | bool]:
    """STAT turnaround under a backlog against an idle pipeline's: the ratio at p50 and p99 and
    whether both stay within `target` times (the issue's goal: 2x)."""
    p50 = backlog["p50"] / idle["p50"]
    p99 = backlog["p99"] / idle["p99"]
    return {"p50_ratio": p50, "p99_ratio": p99, "target": target, "within_target": p50 <= target and p99 <= target}


def stage_waits(received_at: float, timings: Sequence[tuple[str, float, float]], delivered_at: float) -> dict[str, float]:
    """Where a study's end-to-end time went: for each stage (timings as (stage, start, seconds) in
    pipeline order, sub-stage entries `stage.part` left out) the wait before it started
    (`wait.<stage>`, queueing: Kafka lag, the gateway's quiet period for the first) and its own
    time (`run.<stage>`); then `after.<last stage>`: from the last stage's end to delivery (the
    delivery stage's wait and work, which no timing records)."""
    out: dict[str, float] = {}
    previous_end = received_at
    for stage, start, seconds in timings:
        if "." in stage:
            continue
        out[f"wait.{stage}"] = start - previous_end
        out[f"run.{stage}"] = seconds
        previous_end = start + seconds
    if timings:
        out[f"after.{[t for t in timings if '.' not in t[0]][-1][0]}"] = delivered_at - previous_end
    return out


def mean_by_key(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each key over the rows that have it (key order of first appearance)."""
    sums: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            sums.setdefault(key, []).append(value)
    return {key: sum(values) / len(values) for key, values in sums.items()}
