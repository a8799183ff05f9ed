"""Sign-off: the edited draft becomes a `ReportFinal` (versioned, with who, when and how much changed)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from radalign.pseudonymizer import Pseudonymizer
from schemas.events import Certainty, Observation, ReportDrafted, ReportFinal, ReviewRole, StageTiming

SECTION_TITLES: dict[str, str] = {
    "support_devices": "Support devices",
    "heart_mediastinum": "Heart and mediastinum",
    "lungs": "Lungs",
    "pleura": "Pleura",
    "bones_soft_tissues": "Bones and soft tissues",
}
MAX_TEXT = 20000
_WORD = re.compile(r"[A-Za-z0-9]+(?:[.'-][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")


class SignOffError(ValueError):
    """The sign-off cannot be accepted as sent (empty section, too long, stale draft)."""


def draft_findings_text(report: ReportDrafted) -> str:
    """What the editor starts from: the structured sections, one per line, when the drafter
    wrote them; the flat findings otherwise."""
    lines = [f"{SECTION_TITLES[s.name]}: {' '.join(s.sentences)}" for s in report.sections if s.sentences]
    return "\n".join(lines) if lines else report.findings


def words(text: str) -> list[str]:
    """Case-folded words and punctuation marks: 'No effusion.' -> ['no', 'effusion', '.']."""
    return [w.lower() for w in _WORD.findall(text)]


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between token sequences (insert, delete, substitute: cost 1).

    Hand-written (two-row dynamic programme): the project has no string-distance dependency,
    and reports are a few hundred words, so O(len(a) * len(b)) is microseconds to milliseconds."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, token_a in enumerate(a, 1):
        current = [i]
        for j, token_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (token_a != token_b)))
        previous = current
    return previous[-1]


def report_words(findings: str, impression: str) -> list[str]:
    return [*words(findings), "|", *words(impression)]


def reviewer_key(login: str, secret: str) -> str:
    """The signer's pseudonym in events (`rd-<hex16>`): the same HMAC as every other pseudonym."""
    return Pseudonymizer(secret).reviewer_key(login)


def build_final(
    draft: ReportDrafted,
    *,
    findings: str,
    impression: str,
    signer_key: str,
    signer_role: ReviewRole,
    version: int,
    labels: Mapping[Observation, Certainty],
    signed_at: datetime | None = None,
    opened_at: datetime | None = None,
    status: str | None = None,
    replaces_version: int | None = None,
) -> ReportFinal:
    """The signed report. Raises SignOffError for empty or oversized text. `status` and
    `replaces_version` come from the lifecycle (`radalign.review.lifecycle.next_transition`);
    without them version 1 is final and a later one amends the one before."""
    findings, impression = findings.strip(), impression.strip()
    if not findings or not impression:
        raise SignOffError("both FINDINGS and IMPRESSION must hold text to sign")
    if len(findings) > MAX_TEXT or len(impression) > MAX_TEXT:
        raise SignOffError(f"a section is longer than {MAX_TEXT} characters")
    signed_at = signed_at or datetime.now(UTC)
    before = report_words(draft_findings_text(draft), draft.impression)
    after = report_words(findings, impression)
    distance = edit_distance(before, after)
    timings = []
    if opened_at is not None:
        timings.append(StageTiming(stage="review", started_at=opened_at, duration_ms=max(0.0, (signed_at - opened_at).total_seconds() * 1000)))
    return ReportFinal(
        study=draft.study,
        report_id=draft.report_id,
        final_id=f"{draft.report_id}-v{version}",
        version=version,
        status=status or ("final" if version == 1 else "amended"),  # type: ignore[arg-type]  # one of the contract's statuses (the lifecycle's)
        replaces_version=(replaced := replaces_version if status else (version - 1 if version > 1 else None)),
        replaces_id=f"{draft.report_id}-v{replaced}" if replaced is not None else draft.draft_id,
        findings=findings,
        impression=impression,
        signer_key=signer_key,
        signer_role=signer_role,
        signed_at=signed_at,
        accepted_unchanged=distance == 0,
        edit_distance=distance,
        edit_ratio=round(distance / max(1, len(before) - 1), 4),
        labels=dict(labels),
        drafter=draft.drafter,
        model_version=draft.model_version,
        timings=[*draft.timings, *timings],
    )
