"""Which frozen features carry findings, and which transfer across collections: a linear probe per
registered encoder, on validation films only (the test split is never read).

    python benchmarks/concepts_probe_scan.py [--manifest .radalign/cache/concepts/multisource.csv]
                                             [--encoders efficientnet-lite0 efficientnet-lite0-ms efficientnet-lite0-ms-eq]

For each encoder the pooled features of every film (the training feature cache, encoded once per
image) feed an L2-regularised logistic regression per observation (standardised features,
class-balanced, C = 0.003), which is a cheap stand-in for the head: it says what the features
hold, before any head design. Printed per encoder:
- AUC on nih-cxr800's validation rows of a probe fitted on the training rows of every source;
- leave-one-source-out No Finding AUC: fitted on the non-test rows of the other sources, scored on
  the non-test rows of the left-out one (below 0.60 the concept stage's gate calls it a collapse).
Splits are the trainer's (`split_by_source`, 60/20/20, seed 0) and labels its per-source masks.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.concepts_training.data import read_manifest
from radalign.concepts_training.features import cached_features
from radalign.concepts_training.sources import masked_labels, source_label_masks, split_by_source

NIH = "nih-cxr800"
CXR = "cxr-public"
REPORTED = ("No Finding", "Lung Opacity", "Pneumonia", "Edema", "Pleural Effusion", "Atelectasis")


def probe_auc(features: np.ndarray, labels: np.ndarray, fit_rows: list[int], score_rows: list[int], column: int) -> float | None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fit_rows = [i for i in fit_rows if labels[i, column] in (0, 1)]
    score_rows = [i for i in score_rows if labels[i, column] in (0, 1)]
    if len(set(labels[fit_rows, column])) < 2 or len(set(labels[score_rows, column])) < 2:
        return None
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.003, max_iter=2000, class_weight="balanced"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe.fit(features[fit_rows], labels[fit_rows, column])
    return float(roc_auc_score(labels[score_rows, column], probe.predict_proba(features[score_rows])[:, 1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path(".radalign/cache/concepts/multisource.csv"))
    parser.add_argument("--cache-dir", type=Path, default=Path(".radalign/cache/concepts"))
    parser.add_argument("--encoders", nargs="+", default=["efficientnet-lite0", "efficientnet-lite0-ms", "efficientnet-lite0-ms-eq"])
    args = parser.parse_args()
    if not args.manifest.is_file():
        raise SystemExit(f"no manifest at {args.manifest}: run `radalign train concepts-sources ../shared/data` first")
    records = read_manifest(args.manifest)
    split = split_by_source(records, (0.6, 0.2, 0.2), seed=0)
    sources = np.array([r.source for r in records])
    non_test = sorted(split["train"] + split["val"])
    labels = masked_labels(records, source_label_masks([records[i] for i in non_test]))
    names = [str(o.value) for o in OBSERVATIONS]
    nih_val = [i for i in split["val"] if sources[i] == NIH]
    no_finding = names.index("No Finding")

    header = f"{'encoder':28s} " + " ".join(f"{n[:9]:>9s}" for n in REPORTED) + "  LOSO NoF: ->nih-cxr800 ->cxr-public"
    print("nih-cxr800 validation AUC of a linear probe (fit: training rows of all sources)")
    print(header)
    for encoder in args.encoders:
        pooled = cached_features(records, encoder, args.cache_dir).astype(np.float32).mean(axis=(2, 3))
        aucs = [probe_auc(pooled, labels, split["train"], nih_val, names.index(o)) for o in REPORTED]
        loso = [
            probe_auc(pooled, labels, [i for i in non_test if sources[i] != left_out], [i for i in non_test if sources[i] == left_out], no_finding)
            for left_out in (NIH, CXR)
        ]
        cells = " ".join(f"{a:9.3f}" if a is not None else f"{'n/a':>9s}" for a in aucs)
        print(f"{encoder:28s} {cells}  {loso[0] or float('nan'):12.3f} {loso[1] or float('nan'):11.3f}", flush=True)


if __name__ == "__main__":
    main()
