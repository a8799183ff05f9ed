"""Sample studies that ship inside registry packages (for the demo and the tests).

- pydicom-data: a real adult PA chest CR (MONOCHROME1, 1955x1841), uncompressed and JPEG 2000;
- pneumonia-model-package: 16 real pediatric chest X-ray JPEGs (8 normal, 8 pneumonia).
Only the files are read; neither package is imported for its code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom import Dataset

#: the UIDs that make an object a new study
_STUDY_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed (scripts/bootstrap.sh installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def chest_cr_files() -> list[Path]:
    """The chest CR from pydicom-data: [uncompressed, JPEG 2000] (one study, same UIDs)."""
    from pydicom.data import get_testdata_file

    files = [get_testdata_file(name) for name in ("RG1_UNCI.dcm", "RG1_J2KI.dcm")]
    if not all(files):
        raise FileNotFoundError("RG1_UNCI.dcm / RG1_J2KI.dcm not found: install pydicom-data")
    return [Path(str(f)) for f in files]


def as_new_study(files: list[Path]) -> list[Dataset]:
    """DICOM files as one new acquisition: every study, series and instance UID replaced by a fresh
    one, consistently (objects that shared a UID still share its replacement).

    The gateway is idempotent: the same object sent again is a duplicate that drafts nothing. The
    demo (each run) and the tests (each case) send the samples as new studies this way."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    fresh: dict[str, str] = {}
    datasets: list[Dataset] = []
    for file in files:
        ds = dcmread(file)
        for keyword in _STUDY_UIDS:
            setattr(ds, keyword, fresh.setdefault(str(getattr(ds, keyword)), generate_uid()))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        datasets.append(ds)
    return datasets


def chest_jpeg_files() -> list[Path]:
    """The 16 chest JPEGs of pneumonia-model-package, sorted by name."""
    root = _package_dir("pneumonia_model_package") / "datasets"
    files = sorted(p for p in root.rglob("*.jpeg") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no chest JPEGs under {root}")
    return files


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the checkout, where real test data lives on the team's machines."""
    candidate = Path(__file__).resolve().parents[2] / "shared" / "data"
    return candidate if candidate.is_dir() else None
