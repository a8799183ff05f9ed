from __future__ import annotations

import re

import pytest
from pydicom.dataset import Dataset

from radalign.ingest.deid import Pseudonymizer, deidentify, encode_dicom, view_hint
from radalign.ingest.dicom import check_dicom, read_dicom
from radalign.samples import chest_cr_path
from radalign.testing.ingest import synthetic_radiograph
from schemas.events import KEY_RE


def test_pseudonyms_are_stable_keyed_and_match_the_contract_pattern() -> None:
    a, b, other = Pseudonymizer("secret-1"), Pseudonymizer("secret-1"), Pseudonymizer("secret-2")
    assert a.study_key("1.2.3") == b.study_key("1.2.3")
    assert a.study_key("1.2.3") != other.study_key("1.2.3")
    assert a.study_key("1.2.3") != a.study_key("1.2.4")
    # Kinds are separated: the same string gives unrelated study / patient / instance keys.
    keys = [a.study_key("X"), a.patient_key("X", None), a.instance_key("X")]
    assert [k[:3] for k in keys] == ["st-", "pt-", "in-"]
    assert len({k[3:] for k in keys}) == 3
    assert all(KEY_RE.fullmatch(k) and re.fullmatch(r"[a-z]{2}-[0-9a-f]{16}", k) for k in keys)
    uid = a.uid("study", "1.2.3")
    assert uid.startswith("2.25.") and len(uid) <= 64 and uid == b.uid("study", "1.2.3")
    with pytest.raises(ValueError):
        Pseudonymizer("")


def _identifier_strings(ds: Dataset) -> list[str]:
    values = [str(ds.get(k, "")) for k in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                                           "SOPInstanceUID", "AccessionNumber", "StudyDate", "PatientBirthDate",
                                           "InstitutionName", "ReferringPhysicianName", "OtherPatientIDs")]
    return [v for v in values if len(v) >= 4]


def test_real_chest_cr_loses_every_identifier_and_keeps_its_pixels() -> None:
    path = chest_cr_path("RG1_UNCI.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    source = read_dicom(path.read_bytes())
    clean, original = deidentify(source, Pseudonymizer("s"))
    data = encode_dicom(clean)
    identifiers = _identifier_strings(source)
    assert len(identifiers) >= 8
    for value in identifiers:
        assert value.encode() not in data, value
    reread = read_dicom(data)
    facts = check_dicom(reread)  # still a valid object for the pipeline
    assert facts.view_position == "PA" and reread.PixelData == source.PixelData
    assert reread.PatientIdentityRemoved == "YES"
    assert reread.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert reread.PatientID.startswith("pt-") and reread.StudyDate == ""
    # The mapping back holds what routes a report home.
    assert original.study_uid == source.StudyInstanceUID and original.patient_id == "9RG1"
    assert original.accession_number == "exam Number" and original.sop_instance_uid == source.SOPInstanceUID


def test_private_tags_and_free_text_are_dropped_and_routing_refs_are_kept() -> None:
    ds = synthetic_radiograph(view=None)
    ds.add_new(0x00091001, "LO", "private-secret-value")
    ds.SeriesDescription = "Chest PA for Jane Doe"
    ds.RequestedProcedureID = "RP-77"
    item = Dataset()
    item.AccessionNumber, item.RequestedProcedureID = "ACC-REQ-9", "RP-77"
    ds.RequestAttributesSequence = [item]
    clean, original = deidentify(ds, Pseudonymizer("s"))
    data = encode_dicom(clean)
    for secret in (b"private-secret-value", b"Jane Doe", b"ACC-REQ-9", b"RP-77", b"Synthetic"):
        assert secret not in data
    assert clean.SeriesDescription == "PA"  # only the view word survives
    assert original.routing["RequestedProcedureID"] == "RP-77"
    assert original.routing["RequestAttributes"][0]["AccessionNumber"] == "ACC-REQ-9"


@pytest.mark.parametrize(
    ("text", "view"),
    [("CHEST PA", "PA"), ("Thorax a.p. liegend", "AP"), ("Lateral chest", "LATERAL"), ("THORAX", None), ("PAPILLA", None)],
)
def test_view_hint_from_free_text(text: str, view: str | None) -> None:
    ds = Dataset()
    ds.SeriesDescription = text
    assert view_hint(ds) == view
