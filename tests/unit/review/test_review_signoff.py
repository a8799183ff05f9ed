"""Sign-off: edit distance, the final contract, agreement and differences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from review_helpers import drafted

from radalign.labeler import label_sections
from radalign.review.agreement import AgreementTable, agreement_over_time, differences, drafted_states
from radalign.review.signoff import SignOffError, build_final, draft_findings_text, edit_distance, reviewer_key, words
from schemas.events import Certainty, Observation, ReportFinal, ReviewRole


def test_edit_distance_counts_word_operations():
    assert edit_distance(words("No pleural effusion."), words("no pleural effusion.")) == 0
    assert edit_distance(words("No pleural effusion."), words("Small pleural effusion.")) == 1
    assert edit_distance(words("Heart normal."), words("Heart is normal in size.")) == 3
    assert edit_distance([], words("a b")) == 2
    assert edit_distance(words("a b c"), []) == 3


def test_sections_prefill_the_editor_and_flat_findings_are_the_fallback():
    flat = drafted()
    assert draft_findings_text(flat) == flat.findings
    structured = drafted(sections=[{"name": "heart_mediastinum", "sentences": ["The heart is enlarged."]},
                                   {"name": "pleura", "sentences": ["No pleural effusion.", "No pneumothorax."]},
                                   {"name": "lungs", "sentences": []}])
    assert draft_findings_text(structured) == "Heart and mediastinum: The heart is enlarged.\nPleura: No pleural effusion. No pneumothorax."


def test_build_final_accepting_the_draft_records_zero_edits():
    draft = drafted()
    opened = datetime(2026, 11, 30, 12, 5, tzinfo=UTC)
    signed = opened + timedelta(seconds=95)
    final = build_final(draft, findings=draft.findings, impression=draft.impression, signer_key=reviewer_key("dr who", "s3cret"),
                        signer_role=ReviewRole.RADIOLOGIST, version=1, labels=label_sections(draft.findings, draft.impression),
                        signed_at=signed, opened_at=opened)
    assert final.accepted_unchanged and final.edit_distance == 0 and final.status == "final"
    assert final.final_id == f"{draft.report_id}-v1" and final.report_id == draft.report_id
    assert final.signer_key.startswith("rd-") and "who" not in final.signer_key
    assert final.timings[-1].stage == "review" and final.timings[-1].duration_ms == 95_000
    assert final.labels[Observation.CARDIOMEGALY] == Certainty.PRESENT
    # Round trip through the wire contract.
    assert ReportFinal.model_validate_json(final.model_dump_json()) == final


def test_build_final_with_edits_is_amended_from_version_two_and_refuses_empty_text():
    draft = drafted()
    final = build_final(draft, findings=draft.findings + " Small left pleural effusion.", impression="Cardiomegaly and small effusion.",
                        signer_key="rd-0123456789abcdef", signer_role=ReviewRole.RESIDENT, version=2, labels={})
    assert final.status == "amended" and not final.accepted_unchanged
    # findings: 5 tokens added ('small left pleural effusion .'); impression: 3 ('and small effusion')
    assert final.edit_distance == 5 + 3
    assert 0 < final.edit_ratio < 1
    with pytest.raises(SignOffError):
        build_final(draft, findings="  ", impression="x", signer_key="rd-0123456789abcdef", signer_role=ReviewRole.RADIOLOGIST, version=1, labels={})


def test_differences_and_agreement_per_observation():
    draft = drafted(not_assessed=["Fracture"])
    states = drafted_states(draft)
    assert states["Cardiomegaly"] == "present" and states["Fracture"] == "not_assessed"
    signed = {Observation.CARDIOMEGALY: Certainty.PRESENT, Observation.PLEURAL_EFFUSION: Certainty.PRESENT,
              Observation.FRACTURE: Certainty.ABSENT}
    diffs = {d.observation: (d.drafted, d.signed) for d in differences(states, signed)}
    assert diffs == {Observation.PLEURAL_EFFUSION: ("absent", "present"), Observation.FRACTURE: ("not_assessed", "absent")}
    table = AgreementTable()
    table.add(states, signed)
    table.add(states, {Observation.CARDIOMEGALY: Certainty.ABSENT})
    cardio = table.by_observation[Observation.CARDIOMEGALY]
    assert (cardio.compared, cardio.agreed, cardio.rate) == (2, 1, 0.5)
    assert table.by_observation[Observation.EDEMA].unmentioned == 2
    assert table.by_observation[Observation.FRACTURE].not_assessed == 2
    assert table.by_observation[Observation.PNEUMOTHORAX].rate is None
    weeks = agreement_over_time([("2026-W48", states, signed), ("2026-W49", states, {Observation.CARDIOMEGALY: Certainty.ABSENT})])
    assert list(weeks) == ["2026-W48", "2026-W49"]
    assert weeks["2026-W49"].by_observation[Observation.CARDIOMEGALY].rate == 0.0


def test_the_case_store_copy_redacts_the_studys_own_identifiers():
    from radalign.reports.reidentification import StudyIdentity
    from radalign.review.learning import REDACTED, known_identifiers, signed_case_draft

    identity = StudyIdentity(study_key="st-0000000000000001", study_instance_uid="1.2.3.4.5", patient_id="MRN-00123",
                             patient_name="Doe^Jane", accession_number="ACC777")
    draft = drafted()
    final = build_final(draft, findings="Compared with ACC777: Jane Doe (MRN-00123) has a small effusion. Doerr sign absent.",
                        impression="Effusion.", signer_key="rd-0123456789abcdef", signer_role=ReviewRole.RADIOLOGIST, version=1,
                        labels={Observation.PLEURAL_EFFUSION: Certainty.PRESENT})
    case = signed_case_draft(final, "secret", identifiers=known_identifiers(identity))
    assert case.findings == f"Compared with {REDACTED}: {REDACTED} {REDACTED} ({REDACTED}) has a small effusion. Doerr sign absent."
    assert case.patient_key == draft.study.patient_key and case.study_key == draft.study.study_key and case.source == "review-signed"
    assert case.case_key.startswith("case-") and case.labels == {Observation.PLEURAL_EFFUSION: Certainty.PRESENT}
    assert "Jane" in final.findings  # the signed report itself is kept as signed
    assert known_identifiers(None) == []
