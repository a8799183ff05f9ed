"""Prometheus metrics shared by every stage. Labels name stages and outcomes, never patients.

Multi-process safe: when PROMETHEUS_MULTIPROC_DIR is set (several worker processes behind one
pod), `render()` aggregates every process's samples with prometheus-client's MultiProcessCollector.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

EVENTS = Counter("radalign_events_total", "Records handled by a stage, by outcome", ["stage", "lane", "outcome"])
STAGE_LATENCY = Histogram("radalign_stage_seconds", "Time a stage spent on one study", ["stage"], buckets=_LATENCY_BUCKETS)
END_TO_END = Histogram(
    "radalign_end_to_end_seconds", "From gateway acceptance to this stage's output", ["stage", "lane"], buckets=_LATENCY_BUCKETS
)
DEAD_LETTERS = Counter("radalign_dead_letters_total", "Records sent to a dead-letter topic", ["stage", "error_type"])
RETRIES = Counter("radalign_retries_total", "Retries of outside calls", ["stage", "dependency"])
DUPLICATES = Counter("radalign_duplicates_skipped_total", "Redelivered records recognised and skipped", ["stage"])
IN_FLIGHT = Gauge("radalign_in_flight", "Records being processed now", ["stage"], multiprocess_mode="livesum")

CONTENT_TYPE = CONTENT_TYPE_LATEST


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)
