"""A hung PACS delays only itself (issue 26), end to end: Orthanc routes a study to the gateway and
is then frozen (SIGSTOP, as a hung PACS); the FHIR server still gets the report at once, the PACS
lane times out and opens its circuit; once Orthanc resumes (SIGCONT) the SR reaches it by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from radalign.config import Settings
from radalign.demo.delivery import route_from_orthanc
from radalign.ingest.deid import Pseudonymizer
from radalign.loopback.fhir_server import LoopbackFhirServer
from radalign.samples import as_new_study, chest_cr_path
from radalign.stack import orthanc, running
from radalign.testing.ingest import dicom_bytes
from radalign.testing.stack import IU_CASES_FOR_TESTS, delivering_stack, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def hung_stack(embedded_triton: Settings) -> Iterator[tuple[Settings, LoopbackFhirServer]]:
    if not orthanc.installed() or chest_cr_path() is None:
        pytest.skip("Orthanc or the sample chest CR is not installed")
    from radalign.kb.ingest import ensure_iu_cases

    def destinations(fhir_url: str) -> list[dict]:
        return [
            {"name": "pacs", "kind": "dicom", "ae_title": embedded_triton.orthanc_ae_title, "host": "127.0.0.1",
             "port": embedded_triton.orthanc_dicom_port, "retry": {"timeout_s": 2, "base_delay_s": 0.5, "max_delay_s": 2},
             "queue": {"breaker_failures": 2, "breaker_cooldown_s": 3, "dead_letter_after_s": 600}},
            {"name": "ehr", "kind": "fhir", "base_url": fhir_url, "patient_identifier_system": "urn:oid:1.2.3.4.5",
             "patient": "create", "order": "identifier"},
        ]

    asyncio.run(ensure_iu_cases(embedded_triton, limit=IU_CASES_FOR_TESTS))
    with delivering_stack(embedded_triton, destinations) as both:
        yield both


def test_a_frozen_pacs_delays_only_itself_and_catches_up(hung_stack) -> None:
    settings, fhir = hung_stack
    (ds,) = as_new_study([chest_cr_path()])
    ds.PatientID, ds.PatientName, ds.AccessionNumber = "IT-HUNG-1", "Hung^Hanna", "ACC-HUNG-1"
    orthanc_study = route_from_orthanc(settings, dicom_bytes(ds))
    pacs = running("orthanc", settings)
    assert pacs is not None
    pacs.suspend()  # the PACS hangs: connections are accepted by the kernel, nothing answers
    frozen_at = time.monotonic()
    key = Pseudonymizer(settings.deid_secret).study_key(ds.StudyInstanceUID)
    deliveries = f"http://127.0.0.1:{settings.web_port('delivery')}/v1/studies/{key}/deliveries"

    def rows() -> dict[str, dict]:
        return {r["destination"]: r for r in httpx.get(deliveries, timeout=10).json()["deliveries"]}

    try:
        until("the FHIR report while the PACS is frozen", lambda: rows().get("ehr", {}).get("status") == "delivered")
        fhir_s = time.monotonic() - frozen_at
        assert [r for r in fhir.all("DiagnosticReport") if r["subject"]["identifier"]["value"] == "IT-HUNG-1"]

        def circuit_open() -> bool:
            text = httpx.get(f"http://127.0.0.1:{settings.web_port('delivery')}/metrics", timeout=10).text
            return 'radalign_delivery_circuit_open{destination="pacs"} 1.0' in text

        until("the PACS circuit to open", circuit_open, 120)
        assert rows()["pacs"]["status"] != "delivered"
    finally:
        pacs.resume()
    resumed_at = time.monotonic()
    base = orthanc.http_url(settings)

    def text_sr() -> list[dict]:
        series = httpx.get(f"{base}/studies/{orthanc_study}/series", timeout=10).json()
        return [s for s in series if s["MainDicomTags"].get("SeriesNumber") == "9001"]

    until("the SR in Orthanc after it resumed", text_sr, 180)
    assert rows()["pacs"]["status"] == "delivered"
    print(f"FHIR delivered {fhir_s:.1f} s after the PACS froze; the PACS caught up {time.monotonic() - resumed_at:.1f} s after it resumed")
