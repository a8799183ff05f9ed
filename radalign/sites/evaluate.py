"""`radalign eval concepts MANIFEST --site SITE`: the figures of the model that serves SITE (its
live site head from the registry, else the shipped one, else the generic model's gate), on any
labelled manifest: AUC with bootstrap CIs per observation, what it claims (assessed set and the
claim policy's bands, counted against the manifest's labels), and the OOD abstentions (a film
the site model flags gets no claim at all).

`--split all` scores every row (films the project never saw); `--split test|val|train` selects
the site trainer's own patient split (keys from the same pseudonyms as the archive: the
deployment's secret and the site's issuer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from radalign.concepts.encoders import site_features_name
from radalign.concepts.gate import ServedGate
from radalign.concepts.ood import pool
from radalign.concepts.policy import evaluate_policy
from radalign.concepts_training.data import read_manifest
from radalign.concepts_training.features import cached_features
from radalign.concepts_training.metrics import bootstrap_aucs
from radalign.sites.head import load_head, predict
from radalign.sites.registry import live_head
from radalign.sites.train import split_of


def evaluate_site(
    manifest: str | Path, site: str, *, sites_dir: str | Path, split: str = "all", secret: str = "", issuer: str | None = None,
    cache_dir: str | Path = Path(".radalign/cache/concepts"), checkpoint: str | Path = DEFAULT_CHECKPOINT, n_boot: int = 1000,
) -> dict[str, Any]:
    head_file = live_head(sites_dir, site)
    if head_file is None:
        raise FileNotFoundError(f"site {site!r} has no promoted site model in {sites_dir} and none ships: it is served by the generic model")
    head, meta = load_head(head_file)
    gate = ServedGate.from_dict(meta["gate"])
    records = read_manifest(manifest)
    if split != "all":
        from radalign.pseudonymizer import Pseudonymizer

        pseudonyms = Pseudonymizer(secret)
        records = [r for r in records if split_of(pseudonyms.patient_key(r.patient_id, issuer or site)) == split]
    if not records:
        raise ValueError(f"{manifest}: no labelled rows in split {split!r}")
    ckpt = load_checkpoint(checkpoint)
    encoder = site_features_name(ckpt.encoder_name, ckpt.encoder_state is not None)
    if encoder != meta.get("encoder"):
        raise ValueError(f"{head_file} reads {meta.get('encoder')} features; the served checkpoint gives {encoder}")
    probs, ood = predict(head, pool(cached_features(records, encoder, cache_dir)))
    labels = np.stack([r.labels for r in records])
    flagged = ood > (gate.ood_threshold if gate.ood_threshold is not None else np.inf)
    rows = bootstrap_aucs(probs, labels, n_boot=n_boot)
    kept = ~flagged
    return {
        "site": site, "model": meta["version"], "head_file": str(head_file), "split": split, "films": len(records),
        "assessed": gate.assessed,
        "ood": {"threshold": gate.ood_threshold, "flagged": int(flagged.sum()), "flagged_share": float(flagged.mean())},
        "per_observation": [
            {"observation": r.observation.value, "assessed": r.observation.value in gate.assessed, "positives": r.positives,
             "negatives": r.negatives, "auc": r.auc, "ci": [r.ci_low, r.ci_high]}
            for r in rows
        ],
        # what the drafts would claim: the policy's bands on the films the site model did not flag
        "claims": evaluate_policy(gate.policy, probs[kept], labels[kept]) if gate.policy else {},
    }


def format_site_report(report: dict[str, Any]) -> str:
    lines = [f"site {report['site']}: model {report['model']}, split {report['split']}, {report['films']} films, "
             f"OOD-flagged {report['ood']['flagged']} ({report['ood']['flagged_share']:.3f}): no claim on those",
             f"{'observation':<28}{'assessed':<10}{'+/-':>9}  AUC [95% CI]"]
    for row in report["per_observation"]:
        if row["auc"] is None:
            continue
        lines.append(f"{row['observation']:<28}{'yes' if row['assessed'] else 'no':<10}{row['positives']:>4}/{row['negatives']:<4}  "
                     f"{row['auc']:.3f} [{row['ci'][0]:.2f}, {row['ci'][1]:.2f}]")
    for obs, bands in report["claims"].items():
        parts = [f"{name} {b['correct']}/{b['films']}" for name, b in bands.items() if b]
        lines.append(f"claims {obs}: " + ", ".join(parts))
    return "\n".join(lines)


__all__ = ["evaluate_site", "format_site_report"]
