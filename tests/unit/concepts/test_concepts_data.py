from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.concepts_training.data import Record, coarse_labels, load_image, patient_split, read_manifest
from schemas.events import Observation

OPACITY = OBSERVATIONS.index(Observation.LUNG_OPACITY)
PNEUMONIA = OBSERVATIONS.index(Observation.PNEUMONIA)
NO_FINDING = OBSERVATIONS.index(Observation.NO_FINDING)
CARDIOMEGALY = OBSERVATIONS.index(Observation.CARDIOMEGALY)


def test_coarse_labels_map_infections_to_opacity_and_normals_to_all_negative() -> None:
    covid = coarse_labels("COVID-19, ARDS")
    assert covid is not None
    assert covid[OPACITY] == 1 and covid[PNEUMONIA] == 1 and covid[NO_FINDING] == 0
    assert np.isnan(covid[CARDIOMEGALY])  # not mentioned: unknown, masked in training
    normal = coarse_labels("No Finding")
    assert normal is not None and normal[NO_FINDING] == 1
    assert (np.delete(normal, NO_FINDING) == 0).all()
    assert coarse_labels("") is None
    assert coarse_labels("Something unmapped") is None


def _png(path: Path, size: tuple[int, int]) -> Path:
    Image.fromarray((np.random.default_rng(0).random((size[1], size[0])) * 255).astype(np.uint8)).save(path)
    return path


def test_load_image_matches_the_preprocess_contract(tmp_path: Path) -> None:
    arr = load_image(_png(tmp_path / "wide.png", (400, 200)))
    assert arr.shape == (1, 224, 224) and arr.dtype == np.float32
    assert 0.0 <= arr.min() and arr.max() <= 1.0
    # aspect kept: a 2:1 image fills the middle 112 rows, the rest is black padding
    assert arr[0, :50].max() == 0.0 and arr[0, -50:].max() == 0.0 and arr[0, 56:168].mean() > 0.2


def test_read_manifest_prefers_observation_columns_and_skips_unlabelled(tmp_path: Path) -> None:
    img = _png(tmp_path / "a.png", (64, 64))
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "patient_id", "label", "report", Observation.CARDIOMEGALY.value])
        w.writeheader()
        w.writerow({"image": img.name, "patient_id": "p1", "label": "", "report": "Heart enlarged.", Observation.CARDIOMEGALY.value: "1"})
        w.writerow({"image": img.name, "patient_id": "p2", "label": "", "report": "", Observation.CARDIOMEGALY.value: "-1"})
        w.writerow({"image": img.name, "patient_id": "p3", "label": "", "report": "", Observation.CARDIOMEGALY.value: ""})
    records = read_manifest(path)
    assert [r.patient_id for r in records] == ["p1", "p2"]
    assert records[0].image == img and records[0].report == "Heart enlarged."
    assert records[0].labels[CARDIOMEGALY] == 1 and records[1].labels[CARDIOMEGALY] == -1
    assert records[1].report is None


def _records(n_patients: int, negatives_every: int) -> list[Record]:
    out = []
    for p in range(n_patients):
        label = "No Finding" if p % negatives_every == 0 else "COVID-19"
        for _ in range(1 + p % 3):
            out.append(Record(image=Path(f"{p}.png"), patient_id=f"pat-{p}", labels=coarse_labels(label)))  # type: ignore[arg-type]
    return out


def test_patient_split_is_disjoint_stratified_and_deterministic() -> None:
    records = _records(120, negatives_every=10)
    split = patient_split(records, seed=7)
    patients = {k: {records[i].patient_id for i in v} for k, v in split.items()}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"]) and not (patients["val"] & patients["test"])
    assert sorted(i for v in split.values() for i in v) == list(range(len(records)))
    for name in ("val", "test"):  # the rare class reaches every split
        assert any(records[i].labels[NO_FINDING] == 1 for i in split[name])
    assert patient_split(records, seed=7) == split
    assert patient_split(records, seed=8) != split
    with pytest.raises(ValueError):
        patient_split(records, (0.5, 0.5, 0.5))


def test_labels_from_report_fill_only_unknown_observations(tmp_path: Path) -> None:
    pytest.importorskip("radalign.labeler.engine", reason="the rule-based labeler is not in this checkout")
    img = _png(tmp_path / "b.png", (64, 64))
    path = tmp_path / "r.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "patient_id", "label", "report"])
        w.writeheader()
        w.writerow({"image": img.name, "patient_id": "p1", "label": "COVID-19", "report": "Large right pleural effusion. No pneumothorax."})
        w.writerow({"image": img.name, "patient_id": "p2", "label": "", "report": "Heart size is normal. Lungs are clear."})
    plain = read_manifest(path)
    assert [r.patient_id for r in plain] == ["p1"]  # without the labeler, p2 has no label
    labelled = read_manifest(path, labels_from_report=True)
    effusion = OBSERVATIONS.index(Observation.PLEURAL_EFFUSION)
    pneumothorax = OBSERVATIONS.index(Observation.PNEUMOTHORAX)
    p1, p2 = labelled
    assert p1.labels[effusion] == 1 and p1.labels[pneumothorax] == 0
    assert p1.labels[OPACITY] == 1  # from the coarse label, kept
    assert p2.labels[CARDIOMEGALY] == 0 or np.isnan(p2.labels[CARDIOMEGALY])
    assert not np.isnan(p2.labels).all()
