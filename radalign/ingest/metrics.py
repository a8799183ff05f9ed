"""Gateway counters. Labels are closed sets (source, reason, priority): never identifiers."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

INSTANCES_ACCEPTED = Counter(
    "radalign_gateway_instances_accepted_total", "Instances the gateway accepted", ["source"]
)
INSTANCES_REFUSED = Counter(
    "radalign_gateway_instances_refused_total", "Inputs the gateway refused, by reason", ["source", "reason"]
)
INSTANCES_IGNORED = Counter(
    "radalign_gateway_ignored_instances_total",
    "Instances of SOP classes the gateway does not process (SR, KOS, presentation states...): answered success, dropped",
    ["source", "sop_class"],  # sop_class: one of radalign.ingest.dicom.IGNORED_KINDS
)
INSTANCES_DUPLICATE = Counter(
    "radalign_gateway_instances_duplicate_total", "Instances received again unchanged (ignored)", ["source"]
)
STUDIES_PUBLISHED = Counter(
    "radalign_gateway_studies_published_total", "Studies published to the study topic", ["source", "priority", "kind"]
)
OUTBOX_PRUNED = Counter(
    "radalign_gateway_outbox_pruned_total", "Published studies deleted from the outbox after the retention, with their instances"
)
OUTBOX_PENDING = Gauge(
    "radalign_gateway_outbox_pending_studies", "Acknowledged studies waiting in the outbox to be published (set at scrape time)"
)
ASSEMBLER_FAILING_S = Gauge(
    "radalign_gateway_assembler_failing_seconds", "How long the study assembler's ticks have been failing (0: healthy)"
)
