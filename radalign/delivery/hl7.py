"""The RIS feed: each signed report version as an HL7 v2.5.1 ORU^R01 over MLLP (python-hl7).

One message per version (MSH-10, the message control id, is derived from the report and the
version, and MSH-7 from the signing time, so a resend is byte-identical and a receiver can
drop the duplicate):

    MSH  sending/receiving application and facility, ORU^R01^ORU_R01, P, 2.5.1, UNICODE UTF-8
    PID  the patient, re-identified here (PID-3 MRN with its issuer, PID-5, PID-7, PID-8)
    PV1  patient class U (unknown: the order's visit is the RIS's)
    ORC  RE (observations to follow), the placer / filler order numbers
    OBR  LOINC 18748-4, OBR-7 the study's date and time, OBR-18 the accession number,
         OBR-22 the signing time, OBR-24 RAD, OBR-25 the result status (P preliminary: a
         resident signed; F final; C corrected/amended), OBR-32 the principal result
         interpreter (the signer as the identity provider names them), OBR-33 the residents
         whose preliminary work an attending co-signed
    OBX  TX, one per line: findings (LOINC 59776-5), impression (LOINC 19005-8) and the AI
         assessment line, OBX-11 as OBR-25, OBX-16 the responsible observer

The acknowledgement (original mode) is read and acted on: AA (or CA) is delivered; AE / AR (or
CE / CR) is a refusal of the content, raised as PermanentError with the receiver's reason so the
event is dead-lettered at once (no retry storm); no answer within the timeout, a closed
connection or an ACK for another message is transient: the core retries it a bounded number of
times with backoff (the destination's retry policy), resending the same message.

The RIS takes signed versions only (`signed_only`): the AI's unsigned draft stays in the PACS
and the EHR, marked as such, and never enters the RIS as a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import hl7
from hl7.mllp import InvalidBlockError, open_hl7_connection

from radalign.delivery.destinations import Hl7Destination
from radalign.delivery.version import ReportVersion
from radalign.framework.retry import PermanentError
from radalign.reports.assessment import assessment_line
from radalign.reports.reidentification import StudyIdentity
from radalign.review.lifecycle import HL7_RESULT_STATUS
from radalign.review.signers import Signer

REPORT_CODE = ("18748-4", "Diagnostic imaging study", "LN")
FINDINGS_CODE = ("59776-5", "Procedure findings Narrative", "LN")
IMPRESSION_CODE = ("19005-8", "Radiology Imaging study [Impression] (narrative)", "LN")
ASSESSMENT_CODE = ("AI-ASSESSMENT", "AI model assessment (what the model assessed and did not)", "99RADALIGN")
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


class Hl7TransientError(Exception):
    """No usable acknowledgement this time (timeout, connection lost, another message's ACK)."""


def escape(text: str) -> str:
    """HL7 escape sequences for the delimiters (2.7.4); line breaks become spaces (each line of
    the report is its own OBX)."""
    for char, sequence in _ESCAPES:
        text = text.replace(char, sequence)
    return text.replace("\r", " ").replace("\n", " ")


def dtm(when: datetime) -> str:
    """HL7 DTM with the UTC offset: YYYYMMDDHHMMSS+0000."""
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def message_control_id(item: ReportVersion) -> str:
    """MSH-10: the same for every resend of this version, different for every other version (20 characters)."""
    return "RA" + hashlib.sha256(f"{item.report.report_id}|{item.version}".encode()).hexdigest()[:18].upper()


def _code(code: tuple[str, str, str]) -> str:
    return "^".join(escape(c) for c in code)


def _cnn(person: Signer) -> str:
    """NDL's first component (CNN): ID & family & given & ... & assigning authority (universal id, URI)."""
    parts = [person.identifier, person.family, person.given, "", "", "", "", "", "", person.identifier_system, "URI"]
    return "&".join(escape(p) for p in parts)


def _xcn(person: Signer) -> str:
    """XCN: ID ^ family ^ given ^ ... ^ assigning authority (&universal id&URI)."""
    authority = f"&{escape(person.identifier_system)}&URI"
    return "^".join([escape(person.identifier), escape(person.family), escape(person.given), "", "", "", "", "", authority])


def _xpn(dicom_pn: str) -> str:
    """DICOM PN family^given^middle^prefix^suffix -> HL7 XPN family^given^middle^suffix^prefix."""
    parts = [*dicom_pn.split("=")[0].split("^"), "", "", "", "", ""][:5]
    family, given, middle, prefix, suffix = parts
    return "^".join(escape(p) for p in (family, given, middle, suffix, prefix)).rstrip("^")


def _study_time(identity: StudyIdentity) -> str:
    return f"{identity.study_date}{identity.study_time.split('.')[0]}" if identity.study_date else ""


def _text_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()] or [text.strip()]


def build_oru(item: ReportVersion, identity: StudyIdentity, destination: Hl7Destination) -> hl7.Message:
    """The ORU^R01 of one signed version (see the module docstring). Parsed back with python-hl7
    before it is returned, so a malformed message never leaves."""
    sig = item.signature
    if sig is None:
        raise ValueError("the RIS feed carries signed versions only")
    status = HL7_RESULT_STATUS[item.status]
    d = destination
    msh = "|".join([
        "MSH", "^~\\&", escape(d.sending_application), escape(d.sending_facility), escape(d.receiving_application),
        escape(d.receiving_facility), dtm(item.issued), "", "ORU^R01^ORU_R01", message_control_id(item), d.processing_id, "2.5.1",
        "", "", "", "", "", "UNICODE UTF-8",
    ])
    issuer = escape(identity.issuer_of_patient_id)
    pid3 = f"{escape(identity.patient_id)}^^^{issuer}^MR" if identity.patient_id else ""
    birth = identity.birth_date.strftime("%Y%m%d") if identity.birth_date else ""
    pid = "|".join(["PID", "1", "", pid3, "", _xpn(identity.patient_name), "", birth, escape(identity.sex)])
    pv1 = "PV1|1|U"
    placer, filler = escape(identity.placer_order_number), escape(identity.filler_order_number or identity.accession_number)
    orc = "|".join(["ORC", "RE", placer, filler])
    obr = ["OBR"] + [""] * 33  # obr[i] is OBR-i
    obr[1], obr[2], obr[3], obr[4] = "1", placer, filler, _code(REPORT_CODE)
    obr[7] = _study_time(identity)  # observation date/time: the study's
    obr[18] = escape(identity.accession_number)  # placer field 1: the accession number
    obr[22], obr[24], obr[25] = dtm(item.issued), "RAD", status  # status change time, section, result status
    obr[32] = _cnn(sig.signer)  # principal result interpreter
    obr[33] = "~".join(_cnn(p) for p in sig.co_signers)  # assistant result interpreter(s)
    while obr[-1] == "":
        obr.pop()
    segments = [msh, pid, pv1, orc, "|".join(obr)]
    observer = _xcn(sig.signer)
    n = 0
    sections: Sequence[tuple[tuple[str, str, str], str]] = (
        (FINDINGS_CODE, item.report.findings), (IMPRESSION_CODE, item.report.impression), (ASSESSMENT_CODE, assessment_line(item.report)),
    )
    for sub_id, (code, text) in enumerate(sections, start=1):
        for line in _text_lines(text):
            n += 1
            obx = ["OBX", str(n), "TX", _code(code), str(sub_id), escape(line), "", "", "", "", "", status, "", "", dtm(item.issued), "", observer]
            segments.append("|".join(obx))
    message = hl7.parse("\r".join(segments))
    if str(message.segment("MSH")(10)) != message_control_id(item):
        raise ValueError("the ORU message did not parse back")
    return message


def _field(segment: hl7.Segment, index: int) -> str:
    return str(segment(index)) if len(segment) > index else ""


def check_ack(ack: hl7.Message, control_id: str) -> str:
    """Act on the acknowledgement: return its code when accepted (AA, CA); raise PermanentError
    with the receiver's reason when it refused (AE, AR, CE, CR), Hl7TransientError when it is
    not an answer to this message."""
    try:
        msa = ack.segment("MSA")
    except KeyError:
        raise Hl7TransientError("the answer holds no MSA segment") from None
    code, acked = _field(msa, 1), _field(msa, 2)
    if acked != control_id:
        raise Hl7TransientError(f"the ACK answers message {acked!r}, not {control_id!r}")
    if code in ("AA", "CA"):
        return code
    reasons = [r for r in (_field(msa, 3),) if r]
    with contextlib.suppress(KeyError):
        for err in ack.segments("ERR"):
            reasons += [r for r in (_field(err, 3), _field(err, 8)) if r]
    reason = "; ".join(reasons) or "no reason given"
    if code in ("AE", "AR", "CE", "CR"):
        raise PermanentError(f"the RIS answered {code}: {reason}"[:1000], "refused")
    raise Hl7TransientError(f"unknown acknowledgement code {code!r}")


class Hl7Sender:
    """MLLP client (python-hl7's asyncio streams): one connection per message, the ACK awaited
    within the destination's timeout."""

    kind = "hl7"
    signed_only = True

    def __init__(self, destination: Hl7Destination) -> None:
        self.destination = destination
        self.name = destination.name

    async def send(self, item: ReportVersion, identity: StudyIdentity) -> str:
        d = self.destination
        message = build_oru(item, identity, d)
        control_id = message_control_id(item)
        # inside the core's per-attempt deadline (retry.timeout_s), so the failure says what happened
        timeout = 0.9 * d.retry.timeout_s
        try:
            reader, writer = await asyncio.wait_for(open_hl7_connection(d.host, d.port, encoding="utf-8"), timeout=min(10.0, timeout / 2))
        except (OSError, TimeoutError) as exc:
            raise Hl7TransientError(f"{d.name}: no MLLP connection to {d.host}:{d.port} ({type(exc).__name__})") from None
        try:
            writer.writemessage(message)
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), timeout=timeout)
        except TimeoutError:
            raise Hl7TransientError(f"{d.name}: no ACK within {timeout:.3g} s") from None
        except (OSError, asyncio.IncompleteReadError, InvalidBlockError, ValueError) as exc:
            raise Hl7TransientError(f"{d.name}: the MLLP exchange failed ({type(exc).__name__})") from None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        code = check_ack(ack, control_id)
        return f"{control_id} ({code})"

    async def close(self) -> None:
        return None
