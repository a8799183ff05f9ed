"""Re-identification at the output edge: study pseudonym -> the original identifiers.

Only the report outputs (FHIR DiagnosticReport, DICOM SR) that leave the system for the RIS/PACS
call this; events, logs, metrics and prompts keep the pseudonyms. The mapping is the gateway's
`study_pseudonyms` / `instance_pseudonyms` tables (`010_pseudonyms.sql`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True)
class InstanceIdentity:
    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    #: Image attributes, where known: the TID 1500 SR's Image Library entry (TID 1602/1603)
    #: needs them; the pseudonym tables hold only UIDs, so they are empty from the gateway.
    modality: str = ""
    rows: int = 0
    columns: int = 0
    patient_orientation: tuple[str, ...] = ()
    imager_pixel_spacing: tuple[float, ...] = ()


@dataclass(frozen=True)
class StudyIdentity:
    study_key: str
    study_instance_uid: str
    patient_id: str = ""
    patient_name: str = ""  # DICOM PN form, e.g. "Doe^Jane"
    issuer_of_patient_id: str = ""
    birth_date: date | None = None
    sex: str = ""  # DICOM: M, F, O or empty
    accession_number: str = ""
    study_id: str = ""
    #: The order's FHIR ServiceRequest id, only where the routing facts name one (`ServiceRequest`
    #: or `service_request_id`); never the placer order number, which is an identifier, not an id
    #: (the FHIR output references the order by `ServiceRequest?identifier=` from the order numbers).
    service_request_id: str = ""
    #: DICOM StudyDate (YYYYMMDD), StudyTime (HHMMSS[.f]) and TimezoneOffsetFromUTC (+HHMM) of
    #: the original study: the report's effective time.
    study_date: str = ""
    study_time: str = ""
    timezone_offset: str = ""
    referring_physician_name: str = ""
    #: The order's attributes when known (ReferencedRequestSequence of the SR).
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    placer_order_number: str = ""
    filler_order_number: str = ""
    instances: tuple[InstanceIdentity, ...] = field(default_factory=tuple)


class Reidentifier(Protocol):
    async def lookup(self, study_key: str) -> StudyIdentity | None: ...


class StaticReidentifier:
    """A fixed mapping (tests, demos)."""

    def __init__(self, identities: Mapping[str, StudyIdentity] = ()) -> None:  # type: ignore[assignment]  # an empty tuple default for a read-only mapping of identities
        self._identities = dict(identities)

    async def lookup(self, study_key: str) -> StudyIdentity | None:
        return self._identities.get(study_key)


#: FHIR id syntax.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _service_request(routing: Mapping[str, Any]) -> str:
    """A FHIR ServiceRequest id the routing facts name explicitly (valid id syntax), else ""."""
    for key in ("ServiceRequest", "service_request_id"):
        value = routing.get(key)
        if isinstance(value, str) and value.strip():
            rid = value.strip().removeprefix("ServiceRequest/")
            return rid if _FHIR_ID.fullmatch(rid) else ""
    return ""


_STUDY = """
SELECT study_key, study_instance_uid, patient_id, patient_name, accession_number, routing
FROM study_pseudonyms WHERE study_key = %s
"""
_INSTANCES = """
SELECT sop_instance_uid, series_instance_uid, sop_class_uid FROM instance_pseudonyms
WHERE study_key = %s AND sop_instance_uid <> '' AND series_instance_uid <> '' AND sop_class_uid <> ''
ORDER BY instance_key
"""


class PostgresReidentifier:
    """Reads the gateway's pseudonym tables through a pool from `radalign.db.open_pool`."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def lookup(self, study_key: str) -> StudyIdentity | None:
        async with self.pool.connection() as conn:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(_STUDY, (study_key,))
                row = await cur.fetchone()
                if row is None:
                    return None
                await cur.execute(_INSTANCES, (study_key,))
                instances = await cur.fetchall()
        routing = row["routing"] or {}
        return identity_from_row(row, routing, instances)


def _text(routing: Mapping[str, Any], key: str) -> str:
    value = routing.get(key, "")
    return value.strip() if isinstance(value, str) else ""


def _birth_date(value: str) -> date | None:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8])) if len(value) >= 8 else None
    except ValueError:
        return None


def dicom_study_uid(original: str) -> str:
    """The study's UID in DICOM outputs: the original when it is a valid UID (a DICOM study), else
    one derived from it deterministically under the 2.25 root (an HTTP upload's free-text study id
    is no UID: written as one, PACS refuse it and pydicom warns with the id in the message)."""
    import hashlib
    import re

    from pydicom.uid import RE_VALID_UID  # a pattern test: building a pydicom UID from the id would warn with it

    value = (original or "").strip()
    if len(value) <= 64 and re.match(RE_VALID_UID, value):
        return value
    # 2.25 + a 128-bit integer (PS3.5 B.2), from a hash: the same id always gives the same UID
    return "2.25." + str(int(hashlib.sha256(f"radalign-study|{value}".encode()).hexdigest()[:32], 16))


def identity_from_row(row: Mapping[str, Any], routing: Mapping[str, Any], instances: Sequence[Mapping[str, Any]]) -> StudyIdentity:
    """The identity from a `study_pseudonyms` row, its `routing` facts and its instances."""
    requests = routing.get("RequestAttributes") or [{}]
    first_request = requests[0] if isinstance(requests, list) and requests and isinstance(requests[0], dict) else {}
    return StudyIdentity(
        study_key=row["study_key"],
        study_instance_uid=dicom_study_uid(row["study_instance_uid"]),
        patient_id=row["patient_id"],
        patient_name=row["patient_name"],
        issuer_of_patient_id=_text(routing, "IssuerOfPatientID"),
        birth_date=_birth_date(_text(routing, "PatientBirthDate")),
        sex=_text(routing, "PatientSex") if _text(routing, "PatientSex") in ("M", "F", "O") else "",
        accession_number=row["accession_number"],
        study_id=_text(routing, "StudyID"),
        service_request_id=_service_request(routing),
        study_date=_text(routing, "StudyDate"),
        study_time=_text(routing, "StudyTime"),
        timezone_offset=_text(routing, "TimezoneOffsetFromUTC"),
        referring_physician_name=_text(routing, "ReferringPhysicianName"),
        requested_procedure_id=_text(routing, "RequestedProcedureID") or str(first_request.get("RequestedProcedureID", "")),
        requested_procedure_description=_text(routing, "RequestedProcedureDescription"),
        placer_order_number=_text(routing, "PlacerOrderNumberImagingServiceRequest"),
        filler_order_number=_text(routing, "FillerOrderNumberImagingServiceRequest"),
        instances=tuple(InstanceIdentity(i["sop_instance_uid"], i["series_instance_uid"], i["sop_class_uid"]) for i in instances),
    )
