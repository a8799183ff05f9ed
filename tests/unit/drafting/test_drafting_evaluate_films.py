"""`eval reports --manifest`: films through the served (site) model and the drafter, every system
scored against the manifest's labels, never against the model's own predictions."""

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from radalign.drafting.evaluate_films import evaluate_manifest, format_report
from schemas.events import Observation

NAMES = [o.value for o in Observation]


def _manifest(tmp_path: Path, n: int = 12) -> tuple[Path, list[int]]:
    rng = np.random.default_rng(0)
    normal = [i % 2 for i in range(n)]  # 1: normal film, 0: pneumonia
    path = tmp_path / "films.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "patient_id", "view", *NAMES, "findings", "impression"])
        writer.writeheader()
        for i in range(n):
            film = tmp_path / f"film{i}.png"
            Image.fromarray((rng.random((96, 96)) * 255).astype(np.uint8)).save(film)
            labels = {name: "" for name in NAMES} | ({"No Finding": "1", "Pneumonia": "0"} if normal[i] else {"No Finding": "0", "Pneumonia": "1"})
            text = ("The lungs are clear.", "No acute abnormality.") if normal[i] else ("Right lower lobe consolidation.", "Pneumonia.")
            writer.writerow({"image": film.name, "patient_id": f"p{i}", "view": "PA", **labels, "findings": text[0], "impression": text[1]})
    return path, normal


def test_every_system_is_scored_against_the_labels(tmp_path):
    manifest, normal = _manifest(tmp_path)
    result = evaluate_manifest(manifest, site="nih-cxr800", sites_dir=tmp_path / "sites", cache_dir=tmp_path / "cache", n_boot=50)
    systems = {s["name"]: s for s in result["systems"]}
    assert set(systems) == {"draft", "normal_template", "top1"} and result["films"] == len(normal)
    assert result["model"].startswith("nih-cxr800-")  # the shipped site model served the site
    # the template says "normal" for every film: its micro F1 follows from the labels alone
    tp, fp, fn = sum(normal), len(normal) - sum(normal), len(normal) - sum(normal)  # NF right on normals, wrong on the rest; pneumonia missed
    assert abs(systems["normal_template"]["micro_f1"] - 2 * tp / (2 * tp + fp + fn)) < 1e-9
    assert systems["normal_template"]["claims"] == 0 and systems["normal_template"]["normal_films_without_finding_claim"] == 1.0
    # noise films are unlike the site's films: the site model abstains and the draft claims nothing
    assert result["abstained_ood"] + result["nothing_claimed"] == len(normal)
    assert systems["draft"]["claims"] == 0 and systems["draft"]["micro_f1"] == 0.0
    assert "rouge_l" in systems["draft"] and result["films_with_text"] == len(normal)
    assert "micro F1" in format_report(result)
