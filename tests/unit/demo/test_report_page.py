from __future__ import annotations

from radalign.report_page import render_reports_page
from schemas.events import ReportDrafted
from schemas.examples import EXAMPLES


def test_page_shows_each_concept_as_a_bar_and_escapes_text() -> None:
    payload = dict(EXAMPLES["report_drafted"][0])
    payload["findings"] = "Heart <enlarged> & more."
    report = ReportDrafted.model_validate(payload)
    page = render_reports_page([report])
    assert "Heart &lt;enlarged&gt; &amp; more." in page and "<enlarged>" not in page
    for concept in report.concepts:
        assert concept.observation.value in page
    # Bar width follows the probability (0.81 -> 162 px of 200).
    assert "width:162px" in page
    assert page.count("class='card'") == 1
