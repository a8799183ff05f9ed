"""The AI assessment line that ends every delivered text (FHIR presentedForm and narrative, the
DICOM SR): which observations the model assessed and which it did not, so a sentence such as
"No acute abnormality among the assessed findings." never reaches the PACS or the EHR without
saying what was assessed.

    AI assessment: assessed Cardiomegaly, Pleural Effusion, No Finding; not assessed: Pneumonia, ... .
    AI assessment: none (reason: no frontal view); the model made no finding claim.

Deterministic (CheXpert order, the observation names of `schemas.events.Observation`) and free
of identifiers: it reads only the report's concepts, `not_assessed` and `ood`.
"""

from __future__ import annotations

from radalign.drafting.phrases import load_phrase_table
from schemas.events import Observation, ReportDrafted

PREFIX = "AI assessment:"


def assessed_observations(report: ReportDrafted) -> list[Observation]:
    """Observations the model assessed (a state in `concepts`, not listed as not assessed), in
    CheXpert order; none when it abstained on the image (`ood`)."""
    if report.ood is not None:
        return []
    skipped = set(report.not_assessed)
    scored = {c.observation for c in report.concepts}
    return [o for o in Observation if o in scored and o not in skipped]


def not_assessed_observations(report: ReportDrafted) -> list[Observation]:
    """Every other observation, in CheXpert order: those the report lists as not assessed and any
    the model gave no state (no claim is made about any of them)."""
    assessed = set(assessed_observations(report))
    return [o for o in Observation if o not in assessed]


def ood_reason_text(reason: str) -> str:
    """The phrase table's wording of an OOD reason ("lateral_only" -> "no frontal view")."""
    return load_phrase_table().ood_reasons.get(reason) or reason.replace("_", " ")


def assessment_line(report: ReportDrafted) -> str:
    """One plain line: what the model assessed and what it did not, or why it assessed nothing."""
    if report.ood is not None:
        return f"{PREFIX} none (reason: {ood_reason_text(report.ood.reason)}); the model made no finding claim."
    assessed = assessed_observations(report)
    if not assessed:
        return f"{PREFIX} none; the model made no finding claim."
    skipped = not_assessed_observations(report)
    names = ", ".join(o.value for o in assessed)
    rest = ", ".join(o.value for o in skipped) if skipped else "none"
    return f"{PREFIX} assessed {names}; not assessed: {rest}."
