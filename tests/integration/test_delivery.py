"""Delivery end to end, against real peers: Orthanc (Debian's package) sends a study to the
gateway by C-STORE, as a PACS routing rule would; the pipeline drafts the report; the delivery
stage sends the SR back to Orthanc by C-STORE and STOW-RS (and, by C-STORE, the model's results
as a TID 1500 Comprehensive 3D SR beside it) and the FHIR resources (R4) to the loopback FHIR
server (no FHIR server installs from the registries here; it validates every resource with
fhir.resources and refuses references that do not resolve, as HAPI does). Skipped with the reason where Orthanc or the sample CR is not installed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from io import BytesIO

import httpx
import pydicom
import pytest

from radalign.config import Settings
from radalign.demo.delivery import route_from_orthanc, route_study_from_orthanc
from radalign.ingest.deid import Pseudonymizer
from radalign.loopback.fhir_server import LoopbackFhirServer
from radalign.reports.sr import COMPREHENSIVE_3D_SR, read_ai_results, read_sr_text
from radalign.samples import as_new_study, chest_cr_path
from radalign.stack import orthanc
from radalign.testing.ingest import dicom_bytes
from radalign.testing.stack import IU_CASES_FOR_TESTS, delivering_stack, until, write_audit_profile

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
DELIVERY_SITE = "IT-DELIVERY-SITE"


@pytest.fixture(scope="module")
def delivery_stack(embedded_triton: Settings) -> Iterator[tuple[Settings, LoopbackFhirServer]]:
    if not orthanc.installed():
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb; scripts/bootstrap.sh does it as root)")
    if orthanc.dicomweb_plugin() is None:
        pytest.skip("Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
    if chest_cr_path() is None:
        pytest.skip("the sample chest CR (pydicom-data) is not installed")
    from radalign.kb.ingest import ensure_iu_cases

    def destinations(fhir_url: str) -> list[dict]:
        return [
            {"name": "pacs", "kind": "dicom", "ae_title": embedded_triton.orthanc_ae_title, "host": "127.0.0.1", "port": embedded_triton.orthanc_dicom_port},
            {"name": "dicomweb", "kind": "stow", "url": orthanc.dicomweb_url(embedded_triton)},
            {"name": "ehr", "kind": "fhir", "base_url": fhir_url, "patient_identifier_system": "urn:oid:1.2.3.4.5",
             "patient": "create", "order": "identifier"},
        ]

    # Orthanc's routed studies belong to an audited site, so the model claims something (the
    # shipped generic model, under its claim policy, claims nothing) and a TID 1500 SR goes out.
    site = {"patient_issuers": f"dicom-cstore:{embedded_triton.orthanc_ae_title}={DELIVERY_SITE}",
            "concepts_site_profiles_dir": embedded_triton.state_dir / "site_profiles_delivery"}
    write_audit_profile(embedded_triton.model_copy(update=site), DELIVERY_SITE)
    asyncio.run(ensure_iu_cases(embedded_triton, limit=IU_CASES_FOR_TESTS))
    with delivering_stack(embedded_triton, destinations, **site) as both:
        yield both


def test_study_routed_from_orthanc_comes_back_as_sr_in_the_same_study_and_as_fhir(delivery_stack) -> None:
    settings, fhir = delivery_stack
    base = orthanc.http_url(settings)
    (ds,) = as_new_study([chest_cr_path()])
    study_uid = ds.StudyInstanceUID
    ds.PatientID, ds.PatientName, ds.AccessionNumber = "IT-ORTH-1", "Orthanc^Olga", "ACC-ORTH-1"
    ds.StudyDate, ds.StudyTime = "20261127", "081500"
    # What a routing rule does: Orthanc C-STOREs the stored instance to the gateway (modality "radalign").
    orthanc_study = route_from_orthanc(settings, dicom_bytes(ds))

    def sr_series() -> list[dict]:
        series = httpx.get(f"{base}/studies/{orthanc_study}/series", timeout=10).json()
        return [s for s in series if s["MainDicomTags"].get("Modality") == "SR"]

    def text_sr_series() -> list[dict]:
        return [s for s in sr_series() if s["MainDicomTags"].get("SeriesNumber") == "9001"]

    (series,) = until("the SR in Orthanc's study", text_sr_series)
    (instance,) = series["Instances"]
    data = httpx.get(f"{base}/instances/{instance}/file", timeout=10).content
    sr = pydicom.dcmread(BytesIO(data))
    # re-identified at the output edge: the original patient, study and order, not the pseudonyms
    assert sr.StudyInstanceUID == study_uid and sr.PatientID == "IT-ORTH-1" and sr.AccessionNumber == "ACC-ORTH-1"
    assert sr.StudyDate == "20261127" and sr.StudyTime == "081500"
    assert sr.VerificationFlag == "UNVERIFIED" and sr.ReferencedRequestSequence[0].AccessionNumber == "ACC-ORTH-1"
    text = read_sr_text(data)
    assert text["findings"] and text["impression"]
    # Beside it, the model's results as a TID 1500 SR, where the model claimed something (a study
    # the model calls out of distribution has no claims, and no TID 1500 SR)
    key = Pseudonymizer(settings.deid_secret).study_key(study_uid)
    drafted = httpx.get(f"http://127.0.0.1:{settings.web_port('drafting')}/v1/studies/{key}/report", timeout=10).json()
    claimed = {c["observation"] for c in drafted["concepts"]} - set(drafted["not_assessed"])

    def ai_sr_series() -> list[dict]:
        return [s for s in sr_series() if s["MainDicomTags"].get("SeriesNumber") == "9002"]

    if claimed:
        (ai_series,) = until("the TID 1500 SR in Orthanc's study", ai_sr_series, 60)
        ai_data = httpx.get(f"{base}/instances/{ai_series['Instances'][0]}/file", timeout=10).content
        ai_sr = pydicom.dcmread(BytesIO(ai_data))
        assert ai_sr.SOPClassUID == COMPREHENSIVE_3D_SR and ai_sr.StudyInstanceUID == study_uid and ai_sr.PatientID == "IT-ORTH-1"
        results = read_ai_results(ai_data)
        assert results.pop("algorithm") and len(results) == len(claimed)
    else:
        time.sleep(3)
        assert ai_sr_series() == []
    # STOW-RS delivered the same text SR instance (Orthanc's DICOMweb plugin finds it by QIDO)
    qido = httpx.get(f"{base}/dicom-web/studies/{study_uid}/series", params={"Modality": "SR"}, timeout=10)
    assert qido.status_code == 200 and len(qido.json()) == (2 if claimed else 1)

    # FHIR: the DiagnosticReport for this patient, with its observations, device and provenance
    def report() -> list[dict]:
        return [r for r in fhir.all("DiagnosticReport") if r.get("subject", {}).get("identifier", {}).get("value") == "IT-ORTH-1"]

    (dr,) = until("the FHIR DiagnosticReport", report, 60)
    assert dr["status"] == "preliminary" and dr["subject"]["identifier"]["system"] == "urn:oid:1.2.3.4.5"
    assert dr["effectiveDateTime"].startswith("2026-11-27T08:15:00")
    assert dr["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{study_uid}"  # R4, the default
    assert dr["meta"]["profile"] == ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-diagnosticreport-note"]
    # the subject resolves to the Patient the transaction created: DiagnosticReport?patient= finds it
    (patient,) = fhir.all("Patient")
    assert dr["subject"]["reference"] == f"Patient/{patient['id']}"
    assert [r["id"] for r in fhir.search("DiagnosticReport", {"patient": patient["id"]})] == [dr["id"]]
    assert fhir.all("Provenance") and fhir.all("Device") and not fhir.rejected

    # the delivery records, through the delivery stage's API
    url = f"http://127.0.0.1:{settings.web_port('delivery')}/v1/studies/{key}/deliveries"

    def delivered() -> dict[str, dict]:
        rows = {r["destination"]: r for r in httpx.get(url, timeout=10).json()["deliveries"]}
        return rows if len(rows) == 3 and all(r["status"] == "delivered" for r in rows.values()) else {}

    rows = until("three delivered records", delivered, 60)
    assert rows["pacs"]["remote_ref"] == sr.SOPInstanceUID and rows["ehr"]["remote_ref"].startswith(f"DiagnosticReport/{dr['id']}")
    assert all(r["report_status"] == "preliminary" and r["attempts"] >= 1 for r in rows.values())
    assert "IT-ORTH-1" not in httpx.get(f"http://127.0.0.1:{settings.web_port('delivery')}/metrics", timeout=10).text

    # The radiologist signs (issue 15's review publishes ReportFinal): delivery sends the signed
    # text as the final version, a VERIFIED SR in the same study and the DiagnosticReport updated
    # in place to final.
    from radalign.framework.producer import KafkaEventPublisher
    from schemas.events import ReportFinal
    from schemas.examples import EXAMPLES
    from schemas.topics import REPORT_FINAL

    draft = httpx.get(f"http://127.0.0.1:{settings.web_port('drafting')}/v1/studies/{key}/report", timeout=10).json()
    signed = ReportFinal.model_validate(EXAMPLES["report_final"][0] | {
        "study": draft["study"], "report_id": draft["report_id"], "final_id": f"{draft['report_id']}-v1",
        "findings": "Heart size is normal. No pleural effusion.", "impression": "No acute cardiopulmonary abnormality.",
    })

    # the review service records who the signer's pseudonym is (issue 24): the delivery names them
    import psycopg

    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO reviewer_identities (reviewer_key, display_name, family_name, given_name, identifier, identifier_system, role) "
            "VALUES (%s, 'Ann Rad', 'Rad', 'Ann', 'att-1', 'urn:radalign:reviewer', 'radiologist') ON CONFLICT DO NOTHING",
            (signed.signer_key,),
        )

    async def publish() -> None:
        async with KafkaEventPublisher(settings, stage="review") as publisher:
            await publisher.publish(REPORT_FINAL, signed, ev_id=f"it-final-{signed.final_id}")

    asyncio.run(publish())

    def verified() -> list[tuple[pydicom.Dataset, bytes]]:
        found = []
        for s in sr_series():
            for inst in s["Instances"]:
                raw = httpx.get(f"{base}/instances/{inst}/file", timeout=10).content
                if (ds_sr := pydicom.dcmread(BytesIO(raw))).VerificationFlag == "VERIFIED":
                    found.append((ds_sr, raw))
        return found

    ((final_sr, raw),) = until("the VERIFIED SR in Orthanc's study", verified, 120)
    assert final_sr.StudyInstanceUID == study_uid and final_sr.CompletionFlag == "COMPLETE"
    assert str(final_sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Rad^Ann"  # re-identified, never the pseudonym
    assert "No acute cardiopulmonary abnormality" in read_sr_text(raw)["impression"]
    (dr_final,) = until("the DiagnosticReport updated to final", lambda: [r for r in report() if r["status"] == "final"], 60)
    assert dr_final["id"] == dr["id"] and "No acute cardiopulmonary abnormality" in dr_final.get("conclusion", "")

    # The study now also holds our SRs. Routing the image again (a resend, or a second `make demo`
    # on one state folder) still succeeds, and so does routing the whole study: the gateway accepts
    # the SRs with success and ignores them (before, it refused their presentation context and
    # Orthanc failed the whole store job).
    assert route_from_orthanc(settings, dicom_bytes(ds)) == orthanc_study
    route_study_from_orthanc(settings, orthanc_study)
    metrics = httpx.get(f"http://{settings.gateway_host}:{settings.gateway_port}/metrics", timeout=10).text
    ignored_srs = [
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
        if line.startswith("radalign_gateway_ignored_instances_total{") and 'sop_class="sr"' in line and 'source="dicom-cstore"' in line
    ]
    assert ignored_srs and ignored_srs[0] >= 1, [line for line in metrics.splitlines() if "ignored" in line]
