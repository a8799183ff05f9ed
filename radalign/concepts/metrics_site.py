"""Per-site drift metrics of the concept stage: what each site's films get from the model that
serves them, beside what that model's audit expected. Labels name sites (configured issuers, a
small set) and observations, never studies or patients."""

from __future__ import annotations

import numpy as np
from prometheus_client import Counter, Histogram

from radalign.concepts.client import ServedScores
from radalign.concepts.vocabulary import OBSERVATIONS

SITE_FILMS = Counter("radalign_site_films", "Films scored per site, by the model that scored them and its OOD verdict", ["site", "head", "ood"])
SITE_SCORES = Histogram(
    "radalign_site_score", "Calibrated probability per site and observation (drift against the site model's validation films)",
    ["site", "observation"], buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
)  # fmt: skip
SHADOW_AGREEMENT = Counter(
    "radalign_site_shadow_calls", "Shadow candidate against the live model per site and observation: the same side of 0.5 or not",
    ["site", "observation", "agree"],
)  # fmt: skip

SHADOW_UNRECORDED = Counter("radalign_site_shadow_unrecorded", "Shadow-scored studies whose record could not be written (PostgreSQL)", ["site"])


def record_site_scores(site: str | None, served: ServedScores) -> None:
    name = site or "none"
    head = "site" if served.head is not None else "generic"
    threshold = served.head.gate.ood_threshold if served.head is not None else None
    SITE_FILMS.labels(name, head, str(threshold is not None and served.ood_score > threshold).lower()).inc()
    if served.head is not None:
        for obs in served.head.gate.assessed:
            SITE_SCORES.labels(name, obs).observe(float(served.probabilities[[o.value for o in OBSERVATIONS].index(obs)]))
    if served.shadow_probabilities is not None and served.shadow_head is not None:
        live, shadow = np.asarray(served.probabilities) >= 0.5, np.asarray(served.shadow_probabilities) >= 0.5
        for obs in served.shadow_head.gate.assessed:
            k = [o.value for o in OBSERVATIONS].index(obs)
            SHADOW_AGREEMENT.labels(name, obs, str(bool(live[k] == shadow[k])).lower()).inc()
