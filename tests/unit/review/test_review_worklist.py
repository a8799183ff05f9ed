"""Worklist order: urgency first, then P(abnormal), then waiting time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from review_helpers import drafted

from radalign.review.worklist import WorklistItem, abnormal_probability, format_waiting, order_worklist
from schemas.events import Certainty, ConceptScore, Observation

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_abnormal_probability_is_one_minus_no_finding_where_assessed():
    assert abnormal_probability(drafted(no_finding=0.9).concepts) == 1.0 - 0.9
    # No Finding not assessed: the highest finding probability (support devices are not a finding).
    concepts = [
        ConceptScore(observation=Observation.SUPPORT_DEVICES, probability=0.99, state=Certainty.PRESENT),
        ConceptScore(observation=Observation.EDEMA, probability=0.4, state=Certainty.UNCERTAIN),
    ]
    assert abnormal_probability(concepts) == 0.4
    assert abnormal_probability([]) is None


def test_stat_and_review_first_then_probability_then_oldest():
    normal_old = drafted("st-normal-old0001", no_finding=0.95, received_at=T0 - timedelta(hours=3))
    abnormal = drafted("st-abnormal00001", no_finding=0.10, received_at=T0)
    abnormal_older = drafted("st-abnormal-old01", no_finding=0.10, received_at=T0 - timedelta(minutes=5))
    stat_normal = drafted("st-stat-normal001", priority="stat", no_finding=0.90, received_at=T0)
    review_normal = drafted("st-review-norm001", needs_review=True, no_finding=0.97, received_at=T0)
    abstained = drafted("st-abstained00001", no_finding=None, concepts=[], received_at=T0)
    items = order_worklist(WorklistItem.from_report(r) for r in [normal_old, abnormal, stat_normal, abstained, review_normal, abnormal_older])
    assert [i.study_key for i in items] == [
        "st-stat-normal001",  # urgent tier (STAT or review-routed alike): P(abnormal) 0.10 ...
        "st-review-norm001",  # ... before 0.03
        "st-abnormal-old01",  # routine: P(abnormal) 0.9, the older of the two first
        "st-abnormal00001",
        "st-abstained00001",  # nothing assessed: between likely abnormal and likely normal
        "st-normal-old0001",  # likely normal waits, even though it arrived first
    ]


def test_item_summarises_present_findings_and_waiting_time():
    item = WorklistItem.from_report(drafted(no_finding=0.2))
    assert item.present == (Observation.CARDIOMEGALY,)
    assert item.waiting_s(item.received_at + timedelta(minutes=7)) == 420
    assert [format_waiting(s) for s in (42, 420, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)] == ["42 s", "7 min", "3 h 05 min", "2 d 4 h"]
