"""Review metrics (prometheus-client). Labels name observations and priorities, never patients or reviewers."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

QUEUE_DEPTH = Gauge("radalign_review_queue_depth", "Drafted studies not yet signed")
QUEUE_AGE = Gauge("radalign_review_queue_oldest_seconds", "Time since arrival of the oldest unsigned drafted study")
#: Per priority (stat | routine), for the review-queue age alerts (k8s/monitoring/prometheusrule.yaml).
QUEUE_AGE_BY_PRIORITY = Gauge(
    "radalign_review_queue_oldest_by_priority_seconds", "Time since arrival of the oldest unsigned drafted study of a priority", ["priority"]
)
TIME_TO_SIGN = Histogram(
    "radalign_review_time_to_sign_seconds", "From opening a study to signing it", ["priority"],
    buckets=(10, 30, 60, 120, 300, 600, 1200, 3600),
)
TURNAROUND = Histogram(
    "radalign_review_turnaround_seconds", "From the study's arrival at the gateway to its signed report", ["priority"],
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400),
)
EDIT_DISTANCE = Histogram(
    "radalign_review_edit_distance_words", "Word-level edit distance from draft to signed report",
    buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200),
)
SIGN_TO_PUBLISH = Histogram(
    "radalign_review_sign_to_final_event_seconds", "From the sign-off request to the broker's ack of the final event",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SIGNED = Counter("radalign_review_signed_total", "Signed reports", ["outcome"])  # accepted | edited
AGREEMENT = Gauge(
    "radalign_review_agreement_ratio", "Share of signed reports whose label agrees with the drafted state (where both claim)", ["observation"]
)
AGREEMENT_COMPARED = Gauge("radalign_review_agreement_compared", "Signed reports compared per observation", ["observation"])
# Not `..._kb_...`: promtool reads "kb" as an abbreviated unit (kilobytes) and refuses the name.
KB_INGESTED = Counter("radalign_review_case_store_ingested_total", "Signed reports written to the case store")
HEATMAP_SECONDS = Histogram("radalign_review_heatmap_seconds", "Computing one study's attention maps", buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10))

