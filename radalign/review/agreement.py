"""Drafted concepts against the signed report's labels, per observation.

An observation counts where both sides make a claim: the model assessed it (present / uncertain /
absent) and the signed text mentions it (the labeler's present / uncertain / absent). An
observation the signed text does not mention is neither agreement nor disagreement (CheXpert's
blank); one the model did not assess is counted as `not_assessed`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from schemas.events import Certainty, Observation, ReportDrafted

NOT_ASSESSED = "not_assessed"


def drafted_states(report: ReportDrafted) -> dict[str, str]:
    """observation name -> the draft's state, or 'not_assessed'."""
    states = {c.observation.value: c.state.value for c in report.concepts}
    for obs in report.not_assessed:
        states.setdefault(obs.value, NOT_ASSESSED)
    return states


@dataclass(frozen=True)
class Difference:
    observation: Observation
    drafted: str  # present / uncertain / absent / not_assessed
    signed: str  # present / uncertain / absent


def differences(drafted: Mapping[str, str], signed: Mapping[Observation, Certainty]) -> list[Difference]:
    """Observations the signed report mentions with another state than the draft's (not-assessed
    ones included: the report teaches something the model did not claim)."""
    out = []
    for obs in Observation:
        if obs not in signed:
            continue
        draft_state = drafted.get(obs.value, NOT_ASSESSED)
        if draft_state != signed[obs].value:
            out.append(Difference(obs, draft_state, signed[obs].value))
    return out


@dataclass
class ObservationAgreement:
    compared: int = 0
    agreed: int = 0
    not_assessed: int = 0
    unmentioned: int = 0

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


@dataclass
class AgreementTable:
    by_observation: dict[Observation, ObservationAgreement] = field(default_factory=lambda: {o: ObservationAgreement() for o in Observation})
    reports: int = 0

    def add(self, drafted: Mapping[str, str], signed: Mapping[Observation, Certainty]) -> None:
        self.reports += 1
        for obs in Observation:
            row = self.by_observation[obs]
            draft_state = drafted.get(obs.value, NOT_ASSESSED)
            if draft_state == NOT_ASSESSED:
                row.not_assessed += 1
            elif obs not in signed:
                row.unmentioned += 1
            else:
                row.compared += 1
                row.agreed += int(draft_state == signed[obs].value)


def agreement_over_time(rows: Iterable[tuple[str, Mapping[str, str], Mapping[Observation, Certainty]]]) -> dict[str, AgreementTable]:
    """(period label, drafted states, signed labels) rows -> one table per period, in first-seen order."""
    tables: dict[str, AgreementTable] = defaultdict(AgreementTable)
    for period, drafted, signed in rows:
        tables[period].add(drafted, signed)
    return dict(tables)
