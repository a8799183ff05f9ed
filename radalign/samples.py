"""Sample studies that ship inside registry packages (for the demo and the tests).

- pydicom-data: a real adult PA chest CR (MONOCHROME1, 1955x1841), uncompressed and JPEG 2000;
- pneumonia-model-package: 16 real pediatric chest X-ray JPEGs (8 normal, 8 pneumonia).
Only the files are read; neither package is imported for its code (importing
pneumonia-model-package would pull TensorFlow). The one home of the samples: tests, benchmarks
and the demo all read them from here.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom import Dataset

CHEST_CR_FILES = ("RG1_UNCI.dcm", "RG1_J2KI.dcm")
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

    files = [get_testdata_file(name) for name in CHEST_CR_FILES]
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
    try:
        return chest_jpeg_files()
    except FileNotFoundError:
        return []


def dicom_bytes(ds: Dataset) -> bytes:
    """A dataset as a DICOM Part 10 file (what STOW-RS and the blob store carry)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def send_c_store(host: str, port: int, datasets: list[Dataset], *, calling_ae: str, called_ae: str, timeout_s: float = 30.0) -> list[int]:
    """C-STORE `datasets` on one association from `calling_ae` to the SCP `called_ae` at
    host:port, as a modality or PACS sends (the demo, the benchmarks and the tests send studies to
    the gateway this way). Returns each object's status; raises ConnectionError without an
    association or without a response."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for context in dict.fromkeys((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets):
        ae.add_requested_context(*context)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        raise ConnectionError(f"no association with {called_ae} at {host}:{port}")
    try:
        statuses = [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()
    if not all(status and "Status" in status for status in statuses):
        raise ConnectionError(f"no C-STORE response from {called_ae} (connection lost or timed out)")
    return [int(status.Status) for status in statuses]
