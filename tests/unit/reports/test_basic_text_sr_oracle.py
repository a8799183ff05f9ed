"""The Basic Text SR the product writes with pydicom equals the one highdicom's private `_SR`
base class wrote (tests/unit/reports/sr_oracle.py, the old construction kept as the oracle), for
every kind of version `basic_text_sr` supports.

Compared: `to_json_dict()` of the datasets and their file meta, and the Part 10 bytes, with only
these set aside (and checked to be present, with the same value representation, on both sides):
- Instance Creation Date/Time, Contribution DateTime and, for a verified SR without
  `verified_at`, Verification DateTime: both builders write the clock's "now";
- the library named by the file meta (Implementation Class UID / Version Name) and by the
  Contributing Equipment item (Manufacturer, Manufacturer's Model Name, Software Versions):
  pydicom writes the product's SR, so it names pydicom where the oracle names highdicom.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import sys
from datetime import UTC, date, datetime
from io import BytesIO
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import Dataset, dcmread

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "drafting"))  # drafting_helpers
sys.path.insert(0, str(Path(__file__).parent))  # sr_oracle

from drafting_helpers import make_event
from sr_oracle import BasicTextSR, oracle_basic_text_sr

from radalign.config import Settings
from radalign.drafting.core import DraftingCore
from radalign.reports.reidentification import InstanceIdentity, StudyIdentity
from radalign.reports.sr import basic_text_sr, basic_text_sr_bytes, read_sr_text, signed_instance_uid
from radalign.review.signers import Signer
from schemas.events import CasesRetrieved, Certainty, Observation

LABELS = {Observation.CARDIOMEGALY: Certainty.PRESENT, Observation.PLEURAL_EFFUSION: Certainty.ABSENT}
CASES = [("iu-1", "The heart is enlarged. No pleural effusion.", "Cardiomegaly.")]
ISSUED = datetime(2026, 11, 27, 21, 0, tzinfo=UTC)
SIGNED = datetime(2026, 11, 28, 8, 15, 30, tzinfo=UTC)
IDENTITY = StudyIdentity(
    study_key="st-0123456789abcdef", study_instance_uid="1.2.826.0.1.3680043.8.498.1", patient_id="MRN-0042",
    patient_name="Müller^Anna", issuer_of_patient_id="HOSP", birth_date=date(1960, 5, 1), sex="F",
    accession_number="ACC-9", study_id="S1", service_request_id="order-77", study_date="20261127", study_time="101530.25",
    timezone_offset="+0100", requested_procedure_id="RP-3", requested_procedure_description="XR CHEST 2 VIEWS",
    placer_order_number="PL-1", filler_order_number="FI-2", referring_physician_name="Ørsted^Hans",
    instances=(InstanceIdentity("1.2.826.0.1.3680043.8.498.3", "1.2.826.0.1.3680043.8.498.2", "1.2.840.10008.5.1.4.1.1.1"),),
)
#: Two series, one instance listed twice (the evidence names it once).
MANY_INSTANCES = dataclasses.replace(IDENTITY, instances=(
    InstanceIdentity("1.2.826.0.1.3680043.8.498.3", "1.2.826.0.1.3680043.8.498.2", "1.2.840.10008.5.1.4.1.1.1"),
    InstanceIdentity("1.2.826.0.1.3680043.8.498.5", "1.2.826.0.1.3680043.8.498.4", "1.2.840.10008.5.1.4.1.1.1.1"),
    InstanceIdentity("1.2.826.0.1.3680043.8.498.6", "1.2.826.0.1.3680043.8.498.2", "1.2.840.10008.5.1.4.1.1.1"),
    InstanceIdentity("1.2.826.0.1.3680043.8.498.3", "1.2.826.0.1.3680043.8.498.2", "1.2.840.10008.5.1.4.1.1.1"),
))
BARE = StudyIdentity(study_key=IDENTITY.study_key, study_instance_uid=IDENTITY.study_instance_uid)
NO_ORDER = dataclasses.replace(IDENTITY, accession_number="", requested_procedure_id="", placer_order_number="", filler_order_number="")
ATTENDING = Signer("rd-1", "Ann Rad", "ann.rad", family_name="Rad", given_name="Ann")
RESIDENT = Signer("rd-2", "Jörg Müller-Lüdenscheidt", "urn:idp:resident:0123456789abcdef")  # long id: LongCodeValue
LONG_LOGIN = Signer("rd-3", "Zoë Ångström", "x" * 80, role="resident")  # login name cut to 64
OTHER_SR = "1.2.826.0.1.3680043.8.498.99"

CASES_BY_NAME: dict[str, tuple[StudyIdentity, dict]] = {
    "ai draft": (IDENTITY, {}),
    "draft with a document version": (IDENTITY, {"document_version": "v1"}),
    "resident-signed preliminary": (IDENTITY, {"status": "preliminary", "signer": RESIDENT, "signed_version": 1, "document_version": "v2"}),
    "attending final": (IDENTITY, {"status": "final", "signer": ATTENDING, "co_signers": [RESIDENT, LONG_LOGIN], "verified_at": SIGNED,
                                   "signed_version": 2, "replaces_version": 1, "document_version": "v3"}),
    "amended": (IDENTITY, {"status": "amended", "signer": ATTENDING, "verified_at": SIGNED, "signed_version": 3, "replaces_version": 2}),
    "corrected": (IDENTITY, {"status": "corrected", "signer": RESIDENT, "verified_at": SIGNED, "signed_version": 4, "replaces_version": 3,
                             "verifying_organization": "Radiology, Hôpital Nord"}),
    "final replacing a draft (predecessor_uid)": (IDENTITY, {"status": "final", "signer": ATTENDING, "verified_at": SIGNED,
                                                             "signed_version": 1, "predecessor_uid": OTHER_SR}),
    "predecessor that is not a UID": (IDENTITY, {"predecessor_uid": "urn:not-a-uid", "document_version": "v2"}),
    "predecessor that is the instance itself": (IDENTITY, {"status": "final", "signer": ATTENDING, "verified_at": SIGNED, "signed_version": 1,
                                                           "predecessor_uid": signed_instance_uid("R", 1)}),
    "final by verifier name, no verified_at": (IDENTITY, {"status": "final", "verifier": "Rad^Ann", "document_version": "v2"}),
    "identity without instances": (BARE, {}),
    "final, identity without instances": (BARE, {"status": "final", "signer": ATTENDING, "verified_at": SIGNED, "signed_version": 1}),
    "identity without order numbers": (NO_ORDER, {}),
    "several instances and series": (MANY_INSTANCES, {"status": "final", "signer": ATTENDING, "verified_at": SIGNED, "signed_version": 1}),
}
#: (path of keywords, why): set aside in the comparison (see the module docstring).
NOW = [("InstanceCreationDate",), ("InstanceCreationTime",), ("ContributingEquipmentSequence", 0, "ContributionDateTime")]
LIBRARY = [("ContributingEquipmentSequence", 0, keyword) for keyword in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions")]
FILE_META_LIBRARY = ["ImplementationClassUID", "ImplementationVersionName"]


@pytest.fixture(scope="module")
def reports():
    draft = asyncio.run(DraftingCore(Settings(), None).draft(make_event(LABELS, CASES)))
    event = CasesRetrieved.model_validate(
        {**make_event(LABELS, CASES).model_dump(), "concepts": [], "not_assessed": [o.value for o in Observation], "ood": {"reason": "lateral_only"}}
    )
    ood = asyncio.run(DraftingCore(Settings(), None).draft(event))
    return {"assessed": draft, "out of distribution": ood}


def _set_aside(ds: Dataset, kwargs: dict) -> list[tuple]:
    paths = NOW + LIBRARY
    if "VerifyingObserverSequence" in ds and kwargs.get("verified_at") is None:
        paths = [*paths, ("VerifyingObserverSequence", 0, "VerificationDateTime")]
    return paths


def _parent(ds: Dataset, path: tuple) -> Dataset:
    for step in path[:-1]:
        ds = ds[step] if isinstance(step, int) else getattr(ds, step)  # type: ignore[assignment]  # an item of a sequence is a Dataset
    return ds


def _resolve(ds: Dataset, kwargs: dict) -> dict[tuple, str]:
    """{path: VR} of the attributes set aside, each asserted present."""
    out = {}
    for path in _set_aside(ds, kwargs):
        parent = _parent(ds, path)
        assert path[-1] in parent and not parent[path[-1]].is_empty, path
        out[path] = parent[path[-1]].VR
    return out


def _without(ds: Dataset, paths) -> dict:
    ds = copy.deepcopy(ds)
    for path in paths:
        delattr(_parent(ds, path), path[-1])
    return ds.to_json_dict()


def _part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["assessed", "out of distribution"])
@pytest.mark.parametrize("case", list(CASES_BY_NAME))
def test_product_sr_equals_the_highdicom_oracle(reports, case, kind):
    identity, kwargs = CASES_BY_NAME[case]
    report = reports[kind]
    if "predecessor_uid" in kwargs and kwargs["predecessor_uid"] == signed_instance_uid("R", 1):
        kwargs = {**kwargs, "predecessor_uid": signed_instance_uid(report.report_id, 1)}
    product = basic_text_sr(report, identity, created=ISSUED, **kwargs)
    oracle = oracle_basic_text_sr(report, identity, created=ISSUED, **kwargs)
    paths = _set_aside(oracle, kwargs)
    assert _resolve(product, kwargs) == _resolve(oracle, kwargs)
    assert _without(product, paths) == _without(oracle, paths)
    meta_product, meta_oracle = product.file_meta.to_json_dict(), oracle.file_meta.to_json_dict()
    for keyword in [*FILE_META_LIBRARY, "FileMetaInformationGroupLength"]:  # the group length follows the version name's length
        assert keyword in product.file_meta
        meta_product.pop(product.file_meta[keyword].tag.json_key)
        meta_oracle.pop(oracle.file_meta[keyword].tag.json_key)
    assert meta_product == meta_oracle
    # The Part 10 files are byte for byte the same once the set-aside values are the oracle's.
    aligned = copy.deepcopy(product)
    for path in paths:
        setattr(_parent(aligned, path), path[-1], _parent(oracle, path)[path[-1]].value)
    for keyword in FILE_META_LIBRARY:
        setattr(aligned.file_meta, keyword, oracle.file_meta[keyword].value)
    assert _part10(aligned) == _part10(oracle)


@pytest.mark.parametrize("case", list(CASES_BY_NAME))
def test_written_sr_reads_back_with_highdicom(reports, case):
    identity, kwargs = CASES_BY_NAME[case]
    report = reports["assessed"]
    kwargs = {k: v for k, v in kwargs.items() if k != "predecessor_uid"}
    data = basic_text_sr_bytes(report, identity, created=ISSUED, **kwargs)
    text = read_sr_text(data)
    assert (text["findings"], text["impression"]) == (report.findings, report.impression)
    assert text["assessment"].startswith("AI assessment: assessed Cardiomegaly")
    ds = dcmread(BytesIO(data))
    assert text["verification"] == ds.VerificationFlag and ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    # highdicom parses the whole document (root container with its template, every content item validated)
    sr = BasicTextSR.from_dataset(ds)
    names = [item.name.meaning for item in sr.content[0].ContentSequence]
    assert names[-3:] == ["Findings", "Impressions", "Current Procedure Descriptions"]
    assert [item.name.meaning for item in hd.sr.ContentSequence.from_sequence(ds.ContentSequence)] == names
