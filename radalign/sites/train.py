"""Train a site model on the site's own training set, decide everything on the site's validation
patients, and measure it on the site's held-out test patients beside the generic model.

- Split by patient key (the pseudonym: one patient is never on both sides), by a keyed hash, not a
  shuffle, so a patient keeps its split as the set grows: 60 % train, 20 % validation, 20 % test.
- Train: `fit_site_head` on pooled features of the shared frozen encoder (cached per image).
- Validation only: L2 strength, Platt calibration, the OOD threshold (1 % of validation films
  flagged), the validity gate (`decide_gate`: AUC >= 0.75 with >= 10 of each class, within the
  pneumonia group where that is the confounder) plus strata checks (within each view and age band
  where measurable), and the claim policy (`fit_claim_policy`: stated / hedged / "no X" only where
  the precision's lower bound allows it; the No Finding rule-out point).
- Test only: AUC with bootstrap CIs for the site head and the generic model on the same films,
  the policy's precision on those films, the triage figures, the OOD false-flag rate.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from radalign.concepts.encoders import site_features_name
from radalign.concepts.gate import GROUP_DEFINING, GateCriteria, ServedGate, decide_gate, strata_failures
from radalign.concepts.ood import fit_feature_distance, pool
from radalign.concepts.policy import PolicyCriteria, evaluate_policy, fit_claim_policy
from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.concepts_training.data import Record, read_manifest
from radalign.concepts_training.features import cached_features
from radalign.concepts_training.metrics import bootstrap_aucs
from radalign.concepts_training.validation import calibrated, head_logits
from radalign.sites.head import fit_abstention, fit_site_head, predict, save_head
from schemas.events import Observation

log = logging.getLogger(__name__)

SPLIT_FRACTIONS = (("train", 0.6), ("val", 0.2), ("test", 0.2))
#: Strata whose AUC must hold too (where measurable): a score that only tells AP from PA films,
#: or old from young patients, fails here.
STRATA_COLUMNS = ("view", "age_band")


def split_of(patient_key: str) -> str:
    """train / val / test of a patient, from a hash of its key (stable as the set grows)."""
    bucket = int(hashlib.sha256(f"site-split|{patient_key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edge = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        edge += fraction
        if bucket < edge:
            return name
    return SPLIT_FRACTIONS[-1][0]


@dataclass
class SiteData:
    records: list[Record]
    strata: dict[str, np.ndarray]  # column -> (N,) values
    splits: dict[str, np.ndarray]  # split -> row indices

    @property
    def labels(self) -> np.ndarray:
        return np.stack([r.labels for r in self.records])


def load_site_data(trainset_csv: str | Path) -> SiteData:
    records = read_manifest(trainset_csv)
    with Path(trainset_csv).open(newline="", encoding="utf-8") as fh:
        by_image = {str(Path(r["image"]).resolve()): r for r in csv.DictReader(fh)}
    strata = {c: np.array([by_image.get(str(r.image.resolve()), {}).get(c, "") for r in records]) for c in STRATA_COLUMNS}
    names = np.array([split_of(r.patient_id) for r in records])
    return SiteData(records, strata, {s: np.flatnonzero(names == s) for s, _ in SPLIT_FRACTIONS})


@dataclass
class SiteModel:
    site: str
    version: str
    path: Path
    card: dict[str, Any] = field(default_factory=dict)


def train_site(
    site: str, trainset_csv: str | Path, out_dir: str | Path, *, checkpoint: str | Path = DEFAULT_CHECKPOINT,
    cache_dir: str | Path = Path(".radalign/cache/concepts"), criteria: GateCriteria | None = None,
    policy_criteria: PolicyCriteria | None = None, progress: bool = True, reference: Sequence[Record] = (),
    generic_seen: frozenset[str] = frozenset(),
) -> SiteModel:
    """Train, gate and measure a site head; writes `<out_dir>/<version>.pt` (+ `.json` card).
    `reference`: films from elsewhere (other collections, children) that the site's abstention
    learns to tell from the site's own (`radalign.sites.head.fit_abstention`)."""
    criteria, policy_criteria = criteria or GateCriteria(), policy_criteria or PolicyCriteria()
    generic = load_checkpoint(checkpoint)
    data = load_site_data(trainset_csv)
    tr, va, te = (data.splits[s] for s in ("train", "val", "test"))
    if min(len(tr), len(va), len(te)) == 0:
        raise ValueError(f"{trainset_csv}: too few patients for a train / validation / test split ({len(tr)} / {len(va)} / {len(te)} films)")
    features = cached_features(data.records, generic.encoder_name, cache_dir, progress=progress)  # the generic model's, for the comparison
    site_encoder = site_features_name(generic.encoder_name, generic.encoder_state is not None)
    pooled, labels = pool(cached_features(data.records, site_encoder, cache_dir, progress=progress)), data.labels
    ood = fit_feature_distance(pooled[tr])
    fitted = fit_site_head(pooled[tr], labels[tr], pooled[va], labels[va], ood)
    reference_pooled = pool(cached_features(reference, site_encoder, cache_dir, progress=progress)) if reference else None
    detectors = fit_abstention(fitted.head, pooled[tr], pooled[va], reference_pooled)
    val_probs, val_ood = predict(fitted.head, pooled[va])
    ood_threshold = 1.0  # each detector is scaled to its own validation threshold
    supported = fitted.head.supported.numpy() > 0
    decisions = decide_gate(val_probs, labels[va], criteria=criteria, supported=supported.tolist())
    passed = [d.observation for d in decisions if d.assessed]
    by_stratum = strata_failures(val_probs, labels[va], {c: v[va] for c, v in data.strata.items()}, passed, criteria)
    for d in decisions:
        d.reasons.extend(by_stratum.get(d.observation, []))
        d.assessed = d.assessed and d.observation not in by_stratum
    policy = fit_claim_policy(val_probs, labels[va], [d.observation for d in decisions if d.assessed], policy_criteria)
    assessed: list[str] = [o.value for o in OBSERVATIONS if o.value in policy.observations]
    from radalign.concepts.calibration import OperatingPoint

    points = {o: OperatingPoint(absent=p.absent, present=p.present, target_sensitivity=0.0, target_specificity=0.0) for o, p in policy.observations.items()}
    digest = hashlib.sha256(json.dumps({"w": fitted.head.weight.numpy().round(6).tolist(), "policy": policy.to_dict(), "ood": ood_threshold},
                                       sort_keys=True).encode()).hexdigest()[:12]
    version = f"{site}-{digest}"
    children = int((data.strata["age_band"][va] == "child").sum())  # children among the validation films
    gate = ServedGate(assessed=assessed, operating_points=points, ood_threshold=ood_threshold, name=site, model_version=version, policy=policy,
                      validated_on_children=children >= criteria.min_positives)
    card = site_card(site, version, data, pooled, features, fitted, gate, decisions, generic, trainset_csv, val_ood, generic_seen)
    card["encoder"] = site_encoder
    with Path(trainset_csv).open(newline="", encoding="utf-8") as fh:
        card["signed_rows"] = sum(row.get("origin") == "signed" for row in csv.DictReader(fh))  # the retrain trigger counts from here
    card["ood"] |= detectors | {"reference_films": len(reference),
                                "reference_held_out": reference_held_out(fitted.head, pooled[tr], pooled[va], reference, reference_pooled)}
    path = save_head(fitted.head, Path(out_dir) / f"{version}.pt", {"site": site, "version": version, "encoder": site_encoder,
                     "generic_model_version": generic.version, "gate": gate.to_dict(), "summary": card["summary"]})
    Path(out_dir, f"{version}.json").write_text(json.dumps(card, indent=2))
    Path(out_dir, f"{version}.md").write_text(card_markdown(card))
    return SiteModel(site, version, path, card)


def site_card(site: str, version: str, data: SiteData, pooled: np.ndarray, features: np.ndarray, fitted: Any, gate: ServedGate,
              decisions: list, generic: Any, trainset_csv: str | Path, val_ood: np.ndarray, generic_seen: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The model card's figures: everything on test is measured here and used for nothing else.
    The comparison with the generic model is on the test films it never trained or selected on
    (`generic_seen`: resolved image paths of its train and validation rows, when known)."""
    te = data.splits["test"]
    labels = data.labels
    site_probs, site_ood = predict(fitted.head, pooled[te])
    generic_gate = generic.gate
    site_rows = {r.observation.value: r for r in bootstrap_aucs(site_probs, labels[te])}
    unseen = np.array([str(data.records[i].image.resolve()) not in generic_seen for i in te])
    generic_probs = calibrated(generic, head_logits(generic, _as_tensor(features[te][unseen])))
    generic_rows = {r.observation.value: r for r in bootstrap_aucs(generic_probs, labels[te][unseen])}
    paired_site_rows = {r.observation.value: r for r in bootstrap_aucs(site_probs[unseen], labels[te][unseen])}
    nf = OBSERVATIONS.index(Observation.NO_FINDING)
    rule_out = gate.policy.rule_out() if gate.policy else None
    y_nf = labels[te, nf]
    triage = None
    if rule_out is not None and np.isin(y_nf, (0, 1)).any():
        likely_normal = site_probs[:, nf] >= rule_out
        normal, abnormal = y_nf == 1, y_nf == 0
        triage = {"rule_out_point": rule_out, "normal_films": int(normal.sum()), "abnormal_films": int(abnormal.sum()),
                  "normal_identified": float(likely_normal[normal].mean()) if normal.any() else None,
                  "abnormal_called_likely_normal": float(likely_normal[abnormal].mean()) if abnormal.any() else None}
    per_obs = []
    for d in decisions:
        s, g = site_rows[d.observation], generic_rows[d.observation]
        per_obs.append({
            "observation": d.observation, "assessed": d.observation in gate.assessed, "reasons": d.reasons,
            "val_auc": d.val_auc, "val_positives": d.val_positives, "val_negatives": d.val_negatives, "within_group_auc": d.within_group_auc,
            "test_positives": s.positives, "test_negatives": s.negatives,
            "site_test_auc": s.auc, "site_test_ci": [s.ci_low, s.ci_high],
            "generic_test_auc": g.auc, "generic_test_ci": [g.ci_low, g.ci_high],
            "paired_site_test_auc": paired_site_rows[d.observation].auc,
            "paired_site_test_ci": [paired_site_rows[d.observation].ci_low, paired_site_rows[d.observation].ci_high],
            "generic_assessed": bool(generic_gate and d.observation in generic_gate.assessed),
            "policy": gate.policy.observations[d.observation].to_dict() if gate.policy and d.observation in gate.policy.observations else None,
        })
    return {
        "site": site, "version": version, "trained_at": datetime.now(UTC).isoformat(timespec="seconds"), "trainset": str(trainset_csv),
        "encoder": generic.encoder_name, "generic_model_version": generic.version, "l2_c": fitted.l2_c,
        "films": {s: int(len(i)) for s, i in data.splits.items()},
        "comparison_films": int(unseen.sum()),
        "patients": {s: len({data.records[i].patient_id for i in idx}) for s, idx in data.splits.items()},
        "ood": {"threshold": gate.ood_threshold, "val_flagged": float((val_ood > (gate.ood_threshold or np.inf)).mean()),
                "test_flagged": float((site_ood > (gate.ood_threshold or np.inf)).mean())},
        "observations": per_obs,
        "policy_test": evaluate_policy(gate.policy, site_probs, labels[te]) if gate.policy else {},
        "triage_test": triage,
        "summary": {"assessed": gate.assessed, "passed_gate": bool(gate.assessed),
                    "test_auc": {o: site_rows[o].auc for o in gate.assessed},
                    "generic_test_auc": {o: generic_rows[o].auc for o in gate.assessed},
                    "paired_site_test_auc": {o: paired_site_rows[o].auc for o in gate.assessed}},
    }


def reference_held_out(head: Any, train_x: np.ndarray, val_x: np.ndarray, reference: Sequence[Record], reference_x: np.ndarray | None) -> dict[str, Any]:
    """Share of each reference source's films flagged by an abstention fitted WITHOUT that source:
    how the site's abstention does on a kind of film it never saw (the honest figure; on the
    sources it was fitted with it is in-sample)."""
    import copy

    sources = sorted({r.source for r in reference})
    if reference_x is None or len(sources) < 2:
        return {}
    out = {}
    for source in sources:
        held = np.array([r.source == source for r in reference])
        probe = copy.deepcopy(head)
        fit_abstention(probe, train_x, val_x, reference_x[~held])
        _, scores = predict(probe, reference_x[held])
        out[source] = {"films": int(held.sum()), "flagged": float((scores > 1.0).mean())}
    return out


def _as_tensor(features: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.asarray(features, dtype=np.float32))


def _fmt(value: float | None, ci: list | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and ci[0] is not None else "")


def _band(figure: dict | None) -> str:
    if not figure or not figure.get("films"):
        return "-"
    return f"{figure['correct']}/{figure['films']} (LB {figure['lower_bound']:.2f})"


def card_markdown(card: dict[str, Any]) -> str:
    """The site model card as Markdown (written beside the head)."""
    lines = [
        f"# Site model card: `{card['version']}` (site `{card['site']}`)", "",
        "**Not for clinical use.** Figures on this site's held-out test patients, never used for any choice, "
        "beside the generic model on the same films (bootstrap 95 % CI).", "",
        f"- trained {card['trained_at']} from `{card['trainset']}`",
        f"- features: `{card['encoder']}` pooled (frozen, shared with the generic model `{card['generic_model_version']}`: one encoder pass per film)",
        f"- films train / val / test: {card['films']['train']} / {card['films']['val']} / {card['films']['test']} "
        f"({card['patients']['train']} / {card['patients']['val']} / {card['patients']['test']} patients)",
        f"- abstention (distance from the site's films, and a classifier of the site's films against {card['ood'].get('reference_films', 0)} films "
        f"from elsewhere): validation flagged {card['ood']['val_flagged']:.3f}, test flagged {card['ood']['test_flagged']:.3f}"
        + "".join(f"; {s} films (never seen by that fit) flagged {v['flagged']:.2f} of {v['films']}" for s, v in card["ood"].get("reference_held_out", {}).items()),
        f"- site against generic model: on the {card.get('comparison_films', card['films']['test'])} test films the generic model never trained or selected on",
        "",
        "| observation | assessed | val +/- | val AUC | test +/- | site test AUC [CI] | site, comparison films | generic, comparison films "
        "| stated (val) | hedged (val) | 'no X' (val) | why not |",
        "|---|---|---|---:|---|---|---|---|---|---|---|---|",
    ]
    for row in card["observations"]:
        pol = row["policy"] or {}
        lines.append(
            f"| {row['observation']} | {'yes' if row['assessed'] else 'no'} | {row['val_positives']}/{row['val_negatives']} | {_fmt(row['val_auc'])} "
            f"| {row['test_positives']}/{row['test_negatives']} | {_fmt(row['site_test_auc'], row['site_test_ci'])} "
            f"| {_fmt(row.get('paired_site_test_auc'), row.get('paired_site_test_ci'))} "
            f"| {_fmt(row['generic_test_auc'], row['generic_test_ci'])}{' (assessed)' if row['generic_assessed'] else ''} "
            f"| {_band(pol.get('present_precision')) if pol.get('allow_present') else 'no'} | {_band(pol.get('hedge_precision')) if pol.get('allow_hedge') else 'no'} "
            f"| {_band(pol.get('npv')) if pol.get('allow_absent') else 'no'} | {'; '.join(row['reasons'])} |"
        )
    lines += ["", "## Claim policy on the test patients", "", "| observation | stated: correct/films | hedged | 'no X' |", "|---|---|---|---|"]
    for obs, figs in card["policy_test"].items():
        lines.append(f"| {obs} | {_band(figs['present_precision'])} | {_band(figs['hedge_precision'])} | {_band(figs['npv'])} |")
    if card.get("triage_test"):
        t = card["triage_test"]
        lines += ["", "## Triage (No Finding rule-out point, chosen on validation: >= 98 % of abnormal films not called likely-normal)", "",
                  f"rule-out point {t['rule_out_point']:.3f}; on test: {_fmt(t['normal_identified'])} of {t['normal_films']} normal films "
                  f"identified as likely-normal, {_fmt(t['abnormal_called_likely_normal'])} of {t['abnormal_films']} abnormal films called likely-normal."]
    return "\n".join(lines) + "\n"


__all__ = ["GROUP_DEFINING", "SiteModel", "load_site_data", "split_of", "train_site"]


def default_reference() -> list[Record]:
    """Films from elsewhere that every installation has: the pediatric films of the
    pneumonia-model-package wheel (children: a population an adult site's model is not validated on)."""
    from radalign.concepts_training.data import pediatric_images

    return [Record(path, f"peds-{i}", np.full(len(OBSERVATIONS), np.nan, dtype=np.float32), source="pediatric") for i, (path, _) in enumerate(pediatric_images())]


def reference_records(manifest: str | Path | None, site: str) -> list[Record]:
    """The default reference films plus a manifest's rows from sources other than `site`."""
    extra = [r for r in read_manifest(manifest, keep_unlabeled=True) if r.source and r.source != site] if manifest else []
    return [*default_reference(), *[r for r in extra if r.source != "pediatric"]]


def generic_seen_images(checkpoint: str | Path, manifest: str | Path) -> frozenset[str]:
    """Resolved image paths of the generic checkpoint's train and validation rows (its own split
    of the manifest it was trained on): the films its figures would flatter."""
    from radalign.concepts_training.sources import checkpoint_split

    records, parts = checkpoint_split(load_checkpoint(checkpoint).meta, manifest)
    return frozenset(str(records[i].image.resolve()) for name in ("train", "val") for i in parts[name])
