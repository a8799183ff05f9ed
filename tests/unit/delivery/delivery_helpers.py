"""Reports, identities and a real DICOM C-STORE SCP (pynetdicom) for the delivery tests."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import BasicTextSRStorage, Comprehensive3DSRStorage

from radalign.loopback.fhir_server import LoopbackFhirServer
from radalign.reports.reidentification import InstanceIdentity, StudyIdentity
from schemas.events import Certainty, ConceptScore, Guard, GuardVerdict, Observation, ReportDrafted, StageTiming, StudyRef

KEY = "st-00112233445566aa"


def make_report(findings: str = "The heart is enlarged. No pleural effusion.", impression: str = "Cardiomegaly.", key: str = KEY) -> ReportDrafted:
    study = StudyRef(study_key=key, patient_key="pt-0011223344556677", received_at=datetime(2026, 11, 27, 9, 0, tzinfo=UTC), pipeline_version="radalign-test")
    return ReportDrafted(
        study=study,
        report_id=str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
        findings=findings,
        impression=impression,
        concepts=[
            ConceptScore(observation=Observation.CARDIOMEGALY, probability=0.86, state=Certainty.PRESENT),
            ConceptScore(observation=Observation.PLEURAL_EFFUSION, probability=0.07, state=Certainty.ABSENT),
            ConceptScore(observation=Observation.PNEUMOTHORAX, probability=0.02, state=Certainty.ABSENT),
        ],
        not_assessed=[Observation.PNEUMOTHORAX],
        case_keys=["iu-1"], view_position="PA", model_name="concept_model", model_version="1", drafter="deterministic",
        prompt_version="draft-v1", guard=Guard(verdict=GuardVerdict.PASSED), needs_review=False,
        timings=[StageTiming(stage="drafting", started_at=datetime(2026, 11, 27, 9, 0, 5, tzinfo=UTC), duration_ms=3.0)],
    )


def make_identity(key: str = KEY) -> StudyIdentity:
    return StudyIdentity(
        study_key=key, study_instance_uid="1.2.826.0.1.3680043.8.498.77", patient_id="MRN-77", patient_name="Roe^Rita",
        issuer_of_patient_id="1.2.3.4.5", accession_number="ACC-77", study_date="20261127", study_time="085900",
        instances=(InstanceIdentity("1.2.826.0.1.3680043.8.498.79", "1.2.826.0.1.3680043.8.498.78", "1.2.840.10008.5.1.4.1.1.1"),),
    )


class StoreSCP:
    """A real C-STORE SCP on a free port that keeps what it receives."""

    def __init__(self, ae_title: str = "PACS", status: int = 0x0000, *, ai_results: bool = True) -> None:
        self.received: list[Dataset] = []
        self.status = status
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(BasicTextSRStorage)
        if ai_results:  # else a PACS that takes no Comprehensive 3D SR
            self.ae.add_supported_context(Comprehensive3DSRStorage)
        self._lock = threading.Lock()

    def _on_store(self, event) -> int:  # pynetdicom event
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self._lock:
            self.received.append(ds)
        return self.status

    @property
    def text_srs(self) -> list[Dataset]:
        """The Basic Text SRs received (the report)."""
        return [ds for ds in self.received if ds.SOPClassUID == BasicTextSRStorage]

    @property
    def ai_srs(self) -> list[Dataset]:
        """The TID 1500 Comprehensive 3D SRs received (the AI's results)."""
        return [ds for ds in self.received if ds.SOPClassUID == Comprehensive3DSRStorage]

    def start(self) -> int:
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        return self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()


def seed_patient(server, identity: StudyIdentity | None = None) -> str:  # LoopbackFhirServer
    """The EHR already holds the patient (the FHIR bundle references it conditionally)."""
    from radalign.reports.fhir import patient_dict

    return server.seed(patient_dict(identity or make_identity()))


@contextmanager
def store_and_fhir(version: str) -> Iterator[tuple[StoreSCP, LoopbackFhirServer]]:
    """A listening Storage SCP and a loopback FHIR server (`version`) holding the test patient."""
    scp, fhir = StoreSCP(), LoopbackFhirServer(version)  # type: ignore[arg-type]  # "R4" or "R5"
    scp.port = scp.start()
    fhir.start()
    seed_patient(fhir)
    try:
        yield scp, fhir
    finally:
        scp.stop()
        fhir.stop()
