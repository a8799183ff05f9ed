"""The soak's per-sink counting: what makes a study lost, duplicated or merely redelivered."""

from __future__ import annotations

from radalign.reports.reidentification import dicom_study_uid
from radalign.stack.soak_sinks import fhir_studies, fhir_writes, tally


def test_tally_tells_lost_duplicated_and_redelivered_apart() -> None:
    writes = {
        "ok": [("1", "r-ok")],
        "redelivered": [("1", "r-a"), ("1", "r-a"), ("1", "r-a")],
        "duplicated": [("1", "r-b"), ("1", "r-c")],
        "two-versions": [("1", "r-d"), ("2", "r-e")],
        "not-ours": [("1", "r-x")],
    }
    result = tally("topic", {"ok", "redelivered", "duplicated", "two-versions", "lost"}, writes)
    assert (result.delivered, result.lost, result.duplicated, result.redelivered) == (4, 1, 1, 2)


def test_tally_of_an_empty_sink_loses_every_study() -> None:
    assert tally("pacs", {"a", "b"}, {}).lost == 2


def _report(rid: str, uid: str, status: str = "preliminary") -> dict:
    return {"id": rid, "status": status, "imagingStudy": [{"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}}]}


def test_fhir_reports_are_matched_to_studies_by_the_derived_study_uid() -> None:
    sender_ids = {"key-1": "SOAK-run-1", "key-2": "1.2.840.1.2"}
    reports = [_report("dr-1", dicom_study_uid("SOAK-run-1")), _report("dr-2", "1.2.840.1.2"), _report("dr-9", "1.2.3.999")]
    history = {"dr-1": [{"status": "preliminary"}, {"status": "preliminary"}], "dr-2": [{"status": "preliminary"}]}
    writes = fhir_writes(reports, lambda rid: history.get(rid, []), sender_ids)
    assert writes == {"key-1": [("preliminary", "dr-1"), ("preliminary", "dr-1")], "key-2": [("preliminary", "dr-2")]}
    assert fhir_studies(reports, sender_ids) == {"key-1", "key-2"}
    counted = tally("fhir", sender_ids, writes)
    assert (counted.duplicated, counted.redelivered) == (0, 1)


def test_two_fhir_resources_for_one_study_version_are_a_duplicate() -> None:
    sender_ids = {"key-1": "SOAK-run-1"}
    uid = dicom_study_uid("SOAK-run-1")
    reports = [_report("dr-1", uid), _report("dr-2", uid)]
    writes = fhir_writes(reports, lambda rid: [{"status": "preliminary"}], sender_ids)
    assert tally("fhir", sender_ids, writes).duplicated == 1


def test_a_soak_row_fails_on_any_sink_loss_but_a_detected_broker_losing_its_topic_history() -> None:
    from radalign.stack.soak import FaultResult
    from radalign.stack.soak_sinks import SinkTally

    clean = [SinkTally("topic", 40), SinkTally("pacs", 40), SinkTally("fhir", 40)]
    assert not FaultResult("x", accepted=40, reported=40, sinks=clean).failed
    pacs_lost = [SinkTally("topic", 40), SinkTally("pacs", 39, lost=1), SinkTally("fhir", 40)]
    assert FaultResult("x", accepted=40, reported=40, sinks=pacs_lost).failed
    topic_lost = [SinkTally("topic", 38, lost=2), SinkTally("pacs", 40), SinkTally("fhir", 40)]
    assert not FaultResult("broker_kill9", accepted=40, reported=40, sinks=topic_lost, detected="yes").failed
    assert FaultResult("broker_kill9", accepted=40, reported=40, sinks=topic_lost, detected="NO").failed
    assert FaultResult("x", accepted=40, reported=40, sinks=[SinkTally("pacs", 40, duplicated=1)]).failed
