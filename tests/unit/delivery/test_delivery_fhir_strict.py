"""The transaction Bundle against the strict loopback FHIR server, which refuses what HAPI FHIR
refuses: references that do not resolve, conditional references matching none or several
resources, bad ids."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest
from delivery_helpers import make_identity, make_report, seed_patient

from radalign.loopback.fhir_server import LoopbackFhirServer
from radalign.reports.fhir import US_CORE_DR_NOTE, order_identifier, patient_dict, transaction_bundle
from radalign.reports.reidentification import identity_from_row

ISSUED = datetime(2026, 11, 27, 21, 0, tzinfo=UTC)
HEADERS = {"Content-Type": "application/fhir+json; fhirVersion=4.0"}


@pytest.fixture
def server():
    s = LoopbackFhirServer("R4")
    s.start()
    yield s
    s.stop()


def _post(server: LoopbackFhirServer, bundle: dict) -> httpx.Response:
    return httpx.post(server.base_url, content=json.dumps(bundle), headers=HEADERS, timeout=10)


def _bundle(identity=None, **kw) -> dict:
    report = make_report()
    return transaction_bundle(report, identity or make_identity(), issued=ISSUED, **kw)


def _dr_entry(bundle: dict) -> dict:
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")


def test_r4_is_the_default_with_conditional_references_and_us_core():
    bundle = _bundle()
    dr = _dr_entry(bundle)["resource"]
    assert "imagingStudy" in dr and "study" not in dr  # R4
    assert dr["meta"]["profile"] == [US_CORE_DR_NOTE]
    assert dr["subject"]["reference"] == "Patient?identifier=urn:oid:1.2.3.4.5|MRN-77"
    assert all(e["request"]["method"] == "PUT" for e in bundle["entry"])


def test_transaction_resolves_the_patient_and_the_report_is_found_by_patient(server):
    patient_id = seed_patient(server)
    response = _post(server, _bundle())
    assert response.status_code == 200, response.text
    (dr,) = server.all("DiagnosticReport")
    assert dr["subject"]["reference"] == f"Patient/{patient_id}"
    assert all(o["subject"]["reference"] == f"Patient/{patient_id}" for o in server.all("Observation"))
    found = httpx.get(f"{server.base_url}/DiagnosticReport", params={"patient": patient_id}, timeout=10).json()
    assert found["total"] == 1 and found["entry"][0]["resource"]["id"] == dr["id"]
    # a redelivery updates in place and still resolves
    assert _post(server, _bundle()).status_code == 200 and len(server.all("DiagnosticReport")) == 1


def test_a_dangling_literal_reference_fails_the_whole_transaction(server):
    seed_patient(server)
    bundle = _bundle()
    broken = copy.deepcopy(bundle)
    _dr_entry(broken)["resource"]["basedOn"] = [{"reference": "ServiceRequest/ORD-1234"}]
    response = _post(server, broken)
    assert response.status_code == 404 and response.json()["issue"][0]["code"] == "not-found"
    assert server.all("DiagnosticReport") == [] and server.all("Device") == []  # all or nothing
    assert _post(server, bundle).status_code == 200  # the same bundle without it goes through


def test_a_dangling_urn_uuid_and_a_bad_id_are_refused(server):
    seed_patient(server)
    broken = _bundle()
    _dr_entry(broken)["resource"]["result"].append({"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"})
    assert _post(server, broken).status_code == 400
    bad_id = _bundle()
    bad_id["entry"][-1]["request"]["url"] = "Provenance/not_a:valid id"
    assert _post(server, bad_id).status_code == 400
    assert server.all("DiagnosticReport") == []


def test_a_conditional_reference_must_match_exactly_one(server):
    response = _post(server, _bundle())  # no such patient on the server
    assert response.status_code == 400 and "matches 0" in server.rejected[-1]
    seed_patient(server)
    seed_patient(server)  # two patients with the same identifier
    assert _post(server, _bundle()).status_code == 412
    assert server.all("DiagnosticReport") == []


def test_a_destination_that_allows_it_creates_the_patient_once(server):
    bundle = _bundle(patient="create")
    first = bundle["entry"][0]
    assert first["request"] == {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:oid:1.2.3.4.5|MRN-77"}
    assert first["resource"]["name"][0]["family"] == "Roe" and _dr_entry(bundle)["resource"]["subject"]["reference"] == first["fullUrl"]
    assert _post(server, bundle).status_code == 200
    assert _post(server, _bundle(patient="create")).status_code == 200
    (patient,) = server.all("Patient")
    assert patient["meta"]["versionId"] == "1"  # reused, not rewritten
    (dr,) = server.all("DiagnosticReport")
    assert dr["subject"]["reference"] == f"Patient/{patient['id']}"


def test_the_order_is_a_conditional_reference_by_placer_order_number(server):
    identity = replace(make_identity(), placer_order_number="ORD-1234")
    seed_patient(server, identity)
    based_on = _dr_entry(_bundle(identity))["resource"]["basedOn"][0]
    assert based_on["reference"] == "ServiceRequest?identifier=ORD-1234" and based_on["identifier"]["value"] == "ACC-77"
    assert _post(server, _bundle(identity)).status_code == 400  # the server holds no such order
    # by identifier only, for a server without the orders
    assert "reference" not in _dr_entry(_bundle(identity, order="identifier"))["resource"]["basedOn"][0]
    assert _post(server, _bundle(identity, order="identifier")).status_code == 200
    order_id = server.seed({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                            "subject": {"reference": f"Patient/{server.all('Patient')[0]['id']}"},
                            "identifier": [order_identifier(identity)]})
    assert _post(server, _bundle(identity)).status_code == 200
    (dr,) = server.all("DiagnosticReport")
    assert dr["basedOn"][0]["reference"] == f"ServiceRequest/{order_id}"


def test_r5_on_request():
    r5 = LoopbackFhirServer("R5")
    r5.start()
    try:
        seed_patient(r5)
        bundle = _bundle(version="R5")
        assert "study" in _dr_entry(bundle)["resource"] and "profile" not in _dr_entry(bundle)["resource"]["meta"]
        assert _post(r5, bundle).status_code == 200
    finally:
        r5.stop()


def test_the_placer_order_number_is_not_a_fhir_id():
    row = {"study_key": "st-1", "study_instance_uid": "1.2.3", "patient_id": "P", "patient_name": "", "accession_number": ""}
    identity = identity_from_row(row, {"PlacerOrderNumberImagingServiceRequest": "ORD 7/1"}, [])
    assert identity.service_request_id == "" and identity.placer_order_number == "ORD 7/1"
    assert identity_from_row(row, {"ServiceRequest": "ServiceRequest/sr-9"}, []).service_request_id == "sr-9"
    assert identity_from_row(row, {"ServiceRequest": "not valid!"}, []).service_request_id == ""
    assert patient_dict(make_identity())["identifier"][0]["system"] == "urn:oid:1.2.3.4.5"
