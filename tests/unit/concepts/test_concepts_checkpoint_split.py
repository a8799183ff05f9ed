"""The retrieval benchmark queries exactly the concept model's held-out rows: its nih-cxr800 test
queries are the rows the trainer put in test, its val queries the rows the trainer validated on,
and the site audit it runs sees validation rows only."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from radalign.concepts.checkpoint import load_checkpoint
from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.concepts_training.data import Record, read_manifest
from radalign.concepts_training.sources import NIH, checkpoint_split, split_mismatch, write_manifest, write_split_manifest
from schemas.events import Observation

ROOT = Path(__file__).resolve().parents[3]
SHARED = ROOT / ".." / "shared" / "data"
TINY_ENCODER = "tiny-test-encoder"  # registered in conftest.py


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("retrieval_bench", ROOT / "benchmarks" / "retrieval_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["retrieval_bench"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _random_anchors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random text anchors keep the sentence encoder out of this unit test (the tiny encoder is registered in conftest.py)."""
    import radalign.concepts_training.train as train_module

    monkeypatch.setattr(train_module, "compute_anchors", lambda: torch.nn.functional.normalize(torch.randn(14, 3, 384), dim=-1))


def _two_source_manifest(tmp_path: Path) -> Path:
    """An NIH-like source (observation columns, several films per patient) and a coarse-tag source."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(80):
        source = NIH if i < 56 else "tagged"
        patient = f"{source}:{i // 2}"
        normal = (i // 2) % 2 == 0
        pixels = rng.random((64, 64)) * 0.3
        if not normal:
            pixels[20:44, 20:44] += 0.6
        path = tmp_path / f"img{i}.png"
        Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(path)
        row = {"image": path.name, "patient_id": patient, "source": source, "view": "PA", "label": "", "report": ""}
        if source == NIH:
            row |= {Observation.NO_FINDING.value: str(int(normal)), Observation.PNEUMONIA.value: str(int(not normal)),
                    Observation.PLEURAL_EFFUSION.value: str(int(i % 6 == 1))}
        else:
            row["label"] = "No Finding" if normal else "COVID-19"
        rows.append(row)
    return write_manifest(rows, tmp_path / "multisource.csv")


def test_benchmark_queries_are_the_trainers_nih_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import radalign.concepts_training.train as train_module
    from radalign.concepts_training.train import TrainConfig, train

    seen: list[dict[str, list[int]]] = []
    original = train_module.split_by_source

    def recording_split(*args, **kwargs):  # the split the trainer actually used
        out = original(*args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(train_module, "split_by_source", recording_split)
    manifest = _two_source_manifest(tmp_path)
    # not the benchmark's old 70/15/15 nor seed 0: the benchmark must read the checkpoint's own
    cfg = TrainConfig(manifest=manifest, out=tmp_path / "head.pt", cache_dir=tmp_path / "cache", encoder=TINY_ENCODER, d_model=32,
                      epochs=2, batch_size=8, progress=False, fractions=(0.5, 0.25, 0.25), seed=3, loso=False)
    result = train(cfg)
    trainer_split = seen[0]
    records = read_manifest(manifest)
    meta = load_checkpoint(result.checkpoint).meta

    queries, indices, bench_records = _bench().split_queries(meta, manifest)
    for name in ("val", "test"):
        expected = [records[i].image for i in trainer_split[name] if records[i].source == NIH]
        assert expected, f"the trainer put no {NIH} row in {name}"
        assert [q.image for q in queries[name]] == expected, name
        assert [bench_records[i].image for i in indices[name]] == expected
    trained_patients = {records[i].patient_id for i in trainer_split["train"]}
    assert not trained_patients & {q.patient for name in ("val", "test") for q in queries[name]}
    # the truth of a query is its row's labels: blank columns are not claimed
    first = queries["test"][0]
    assert set(first.truth) == {Observation.NO_FINDING, Observation.PNEUMONIA, Observation.PLEURAL_EFFUSION}


def test_a_manifest_that_does_not_reproduce_the_split_is_refused(tmp_path: Path) -> None:
    manifest = _two_source_manifest(tmp_path)
    records, parts = checkpoint_split({"split": {"seed": 0, "fractions": [0.6, 0.2, 0.2]}}, manifest)
    recorded = {s: {name: sum(1 for i in idx if records[i].source == s) for name, idx in parts.items()} for s in (NIH, "tagged")}
    meta = {"split": {"seed": 0, "fractions": [0.6, 0.2, 0.2]}, "sources": recorded}
    assert split_mismatch(meta, records, parts) == []
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    shorter = write_manifest(rows[2:], tmp_path / "other.csv")  # one NIH patient fewer: another split
    with pytest.raises(SystemExit, match="does not reproduce"):
        _bench().split_queries(meta, shorter)


def test_audit_manifest_holds_exactly_the_validation_rows(tmp_path: Path) -> None:
    manifest = _two_source_manifest(tmp_path)
    records, parts = checkpoint_split({"split": {"seed": 0, "fractions": [0.6, 0.2, 0.2]}}, manifest)
    val = [records[i] for i in parts["val"] if records[i].source == NIH]
    out = write_split_manifest(manifest, val, tmp_path / "audit" / "val.csv")
    audited = read_manifest(out)
    assert [r.image for r in audited] == [r.image for r in val]
    assert all(np.array_equal(a.labels, b.labels, equal_nan=True) for a, b in zip(audited, val, strict=True))
    test_images = {records[i].image for i in parts["test"]}
    assert not test_images & {r.image for r in audited}
    with pytest.raises(ValueError, match="not in it"):
        write_split_manifest(manifest, [*val, Record(tmp_path / "elsewhere.png", "x", val[0].labels)], tmp_path / "bad.csv")


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / NIH / "metadata.csv").is_file(), reason=f"shared data absent ({SHARED}): the shipped split needs nih-cxr800")
def test_shipped_checkpoint_split_is_reproduced_from_shared_data(tmp_path: Path) -> None:
    from radalign.concepts_training.sources import write_multisource_manifest

    meta = load_checkpoint().meta
    manifest = write_multisource_manifest(SHARED, tmp_path / "multisource.csv")
    queries, indices, records = _bench().split_queries(meta, manifest)  # raises if the recorded counts differ
    assert len(queries["test"]) == meta["sources"][NIH]["test"] and len(queries["val"]) == meta["sources"][NIH]["val"]
    _, parts = checkpoint_split(meta, manifest)
    train_patients = {records[i].patient_id for i in parts["train"]}
    assert not train_patients & {q.patient for q in queries["test"] + queries["val"]}
    assert len(OBSERVATIONS) == len(records[0].labels)


def test_site_profile_of_another_model_version_is_refused(tmp_path: Path) -> None:
    from radalign.concepts.calibration import OperatingPoint
    from radalign.concepts.gate import ServedGate, save_profile

    gate = ServedGate(assessed=["Pneumonia"], operating_points={"Pneumonia": OperatingPoint(0.2, 0.7, 0.9, 0.9)}, ood_threshold=3.0,
                      name="nih-cxr800", model_version="concepts.v1-aaaaaaaaaaaa")
    path = save_profile(gate, tmp_path / "nih-cxr800.json")
    bench = _bench()
    assert bench.load_site_profile(path, "concepts.v1-aaaaaaaaaaaa").assessed == ["Pneumonia"]
    with pytest.raises(SystemExit, match="would ignore it"):  # the concept stage would serve the shipped gate instead
        bench.load_site_profile(path, "concepts.v1-bbbbbbbbbbbb")


def test_target_is_claimed_only_when_the_whole_ci_clears_it() -> None:
    bench = _bench()
    assert bench.verdict(1.49, [1.19, 1.91]).startswith("not shown")
    assert bench.verdict(1.60, [1.40, 1.90]).startswith("not shown")
    assert bench.verdict(1.80, [1.52, 2.10]).startswith("met")
    assert bench.verdict(1.00, [0.94, 1.06]).startswith("NOT met")
