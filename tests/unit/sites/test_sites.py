"""Site models without services: the archive's training set (de-identified, labelled, versioned,
incremental), the patient split, the site head's export, and the registry's promote / rollback."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from radalign.concepts.ood import fit_feature_distance
from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.pseudonymizer import Pseudonymizer
from radalign.sites.head import fit_site_head, load_head, predict, save_head
from radalign.sites.registry import PromotionRefused, SiteRegistry, live_head
from radalign.sites.train import split_of
from radalign.sites.trainset import TrainingSet, build_from_manifest
from schemas.events import Observation

SECRET = "k" * 40


def _archive(tmp_path: Path, rows: list[tuple[str, str, str]]) -> Path:
    from PIL import Image

    manifest = tmp_path / "archive.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "patient_id", "study_id", "report", "view", "age"])
        for i, (patient, study, report) in enumerate(rows):
            image = tmp_path / f"film{i}.png"
            Image.fromarray(np.full((32, 32), i * 10 % 255, dtype=np.uint8)).save(image)
            writer.writerow([image.name, patient, study, report, "PA", "70"])
    return manifest


def test_archive_becomes_a_deidentified_labelled_versioned_set_and_reruns_add_only_what_is_new(tmp_path):
    rows = [("MRN-0001", "ACC-1", "FINDINGS: The lungs are clear. IMPRESSION: No acute abnormality."),
            ("MRN-0002", "ACC-2", "INDICATION: rule out effusion. IMPRESSION: Right lower lobe pneumonia.")]
    manifest = _archive(tmp_path, rows)
    trainset = TrainingSet(tmp_path / "sites", "HOSP-A")
    pseudonyms = Pseudonymizer(SECRET)
    path, added = build_from_manifest(manifest, trainset, pseudonyms, "HOSP A", progress=False)
    assert added == 2 and path.name == "v1.csv"
    text = path.read_text()
    assert "MRN-0001" not in text and "ACC-1" not in text and "lungs" not in text  # keys and labels only, no report text
    written = list(csv.DictReader(path.open()))
    assert written[0]["patient_id"] == pseudonyms.patient_key("MRN-0001", "HOSP A")  # the same key live intake mints
    assert written[1][Observation.PNEUMONIA.value] == "1" and written[0][Observation.PNEUMONIA.value] in ("", "0")
    assert written[0]["age_band"] == "older"
    # a re-run adds nothing; a new study makes v2 holding both
    assert build_from_manifest(manifest, trainset, pseudonyms, "HOSP A", progress=False) == (path, 0)
    manifest2 = _archive(tmp_path, [*rows, ("MRN-0003", "ACC-3", "IMPRESSION: Small left pleural effusion.")])
    path2, added2 = build_from_manifest(manifest2, trainset, pseudonyms, "HOSP A", progress=False)
    assert (path2.name, added2, len(list(csv.DictReader(path2.open())))) == ("v2.csv", 1, 3)


def test_patient_split_is_stable_and_near_its_fractions():
    keys = [f"pt-{i:016x}" for i in range(3000)]
    splits = [split_of(k) for k in keys]
    assert splits == [split_of(k) for k in keys]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(share["train"] - 0.6) < 0.03 and abs(share["val"] - 0.2) < 0.03 and abs(share["test"] - 0.2) < 0.03


def _fitted_head(tmp_path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    y = np.full((300, len(OBSERVATIONS)), np.nan)
    k = OBSERVATIONS.index(Observation.PNEUMONIA)
    y[:, k] = (x[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(float)
    fitted = fit_site_head(x[:200], y[:200], x[200:], y[200:], fit_feature_distance(x[:200].astype(np.float64), 4))
    assert fitted.head.supported[k] == 1 and fitted.head.supported.sum() == 1
    probs, _ = predict(fitted.head, x[200:])
    assert ((probs[:, k] > 0.5) == (y[200:, k] == 1)).mean() > 0.8
    assert np.all(probs[:, OBSERVATIONS.index(Observation.EDEMA)] == 0.5)  # no labels: no claim possible
    return save_head(fitted.head, tmp_path / f"HOSP-A-{seed}.pt", {"site": "HOSP-A", "gate": {"assessed": []}})


def test_site_head_exports_to_torchscript_with_its_meta(tmp_path):
    path = _fitted_head(tmp_path)
    module, meta = load_head(path)
    x = torch.randn(5, 16)
    assert meta["site"] == "HOSP-A"
    probs, ood = module(x)
    assert probs.shape == (5, len(OBSERVATIONS)) and ood.shape == (5,)


def test_registry_shadow_promote_rollback_are_recorded_and_gated(tmp_path):
    registry = SiteRegistry(tmp_path / "sites")
    good = _fitted_head(tmp_path, 0)
    good.with_suffix(".json").write_text(json.dumps({"summary": {"passed_gate": True, "test_auc": {"Pneumonia": 0.9}}}))
    bad = _fitted_head(tmp_path, 1)
    bad.with_suffix(".json").write_text(json.dumps({"summary": {"passed_gate": False}}))
    v_good = registry.add_candidate("HOSP-A", good, by="alice")
    assert registry.state("HOSP-A").shadow == v_good and live_head(registry.root, "HOSP-A") is None
    state = registry.promote("HOSP-A", None, by="alice")
    assert state.live == v_good and state.shadow is None
    v_bad = registry.add_candidate("HOSP-A", bad, by="bob")
    with pytest.raises(PromotionRefused):
        registry.promote("HOSP-A", v_bad, by="bob")
    assert registry.rollback("HOSP-A", by="carol").live is None  # back to the generic model
    with pytest.raises(PromotionRefused):
        registry.rollback("HOSP-A", by="carol")
    events = registry.state("HOSP-A").events
    assert [(e["action"], e["by"]) for e in events] == [("shadow", "alice"), ("promote", "alice"), ("shadow", "bob"), ("rollback", "carol")]
    assert events[1]["figures"]["test_auc"] == {"Pneumonia": 0.9}
    with pytest.raises(ValueError):
        registry.site_dir("../escape")


def test_shipped_site_models_seed_an_empty_registry_once(tmp_path):
    registry = SiteRegistry(tmp_path / "sites")
    assert "nih-cxr800" in registry.seed_shipped()
    live = registry.state("nih-cxr800").live
    assert live and live_head(registry.root, "nih-cxr800") == registry.head_path("nih-cxr800", live)
    registry.rollback("nih-cxr800", by="ops")
    assert registry.seed_shipped() == [] and registry.state("nih-cxr800").live is None  # a provider's choice stays


def test_retrain_is_due_on_enough_signed_reports_or_an_old_model():
    from datetime import UTC, datetime, timedelta

    from radalign.sites.shadow import retrain_due

    now = datetime(2026, 12, 1, tzinfo=UTC)
    month = timedelta(days=30)
    assert retrain_due(199, now - month, min_signed=200, max_age=3 * month, now=now) is None
    assert "200 signed" in str(retrain_due(200, now - month, min_signed=200, max_age=3 * month, now=now))
    assert "trained 91 days ago" in str(retrain_due(0, now - timedelta(days=91), min_signed=200, max_age=timedelta(days=90), now=now))
    assert retrain_due(0, None, min_signed=200, max_age=timedelta(days=90), now=now) is None


def test_shadow_comparison_counts_agreement_and_auc_against_signed_labels():
    from radalign.sites.shadow import comparison

    def row(live_p: float, cand_p: float, signed: str | None, cand_ood: bool = False) -> dict:
        return {"live_probabilities": {"Pneumonia": live_p}, "candidate_probabilities": {"Pneumonia": cand_p},
                "live_states": {}, "candidate_states": {} if cand_ood else {"Pneumonia": "present" if cand_p >= 0.5 else "absent"},
                "live_ood": False, "candidate_ood": cand_ood, "signed_labels": {"Pneumonia": signed} if signed else None}

    rows = [row(0.5, 0.9, "present"), row(0.5, 0.8, "present"), row(0.5, 0.2, "absent"), row(0.5, 0.1, "absent"), row(0.5, 0.7, None, cand_ood=True)]
    figures = comparison(rows)
    assert figures["studies"] == 5 and figures["signed"] == 4
    assert figures["candidate_ood_rate"] == 0.2 and figures["live_nothing_claimed_rate"] == 1.0
    pneumonia = figures["observations"]["Pneumonia"]
    assert pneumonia["candidate_auc_vs_signed"] == 1.0 and pneumonia["live_auc_vs_signed"] == 0.5  # a constant live score: chance
    assert (pneumonia["signed_positives"], pneumonia["signed_negatives"]) == (2, 2) and pneumonia["agreement"] == 0.0


def test_an_archive_is_pseudonymised_in_its_live_studies_namespace(tmp_path):
    """The archive's patient keys are the ones live intake mints for the same site (issuer "hosp a"
    -> site HOSP-A): one patient, one key, whichever way the film arrived."""
    from radalign.pseudonymizer import IssuerPolicy

    policy = IssuerPolicy(by_source={"dicom-cstore:PACS_A": "hosp a", "http": "OTHER"})
    assert policy.site("dicom-cstore", calling_ae="PACS_A") == "HOSP-A"
    issuer = policy.issuer_of_site("HOSP-A")
    pseudonyms = Pseudonymizer(SECRET)
    live = pseudonyms.patient_key("MRN-0001", policy.issuer("dicom-cstore", calling_ae="PACS_A"))
    manifest = _archive(tmp_path, [("MRN-0001", "ACC-1", "IMPRESSION: Normal.")])
    path, _ = build_from_manifest(manifest, TrainingSet(tmp_path / "sites", "HOSP-A"), pseudonyms, issuer, progress=False)
    assert next(csv.DictReader(path.open()))["patient_id"] == live
    assert policy.issuer_of_site("UNCONFIGURED") == "UNCONFIGURED"
