"""The one patient pseudonymising function, checked on what each intake path actually hashes.

Same-patient exclusion only works when the gateway (C-STORE, STOW-RS, HTTP) and every case-store
loader derive the same key for the same (issuer, patient id); these tests push real objects
through the gateway's own code paths and compare with what `kb ingest` stores.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation

from radalign.ingest.gateway import GatewayCore
from radalign.kb.ingest import IU_ISSUER, csv_drafts
from radalign.pseudonymizer import (
    DEFAULT_ISSUER,
    IssuerPolicy,
    Pseudonymizer,
    canonical_issuer,
    case_key,
    patient_key,
    site_name,
)
from radalign.samples import chest_jpeg_paths
from radalign.testing.ingest import dicom_bytes, synthetic_radiograph, with_changes
from schemas.events import KEY_PATTERN
from services.gateway.dicom_scp import DicomScp
from services.gateway.http_app import build_gateway_app

SECRET = "unit-test-secret"  # tests/unit/conftest.py's settings


def no_labels(findings: str, impression: str) -> dict:
    return {}


def stored_patient_key(tmp_path, patient_id: str, issuer: str | None, column_issuer: str = "") -> str:
    """The patient key `radalign kb ingest csv` stores for one row."""
    path = tmp_path / "archive.csv"
    path.write_text(f"case_id,patient_id,findings,impression,issuer\nACC-1,{patient_id},Heart normal.,Normal.,{column_issuer}\n")
    [draft] = csv_drafts(path, "hosp", SECRET, no_labels, issuer=issuer)
    return draft.patient_key


def test_keys_are_stable_namespaced_and_match_the_contract_pattern():
    p = Pseudonymizer(SECRET)
    key = p.patient_key("MRN-0042", "HOSP-A")
    assert re.fullmatch(r"pt-[0-9a-f]{16}", key) and re.fullmatch(KEY_PATTERN, key)
    assert key == p.patient_key("  MRN-0042 ", " hosp-a ") == patient_key("MRN-0042", "Hosp-A", SECRET)
    assert key != p.patient_key("MRN-0042", "HOSP-B")  # two hospitals' MRN 42 are two patients
    assert key != p.patient_key("mrn-0042", "HOSP-A")  # ids stay case-sensitive
    assert key != Pseudonymizer("other").patient_key("MRN-0042", "HOSP-A")
    # no issuer means the default issuer, never an own silent namespace
    assert p.patient_key("MRN-0042", None) == p.patient_key("MRN-0042", "") == p.patient_key("MRN-0042", DEFAULT_ISSUER)
    assert Pseudonymizer(SECRET, "HOSP-A").patient_key("MRN-0042", None) == key
    # an unidentified patient is never a named one, and each study is its own
    assert p.unidentified_patient_key("1.2.3", "HOSP-A") not in (p.patient_key("1.2.3", "HOSP-A"), p.unidentified_patient_key("1.2.4", "HOSP-A"))
    assert case_key("hosp", "ACC1", SECRET) != case_key("other", "ACC1", SECRET)
    assert canonical_issuer("  hosp   a ") == "HOSP A"


@pytest.mark.parametrize("bad", ["", "   "])
def test_refuses_empty_ids_and_secret(bad):
    with pytest.raises(ValueError):
        Pseudonymizer(SECRET).patient_key(bad, "X")
    with pytest.raises(ValueError):
        Pseudonymizer(bad)


def test_issuer_policy_precedence_and_bad_configuration():
    policy = IssuerPolicy(default="LOCAL", by_source={"dicom-cstore:PACS_A": "HOSP-A", "http": "HOSP-H"})
    assert policy.issuer("dicom-cstore", declared="DECLARED", calling_ae="PACS_A") == "HOSP-A"  # configured sender wins
    assert policy.issuer("dicom-cstore", declared="declared", calling_ae="PACS_B") == "DECLARED"
    assert policy.issuer("dicom-cstore", declared="", calling_ae="PACS_B") == "LOCAL"
    assert policy.issuer("http", declared="X") == "HOSP-H"
    assert policy.issuer("dicomweb-stow") == "LOCAL"
    from radalign.config import Settings

    settings = Settings(patient_issuer="Hosp-Z", patient_issuers="dicom-cstore:PACS_A=HOSP-A, http=HOSP-H")
    assert IssuerPolicy.from_settings(settings).issuer("dicom-cstore", calling_ae="PACS_A") == "HOSP-A"
    assert IssuerPolicy.from_settings(settings).issuer("dicomweb-stow") == "HOSP-Z"
    for bad in ("http", "ftp=X", "http=", "=X"):
        with pytest.raises(ValueError, match="RADALIGN_PATIENT_ISSUERS"):
            IssuerPolicy.from_settings(Settings(patient_issuers=bad))


def test_site_is_the_issuer_configured_for_the_source_never_a_declared_one():
    assert site_name("hosp a") == "HOSP-A" and site_name(" St. Mary's / Ward 2 ") == "ST.-MARY-S-WARD-2"
    assert site_name("--x") == "X" and site_name("") is None and site_name("???") is None
    assert len(site_name("h" * 100) or "") == 64
    policy = IssuerPolicy(default="LOCAL", by_source={"dicom-cstore:PACS_A": "hosp a", "dicom-cstore": "HOSP-C", "http": "HOSP-H"})
    assert policy.site("dicom-cstore", calling_ae="PACS_A") == "HOSP-A"  # the sender's AE first
    assert policy.site("dicom-cstore", calling_ae="PACS_B") == "HOSP-C"  # then the protocol
    assert policy.site("http") == "HOSP-H"
    assert policy.site("dicomweb-stow") is None  # nothing configured: the concept stage's default applies
    # The object's IssuerOfPatientID names a patient namespace but never chooses a site profile.
    bare = IssuerPolicy(default="LOCAL")
    assert bare.issuer("dicom-cstore", declared="HOSP-X") == "HOSP-X" and bare.site("dicom-cstore") is None
    import re

    from schemas.events import SITE_PATTERN

    for name in ("HOSP-A", "ST.-MARY-S-WARD-2", "X", "h" * 64):
        assert re.fullmatch(SITE_PATTERN, name)


def test_loader_keys_follow_the_issuer_column_then_the_option(tmp_path):
    assert stored_patient_key(tmp_path, "MRN-7", "HOSP-A") == patient_key("MRN-7", "HOSP-A", SECRET)
    assert stored_patient_key(tmp_path, "MRN-7", "HOSP-A", column_issuer="HOSP-B") == patient_key("MRN-7", "HOSP-B", SECRET)
    assert stored_patient_key(tmp_path, "MRN-7", None) == patient_key("MRN-7", DEFAULT_ISSUER, SECRET)
    assert IU_ISSUER != DEFAULT_ISSUER


async def test_cstore_stow_and_http_hash_the_patient_exactly_as_kb_ingest(settings, publisher, blobs, pseudonyms, tmp_path):
    """The key the gateway publishes for MRN-7 of HOSP-A equals the stored case's, on every path."""
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    stored = stored_patient_key(tmp_path, "MRN-7", "HOSP-A")
    declared = with_changes(synthetic_radiograph(patient_id="MRN-7"), IssuerOfPatientID="hosp-a")
    cstore = await core.ingest_dicom(dicom_bytes(declared), "dicom-cstore")
    stow = await core.ingest_dicom(dicom_bytes(with_changes(declared, SOPInstanceUID="1.2.3.4.5")), "dicomweb-stow")
    assert cstore.patient_key == stow.patient_key == stored
    # without IssuerOfPatientID: the issuer configured for the calling AE
    bare = synthetic_radiograph(patient_id="MRN-7")
    configured = GatewayCore(settings.model_copy(update={"patient_issuers": "dicom-cstore:PACS_A=HOSP-A"}), publisher, blobs, pseudonyms)
    assert (await configured.ingest_dicom(dicom_bytes(bare), "dicom-cstore", calling_ae="PACS_A")).patient_key == stored
    assert (await configured.ingest_dicom(dicom_bytes(bare), "dicom-cstore", calling_ae="PACS_B")).patient_key == stored_patient_key(
        tmp_path, "MRN-7", None
    )
    paths = chest_jpeg_paths()
    if not paths:
        pytest.skip("pneumonia-model-package is not installed")
    jpeg = paths[0].read_bytes()
    http = await core.ingest_image(jpeg, study_id="ORDER-1", patient_id="MRN-7", issuer="HOSP-A")
    assert http.patient_key == stored
    http_configured = GatewayCore(settings.model_copy(update={"patient_issuers": "http=HOSP-A"}), publisher, blobs, pseudonyms)
    assert (await http_configured.ingest_image(jpeg, study_id="ORDER-2", patient_id="MRN-7")).patient_key == stored
    other = await core.ingest_image(jpeg, study_id="ORDER-3", patient_id="MRN-7", issuer="HOSP-B")
    assert other.patient_key != stored
    await core.flush(force=True)


async def test_the_network_adapters_pass_issuer_and_calling_ae(settings, publisher, blobs, pseudonyms, tmp_path):
    """Over the wire: a C-STORE from AE PACS_A and an HTTP form with `issuer` give the stored key."""
    settings = settings.model_copy(update={"patient_issuers": "dicom-cstore:PACS_A=HOSP-A"})
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    stored = stored_patient_key(tmp_path, "MRN-7", "HOSP-A")
    server = DicomScp(settings, core, asyncio.get_running_loop())
    server.start(port=0)

    def store() -> int:
        ae = AE(ae_title="PACS_A")
        ae.add_requested_context(DigitalXRayImageStorageForPresentation, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", server.port, ae_title=settings.dicom_ae_title)
        assert assoc.is_established
        try:
            return int(assoc.send_c_store(synthetic_radiograph(patient_id="MRN-7")).Status)
        finally:
            assoc.release()

    try:
        assert await asyncio.to_thread(store) == 0
    finally:
        await asyncio.to_thread(server.stop)
    [event] = await core.flush(force=True)
    assert event.study.patient_key == stored
    assert event.site == "HOSP-A"  # the calling AE's configured issuer names the site

    paths = chest_jpeg_paths()
    if not paths:
        pytest.skip("pneumonia-model-package is not installed")
    app = build_gateway_app(settings, publisher, blobs, pseudonyms)
    async with TestClient(TestServer(app)) as client:
        form = aiohttp.FormData()
        for name, value in {"study_id": "ORD-9", "patient_id": "MRN-7", "issuer": "HOSP-A"}.items():
            form.add_field(name, value)
        form.add_field("file", paths[0].read_bytes(), filename="x.jpg", content_type="image/jpeg")
        response = await client.post("/v1/studies", data=form, headers={"Authorization": "Bearer tok-1"})
        assert response.status == 202, await response.text()
        assert (await response.json())["patient_key"] == stored
