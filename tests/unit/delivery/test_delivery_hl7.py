"""The RIS feed (radalign/delivery/hl7.py): ORU^R01 building (OBR-25 status, OBR-32/33 signers),
ACK handling, and the sender against a real MLLP listener (python-hl7's server on loopback)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from delivery_helpers import KEY, make_identity, make_report

from radalign.config import Settings
from radalign.delivery.core import DeliveryCore
from radalign.delivery.destinations import Hl7Destination, RetryPolicy, load_config
from radalign.delivery.hl7 import Hl7Sender, Hl7TransientError, build_oru, check_ack, escape, message_control_id
from radalign.delivery.records import MemoryDeliveryRecords
from radalign.delivery.version import ReportVersion, final_version
from radalign.framework.retry import PermanentError
from radalign.loopback.mllp import MllpListener
from radalign.reports.reidentification import StaticReidentifier
from radalign.review.signers import Signer
from radalign.review.signoff import build_final
from schemas.events import Certainty, Observation, ReviewRole

IDP = "https://idp.example/realms/radiology"
RESIDENT = Signer("rd-aaaaaaaaaaaaaaaa", "Rex Resident", "res-7", IDP, "resident", family_name="Resident", given_name="Rex")
ATTENDING = Signer("rd-bbbbbbbbbbbbbbbb", "Ann Attending", "att-1", IDP, "radiologist", family_name="Attending", given_name="Ann")
LABELS = {Observation.CARDIOMEGALY: Certainty.PRESENT}


def version(n: int, status: str, signer: Signer, co_signers=(), impression: str = "Cardiomegaly.", replaces: int | None = None) -> ReportVersion:
    final = build_final(
        make_report(), findings="The heart is enlarged.\nNo pleural effusion | no pneumothorax.", impression=impression,
        signer_key=signer.reviewer_key, signer_role=ReviewRole(signer.role), version=n, labels=LABELS,
        signed_at=datetime(2026, 11, 27, 10 + n, 0, tzinfo=UTC), status=status, replaces_version=replaces,
    )
    return final_version(make_report(), final, signer, list(co_signers))


def destination(port: int = 2575, attempts: int = 3, timeout_s: float = 5.0) -> Hl7Destination:
    return Hl7Destination(name="ris", kind="hl7", host="127.0.0.1", port=port, receiving_facility="HOSP",
                          retry=RetryPolicy(attempts=attempts, base_delay_s=0.01, max_delay_s=0.05, timeout_s=timeout_s))


def test_oru_carries_status_signers_patient_and_text():
    item = version(2, "final", ATTENDING, [RESIDENT], replaces=1)
    msg = build_oru(item, make_identity(), destination())
    msh, obr = msg.segment("MSH"), msg.segment("OBR")
    assert str(msh(9)) == "ORU^R01^ORU_R01" and str(msh(12)) == "2.5.1" and str(msh(18)) == "UNICODE UTF-8"
    assert str(msh(10)) == message_control_id(item) and str(msh(7)) == "20261127120000+0000"
    assert [str(s[0]) for s in msg] == ["MSH", "PID", "PV1", "ORC", "OBR", "OBX", "OBX", "OBX", "OBX"]
    pid = msg.segment("PID")
    assert str(pid(3)) == "MRN-77^^^1.2.3.4.5^MR" and str(pid(5)) == "Roe^Rita"
    assert str(obr(4)) == "18748-4^Diagnostic imaging study^LN" and str(obr(18)) == "ACC-77" and str(obr(24)) == "RAD"
    assert str(obr(25)) == "F" and str(obr(7)) == "20261127085900"
    assert str(obr(32)) == f"att-1&Attending&Ann&&&&&&&{IDP}&URI" and str(obr(33)).startswith("res-7&Resident&Rex")
    obx = msg.segments("OBX")
    assert all(str(o(11)) == "F" and str(o(2)) == "TX" for o in obx)
    assert str(obx[1](5)) == "No pleural effusion \\F\\ no pneumothorax."  # each line its own OBX, delimiters escaped
    assert str(obx[0](3)).startswith("59776-5") and str(obx[2](3)).startswith("19005-8") and str(obx[2](5)) == "Cardiomegaly."
    assert str(obx[0](16)).startswith("att-1^Attending^Ann")
    assert "rd-" not in str(msg)  # never a pseudonym


def test_result_status_p_f_c_and_one_control_id_per_version():
    prelim = version(1, "preliminary", RESIDENT)
    final = version(2, "final", ATTENDING, [RESIDENT], replaces=1)
    amended = version(3, "amended", ATTENDING, impression="Cardiomegaly. Amended.", replaces=2)
    corrected = version(4, "corrected", ATTENDING, impression="Corrected.", replaces=3)
    statuses = [str(build_oru(v, make_identity(), destination()).segment("OBR")(25)) for v in (prelim, final, amended, corrected)]
    assert statuses == ["P", "F", "C", "C"]
    assert str(build_oru(prelim, make_identity(), destination()).segment("OBR")(32)).startswith("res-7&")
    ids = {message_control_id(v) for v in (prelim, final, amended, corrected)}
    assert len(ids) == 4 and message_control_id(final) == message_control_id(version(2, "final", ATTENDING, [RESIDENT], replaces=1))
    assert str(build_oru(final, make_identity(), destination())) == str(build_oru(final, make_identity(), destination()))  # a resend is identical
    with pytest.raises(ValueError):
        build_oru(ReportVersion(make_report()), make_identity(), destination())
    assert escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"


def test_ack_handling():
    import hl7

    item = version(2, "final", ATTENDING)
    msg = build_oru(item, make_identity(), destination())
    assert check_ack(msg.create_ack("AA"), message_control_id(item)) == "AA"
    refused = msg.create_ack("AE")
    refused.segment("MSA").assign_field("Unknown patient", 3)
    with pytest.raises(PermanentError, match="AE: Unknown patient") as info:
        check_ack(refused, message_control_id(item))
    assert info.value.error_type == "refused"
    with pytest.raises(PermanentError, match="AR"):
        check_ack(msg.create_ack("AR"), message_control_id(item))
    with pytest.raises(Hl7TransientError, match="answers message"):
        check_ack(msg.create_ack("AA"), "RA-some-other")
    with pytest.raises(Hl7TransientError):
        check_ack(hl7.parse("MSH|^~\\&|RIS|HOSP|||20261127||ACK|1|P|2.5.1"), message_control_id(item))


def test_destination_config_accepts_hl7():
    config = load_config("destinations:\n  - {name: ris, kind: hl7, host: ris.example, port: 2575, receiving_application: RIS}\n")
    (d,) = config.destinations
    assert isinstance(d, Hl7Destination) and d.retry.timeout_s == 10.0


@pytest.fixture
def listener():
    servers: list[MllpListener] = []

    def make(**kw) -> MllpListener:
        server = MllpListener(**kw)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def _core(sender, records=None):
    return DeliveryCore({sender.name: sender}, records or MemoryDeliveryRecords(), StaticReidentifier({KEY: make_identity()}), Settings())


async def test_delivered_on_aa_once_per_version_and_drafts_stay_out_of_the_ris(listener):
    ris = listener()
    core = _core(Hl7Sender(destination(ris.port)))
    assert [r.outcome for r in await core.deliver(ReportVersion(make_report()))] == ["skipped"]  # the AI draft
    final = version(1, "final", ATTENDING)
    (result,) = await core.deliver(final)
    assert result.outcome == "delivered" and result.detail == f"{message_control_id(final)} (AA)"
    assert [r.outcome for r in await core.deliver(final)] == ["skipped"]  # redelivered event: nothing resent
    (received,) = ris.messages()
    assert str(received.segment("MSH")(10)) == message_control_id(final) and str(received.segment("OBR")(25)) == "F"


async def test_refusal_is_dead_lettered_with_the_reason_without_retrying(listener):
    ris = listener(ack_code="AR", reason="Order not found")
    records = MemoryDeliveryRecords()
    core = _core(Hl7Sender(destination(ris.port, attempts=5)), records)
    final = version(1, "final", ATTENDING)
    with pytest.raises(PermanentError, match="Order not found") as info:
        await core.deliver(final)
    assert info.value.error_type == "refused"
    assert len(ris.messages()) == 1  # no retry storm
    row = records.rows[(final.report.report_id, "ris")]
    assert row.status == "failed" and row.attempts == 1 and "AR: Order not found" in row.last_error


async def test_no_answer_is_retried_a_bounded_number_of_times_with_the_same_message(listener):
    from radalign.delivery.core import DeliveryFailed

    silent = listener(silent=True)
    core = _core(Hl7Sender(destination(silent.port, attempts=2, timeout_s=0.3)))
    final = version(1, "final", ATTENDING)
    with pytest.raises(DeliveryFailed, match="no ACK"):
        await core.deliver(final)
    assert len(silent.messages()) == 2
    # a receiver that drops the first connection: the retry resends the identical message and succeeds
    flaky = listener(fail_first=1)
    core = _core(Hl7Sender(destination(flaky.port, attempts=3, timeout_s=0.3)))
    (result,) = await core.deliver(final)
    first, second = flaky.messages()
    assert result.outcome == "delivered" and str(first) == str(second)


async def test_nobody_listening_is_transient():
    from radalign.delivery.core import DeliveryFailed
    from radalign.testing.stack import free_port

    core = _core(Hl7Sender(destination(free_port(), attempts=2, timeout_s=1)))
    with pytest.raises(DeliveryFailed, match="no MLLP connection"):
        await core.deliver(version(1, "final", ATTENDING))
