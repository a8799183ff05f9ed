"""Shadow and learning on live traffic: what a site's candidate says beside the live model, the
comparison an operator reads before `promote`, the signed reports that join the site's training
set, and the retrain trigger.

- The concept stage records each shadow-scored study (`record`, table `site_shadow_scores`,
  migration 090); the candidate's answer is never drafted.
- `compare` (`radalign sites compare SITE`): per observation, how often candidate and live make
  the same claim; OOD and nothing-claimed rates of each; and, on the studies radiologists signed
  meanwhile, each one's AUC against the signed labels (report_finals, 070).
- `signed_studies` (`radalign sites archive SITE --signed`): the site's signed reports with the
  film the model read (review_images, 070), as training-set rows with the signed labels.
- `retrain_due` (`radalign sites retrain SITE`): enough new signed reports, or an old enough live
  model, train the next candidate into shadow (a Kubernetes CronJob runs it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from radalign.concepts.gate import SiteHeadInfo, auc_or_none
from radalign.concepts.inference import gated_scores
from radalign.concepts.vocabulary import OBSERVATIONS
from schemas.events import Certainty

_UPSERT = """
INSERT INTO site_shadow_scores (study_key, candidate_version, site, live_version, live_probabilities, live_states,
                                candidate_probabilities, candidate_states, live_ood, candidate_ood)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (study_key, candidate_version) DO NOTHING
"""


@dataclass(frozen=True)
class ShadowRow:
    """One study scored by the live model and the site's candidate (the row `record` writes)."""

    study_key: str
    site: str
    candidate: str
    live: str | None
    live_probabilities: dict[str, float]
    live_states: dict[str, str]
    candidate_probabilities: dict[str, float]
    candidate_states: dict[str, str]
    live_ood: bool
    candidate_ood: bool


def shadow_row(study_key: str, site: str, live_probs: np.ndarray, live_states: Mapping[str, Certainty], live_ood: bool,
               live: SiteHeadInfo | None, candidate: SiteHeadInfo, candidate_probs: np.ndarray, candidate_ood_score: float) -> ShadowRow:
    """The candidate's claims under its own gate and policy, beside what the live model claimed."""
    concepts, _, ood = gated_scores(candidate_probs, candidate.gate, ood_score=candidate_ood_score)
    names = [o.value for o in OBSERVATIONS]
    return ShadowRow(
        study_key, site, candidate.version, live.version if live else None,
        {n: float(p) for n, p in zip(names, live_probs, strict=True)}, {k: v.value for k, v in live_states.items()},
        {n: float(p) for n, p in zip(names, candidate_probs, strict=True)}, {c.observation.value: c.state.value for c in concepts},
        live_ood, ood is not None,
    )


async def record(pool: Any, row: ShadowRow) -> None:
    """Idempotent (one row per study and candidate: a redelivered study changes nothing)."""
    from psycopg.types.json import Jsonb

    async with pool.connection() as conn:
        await conn.execute(_UPSERT, (row.study_key, row.candidate, row.site, row.live, Jsonb(row.live_probabilities), Jsonb(row.live_states),
                                     Jsonb(row.candidate_probabilities), Jsonb(row.candidate_states), row.live_ood, row.candidate_ood))


_SHADOW_WITH_SIGNED = """
SELECT s.live_probabilities, s.live_states, s.candidate_probabilities, s.candidate_states, s.live_ood, s.candidate_ood,
       f.payload -> 'labels' AS signed_labels
FROM site_shadow_scores s
LEFT JOIN LATERAL (
    SELECT payload FROM report_finals r WHERE r.study_key = s.study_key ORDER BY r.version DESC LIMIT 1
) f ON true
WHERE s.site = %s AND s.candidate_version = %s
"""


def _signed(labels: Any) -> dict[str, str]:
    if not labels:
        return {}
    raw = json.loads(labels) if isinstance(labels, str) else labels
    return {str(k): str(v) for k, v in dict(raw).items()}


def comparison(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Candidate against live on the same studies (pure: rows as `_SHADOW_WITH_SIGNED` returns)."""
    n = len(rows)
    out: dict[str, Any] = {"studies": n, "signed": sum(bool(_signed(r["signed_labels"])) for r in rows), "observations": {}}
    if not n:
        return out
    for role in ("live", "candidate"):
        out[f"{role}_ood_rate"] = sum(bool(r[f"{role}_ood"]) for r in rows) / n
        out[f"{role}_nothing_claimed_rate"] = sum(not r[f"{role}_states"] and not r[f"{role}_ood"] for r in rows) / n
    for obs in (o.value for o in OBSERVATIONS):
        claimed = [r for r in rows if obs in r["live_states"] or obs in r["candidate_states"]]
        entry: dict[str, Any] = {"claimed_by_either": len(claimed),
                                 "agreement": (sum(r["live_states"].get(obs) == r["candidate_states"].get(obs) for r in claimed) / len(claimed)) if claimed else None}
        signed = [(r, _signed(r["signed_labels"]).get(obs)) for r in rows]
        signed = [(r, lab) for r, lab in signed if lab in ("present", "absent")]
        y = np.array([1.0 if lab == "present" else 0.0 for _, lab in signed])
        for role in ("live", "candidate"):
            scores = np.array([r[f"{role}_probabilities"].get(obs, 0.5) for r, _ in signed])
            entry[f"{role}_auc_vs_signed"] = auc_or_none(scores, y) if len(y) else None
        entry["signed_positives"], entry["signed_negatives"] = int(y.sum()), int(len(y) - y.sum())
        if entry["claimed_by_either"] or entry["signed_positives"]:
            out["observations"][obs] = entry
    return out


async def compare(pool: Any, site: str, candidate: str) -> dict[str, Any]:
    from psycopg.rows import dict_row

    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SHADOW_WITH_SIGNED, (site, candidate))
        rows = await cur.fetchall()
    return {"site": site, "candidate": candidate} | comparison(rows)


_SIGNED_FOR_SITE = """
SELECT DISTINCT ON (f.study_key) f.study_key, f.payload -> 'labels' AS labels, rp.payload -> 'study' ->> 'patient_key' AS patient_key,
       i.model_input, i.view_position
FROM report_finals f
JOIN reports rp ON rp.study_key = f.study_key AND rp.payload ->> 'site' = %s
JOIN review_images i ON i.study_key = f.study_key
ORDER BY f.study_key, f.version DESC
"""


async def signed_studies(pool: Any, site: str) -> list[dict[str, Any]]:
    """The site's signed studies: key, patient key, the signed labels, the model input's BlobRef."""
    from psycopg.rows import dict_row

    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SIGNED_FOR_SITE, (site,))
        return list(await cur.fetchall())


def retrain_due(signed_since_training: int, live_trained_at: datetime | None, *, min_signed: int, max_age: timedelta,
                now: datetime | None = None) -> str | None:
    """Why the site's next candidate is due (None: not due)."""
    now = now or datetime.now(UTC)
    if signed_since_training >= min_signed:
        return f"{signed_since_training} signed reports since the last training (>= {min_signed})"
    if live_trained_at is not None and now - live_trained_at >= max_age:
        return f"the live model was trained {(now - live_trained_at).days} days ago (>= {max_age.days})"
    return None
