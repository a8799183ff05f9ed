"""Worklist order: STAT and review-routed studies first, then the likeliest abnormal films, then the oldest.

Triage by the model's calibrated probability of an abnormal film is what shortens turnaround of
abnormal studies (flagged-first reading); urgency the referrer or the guard declared always
comes first, and waiting time breaks ties so nothing starves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas.events import Certainty, ConceptScore, Observation, Priority, ReportDrafted

#: Used when the model assessed nothing that speaks to normality (it abstained on the film):
#: no evidence either way, so the study sorts between likely-abnormal and likely-normal films
#: instead of last, where an unreadable film would wait longest.
UNKNOWN_ABNORMAL_PROBABILITY = 0.5


def abnormal_probability(concepts: Sequence[ConceptScore]) -> float | None:
    """1 - P(No Finding) where No Finding was assessed; else the highest calibrated probability
    among the assessed findings; None when nothing was assessed."""
    by_obs = {c.observation: c for c in concepts}
    no_finding = by_obs.get(Observation.NO_FINDING)
    if no_finding is not None:
        return 1.0 - no_finding.probability
    findings = [c.probability for c in concepts if c.observation not in (Observation.NO_FINDING, Observation.SUPPORT_DEVICES)]
    return max(findings) if findings else None


@dataclass(frozen=True)
class WorklistItem:
    study_key: str
    report_id: str
    pipeline_version: str
    priority: Priority
    needs_review: bool
    critical: tuple[Observation, ...]
    received_at: datetime
    abnormal_probability: float | None
    present: tuple[Observation, ...]  # the draft's present findings, for the list's summary column
    view_position: str | None
    drafter: str

    @property
    def urgent(self) -> bool:
        return self.priority == Priority.STAT or self.needs_review

    def waiting_s(self, now: datetime) -> float:
        return max(0.0, (now - self.received_at).total_seconds())

    @classmethod
    def from_report(cls, report: ReportDrafted) -> WorklistItem:
        return cls(
            study_key=report.study.study_key,
            report_id=report.report_id,
            pipeline_version=report.study.pipeline_version,
            priority=report.study.priority,
            needs_review=report.needs_review,
            critical=tuple(report.critical),
            received_at=report.study.received_at,
            abnormal_probability=abnormal_probability(report.concepts),
            present=tuple(c.observation for c in report.concepts if c.state == Certainty.PRESENT and c.observation != Observation.NO_FINDING),
            view_position=report.view_position,
            drafter=report.drafter,
        )


def order_key(item: WorklistItem) -> tuple[int, float, datetime]:
    p = item.abnormal_probability
    return (0 if item.urgent else 1, -(UNKNOWN_ABNORMAL_PROBABILITY if p is None else p), item.received_at)


def order_worklist(items: Iterable[WorklistItem]) -> list[WorklistItem]:
    """Urgent first; within a tier, the likeliest abnormal first; then the longest waiting."""
    return sorted(items, key=order_key)


def format_waiting(seconds: float) -> str:
    """`42 s`, `7 min`, `3 h 05 min`, `2 d 4 h`: turnaround as a reader scans it."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
