"""The IU report loader: XML parsing (on a synthetic document) and the archive in the torchxrayvision wheel."""

from __future__ import annotations

import pytest

from radalign.labeler.iu import IUReport, iu_archive_path, load_iu_reports, parse_iu_xml

# A made-up document in the OpenI eCitation layout (no IU text is copied into the repository).
_SYNTHETIC = b"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <uId id="CXR9999"/>
  <MedlineCitation><Article><Abstract>
    <AbstractText Label="COMPARISON">None.</AbstractText>
    <AbstractText Label="INDICATION">Cough.</AbstractText>
    <AbstractText Label="FINDINGS">Synthetic   findings
      line.</AbstractText>
    <AbstractText Label="IMPRESSION"/>
  </Abstract></Article></MedlineCitation>
  <MeSH>
    <major>Cardiomegaly/mild</major>
    <major>Pleural Effusion/left</major>
    <automatic>Heart</automatic>
  </MeSH>
  <parentImage id="CXR9999_IM-0001-1001"><figureId>F1</figureId></parentImage>
  <parentImage id="CXR9999_IM-0001-2001"><figureId>F2</figureId></parentImage>
</eCitation>
"""


def test_parse_iu_xml() -> None:
    report = parse_iu_xml(_SYNTHETIC)
    assert report.uid == "CXR9999"
    assert report.findings == "Synthetic findings line."
    assert report.impression == ""
    assert report.indication == "Cough."
    assert report.mesh_major == ("Cardiomegaly/mild", "Pleural Effusion/left")
    assert report.mesh_automatic == ("Heart",)
    assert report.image_ids == ("CXR9999_IM-0001-1001", "CXR9999_IM-0001-2001")
    assert report.text == "Synthetic findings line."


def test_text_joins_sections() -> None:
    report = IUReport("CXR1", "F.", "I.", "", "", (), (), ())
    assert report.text == "F.\n\nI."


def test_missing_archive_raises(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_iu_reports(tmp_path / "absent.tgz")


@pytest.mark.skipif(iu_archive_path() is None, reason="IU reports absent: torchxrayvision==1.5.7 (--no-deps) not installed")
def test_load_real_archive() -> None:
    reports = load_iu_reports()
    assert len(reports) == 3955
    assert len({r.uid for r in reports}) == 3955
    assert reports[0].uid == "CXR1"
    assert sum(bool(r.findings or r.impression) for r in reports) > 3900
    assert sum("normal" in r.mesh_major for r in reports) > 1000
    assert all(r.image_ids is not None for r in reports)
    # cached: a second call parses nothing and hands out a new list of the same reports
    again = load_iu_reports()
    assert again is not reports and again[0] is reports[0]
