"""Sample studies that ship inside registry packages (for the demo and the tests).

- pydicom-data: a real adult PA chest CR (MONOCHROME1, 1955x1841), uncompressed and JPEG 2000;
- pneumonia-model-package: 16 real pediatric chest X-ray JPEGs (8 normal, 8 pneumonia).
Only the files are read; neither package is imported for its code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


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
