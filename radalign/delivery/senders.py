"""One sender per destination kind: DICOM C-STORE (pynetdicom), STOW-RS and FHIR (httpx), HL7 v2
ORU^R01 over MLLP (python-hl7, `radalign.delivery.hl7`).

A sender makes one attempt; the core wraps it in the destination's bounded retries. Failures
are classified once, here: `PermanentError` (the destination refused the content: retrying
cannot help, the record is dead-lettered at once) or any other exception (transient: network,
timeouts, 5xx, 429, DICOM "out of resources"; retried with backoff).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any, Generic, Protocol, TypeVar

import httpx
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from radalign.delivery.destinations import DicomDestination, FhirDestination, Hl7Destination, StowDestination
from radalign.delivery.oauth import TokenProvider
from radalign.delivery.version import ReportVersion
from radalign.framework.retry import PermanentError
from radalign.reports.fhir import transaction_bundle
from radalign.reports.reidentification import StudyIdentity
from radalign.reports.sr import ai_results_sr, basic_text_sr, basic_text_sr_bytes

log = logging.getLogger(__name__)

#: HTTP answers worth retrying; any other 4xx is a refusal of the content.
_TRANSIENT_HTTP = {408, 425, 429}


class TransientDeliveryError(Exception):
    """A failed attempt that a retry may fix."""


class Sender(Protocol):
    name: str
    kind: str

    async def send(self, item: ReportVersion, identity: StudyIdentity) -> str:
        """Deliver once; return the destination's reference to what it stored."""

    async def close(self) -> None: ...


def sr_kwargs(item: ReportVersion) -> dict[str, Any]:
    """The SR of a version: its status, the re-identified signers, its predecessor."""
    sig = item.signature
    return {
        "status": item.status, "verifier": item.verifier_pn, "verified_at": item.verified_at, "document_version": item.version,
        "signer": sig.signer if sig else None, "co_signers": sig.co_signers if sig else (),
        "signed_version": sig.version if sig else None, "replaces_version": sig.replaces_version if sig else None,
        "predecessor_uid": item.predecessor_ref or None,
    }


def sr_for(item: ReportVersion, identity: StudyIdentity) -> Dataset:
    return basic_text_sr(item.report, identity, created=item.issued, **sr_kwargs(item))


def _check_http(response: httpx.Response, what: str) -> None:
    code = response.status_code
    if code < 400:
        return
    if code >= 500 or code in _TRANSIENT_HTTP or code == 401:
        raise TransientDeliveryError(f"{what} answered HTTP {code}")
    raise PermanentError(f"{what} refused the content: HTTP {code}{_outcome_codes(response)}", "refused")


def _outcome_codes(response: httpx.Response) -> str:
    """The OperationOutcome's issue codes (never its diagnostics, which may echo patient data)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        codes = sorted({str(i.get("code", "")) for i in body.get("issue", []) if isinstance(i, dict)})
        return f" (OperationOutcome: {', '.join(codes)})" if codes else ""
    return ""


class DicomStoreSender:
    """C-STORE SCU of the Basic Text SR and, beside it on the same association, the TID 1500 SR
    of the model's results (`ai_results_sr`; blocking pynetdicom in a thread, with its own
    timeouts). Returns the text SR's SOP Instance UID."""

    kind = "dicom"

    def __init__(self, destination: DicomDestination) -> None:
        self.destination = destination
        self.name = destination.name

    def _store(self, ds: Dataset, *more: Dataset) -> str:
        d = self.destination
        ae = AE(ae_title=d.calling_ae_title)
        for sop_class in dict.fromkeys(str(x.SOPClassUID) for x in (ds, *more)):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = d.retry.timeout_s
        ae.connection_timeout = min(10.0, d.retry.timeout_s)
        assoc = ae.associate(d.host, d.port, ae_title=d.ae_title)
        if assoc.is_rejected:
            raise PermanentError(f"{d.name}: association rejected by {d.ae_title} (check AE titles)", "refused")
        if not assoc.is_established:
            raise TransientDeliveryError(f"{d.name}: no association with {d.ae_title} at {d.host}:{d.port}")
        try:
            for each in (ds, *more):
                if not any(c.abstract_syntax == each.SOPClassUID for c in assoc.accepted_contexts):
                    if each is ds:
                        raise PermanentError(f"{d.name}: {d.ae_title} does not accept SOP class {each.SOPClassUID}", "refused")
                    # the AI results SR is beside the report: a PACS without Comprehensive 3D SR still gets the report
                    log.warning("%s: %s does not accept SOP class %s; the AI results SR is not stored there", d.name, d.ae_title, each.SOPClassUID)
                    continue
                self._check(assoc.send_c_store(each))
        finally:
            assoc.release()
        return str(ds.SOPInstanceUID)

    def _check(self, status: Dataset) -> None:
        d = self.destination
        if not status or "Status" not in status:
            raise TransientDeliveryError(f"{d.name}: no C-STORE response (connection lost or timed out)")
        code = int(status.Status)
        if code == 0x0000 or code in (0xB000, 0xB006, 0xB007):  # success, or stored with coercion/warnings
            return
        if 0xA700 <= code <= 0xA7FF:  # out of resources: the PACS may recover
            raise TransientDeliveryError(f"{d.name}: C-STORE status 0x{code:04X} (out of resources)")
        raise PermanentError(f"{d.name}: C-STORE refused with status 0x{code:04X}", "refused")

    async def send(self, item: ReportVersion, identity: StudyIdentity) -> str:
        ds = sr_for(item, identity)
        results = ai_results_sr(item.report, identity, created=item.issued) if self.destination.ai_results_sr else None
        return await asyncio.to_thread(self._store, ds, *([results] if results is not None else []))

    async def close(self) -> None:
        return None


HttpDestination = TypeVar("HttpDestination", StowDestination, FhirDestination)


class _HttpSender(Generic[HttpDestination]):
    """A destination reached over HTTP: one client (with the destination's timeout) and its auth."""

    def __init__(self, destination: HttpDestination, client: httpx.AsyncClient | None = None) -> None:
        self.destination: HttpDestination = destination
        self.name = destination.name
        self.client = client or httpx.AsyncClient(timeout=destination.retry.timeout_s)
        self.tokens = TokenProvider(destination.auth, self.client)

    async def close(self) -> None:
        await self.client.aclose()


class StowSender(_HttpSender[StowDestination]):
    """STOW-RS (PS3.18 10.5): POST {url}/studies, multipart/related; type="application/dicom"."""

    kind = "stow"


    async def send(self, item: ReportVersion, identity: StudyIdentity) -> str:
        d = self.destination
        data = basic_text_sr_bytes(item.report, identity, created=item.issued, **sr_kwargs(item))
        boundary = f"radalign-{secrets.token_hex(12)}"
        body = b"".join([f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), data, f"\r\n--{boundary}--\r\n".encode()])
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
            **(await self.tokens.headers()),
        }
        response = await self.client.post(f"{str(d.url).rstrip('/')}/studies", content=body, headers=headers)
        if response.status_code == 401:
            self.tokens.invalidate()
        if response.status_code == 409:  # PS3.18: every instance failed; the failure reasons follow
            raise PermanentError(f"{d.name}: STOW-RS refused the SR (HTTP 409{_failure_reasons(response)})", "refused")
        _check_http(response, d.name)
        failed = _failure_reasons(response)
        if failed:
            raise PermanentError(f"{d.name}: STOW-RS did not store the SR{failed}", "refused")
        return _sop_instance_uid(data)


def _failure_reasons(response: httpx.Response) -> str:
    """FailedSOPSequence (0008,1198) FailureReason (0008,1197) codes of a STOW-RS answer."""
    try:
        body: Any = response.json()
    except ValueError:
        return ""
    failed = body.get("00081198", {}).get("Value", []) if isinstance(body, dict) else []
    reasons = [f"0x{int(i.get('00081197', {}).get('Value', [0])[0]):04X}" for i in failed if isinstance(i, dict)]
    return f": failure reasons {', '.join(reasons)}" if failed else ""


def _sop_instance_uid(data: bytes) -> str:
    from io import BytesIO

    from pydicom import dcmread

    return str(dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


class FhirSender(_HttpSender[FhirDestination]):
    """POSTs a transaction Bundle of conditional updates to the FHIR base URL; returns the
    DiagnosticReport's location from the transaction-response."""

    kind = "fhir"


    async def send(self, item: ReportVersion, identity: StudyIdentity) -> str:
        d = self.destination
        bundle = await asyncio.to_thread(
            transaction_bundle, item.report, identity, issued=item.issued, version=d.version, status=item.status,
            patient_system=d.patient_identifier_system, verifier=item.verifier_pn, document_version=item.version,
            signature=item.signature, ai_results=d.ai_results, patient=d.patient, order=d.order,
            order_identifier_system=d.order_identifier_system,
        )
        fhir_version = "5.0" if d.version == "R5" else "4.0"
        headers = {
            "Content-Type": f"application/fhir+json; fhirVersion={fhir_version}",
            "Accept": f"application/fhir+json; fhirVersion={fhir_version}",
            **(await self.tokens.headers()),
        }
        response = await self.client.post(str(d.base_url).rstrip("/"), content=json.dumps(bundle), headers=headers)
        if response.status_code == 401:
            self.tokens.invalidate()
        _check_http(response, d.name)
        try:
            answer = response.json()
            position = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "DiagnosticReport")
            return str(answer["entry"][position]["response"]["location"])
        except (ValueError, KeyError, IndexError, StopIteration, TypeError) as exc:
            raise TransientDeliveryError(f"{d.name}: unexpected transaction-response ({type(exc).__name__})") from None


def build_sender(destination: DicomDestination | StowDestination | FhirDestination | Hl7Destination) -> Sender:
    if isinstance(destination, Hl7Destination):
        from radalign.delivery.hl7 import Hl7Sender

        return Hl7Sender(destination)
    if isinstance(destination, DicomDestination):
        return DicomStoreSender(destination)
    if isinstance(destination, StowDestination):
        return StowSender(destination)
    return FhirSender(destination)
