"""Evaluation on the held-out test split: `radalign eval concepts CHECKPOINT MANIFEST`.

The split is rebuilt from the seed and fractions stored in the checkpoint, so the test patients
are the ones training never saw (neither for fitting nor for early stopping).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from radalign.concepts.data import Record, load_image, patient_split, read_manifest
from radalign.concepts.features import cached_features
from radalign.concepts.metrics import AucRow, bootstrap_aucs, per_observation_auc, summarise
from radalign.concepts.vocabulary import OBSERVATIONS


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

    def table(self) -> str:
        lines = [f"{'observation':<28}{'pos':>5}{'neg':>5}  {'AUC':>6}  95% CI", "-" * 60]
        for r in self.rows:
            auc = f"{r.auc:6.3f}  [{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.auc is not None else "   n/a  (one class only)"
            lines.append(f"{r.observation.value:<28}{r.positives:>5}{r.negatives:>5}  {auc}")
        fmt = lambda v: "n/a (no competition observation has both classes)" if v is None else f"{v:.3f}"  # noqa: E731
        lines += ["-" * 60, f"mean AUC, 5 competition observations: {fmt(self.mean_auc_competition)}", f"mean AUC, all with both classes:     {fmt(self.mean_auc_present)}"]
        for source, aucs in (self.by_source or {}).items():
            lines.append(f"  within source {source!r}: " + ", ".join(f"{k} {v:.3f}" for k, v in aucs.items()))
        if self.retrieval:
            r = self.retrieval
            recalls = ", ".join(f"R@{k.split('@')[1]} {r[k]:.3f} (chance {r['chance@' + k.split('@')[1]]:.3f})" for k in r if k.startswith("recall@"))
            lines.append(f"image -> report retrieval ({int(r['queries'])} images, {int(r['reports'])} distinct reports): {recalls}")
        return "\n".join(lines)


def predict_records(
    checkpoint_path: str | Path, records: Sequence[Record], cache_dir: str | Path, *, indices: Sequence[int] | None = None, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, 14), embeddings (n, 384)) of `records[indices]` (default: all).

    With the packaged (frozen) encoder, features come from the cache of *all* `records`, so a
    manifest evaluated after training reuses the training cache; a fine-tuned encoder runs the
    full model on the images."""
    ckpt = load_checkpoint(checkpoint_path)
    idx = list(range(len(records))) if indices is None else list(indices)
    probs, embs = [], []
    with torch.inference_mode():
        if ckpt.encoder_state is None:
            feats = cached_features(records, ckpt.encoder_name, cache_dir, progress=False)
            for s in range(0, len(idx), batch_size):
                out = ckpt.head(torch.from_numpy(feats[idx[s : s + batch_size]]).float())
                probs.append(torch.sigmoid(out.logits).numpy())
                embs.append(out.embedding.numpy())
        else:
            model = ckpt.build_model()
            for s in range(0, len(idx), batch_size):
                images = torch.from_numpy(np.stack([load_image(records[i].image) for i in idx[s : s + batch_size]]))
                p, e = model(images)
                probs.append(p.numpy())
                embs.append(e.numpy())
    return np.concatenate(probs), np.concatenate(embs)


def report_retrieval(embeddings: np.ndarray, records: Sequence[Record], ks: tuple[int, ...] = (1, 5)) -> dict[str, float] | None:
    """Image -> report retrieval among the split's distinct reports: recall@k and its chance level.

    Uses the same text encoder as the anchors; None when fewer than 2 distinct reports exist."""
    from radalign.text_encoder import get_text_encoder

    reports = sorted({r.report for r in records if r.report})
    if len(reports) < 2:
        return None
    text = get_text_encoder().encode(reports)
    rows = [i for i, r in enumerate(records) if r.report]
    target = np.array([reports.index(records[i].report) for i in rows])  # type: ignore[arg-type]
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
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def evaluate(
    checkpoint: str | Path, manifest: str | Path, *, split: str = "test", cache_dir: str | Path = Path(".radalign/cache/concepts"),
    n_boot: int = 1000, roc_png: str | Path | None = None,
) -> EvalReport:  # fmt: skip
    ckpt = load_checkpoint(checkpoint)
    train_meta = ckpt.meta.get("train", {})
    records = read_manifest(manifest, labels_from_report=bool(train_meta.get("labels_from_report", False)))
    limit, seed = train_meta.get("limit"), int(ckpt.meta.get("split", {}).get("seed", 0))
    if limit:
        records = [records[i] for i in sorted(np.random.default_rng(seed).permutation(len(records))[:limit])]
    fractions = tuple(ckpt.meta.get("split", {}).get("fractions", (0.7, 0.15, 0.15)))
    idx = patient_split(records, fractions, seed=seed)[split]  # type: ignore[arg-type]
    subset = [records[i] for i in idx]
    probs, embeddings = predict_records(checkpoint, records, cache_dir, indices=idx)
    labels = np.stack([r.labels for r in subset])
    rows = bootstrap_aucs(probs, labels, n_boot=n_boot, seed=seed)
    png = plot_roc(probs, labels, rows, Path(roc_png), f"Concept model, {split} split ({len(subset)} images)") if roc_png else None
    return EvalReport(
        split=split, images=len(subset), patients=len({r.patient_id for r in subset}), model_version=ckpt.version, rows=rows, roc_png=png,
        retrieval=report_retrieval(embeddings, subset), by_source=auc_by_source(probs, subset), **summarise(rows),
    )  # fmt: skip


eval_app = typer.Typer(help="Evaluate models.", no_args_is_help=True)


@eval_app.callback()
def _eval_group() -> None:
    """Evaluate models (a group, so that `radalign eval concepts` keeps its sub-command name)."""


@eval_app.command("concepts")
def eval_concepts_cmd(
    manifest: Annotated[Path, typer.Argument(help="the manifest the checkpoint was trained on")],
    checkpoint: Annotated[Path, typer.Option(help="checkpoint to evaluate")] = DEFAULT_CHECKPOINT,
    split: str = "test",
    cache_dir: Path = Path(".radalign/cache/concepts"),
    n_boot: int = 1000,
    roc_png: Annotated[Path | None, typer.Option(help="where to write the ROC curves")] = Path(".radalign/reports/concepts_roc.png"),
    json_out: Annotated[Path | None, typer.Option(help="also write the figures as JSON")] = None,
) -> None:
    """Per-observation AUC with bootstrap 95% CIs, mean AUCs, and a PNG of ROC curves."""
    report = evaluate(checkpoint, manifest, split=split, cache_dir=cache_dir, n_boot=n_boot, roc_png=roc_png)
    typer.echo(f"{report.split} split: {report.images} images, {report.patients} patients, model {report.model_version}")
    typer.echo(report.table())
    if report.roc_png:
        typer.echo(f"ROC curves: {report.roc_png}")
    if json_out:
        data = asdict(report) | {"rows": [asdict(r) | {"observation": r.observation.value} for r in report.rows], "roc_png": str(report.roc_png)}
        json_out.write_text(json.dumps(data, indent=2))


__all__ = ["EvalReport", "OBSERVATIONS", "eval_app", "evaluate"]
