"""Site audit: `radalign audit MANIFEST --site NAME` runs the served model on a provider's labelled
retrospective films and writes the site profile the concept stage then applies to that site.

The served model is the checkpoint the Triton repository is exported from (the integration test
asserts Triton answers exactly like it), run here on cached encoder features. The site's films
are split by patient in two halves: the *fit* half decides the site's gate (per-observation AUC
>= the shipped criteria with enough labels), its Platt recalibration on top of the served
probability and its operating points; the *report* half, used for nothing else, gives the
figures (AUC with CI, ECE before / after, sensitivity / specificity at the operating points).
Films the shipped OOD detector flags are counted (the site's OOD rate) and left out of both.
An observation the site's films cannot measure (too few labels of a class) keeps the shipped
decision; the profile says so per observation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from radalign.concepts.calibration import logit, sigmoid
from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from radalign.concepts.gate import GateCriteria, ServedGate, auc_or_none, profile_path, save_profile
from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.concepts_training.calibration import MIN_CLASS_FOR_FIT, choose_operating_point, expected_calibration_error, fit_platt
from radalign.concepts_training.data import patient_split, read_manifest
from radalign.concepts_training.evaluate import predict_full
from radalign.concepts_training.metrics import bootstrap_aucs


@dataclass
class AuditResult:
    site: str
    profile: Path
    films: int
    ood_rate: float | None
    gate: ServedGate
    per_observation: dict[str, dict[str, Any]]

    def table(self) -> str:
        lines = [f"site {self.site!r}: {self.films} films, OOD-flagged {self.ood_rate if self.ood_rate is None else round(self.ood_rate, 3)}",
                 f"{'observation':<28}{'decision':<13}{'fit AUC':>8}  {'report AUC [95% CI]':<24}{'ECE before->after':>18}"]  # fmt: skip
        for name, row in self.per_observation.items():
            fit = "n/a" if row["fit_auc"] is None else f"{row['fit_auc']:.3f}"
            rep = "n/a" if row["report_auc"] is None else f"{row['report_auc']:.3f} [{row['report_ci'][0]:.2f}, {row['report_ci'][1]:.2f}]"
            ece = "" if row["ece_before"] is None else f"{row['ece_before']:.3f}->{row['ece_after']:.3f}"
            lines.append(f"{name:<28}{row['decision']:<13}{fit:>8}  {rep:<24}{ece:>18}")
        lines.append(f"assessed at this site: {', '.join(self.gate.assessed) or 'none'}")
        lines.append(f"profile: {self.profile}")
        return "\n".join(lines)


def audit(
    manifest: str | Path, site: str, *, checkpoint: str | Path = DEFAULT_CHECKPOINT, profiles_dir: str | Path = Path(".radalign/site_profiles"),
    cache_dir: str | Path = Path(".radalign/cache/concepts"), labels_from_report: bool = False, seed: int = 0, criteria: GateCriteria | None = None,
    sensitivity: float = 0.9, specificity: float = 0.9,
) -> AuditResult:  # fmt: skip
    criteria = criteria or GateCriteria()
    out_path = profile_path(profiles_dir, site)  # validates the site name first
    ckpt = load_checkpoint(checkpoint)
    shipped = ckpt.gate
    if shipped is None:
        raise ValueError(f"{checkpoint}: no validity gate in this checkpoint (trained before v2); retrain it")
    records = read_manifest(manifest, labels_from_report=labels_from_report)
    if len(records) < 4:
        raise ValueError(f"{manifest}: only {len(records)} labelled films; an audit needs a retrospective set")
    probs, _, ood = predict_full(checkpoint, records, cache_dir)
    flagged = ood > shipped.ood_threshold if shipped.ood_threshold is not None else np.zeros(len(records), dtype=bool)
    keep = [i for i in range(len(records)) if not flagged[i]]
    kept = [records[i] for i in keep]
    halves = patient_split(kept, (0.5, 0.0, 0.5), seed=seed)
    fit_idx, rep_idx = [keep[i] for i in halves["train"]], [keep[i] for i in halves["test"]]
    labels = np.stack([r.labels for r in records])
    served_logit = logit(probs)
    scale, bias, fitted = fit_platt(served_logit[fit_idx], labels[fit_idx])
    recal = sigmoid(served_logit * scale + bias)
    supported = set(ckpt.meta.get("supported_observations") or [o.value for o in OBSERVATIONS])
    assessed, points, recalibration, per_obs = [], {}, {}, {}
    for k, obs in enumerate(OBSERVATIONS):
        y_fit = labels[fit_idx, k]
        pos, neg = int((y_fit == 1).sum()), int((y_fit == 0).sum())
        fit_auc = auc_or_none(probs[fit_idx, k], y_fit)
        measurable = min(pos, neg) >= criteria.min_positives and obs.value in supported
        if measurable:
            decision = "assessed" if fit_auc is not None and fit_auc >= criteria.min_auc else "not assessed"
        else:
            decision = "shipped gate" if obs.value in shipped.assessed else "not assessed"
        use_recal = fitted[k] and min(pos, neg) >= MIN_CLASS_FOR_FIT
        p_site = recal[:, k] if use_recal else probs[:, k]
        if decision == "assessed":
            point = choose_operating_point(p_site[fit_idx], y_fit, sensitivity=sensitivity, specificity=specificity)
            if point is not None:
                assessed.append(obs.value)
                points[obs.value] = point
                if use_recal:
                    recalibration[obs.value] = (float(scale[k]), float(bias[k]))
        elif decision == "shipped gate":
            assessed.append(obs.value)
            points[obs.value] = shipped.operating_points[obs.value]
        y_rep = labels[rep_idx, k]
        row = bootstrap_aucs(p_site[rep_idx][:, None].repeat(len(OBSERVATIONS), 1), np.where(np.arange(len(OBSERVATIONS)) == k, y_rep[:, None], np.nan), n_boot=300, seed=seed)[k]
        per_obs[obs.value] = {
            "decision": decision, "fit_positives": pos, "fit_negatives": neg, "fit_auc": fit_auc, "recalibrated": obs.value in recalibration,
            "report_positives": row.positives, "report_negatives": row.negatives, "report_auc": row.auc, "report_ci": (row.ci_low, row.ci_high),
            "ece_before": expected_calibration_error(probs[rep_idx, k], y_rep), "ece_after": expected_calibration_error(p_site[rep_idx], y_rep),
        }  # fmt: skip
    gate = ServedGate(assessed=assessed, operating_points=points, ood_threshold=shipped.ood_threshold, name=site, recalibration=recalibration,
                      model_version=ckpt.version)  # fmt: skip
    ood_rate = float(flagged.mean())
    save_profile(gate, out_path, {"audit": {"manifest": str(manifest), "films": len(records), "ood_rate": ood_rate, "fit_films": len(fit_idx),
                                            "report_films": len(rep_idx), "per_observation": per_obs, "criteria": criteria.to_dict()}})  # fmt: skip
    return AuditResult(site=site, profile=out_path, films=len(records), ood_rate=ood_rate, gate=gate, per_observation=per_obs)


audit_app = typer.Typer(help="Audit the served concept model on a site's labelled films.", no_args_is_help=True)


@audit_app.command()
def audit_cmd(
    manifest: Annotated[Path, typer.Argument(help="CSV: image, patient_id, [source], labels (observation columns or `label`), or `report` with --labels-from-report")],
    site: Annotated[str, typer.Option(help="site name: the profile's file name, matched to StudyPreprocessed.site")],
    checkpoint: Annotated[Path, typer.Option(help="the served checkpoint")] = DEFAULT_CHECKPOINT,
    profiles_dir: Annotated[Path, typer.Option(help="where the concept stage reads profiles (settings.concepts_site_profiles_dir)")] = Path(".radalign/site_profiles"),
    cache_dir: Path = Path(".radalign/cache/concepts"),
    labels_from_report: Annotated[bool, typer.Option(help="label films from their `report` column with radalign.labeler")] = False,
    json_out: Annotated[Path | None, typer.Option(help="also write the audit figures as JSON")] = None,
) -> None:
    """Per-observation AUC, calibration and OOD rate of the served model on a site's films; writes the site profile."""
    result = audit(manifest, site, checkpoint=checkpoint, profiles_dir=profiles_dir, cache_dir=cache_dir, labels_from_report=labels_from_report)
    typer.echo(result.table())
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"site": site, "films": result.films, "ood_rate": result.ood_rate, "gate": result.gate.to_dict(),
                                        "per_observation": result.per_observation}, indent=2, default=str))  # fmt: skip
