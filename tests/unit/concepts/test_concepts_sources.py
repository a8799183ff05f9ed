"""Multi-source manifests: per-source label masks, per-source patient splits, balanced sampling."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.concepts_training.data import read_manifest
from radalign.concepts_training.sources import MANIFEST_FIELDS, balanced_weights, masked_labels, source_label_masks, split_by_source, write_manifest
from schemas.events import Observation

K = {o: i for i, o in enumerate(OBSERVATIONS)}


def _manifest(tmp_path: Path) -> Path:
    rows = []
    for i in range(40):  # a coarse-tag source: "No finding" implies no effusion, but it has no effusion positive
        rows.append({"image": f"a{i}.png", "patient_id": f"A:{i // 2}", "source": "tagged", "label": "No finding" if i % 4 == 0 else "COVID-19"})
    for i in range(60):  # a per-finding source with blanks (unknown) for what it does not label
        row = {"image": f"b{i}.png", "patient_id": f"B:{i}", "source": "per-finding", "No Finding": str(int(i % 2 == 0)),
               "Pneumonia": str(int(i % 2 == 1)), "Pleural Effusion": str(int(i % 6 == 1)), "Fracture": ""}
        rows.append(row)
    for r in rows:
        Path(tmp_path / r["image"]).touch()
    return write_manifest(rows, tmp_path / "m.csv")


def test_rows_take_observation_columns_or_the_coarse_tag(tmp_path: Path) -> None:
    records = read_manifest(_manifest(tmp_path))
    assert len(records) == 100
    tagged = [r for r in records if r.source == "tagged"]
    assert tagged[1].labels[K[Observation.PNEUMONIA]] == 1 and tagged[0].labels[K[Observation.NO_FINDING]] == 1
    per = [r for r in records if r.source == "per-finding"]
    assert np.isnan(per[0].labels[K[Observation.FRACTURE]])  # blank is unknown, never negative
    with (tmp_path / "m.csv").open() as fh:
        assert next(csv.reader(fh)) == MANIFEST_FIELDS


def test_a_source_trains_only_the_observations_it_labels_both_ways(tmp_path: Path) -> None:
    records = read_manifest(_manifest(tmp_path))
    masks = source_label_masks(records)
    assert masks["tagged"][K[Observation.PNEUMONIA]] and masks["tagged"][K[Observation.NO_FINDING]]
    assert not masks["tagged"][K[Observation.PLEURAL_EFFUSION]]  # only implied negatives: masked
    assert masks["per-finding"][K[Observation.PLEURAL_EFFUSION]] and not masks["per-finding"][K[Observation.FRACTURE]]
    labels = masked_labels(records, masks)
    tagged_rows = [i for i, r in enumerate(records) if r.source == "tagged"]
    assert np.isnan(labels[tagged_rows, K[Observation.PLEURAL_EFFUSION]]).all()
    assert records[tagged_rows[0]].labels[K[Observation.PLEURAL_EFFUSION]] == 0  # the raw label said absent


def test_split_is_per_source_and_by_patient(tmp_path: Path) -> None:
    records = read_manifest(_manifest(tmp_path))
    split = split_by_source(records, (0.6, 0.2, 0.2), seed=0)
    assert sorted(i for idx in split.values() for i in idx) == list(range(len(records)))
    patients = {name: {records[i].patient_id for i in idx} for name, idx in split.items()}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"]) and not (patients["val"] & patients["test"])
    for name, idx in split.items():
        assert {records[i].source for i in idx} == {"tagged", "per-finding"}, name
    # leaving a source out does not move the other source's patients between splits
    others = [r for r in records if r.source == "per-finding"]
    alone = split_by_source(others, (0.6, 0.2, 0.2), seed=0)
    assert {others[i].patient_id for i in alone["test"]} == {records[i].patient_id for i in split["test"] if records[i].source == "per-finding"}


def test_balanced_weights() -> None:
    sources = ["big"] * 900 + ["small"] * 100
    equal = balanced_weights(sources, power=1.0)
    assert equal.sum() == np.float64(1.0) or abs(equal.sum() - 1) < 1e-9
    assert abs(equal[:900].sum() - 0.5) < 1e-9
    tempered = balanced_weights(sources, power=0.5)
    assert abs(tempered[:900].sum() - 0.75) < 1e-9  # sqrt(900) : sqrt(100) = 3 : 1
    assert abs(balanced_weights(sources, power=0.0)[:900].sum() - 0.9) < 1e-9
