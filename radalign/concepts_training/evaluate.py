"""Evaluation that exposes shortcuts: `radalign eval concepts MANIFEST [--checkpoint C] [--split test|val|all]`.

The split is rebuilt per source from the seed and fractions stored in the checkpoint, so the test
patients are the ones training never saw (neither for fitting, early stopping, calibration nor
the gate). `--split all` scores every row of any manifest as an external test set. Beside the
per-observation AUCs (overall and within each source, bootstrap CIs) it reports: the trivial
source-identity baseline (each source's training prevalence as the score) in the same run, the
within-pneumonia-group confounding check, calibration (ECE, reliability plot), the operating
points' sensitivity / specificity, the OOD flag rate, and the leave-one-source-out table stored
in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radalign.concepts.checkpoint import load_checkpoint
from radalign.concepts.gate import CONFOUNDER, GROUP_DEFINING, auc_or_none
from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.concepts_training.calibration import expected_calibration_error, reliability_curve
from radalign.concepts_training.data import Record, load_image
from radalign.concepts_training.features import cached_features
from radalign.concepts_training.metrics import AucRow, bootstrap_aucs, mean_auc, per_observation_auc, summarise
from radalign.concepts_training.sources import checkpoint_split, masked_labels


@dataclass
class EvalReport:
    split: str
    images: int
    patients: int
    model_version: str
    rows: list[AucRow]
    mean_auc_competition: float | None
    mean_auc_present: float | None
    roc_png: Path | None
    retrieval: dict[str, float] | None = None
    by_source: dict[str, dict[str, float]] | None = None
    assessed: list[str] | None = None
    mean_auc_assessed: float | None = None
    by_source_rows: dict[str, list[dict]] | None = None
    baseline_source_prevalence: dict[str, float | None] | None = None
    confounding: dict[str, dict] | None = None
    calibration: dict[str, dict] | None = None
    operating_points: dict[str, dict] | None = None
    ood: dict[str, float | None] | None = None
    loso: dict[str, dict] | None = None
    reliability_png: Path | None = None

    def table(self) -> str:
        lines = [f"{'observation':<28}{'pos':>5}{'neg':>5}  {'AUC':>6}  95% CI", "-" * 60]
        for r in self.rows:
            auc = f"{r.auc:6.3f}  [{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.auc is not None else "   n/a  (one class only)"
            lines.append(f"{r.observation.value:<28}{r.positives:>5}{r.negatives:>5}  {auc}")

        def fmt(v: float | None) -> str:
            return "n/a (no competition observation has both classes)" if v is None else f"{v:.3f}"

        lines += ["-" * 60, f"mean AUC, 5 competition observations: {fmt(self.mean_auc_competition)}", f"mean AUC, all with both classes:     {fmt(self.mean_auc_present)}"]
        if self.assessed is not None:
            lines.append(f"assessed by the gate ({len(self.assessed)}): {', '.join(self.assessed) or 'none'}")
            lines.append(f"mean AUC over assessed observations: {'n/a (none assessed)' if self.mean_auc_assessed is None else f'{self.mean_auc_assessed:.3f}'}")
        for source, rows in (self.by_source_rows or {}).items():
            cells = [f"{r['observation']} {r['auc']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({r['positives']}+/{r['negatives']}-)" for r in rows if r["auc"] is not None]
            if cells:
                lines.append(f"  within source {source!r}: " + "; ".join(cells))
        if self.baseline_source_prevalence:
            cells = [f"{k} {v:.3f}" for k, v in self.baseline_source_prevalence.items() if v is not None]
            lines.append("baseline, source identity (training prevalence of the film's source as the score): " + (", ".join(cells) or "n/a"))
        for obs, c in (self.confounding or {}).items():
            model = "n/a" if c["model_auc_within_group"] is None else f"{c['model_auc_within_group']:.3f}"
            group = "n/a" if c["group_score_auc"] is None else f"{c['group_score_auc']:.3f}"
            lines.append(f"confounding, {obs} within the {CONFOUNDER.value} group ({c['positives']}+/{c['negatives']}-): model AUC {model}; "
                         f"AUC of the {CONFOUNDER.value} score as predictor over all films {group}")
        cells = [f"{obs}{'*' if c['assessed'] else ''} {c['ece']:.3f}" for obs, c in (self.calibration or {}).items() if c["ece"] is not None]
        if cells:
            lines.append("calibration, ECE (10 bins; * assessed): " + ", ".join(cells))
        for obs, o in (self.operating_points or {}).items():
            lines.append(f"operating point {obs}: absent < {o['absent']:.3f} <= uncertain < {o['present']:.3f} <= present; "
                         f"sensitivity (not called absent) {o['sensitivity']}, specificity (not called present) {o['specificity']}")
        if self.ood:
            lines.append(f"OOD: {self.ood['flagged']:.3f} of these films flagged (threshold {self.ood['threshold']})")
        for source, info in (self.loso or {}).items():
            cells = [f"{r['observation']} {r['auc']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" for r in info["all"] if r["auc"] is not None]
            lines.append(f"leave-one-source-out, trained without {source!r}, all {info['films']} of its films: " + ("; ".join(cells) or "n/a"))
        if self.retrieval:
            ret = self.retrieval
            recalls = ", ".join(f"R@{k.split('@')[1]} {ret[k]:.3f} (chance {ret['chance@' + k.split('@')[1]]:.3f})" for k in ret if k.startswith("recall@"))
            lines.append(f"image -> report retrieval ({int(ret['queries'])} images, {int(ret['reports'])} distinct reports): {recalls}")
        return "\n".join(lines)


def predict_records(
    checkpoint_path: str | Path, records: Sequence[Record], cache_dir: str | Path, *, indices: Sequence[int] | None = None, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated probabilities (n, 14), embeddings (n, 384)) of `records[indices]` (default: all)."""
    probs, embs, _ = predict_full(checkpoint_path, records, cache_dir, indices=indices, batch_size=batch_size)
    return probs, embs


def predict_full(
    checkpoint_path: str | Path, records: Sequence[Record], cache_dir: str | Path, *, indices: Sequence[int] | None = None, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibrated probabilities (n, 14), embeddings (n, 384), OOD scores (n,)) as the served model
    computes them, from cached frozen-encoder features (or the full model for a fine-tuned encoder)."""
    ckpt = load_checkpoint(checkpoint_path)
    idx = list(range(len(records))) if indices is None else list(indices)
    if ckpt.encoder_state is not None:
        model = ckpt.build_model()
        outs = []
        with torch.inference_mode():
            for s in range(0, len(idx), batch_size):
                images = torch.from_numpy(np.stack([load_image(records[i].image) for i in idx[s : s + batch_size]]))
                outs.append([t.numpy() for t in model(images)])
        return tuple(np.concatenate([o[j] for o in outs]) for j in range(3))
    feats = cached_features([records[i] for i in idx], ckpt.encoder_name, cache_dir, progress=False)
    from radalign.concepts.model import ConceptModel

    parts = ConceptModel(torch.nn.Identity(), ckpt.head, ckpt.calibrator, ckpt.ood).eval()
    probs, embs, ood = [], [], []
    with torch.inference_mode():
        for s in range(0, len(idx), batch_size):
            batch = torch.from_numpy(feats[s : s + batch_size]).float()
            out = parts.head(batch)
            logits = torch.where(parts.head.supported, parts.calibrator(out.logits), torch.zeros_like(out.logits))
            probs.append(torch.sigmoid(logits).numpy())
            embs.append(out.embedding.numpy())
            ood.append(parts.ood(batch.mean(dim=(2, 3))).numpy())
    return np.concatenate(probs), np.concatenate(embs), np.concatenate(ood)


def report_retrieval(embeddings: np.ndarray, records: Sequence[Record], ks: tuple[int, ...] = (1, 5)) -> dict[str, float] | None:
    """Image -> report retrieval among the split's distinct reports: recall@k and its chance level.

    Uses the same text encoder as the anchors; None when fewer than 2 distinct reports exist."""
    from radalign.text_encoder import get_text_encoder

    reports = sorted({r.report for r in records if r.report})
    if len(reports) < 2:
        return None
    text = get_text_encoder().encode(reports)
    rows = [i for i, r in enumerate(records) if r.report]
    target = np.array([reports.index(records[i].report) for i in rows])  # type: ignore[arg-type]  # rows here are those with a report (filtered above)
    ranks = np.argsort(-(embeddings[rows] @ text.T), axis=1)
    out: dict[str, float] = {"queries": float(len(rows)), "reports": float(len(reports))}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean([t in ranks[j, :k] for j, t in enumerate(target)]))
        out[f"chance@{k}"] = min(1.0, k / len(reports))
    return out


def auc_by_source(probabilities: np.ndarray, records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """AUC per observation within each data source: a shortcut check (sources differ in class mix)."""
    labels = np.stack([r.labels for r in records])
    out: dict[str, dict[str, float]] = {}
    for source in sorted({r.source for r in records if r.source}):
        keep = np.array([r.source == source for r in records])
        aucs = {o.value: a for o, a in per_observation_auc(probabilities[keep], labels[keep]).items() if a is not None}
        if aucs:
            out[source] = aucs
    return out


def plot_roc(probabilities: np.ndarray, labels: np.ndarray, rows: list[AucRow], out_png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for k, row in enumerate(rows):
        if row.auc is None:
            continue
        keep = (labels[:, k] == 0) | (labels[:, k] == 1)
        fpr, tpr, _ = roc_curve(labels[keep, k], probabilities[keep, k])
        ax.plot(fpr, tpr, label=f"{row.observation.value} (AUC {row.auc:.2f}, n+={row.positives}, n-={row.negatives})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=7)
    return _save_figure(fig, out_png)


def plot_reliability(probabilities: np.ndarray, labels: np.ndarray, observations: Sequence[str], out_png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name in observations:
        k = [o.value for o in OBSERVATIONS].index(name)
        curve = reliability_curve(probabilities[:, k], labels[:, k])
        ece = expected_calibration_error(probabilities[:, k], labels[:, k])
        if curve:
            ax.plot([c[0] for c in curve], [c[1] for c in curve], "o-", ms=3, label=f"{name} (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="calibrated probability (bin mean)", ylabel="observed frequency", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=7)
    return _save_figure(fig, out_png)


def _save_figure(fig: Any, out_png: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def source_prevalence_baseline(train_labels: np.ndarray, train_sources: Sequence[str], labels: np.ndarray, sources: Sequence[str]) -> dict[str, float | None]:
    """AUC of the trivial shortcut: score = the training prevalence of the observation in the film's
    source. Whatever AUC this reaches, a model can reach by recognising the source alone."""
    names = sorted(set(train_sources))
    prevalence = {}
    for name in names:
        y = train_labels[np.array([s == name for s in train_sources])]
        certain = (y == 0) | (y == 1)
        prevalence[name] = np.where(certain.any(0), np.where(certain, y, 0).sum(0) / np.maximum(certain.sum(0), 1), np.nan)
    scores = np.stack([np.nan_to_num(prevalence.get(s, np.full(labels.shape[1], np.nan)), nan=0.5) for s in sources])
    return {o.value: auc_or_none(scores[:, k], labels[:, k]) for k, o in enumerate(OBSERVATIONS)}


def confounding_check(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, dict]:
    """Per observation outside the group-defining ones: its AUC among the films of the confounder's
    group, and the AUC the confounder's own score reaches as its predictor (the shortcut)."""
    g = OBSERVATIONS.index(CONFOUNDER)
    group = labels[:, g] == 1
    out = {}
    for k, obs in enumerate(OBSERVATIONS):
        if obs in GROUP_DEFINING:
            continue
        y = labels[group, k]
        pos, neg = int((y == 1).sum()), int((y == 0).sum())
        if pos == 0 and neg == 0:
            continue
        out[obs.value] = {
            "positives": pos, "negatives": neg,
            "model_auc_within_group": auc_or_none(probabilities[group, k], y),
            "group_score_auc": auc_or_none(probabilities[:, g], labels[:, k]),
            "model_auc_all": auc_or_none(probabilities[:, k], labels[:, k]),
        }
    return out


def _split_indices(split: str, records: list[Record], parts: dict[str, list[int]], manifest: str | Path) -> list[int]:
    if split == "all":
        idx = list(range(len(records)))
    elif split in parts:
        idx = parts[split]
    else:
        raise ValueError(f"unknown split {split!r}: test, val, train or all")
    if not idx:
        raise ValueError(f"{manifest}: the {split} split is empty")
    return idx


def _eval_labels(subset: list[Record], mask_names: dict[str, list[str]] | None) -> np.ndarray:
    """The films' labels, masked with the checkpoint's per-source masks where every film's source has one."""
    if mask_names and all(r.source in mask_names for r in subset):
        masks = {s: np.array([o.value in names for o in OBSERVATIONS]) for s, names in mask_names.items()}
        return masked_labels(subset, masks)
    return np.stack([r.labels for r in subset])


def _operating_point_figures(point: Any, probs: np.ndarray, labels: np.ndarray, name: str) -> dict[str, Any]:
    k = [o.value for o in OBSERVATIONS].index(name)
    y, p = labels[:, k], probs[:, k]
    pos, neg = p[y == 1], p[y == 0]
    return {"absent": point.absent, "present": point.present,
            "sensitivity": round(float((pos >= point.absent).mean()), 3) if len(pos) else None,
            "specificity": round(float((neg < point.present).mean()), 3) if len(neg) else None,
            "called_present": round(float((p >= point.present).mean()), 3), "called_absent": round(float((p < point.absent).mean()), 3)}


def evaluate(
    checkpoint: str | Path, manifest: str | Path, *, split: str = "test", cache_dir: str | Path = Path(".radalign/cache/concepts"),
    n_boot: int = 1000, roc_png: str | Path | None = None, reliability_png: str | Path | None = None,
) -> EvalReport:
    """Figures on `split` (test / val / train of the checkpoint's own per-source split, or `all`
    rows of any manifest, e.g. an external one)."""
    ckpt = load_checkpoint(checkpoint)
    seed = int(ckpt.meta.get("split", {}).get("seed", 0))
    records, parts = checkpoint_split(ckpt.meta, manifest)
    idx = _split_indices(split, records, parts, manifest)
    subset = [records[i] for i in idx]
    probs, embeddings, ood = predict_full(checkpoint, records, cache_dir, indices=idx)
    # the checkpoint's per-source masks: an observation a source does not label is unknown there
    mask_names = ckpt.meta.get("source_label_masks")
    labels = _eval_labels(subset, mask_names)
    rows = bootstrap_aucs(probs, labels, n_boot=n_boot, seed=seed)
    gate = ckpt.gate
    assessed = gate.assessed if gate else None
    aucs = {r.observation: r.auc for r in rows}
    mean_assessed = mean_auc(aucs, [o for o in OBSERVATIONS if o.value in assessed]) if assessed else None
    by_source_rows = {}
    sources = [r.source for r in subset]
    for source in sorted(set(sources)):
        keep = np.array([s == source for s in sources])
        by_source_rows[source] = [asdict(r) | {"observation": r.observation.value} for r in bootstrap_aucs(probs[keep], labels[keep], n_boot=max(n_boot // 2, 50), seed=seed)]
    baseline = None
    if split != "all" or not mask_names:
        train_idx = parts["train"]
        baseline = source_prevalence_baseline(np.stack([records[i].labels for i in train_idx]), [records[i].source for i in train_idx], labels, sources)
    calibration = {o.value: {"ece": expected_calibration_error(probs[:, k], labels[:, k]), "reliability": reliability_curve(probs[:, k], labels[:, k]),
                             "assessed": assessed is not None and o.value in assessed}
                   for k, o in enumerate(OBSERVATIONS) if rows[k].auc is not None}
    points = {name: _operating_point_figures(point, probs, labels, name) for name, point in (gate.operating_points.items() if gate else [])}
    ood_info: dict[str, float | None] | None = None
    if gate and gate.ood_threshold is not None:
        ood_info = {"threshold": gate.ood_threshold, "flagged": float((ood > gate.ood_threshold).mean()), "median_score": float(np.median(ood))}
    png = plot_roc(probs, labels, rows, Path(roc_png), f"Concept model, {split} split ({len(subset)} images)") if roc_png else None
    rel = plot_reliability(probs, labels, assessed or [r.observation.value for r in rows if r.auc is not None], Path(reliability_png),
                           f"Reliability, {split} split ({len(subset)} images)") if reliability_png else None
    return EvalReport(
        split=split, images=len(subset), patients=len({r.patient_id for r in subset}), model_version=ckpt.version, rows=rows, roc_png=png,
        retrieval=report_retrieval(embeddings, subset), by_source=auc_by_source(probs, subset), **summarise(rows),
        assessed=assessed, mean_auc_assessed=mean_assessed, by_source_rows=by_source_rows, baseline_source_prevalence=baseline,
        confounding=confounding_check(probs, labels), calibration=calibration, operating_points=points, ood=ood_info,
        loso={s: {k: v for k, v in info.items() if k != "checkpoint"} for s, info in (ckpt.meta.get("loso") or {}).items()} if split != "all" else None,
        reliability_png=rel,
    )


__all__ = ["OBSERVATIONS", "EvalReport", "evaluate"]
