"""Training manifest of what reviewers corrected: `radalign review export-manifest OUT.csv`.

One row per signed study (by default only those whose signed labels differ from the drafted
concepts), in the format `radalign train` reads (`radalign.concepts_training.data.read_manifest`): `image`
(a PNG of the exact model input, written beside the CSV), `patient_id` (the patient pseudonym, so
the patient-level split keeps a patient's studies together), `report` (the signed text), one column
per observation with the SIGNED report's label (1 present, 0 absent, -1 uncertain, blank not
mentioned), plus `drafted_differences` saying what the model had claimed instead.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radalign.review.agreement import differences
from radalign.review.store import SignedRow
from schemas.events import BlobRef, Certainty, Observation

LABEL_VALUE = {Certainty.PRESENT: "1", Certainty.ABSENT: "0", Certainty.UNCERTAIN: "-1"}
FIELDS = ["image", "patient_id", "report", "source", *(o.value for o in Observation), "drafted_differences", "study_key", "final_id"]
SOURCE = "review-signed"


@dataclass
class ManifestSummary:
    signed: int = 0
    written: int = 0
    without_image: int = 0
    agreeing: int = 0


def latest_versions(rows: Sequence[SignedRow]) -> list[SignedRow]:
    latest: dict[str, SignedRow] = {}
    for row in rows:
        key = row.final.study.study_key
        if key not in latest or row.final.version > latest[key].final.version:
            latest[key] = row
    return sorted(latest.values(), key=lambda r: r.signed_at)


def write_manifest(
    rows: Sequence[SignedRow], out_csv: Path, read_blob: Callable[[BlobRef], bytes], *, only_differences: bool = True
) -> ManifestSummary:
    """Write the CSV and one PNG per study under `<out_csv stem>_images/`."""
    from PIL import Image

    from radalign.ingest.images import decode_npy

    out_csv = Path(out_csv)
    images_dir = out_csv.with_name(f"{out_csv.stem}_images")
    images_dir.mkdir(parents=True, exist_ok=True)
    summary = ManifestSummary()
    with out_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for row in latest_versions(rows):
            summary.signed += 1
            final = row.final
            diffs = differences(row.draft_concepts, final.labels)
            if not diffs:
                summary.agreeing += 1
                if only_differences:
                    continue
            if row.model_input is None:
                summary.without_image += 1
                continue
            array = np.asarray(decode_npy(read_blob(row.model_input)), dtype=np.float32)
            pixels = array.reshape(array.shape[-2:])  # (1, H, W) -> (H, W)
            image_path = images_dir / f"{final.study.study_key}.png"
            Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)).save(image_path)
            labels = {o.value: LABEL_VALUE[c] for o, c in final.labels.items()}
            writer.writerow({
                "image": str(image_path.relative_to(out_csv.parent)),
                "patient_id": final.study.patient_key,
                "report": f"FINDINGS: {final.findings}\nIMPRESSION: {final.impression}",
                "source": SOURCE,
                **{o.value: labels.get(o.value, "") for o in Observation},
                "drafted_differences": "; ".join(f"{d.observation.value}: {d.drafted} -> {d.signed}" for d in diffs),
                "study_key": final.study.study_key,
                "final_id": final.final_id,
            })
            summary.written += 1
    return summary
