"""A static HTML page of drafted reports with per-concept score bars and stage timings.

People read scores faster as bars than as numbers; the demo writes this page next to its output.
Plain HTML and inline CSS: it opens from disk, without a server or scripts.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from schemas.events import Certainty, ReportDrafted

_STATE_COLOUR = {Certainty.PRESENT: "#c0392b", Certainty.UNCERTAIN: "#e67e22", Certainty.ABSENT: "#7f8c8d"}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
.card{border:1px solid #ccc;border-radius:6px;padding:1em 1.2em;margin:1em 0}
.bar{height:0.9em;display:inline-block;vertical-align:middle}
td{padding:2px 8px;vertical-align:top} .dim{color:#777;font-size:90%} .review{color:#c0392b;font-weight:bold}
"""


def _concept_rows(report: ReportDrafted) -> str:
    rows = []
    for c in sorted(report.concepts, key=lambda c: -c.probability):
        width = max(1, round(c.probability * 200))
        colour = _STATE_COLOUR[c.state]
        rows.append(
            f"<tr><td>{escape(c.observation.value)}</td>"
            f"<td><span class='bar' style='width:{width}px;background:{colour}'></span> {c.probability:.2f}</td>"
            f"<td>{escape(c.state.value)}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def _timings(report: ReportDrafted) -> str:
    return " · ".join(f"{escape(t.stage)} {t.duration_ms:.0f} ms" for t in report.timings)


def render_reports_page(reports: list[ReportDrafted], title: str = "RadAlign Stream: drafted reports") -> str:
    cards = []
    for r in reports:
        review = " <span class='review'>REVIEW</span>" if r.needs_review else ""
        cards.append(
            f"<div class='card'><h3>{escape(r.study.study_key)} · {escape(r.study.priority.value)} · view "
            f"{escape(r.view_position or '?')}{review}</h3>"
            f"<p><b>FINDINGS:</b> {escape(r.findings)}</p><p><b>IMPRESSION:</b> {escape(r.impression)}</p>"
            f"{_concept_rows(r)}"
            f"<p class='dim'>drafter {escape(r.drafter)} · prompt {escape(r.prompt_version)} · model "
            f"{escape(r.model_name)} {escape(r.model_version)} · guard {escape(r.guard.verdict.value)} · cases "
            f"{escape(', '.join(r.case_keys))}</p><p class='dim'>{_timings(r)}</p></div>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1><p class='dim'>Drafts for a radiologist to edit; not for clinical use. "
        f"Bars: concept probability (red present, orange uncertain, grey absent).</p>{''.join(cards)}</body></html>"
    )


def write_reports_page(reports: list[ReportDrafted], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_reports_page(reports), encoding="utf-8")
    return path
