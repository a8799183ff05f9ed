"""Real chest images that ship inside registry packages, for tests, benchmarks and the demo.

- pydicom-data: `RG1_UNCI.dcm` / `RG1_J2KI.dcm`, one adult PA chest CR, MONOCHROME1, 1955x1841,
  uncompressed and JPEG 2000;
- pneumonia-model-package: 16 pediatric chest JPEGs. The package is located, never imported
  (importing it would pull TensorFlow).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

CHEST_CR_FILES = ("RG1_UNCI.dcm", "RG1_J2KI.dcm")


def chest_cr_path(name: str = "RG1_UNCI.dcm") -> Path | None:
    """Path of a pydicom-data chest CR, or None when pydicom-data is not installed."""
    from pydicom.data import get_testdata_file

    try:
        found = get_testdata_file(name, download=False)
    except (ValueError, OSError):
        return None
    return Path(found) if found else None


def chest_jpeg_paths() -> list[Path]:
    """The chest JPEGs of pneumonia-model-package, sorted; empty when it is not installed."""
    spec = importlib.util.find_spec("pneumonia_model_package")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations)))
    return sorted(root.glob("datasets/**/*.jpeg"))
