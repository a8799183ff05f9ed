"""OOD abstention of the concept model: share of in-distribution test films wrongly flagged, and
share of out-of-domain images caught, per kind. Prints a table (and writes JSON with --json-out).

    python benchmarks/concepts_ood.py [--checkpoint C] [--manifest .radalign/cache/concepts/multisource.csv]
                                      [--laterals .radalign/cache/concepts/cxr-public-lateral.csv]

Out-of-domain images, all from installed packages or generated here (nothing downloaded):
- `other_modality`: every pydicom / pydicom-data test file that decodes to a 2-D image and is not a
  chest radiograph (CT, MR, ultrasound, secondary captures, ...), de-duplicated by pixels;
- `photograph`: scikit-learn's two sample photographs, as 8 crops each;
- `synthetic`: noise, gradients, checkerboards, blank frames;
- `lateral`: cxr-public's lateral chest films (never trained on; metadata-less laterals must be
  caught by the feature distance, the DICOM path flags them from ViewPosition before the model);
- `chest_dicom`: the chest radiographs in pydicom-data (in-distribution-ish, reported, not counted).
In-distribution: the test split of the training manifest (never used for the threshold, which
comes from the validation split).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from radalign.concepts_training.data import read_manifest
from radalign.concepts_training.evaluate import predict_full
from radalign.concepts_training.sources import split_by_source
from radalign.ingest.images import resize_and_pad


def dicom_images() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(non-chest images, chest radiographs) from pydicom's and pydicom-data's test files, decoded
    by the preprocess stage's own DICOM grayscale pipeline (modality / VOI LUT, MONOCHROME1)."""
    import pydicom
    from pydicom.data import get_testdata_files

    from radalign.ingest.dicom import decode_dicom_pixels

    other, chest, seen = [], [], set()
    for path in get_testdata_files("*.dcm"):
        try:
            ds = pydicom.dcmread(path)
            pixels = decode_dicom_pixels(ds)
        except Exception:  # noqa: BLE001 - test files include deliberately broken or undecodable ones
            continue
        if pixels.ndim != 2 or min(pixels.shape) < 32:
            continue
        digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        image = resize_and_pad(pixels, 224)[None]
        body = str(getattr(ds, "BodyPartExamined", "")).upper()
        modality = str(getattr(ds, "Modality", ""))
        (chest if body == "CHEST" and modality in {"CR", "DX"} else other).append(image)
    return other, chest


def photographs() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    out = []
    for img in load_sample_images().images:
        gray = img.astype(np.float32).mean(axis=-1) / 255.0
        h, w = gray.shape
        for y0, x0, s in [(0, 0, 1.0), (0, 0, 0.5), (h // 2, 0, 0.5), (0, w // 2, 0.5), (h // 2, w // 2, 0.5), (h // 4, w // 4, 0.5), (0, 0, 0.3), (h // 3, w // 3, 0.3)]:
            crop = gray[y0 : y0 + int(h * s), x0 : x0 + int(w * s)]
            out.append(resize_and_pad(crop, 224)[None])
    return out


def synthetic(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224] / 223.0
    images = [rng.random((224, 224)), rng.normal(0.5, 0.15, (224, 224)), xx, yy, (xx + yy) / 2, np.full((224, 224), 0.5), np.zeros((224, 224)),
              ((np.floor(xx * 8) + np.floor(yy * 8)) % 2), np.sin(xx * 40) * 0.5 + 0.5, np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 10)]
    return [np.clip(i, 0, 1).astype(np.float32)[None] for i in images]


def ood_scores(model: torch.nn.Module, images: list[np.ndarray]) -> np.ndarray:
    if not images:
        return np.zeros(0)
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(np.stack(images[s : s + 16])).float())[2].numpy() for s in range(0, len(images), 16)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--manifest", type=Path, default=Path(".radalign/cache/concepts/multisource.csv"))
    parser.add_argument("--laterals", type=Path, default=Path(".radalign/cache/concepts/cxr-public-lateral.csv"))
    parser.add_argument("--cache-dir", type=Path, default=Path(".radalign/cache/concepts"))
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    ckpt = load_checkpoint(args.checkpoint)
    threshold = ckpt.gate.ood_threshold if ckpt.gate else None
    if threshold is None:
        raise SystemExit("checkpoint has no OOD threshold")
    rows: dict[str, dict] = {}

    def add(name: str, scores: np.ndarray, in_distribution: bool) -> None:
        if len(scores):
            flagged = float((scores > threshold).mean())
            rows[name] = {"images": len(scores), "flagged": round(flagged, 3), "median_score": round(float(np.median(scores)), 2),
                          "in_distribution": in_distribution}

    if args.manifest.is_file():
        records = read_manifest(args.manifest)
        split = split_by_source(records, tuple(ckpt.meta["split"]["fractions"]), seed=int(ckpt.meta["split"]["seed"]))
        _, _, test_scores = predict_full(args.checkpoint, records, args.cache_dir, indices=split["test"])
        add("test split (in-distribution)", test_scores, True)
        for source in sorted({r.source for r in records}):
            idx = [i for i in split["test"] if records[i].source == source]
            add(f"  test split, {source}", test_scores[[split["test"].index(i) for i in idx]], True)
    if args.laterals.is_file():
        laterals = read_manifest(args.laterals, keep_unlabeled=True)
        add("lateral chest films (cxr-public)", predict_full(args.checkpoint, laterals, args.cache_dir)[2], False)
    model = ckpt.build_model()
    other, chest = dicom_images()
    add("other modalities / body parts (pydicom test files)", ood_scores(model, other), False)
    add("chest radiographs in pydicom-data (reference)", ood_scores(model, chest), True)
    add("photographs (scikit-learn samples, crops)", ood_scores(model, photographs()), False)
    add("synthetic (noise, gradients, patterns)", ood_scores(model, synthetic()), False)

    print(f"OOD threshold {threshold:.3f} (99th percentile of validation films), model {ckpt.version}")
    print(f"{'images':<55}{'n':>5}  {'flagged':>8}  {'median score':>12}")
    for name, r in rows.items():
        print(f"{name:<55}{r['images']:>5}  {r['flagged']:>8.3f}  {r['median_score']:>12.2f}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"threshold": threshold, "model_version": ckpt.version, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
