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

# The package's API is the engine's (its `__all__`, kept in one place) plus the IU reports loader.
from radalign.labeler import engine
from radalign.labeler.engine import *  # noqa: F403  # exactly engine.__all__
from radalign.labeler.iu import IUReport, iu_archive_path, load_iu_reports

__all__ = ["IUReport", "iu_archive_path", "load_iu_reports"]
__all__ += engine.__all__
