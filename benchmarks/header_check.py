"""The DICOM header check (`not_chest_radiograph`) beside the concept model's feature-space OOD
score, on the real objects of pydicom / pydicom-data (nothing downloaded). Prints a table.

    python benchmarks/header_check.py [--checkpoint C]

For every object with a Modality: what the header check decides (`header_not_chest_radiograph`),
and, for the projection radiographs the gateway accepts (CR/DX), what the served model's OOD
score says about the same film, so the two abstention paths can be compared on real films.
"""

from __future__ import annotations

import argparse
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.data import get_testdata_files

from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from radalign.ingest.dicom import decode_dicom_pixels, header_not_chest_radiograph
from radalign.ingest.images import resize_and_pad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    checkpoint = load_checkpoint(args.checkpoint)
    model = checkpoint.build_model()
    threshold = checkpoint.gate.ood_threshold if checkpoint.gate is not None else None
    verdicts: Counter[tuple[str, str, bool]] = Counter()
    films = []
    for path in sorted(get_testdata_files("*")):
        try:
            ds = pydicom.dcmread(path, force=False)
        except Exception:  # noqa: BLE001 - pydicom's test set holds deliberately broken files
            continue
        if "Modality" not in ds:
            continue
        flagged = header_not_chest_radiograph(ds.Modality, ds.get("BodyPartExamined"))
        verdicts[(str(ds.Modality), str(ds.get("BodyPartExamined", "") or "-"), flagged)] += 1
        if str(ds.Modality) in ("CR", "DX") and "PixelData" in ds:
            try:
                image = resize_and_pad(decode_dicom_pixels(ds), 224)
            except Exception:  # noqa: BLE001 - no decoder installed for this transfer syntax
                continue
            with torch.inference_mode():
                _, _, ood = model(torch.from_numpy(np.ascontiguousarray(image[None, None], dtype=np.float32)))
            films.append((Path(path).name, str(ds.get("BodyPartExamined", "")), flagged, float(ood[0])))
    print(f"header check on pydicom-data ({sum(verdicts.values())} objects with a Modality)")
    print(f"{'modality':<8} {'body part':<12} {'objects':>7}  not_chest_radiograph")
    for (modality, part, flagged), n in sorted(verdicts.items()):
        print(f"{modality:<8} {part:<12} {n:>7}  {flagged}")
    print(f"\nCR/DX films: header verdict vs the model's OOD score (checkpoint {checkpoint.version}, threshold {threshold})")
    for name, part, flagged, score in films:
        caught = "flagged" if threshold is not None and score > threshold else "in distribution"
        print(f"{name:<16} {part:<10} header not_chest={flagged!s:<5}  ood_score={score:.2f} ({caught})")


if __name__ == "__main__":
    main()
