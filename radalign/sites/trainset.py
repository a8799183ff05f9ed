"""Archive -> training set: a provider's historical studies with their reports become a
de-identified, labelled, versioned training set for that site.

- De-identified the way live intake is: patient and study keys from the same `Pseudonymizer`
  (same secret, the site's issuer), so one patient has one key in the archive and on live
  traffic, and the patient split can never put them on both sides. No name, id, date or report
  text is kept: only keys, the image, its view and age band, and the labels.
- Labelled with the project's labeler (`radalign.labeler.label_sections`, FINDINGS and
  IMPRESSION; header sections never count): 1 present, 0 absent, -1 uncertain (kept apart, never
  trained as either class), blank unknown. Label columns in the input win over the text.
- DICOM objects are decoded once into a de-identified 8-bit PNG inside the set's folder (the
  model input is built from it exactly as from any image); image files of a manifest are
  referenced where they are.
- Versioned: `<sites_dir>/<site>/trainset/v<N>.csv`; a re-run adds only studies not in the
  latest version (by study key) and writes v<N+1> only when something is new. Signed reports
  from the review loop (`add_signed`) join the same set with the radiologist's labels.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.pseudonymizer import Pseudonymizer, canonical_issuer
from schemas.events import Certainty, Observation

log = logging.getLogger(__name__)

LABEL_COLUMNS = [o.value for o in OBSERVATIONS]
COLUMNS = ["image", "patient_id", "study_key", "view", "age_band", "origin", *LABEL_COLUMNS]
_VALUE = {Certainty.PRESENT: "1", Certainty.ABSENT: "0", Certainty.UNCERTAIN: "-1"}


@dataclass(frozen=True)
class ArchiveStudy:
    """One archived study as the provider has it (identifiers included: they stop here)."""

    image: Path
    patient_id: str
    study_id: str
    report: str | None = None
    labels: Mapping[Observation, Certainty] | None = None
    view: str | None = None
    age: float | None = None


def age_band(age: float | None) -> str:
    if age is None or not np.isfinite(age):
        return ""
    return "child" if age < 18 else "adult" if age < 65 else "older"


def labels_of(study: ArchiveStudy) -> dict[Observation, Certainty]:
    """Label columns where given, else the labeler's reading of the report's FINDINGS/IMPRESSION."""
    if study.labels:
        return dict(study.labels)
    if not study.report:
        return {}
    from radalign.labeler import assess_report

    return dict(assess_report(study.report, uncertainty="keep").labels)


def _row(study: ArchiveStudy, pseudonyms: Pseudonymizer, issuer: str, origin: str, image: Path | None = None) -> dict[str, str]:
    labels = labels_of(study)
    row = {
        "image": str((image or study.image).resolve()),
        "patient_id": pseudonyms.patient_key(study.patient_id, issuer),
        "study_key": pseudonyms.study_key(study.study_id),
        "view": (study.view or "").strip().upper(),
        "age_band": age_band(study.age),
        "origin": origin,
    }
    row.update({o.value: _VALUE[labels[o]] if o in labels else "" for o in OBSERVATIONS})
    return row


def read_manifest_studies(path: str | Path) -> Iterator[ArchiveStudy]:
    """A provider manifest: `image`, `patient_id`, `study_id` (or `accession`), optional `report`
    (or `findings` + `impression`), `view`, `age`, and optional observation columns (1/0/-1/blank)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            image = Path(raw["image"])
            image = image if image.is_absolute() else path.parent / image
            report = raw.get("report") or " ".join(
                f"{name.upper()}: {raw[name]}" for name in ("findings", "impression") if (raw.get(name) or "").strip()
            )
            labels = {o: _certainty(raw[o.value]) for o in OBSERVATIONS if (raw.get(o.value) or "").strip()}
            age = raw.get("age") or ""
            yield ArchiveStudy(
                image=image, patient_id=raw["patient_id"], study_id=raw.get("study_id") or raw.get("accession") or raw["image"],
                report=report.strip() or None, labels=labels or None, view=raw.get("view"), age=float(age) if age.strip() else None,
            )


def _certainty(value: str) -> Certainty:
    return {1.0: Certainty.PRESENT, 0.0: Certainty.ABSENT, -1.0: Certainty.UNCERTAIN}[float(value)]


def read_dicom_studies(folder: str | Path, reports_csv: str | Path) -> Iterator[tuple[ArchiveStudy, object]]:
    """DICOM objects under `folder` with their reports from `reports_csv` (`accession` or
    `study_uid`, `report`): (study, dataset) pairs; objects without a report are skipped."""
    import pydicom

    reports: dict[str, str] = {}
    with Path(reports_csv).open(newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            for key in ("accession", "study_uid"):
                if (raw.get(key) or "").strip():
                    reports[raw[key].strip()] = raw["report"]
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - not DICOM: an archive holds other files too
            continue
        report = reports.get(str(ds.get("AccessionNumber", "")).strip()) or reports.get(str(ds.get("StudyInstanceUID", "")))
        if not report or "PixelData" not in ds:
            continue
        age = str(ds.get("PatientAge", "") or "")
        study = ArchiveStudy(
            image=path, patient_id=str(ds.get("PatientID", "")) or str(ds.StudyInstanceUID), study_id=str(ds.StudyInstanceUID),
            report=report, view=str(ds.get("ViewPosition", "") or "") or None, age=float(age[:3]) if age[:3].isdigit() else None,
        )
        yield study, ds


def dicom_to_png(ds: object, out: Path) -> Path:
    """The pixels of a DICOM object as a de-identified 8-bit grayscale PNG (no header travels)."""
    from PIL import Image

    from radalign.ingest.dicom import decode_dicom_pixels

    out.parent.mkdir(parents=True, exist_ok=True)
    gray = decode_dicom_pixels(ds)  # type: ignore[arg-type]  # a pydicom Dataset
    Image.fromarray((np.clip(gray, 0.0, 1.0) * 255).round().astype(np.uint8)).save(out)
    return out


class TrainingSet:
    """The versioned training set of one site under `<sites_dir>/<site>/trainset/`."""

    def __init__(self, sites_dir: str | Path, site: str) -> None:
        from radalign.concepts.gate import profile_path

        profile_path(sites_dir, site)  # validates the site name (it becomes a folder)
        self.site = site
        self.folder = Path(sites_dir) / site / "trainset"

    def versions(self) -> list[int]:
        return sorted(int(p.stem[1:]) for p in self.folder.glob("v*.csv") if p.stem[1:].isdigit())

    def latest(self) -> Path | None:
        versions = self.versions()
        return self.folder / f"v{versions[-1]}.csv" if versions else None

    def rows(self) -> list[dict[str, str]]:
        latest = self.latest()
        if latest is None:
            return []
        with latest.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    def add(self, new_rows: Iterable[dict[str, str]]) -> tuple[Path | None, int]:
        """Write v<N+1> = latest + the rows whose study key is new; (path or None, rows added)."""
        rows = self.rows()
        known = {r["study_key"] for r in rows}
        added = [r for r in new_rows if r["study_key"] not in known and not known.add(r["study_key"])]  # type: ignore[func-returns-value]  # set.add returns None: marks as seen
        if not added:
            return self.latest(), 0
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"v{(self.versions() or [0])[-1] + 1}.csv"
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows + added)
        tmp.replace(path)
        return path, len(added)


def build_from_manifest(
    manifest: str | Path, trainset: TrainingSet, pseudonyms: Pseudonymizer, issuer: str, *, progress: bool = True
) -> tuple[Path | None, int]:
    from tqdm import tqdm

    studies = list(read_manifest_studies(manifest))
    known = {r["study_key"] for r in trainset.rows()}
    rows = []
    for study in tqdm(studies, desc=f"archive -> {trainset.site}", unit="study", disable=not progress):
        if pseudonyms.study_key(study.study_id) in known:
            continue
        rows.append(_row(study, pseudonyms, canonical_issuer(issuer), "archive"))
    return trainset.add(rows)


def build_from_dicom(
    folder: str | Path, reports_csv: str | Path, trainset: TrainingSet, pseudonyms: Pseudonymizer, issuer: str, *, progress: bool = True
) -> tuple[Path | None, int]:
    from tqdm import tqdm

    known = {r["study_key"] for r in trainset.rows()}
    rows = []
    for study, ds in tqdm(read_dicom_studies(folder, reports_csv), desc=f"archive -> {trainset.site}", unit="object", disable=not progress):
        key = pseudonyms.study_key(study.study_id)
        if key in known:
            continue
        png = dicom_to_png(ds, trainset.folder / "images" / f"{pseudonyms.instance_key(str(ds.SOPInstanceUID))}.png")
        rows.append(_row(study, pseudonyms, canonical_issuer(issuer), "archive", image=png))
    return trainset.add(rows)


def model_input_png(array: np.ndarray, out: Path) -> Path:
    """A model input (float32 (1, H, W) in [0, 1]) as the 8-bit PNG a training set references."""
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(np.asarray(array)[0], 0.0, 1.0) * 255).round().astype(np.uint8)).save(out)
    return out


def signed_rows(signed: Sequence[Mapping[str, object]]) -> list[dict[str, str]]:
    """Rows of signed reports from the review loop (already pseudonymous: `patient_key`,
    `study_key`, `image` (the model input as a PNG), `view`, `labels` {observation: state})."""
    out = []
    for item in signed:
        raw = item["labels"]
        labels = {Observation(k): Certainty(v) for k, v in (json.loads(raw) if isinstance(raw, str) else dict(raw)).items()}  # type: ignore[call-overload]  # jsonb from the review store
        row = {"image": str(item["image"]), "patient_id": str(item["patient_key"]), "study_key": str(item["study_key"]),
               "view": str(item.get("view") or ""), "age_band": "", "origin": "signed"}
        row.update({o.value: _VALUE[labels[o]] if o in labels else "" for o in OBSERVATIONS})
        out.append(row)
    return out
