"""The signed report's status lifecycle (radalign/review/lifecycle.py): resident -> preliminary,
attending -> final (a co-signature of a preliminary), any change after final -> amended/corrected."""

from __future__ import annotations

import pytest
from review_helpers import drafted

from radalign.review.lifecycle import HL7_RESULT_STATUS, LifecycleError, Transition, is_cosignature, next_transition
from radalign.review.signoff import build_final
from schemas.events import ReportFinal, ReviewRole

RES, ATT = ReviewRole.RESIDENT, ReviewRole.RADIOLOGIST


def test_resident_signs_preliminary_and_the_attending_cosigns_final():
    assert next_transition([], RES) == Transition("preliminary", 1, None)
    assert next_transition([(1, "preliminary")], RES) == Transition("preliminary", 2, 1)  # the resident revises
    history = [(1, "preliminary"), (2, "preliminary")]
    assert next_transition(history, ATT) == Transition("final", 3, 2)
    assert is_cosignature(history, "final") and not is_cosignature([], "final")


def test_attending_signs_final_and_any_later_change_is_amended_or_corrected():
    assert next_transition([], ATT) == Transition("final", 1, None)
    assert next_transition([(1, "final")], ATT) == Transition("amended", 2, 1)
    assert next_transition([(2, "amended"), (1, "final")], ATT, change="corrected") == Transition("corrected", 3, 2)
    assert next_transition([(1, "preliminary"), (2, "final")], ATT) == Transition("amended", 3, 2)


def test_a_resident_cannot_change_a_released_report_and_unknown_changes_are_refused():
    with pytest.raises(LifecycleError, match="only an attending"):
        next_transition([(1, "final")], RES)
    with pytest.raises(LifecycleError):
        next_transition([], ATT, change="appended")  # type: ignore[arg-type]


def test_hl7_result_status_per_fhir_status():
    assert HL7_RESULT_STATUS == {"preliminary": "P", "final": "F", "amended": "C", "corrected": "C"}


def test_build_final_carries_the_status_and_the_replaced_version():
    draft = drafted()
    final = build_final(draft, findings="Heart normal.", impression="Normal.", signer_key="rd-0011223344556677",
                        signer_role=RES, version=1, labels={}, status="preliminary")
    assert final.status == "preliminary" and final.replaces_version is None
    cosigned = build_final(draft, findings="Heart normal.", impression="Normal.", signer_key="rd-0011223344556688",
                           signer_role=ATT, version=2, labels={}, status="final", replaces_version=1)
    assert cosigned.status == "final" and cosigned.replaces_version == 1 and cosigned.final_id.endswith("-v2")
    with pytest.raises(ValueError, match="earlier version"):
        ReportFinal.model_validate(cosigned.model_dump() | {"replaces_version": 2})
