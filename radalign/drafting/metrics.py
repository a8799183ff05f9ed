"""Prometheus metrics of the drafting stage. Labels name backends and reasons, never studies."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

FALLBACKS = Counter(
    "radalign_drafting_fallbacks",
    "Drafts written by the deterministic drafter instead of the configured LLM, by reason",
    ["backend", "reason"],
)
GUARD_VERDICTS = Counter("radalign_drafting_guard_verdicts", "Guard verdicts of finished drafts", ["backend", "verdict"])
LLM_RETRIES = Counter("radalign_drafting_llm_retries", "Retried LLM calls (timeouts, 5xx, connection errors)", ["backend", "reason"])
GENERATION_SECONDS = Histogram(
    "radalign_drafting_generation_seconds",
    "Time of one backend generation",
    ["backend"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 60, 120),
)
GUARD_REJECTIONS = Counter(
    "radalign_drafting_guard_rejections",
    "Drafts the guard rejected, by reason (a draft with several reasons counts once for each)",
    ["backend", "reason"],
)
