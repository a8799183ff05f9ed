"""Delivery metrics. Labels: destination names from the configuration and outcomes, never patients."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "radalign_deliveries_total", "Report versions handled per destination, by outcome (delivered, skipped, failed, refused)",
    ["destination", "kind", "outcome"],
)
DELIVERY_SECONDS = Histogram(
    "radalign_delivery_seconds", "Time to deliver one report version to one destination, retries included",
    ["destination", "kind"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DEAD_LETTERED = Counter(
    "radalign_delivery_dead_letters_total",
    "Report versions dead-lettered for one destination, by reason class (timeout, unavailable, circuit_open, refused, invalid)",
    ["destination", "reason"],
)
CIRCUIT_OPEN = Gauge("radalign_delivery_circuit_open", "1 while a destination's circuit breaker is open or half-open", ["destination"])
CAUGHT_UP = Counter(
    "radalign_delivery_requeued_total", "Dead-lettered report versions queued again when their destination came back", ["destination"]
)
