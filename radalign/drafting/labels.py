"""The labeler as the drafter sees it: CheXpert-style labels of report text.

The rule-based labeler lives in `radalign.labeler`; this module only adapts it to one small
interface (so tests and benchmarks can pass another implementation) and caches sentence labels,
which repeat a lot across retrieved reports.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

from schemas.events import Certainty, Labels, Observation


class ReportLabeler(Protocol):
    def sections(self, findings: str, impression: str) -> Labels:
        """Labels of a whole report (impression and findings together)."""
        ...

    def text(self, text: str) -> Labels:
        """Labels of free text (one sentence or several)."""
        ...


class RuleLabeler:
    """`radalign.labeler` behind the `ReportLabeler` interface, with a sentence cache."""

    def __init__(self, cache_size: int = 65536) -> None:
        from radalign import labeler

        self._label_sections = labeler.label_sections
        self.text = lru_cache(maxsize=cache_size)(self._label_text)
        self._label_report = labeler.label_report

    def _label_text(self, text: str) -> Labels:
        return dict(self._label_report(text))

    def sections(self, findings: str, impression: str) -> Labels:
        return dict(self._label_sections(findings, impression))


@lru_cache(maxsize=1)
def default_labeler() -> ReportLabeler:
    return RuleLabeler()


def positives(labels: Labels) -> set[Observation]:
    return {o for o, c in labels.items() if c is Certainty.PRESENT}
