"""Rule-based CheXpert-style labeling of chest X-ray report text (the 14 CheXpert observations).

Public API:
- `label_report(text, uncertainty="keep"|"strict"|"lenient", hierarchy=False) -> dict[Observation, Certainty]`
- `label_sections(findings, impression, ...) -> dict[Observation, Certainty]`
- `assess_report(text, ...) -> ReportLabels` (labels + the observations stated "not assessed")
- `find_mentions(text) -> list[Mention]` (observation, certainty, sentence_index, span, phrase)
- `report_sentences(text)`: the sentence spans that carry labels (context sections such as
  INDICATION, HISTORY, COMPARISON, TECHNIQUE left out)
- `load_iu_reports() -> list[IUReport]` (the IU reports shipped in the torchxrayvision wheel)
"""

from radalign.labeler.engine import (
    CERTAINTY_PRECEDENCE,
    HIERARCHY,
    Mention,
    ReportLabels,
    UncertaintyPolicy,
    aggregate_mentions,
    aggregate_report,
    assess_report,
    find_mentions,
    label_report,
    label_sections,
    report_sentences,
    split_sentences,
)
from radalign.labeler.iu import IUReport, iu_archive_path, load_iu_reports

__all__ = [
    "CERTAINTY_PRECEDENCE",
    "HIERARCHY",
    "IUReport",
    "Mention",
    "ReportLabels",
    "UncertaintyPolicy",
    "aggregate_mentions",
    "aggregate_report",
    "assess_report",
    "find_mentions",
    "iu_archive_path",
    "label_report",
    "label_sections",
    "load_iu_reports",
    "report_sentences",
    "split_sentences",
]
