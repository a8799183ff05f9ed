"""Training data: manifests, image loading, labels and the patient-level split.

A manifest is a CSV with at least `image` (path, absolute or relative to the CSV) and `patient_id`,
optionally `report` (free text) and either `label` (a coarse finding name, mapped by a label map)
or one column per observation named as in `schemas.events.Observation` holding 1 / 0 / -1 / blank
(CheXpert's present / absent / uncertain / not mentioned). Labels are a float vector in CheXpert
order: 1 present, 0 absent, -1 uncertain, NaN unknown.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from radalign.concepts.vocabulary import OBSERVATIONS
from schemas.events import Certainty, Observation
from schemas.model_input import INPUT_SIZE

log = logging.getLogger(__name__)

CERTAINTY_VALUE = {Certainty.PRESENT: 1.0, Certainty.ABSENT: 0.0, Certainty.UNCERTAIN: -1.0}
UNCERTAIN = -1.0


@dataclass(frozen=True)
class Record:
    image: Path
    patient_id: str
    labels: np.ndarray  # (14,) float32: 1 / 0 / -1 / NaN
    report: str | None = None
    source: str = field(default="", compare=False)
    view: str = field(default="", compare=False)  # AP / PA / ... when the manifest says


#: Bumped whenever `load_image` changes, so stale feature caches are not reused.
IMAGE_PIPELINE_VERSION = "letterbox-v1"


def load_image(path: str | Path, size: int = INPUT_SIZE) -> np.ndarray:
    """The model input exactly as the preprocess stage writes it: float32 (1, size, size) in [0, 1],
    grayscale, aspect ratio kept and padded with black (`radalign.ingest.images`), so training
    sees what serving sees."""
    from radalign.ingest.images import resize_and_pad, to_grayscale_array

    with Image.open(path) as img:
        img.load()
        pixels = to_grayscale_array(img)
    return resize_and_pad(pixels, size)[None, :, :]


# Coarse finding names (cxr-public `labels`, pediatric folder names) -> CheXpert observations.
# Infections are shown on radiographs as opacity, so they are Lung Opacity + Pneumonia positives;
# "No Finding" makes every observation negative. Anything else is left unknown (masked).
_INFECTIONS = (
    "covid-19", "sars", "pneumonia", "pneumocystis", "streptococcus", "klebsiella", "legionella",
    "mycoplasma bacterial pneumonia", "lipoid", "varicella", "e.coli", "bacterial", "influenza",
)  # fmt: skip
_NORMAL = {obs: Certainty.ABSENT for obs in OBSERVATIONS} | {Observation.NO_FINDING: Certainty.PRESENT}
_INFECTION = {Observation.LUNG_OPACITY: Certainty.PRESENT, Observation.PNEUMONIA: Certainty.PRESENT, Observation.NO_FINDING: Certainty.ABSENT}
COARSE_LABEL_MAP: dict[str, dict[Observation, Certainty]] = {
    "no finding": _NORMAL,
    "normal": _NORMAL,
    "ards": {Observation.LUNG_OPACITY: Certainty.PRESENT, Observation.NO_FINDING: Certainty.ABSENT},
} | {name: _INFECTION for name in _INFECTIONS}


def labels_from_mapping(mapping: Mapping[Observation, Certainty]) -> np.ndarray:
    labels = np.full(len(OBSERVATIONS), np.nan, dtype=np.float32)
    for i, obs in enumerate(OBSERVATIONS):
        if obs in mapping:
            labels[i] = CERTAINTY_VALUE[Certainty(mapping[obs])]
    return labels


def coarse_labels(text: str, label_map: Mapping[str, Mapping[Observation, Certainty]] = COARSE_LABEL_MAP) -> np.ndarray | None:
    """Labels for a comma-separated coarse finding string (e.g. "COVID-19, ARDS"); None if blank or unmapped."""
    merged: dict[Observation, Certainty] = {}
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        if part not in label_map:
            return None
        for obs, state in label_map[part].items():
            # present beats uncertain beats absent when two parts disagree
            rank = {Certainty.PRESENT: 2, Certainty.UNCERTAIN: 1, Certainty.ABSENT: 0}
            if obs not in merged or rank[Certainty(state)] > rank[merged[obs]]:
                merged[obs] = Certainty(state)
    return labels_from_mapping(merged) if merged else None


def report_labels(text: str) -> np.ndarray | None:
    """Labels from report text with the project's rule-based labeler, or None when it is not installed."""
    try:
        from radalign.labeler import label_report
    except ImportError:
        return None
    return labels_from_mapping(label_report(text))


def _column_labels(row: Mapping[str, str]) -> np.ndarray | None:
    if not any(obs.value in row for obs in OBSERVATIONS):
        return None
    labels = np.full(len(OBSERVATIONS), np.nan, dtype=np.float32)
    for i, obs in enumerate(OBSERVATIONS):
        value = (row.get(obs.value) or "").strip()
        if value:
            labels[i] = float(value)
    return labels


def read_manifest(path: str | Path, *, labels_from_report: bool = False, keep_unlabeled: bool = False) -> list[Record]:
    """Records of a manifest CSV. Label precedence: observation columns, then `label` (coarse map);
    with `labels_from_report`, the labeler fills observations those left unknown."""
    path = Path(path)
    records: list[Record] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            image = Path(row["image"])
            if not image.is_absolute():
                image = path.parent / image
            labels = _column_labels(row)
            # a multi-source manifest has observation columns on every row; rows of a coarse-tag
            # source leave them blank and carry `label` instead
            if (labels is None or np.isnan(labels).all()) and row.get("label"):
                labels = coarse_labels(row["label"])
            report = (row.get("report") or "").strip() or None
            if labels_from_report and report:
                from_text = report_labels(report)
                if from_text is not None:
                    labels = from_text if labels is None else np.where(np.isnan(labels), from_text, labels)
            if labels is None or np.isnan(labels).all():
                if not keep_unlabeled:
                    continue
                labels = np.full(len(OBSERVATIONS), np.nan, dtype=np.float32)
            records.append(Record(image=image, patient_id=row["patient_id"], labels=labels.astype(np.float32), report=report, source=row.get("source", ""),
                                  view=(row.get("view") or "").strip().upper()))
    return records


def patient_split(
    records: Sequence[Record], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, list[int]]:
    """Indices of train / val / test with every patient in exactly one split.

    Stratified by whether the patient has any "No Finding" image, because negatives are rare
    (about 40 of 760 in cxr-public) and a plain group split can leave none in a split.
    Written by hand: scikit-learn has group splits but none that is stratified and fraction-based."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError("fractions must sum to 1")
    no_finding = OBSERVATIONS.index(Observation.NO_FINDING)
    by_patient: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_patient.setdefault(rec.patient_id, []).append(i)
    strata: dict[bool, list[str]] = {True: [], False: []}
    for pid, idx in by_patient.items():
        strata[any(records[i].labels[no_finding] == 1.0 for i in idx)].append(pid)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for pids in strata.values():
        pids = sorted(pids)
        rng.shuffle(pids)
        n = len(pids)
        n_test = int(round(fractions[2] * n))
        n_val = int(round(fractions[1] * n))
        parts = {"test": pids[:n_test], "val": pids[n_test : n_test + n_val], "train": pids[n_test + n_val :]}
        for name, members in parts.items():
            splits[name].extend(i for pid in members for i in by_patient[pid])
    return {k: sorted(v) for k, v in splits.items()}


def manifest_fingerprint(records: Sequence[Record]) -> str:
    digest = hashlib.sha256(IMAGE_PIPELINE_VERSION.encode())
    for rec in records:
        digest.update(str(rec.image.resolve()).encode())
        digest.update(str(rec.image.stat().st_mtime_ns).encode())
    return digest.hexdigest()[:16]


# ---- dataset adapters for the data that exists here -------------------------------------------


def _patient_of_study(study_id: str) -> str:
    # cxr-public: "covid-patient-2-offset-5" -> "covid-patient-2"; other sources name the patient.
    return study_id.split("-offset")[0]


def pediatric_images() -> list[tuple[Path, str]]:
    """The 16 pediatric JPEGs of the pneumonia-model-package wheel as (path, coarse label); read
    as files, the package itself is never imported."""
    import importlib.util

    spec = importlib.util.find_spec("pneumonia_model_package")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "pneumonia-data" / "val"
    out = []
    for p in sorted(folder.glob("*.jpeg")):
        out.append((p, "normal" if p.name.upper().startswith("NORMAL") else "pneumonia"))
    return out


def write_cxr_public_manifest(data_dir: str | Path, out_csv: str | Path, *, include_lateral: bool = False, include_pediatric: bool = True) -> Path:
    """A training manifest for ../shared/data/cxr-public (+ the pediatric JPEGs)."""
    data_dir, out_csv = Path(data_dir), Path(out_csv)
    rows = []
    with (data_dir / "metadata.csv").open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if not include_lateral and r["view"].strip().upper() == "L":
                continue
            report = " ".join(x for x in (r["findings"].strip(), r["impression"].strip()) if x)
            rows.append({"image": str((data_dir / r["image_file"]).resolve()), "patient_id": _patient_of_study(r["study_id"]),
                         "label": r["labels"], "report": report, "source": Path(r["image_file"]).name.split("_", 1)[0]})  # fmt: skip
    if include_pediatric:
        for path, label in pediatric_images():
            # NORMAL2-IM-1427-0001 -> NORMAL2-IM-1427; person1946_bacteria_4875 -> person1946
            stem = path.stem
            pid = "peds-" + ("-".join(stem.split("-")[:3]) if stem.upper().startswith("NORMAL") else stem.split("_")[0])
            rows.append({"image": str(path), "patient_id": pid, "label": label, "report": "", "source": "pediatric"})
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "patient_id", "label", "report", "source"])
        writer.writeheader()
        writer.writerows(rows)
    return out_csv
