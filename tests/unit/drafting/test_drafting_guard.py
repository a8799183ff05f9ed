from collections.abc import Iterable

import pytest
from drafting_helpers import make_event
from prometheus_client import REGISTRY

from radalign.config import Settings
from radalign.drafting.backends import DraftBackendError, DraftText
from radalign.drafting.concepts import Prediction
from radalign.drafting.context import DraftContext, DraftPrompt
from radalign.drafting.core import DraftingCore
from radalign.drafting.guard import DraftGuard, check_draft
from radalign.drafting.labels import default_labeler
from radalign.labeler import label_sections
from schemas.events import Certainty, GuardVerdict, Observation

LABELS = {
    Observation.CARDIOMEGALY: Certainty.PRESENT,
    Observation.PLEURAL_EFFUSION: Certainty.ABSENT,
    Observation.PNEUMOTHORAX: Certainty.ABSENT,
    Observation.EDEMA: Certainty.UNCERTAIN,
}
CASES = [("iu-1", "The heart is enlarged. No pleural effusion. No pneumothorax.", "Cardiomegaly.")]
GOOD = ("The heart is enlarged. No pleural effusion or pneumothorax.", "Cardiomegaly.")
HALLUCINATED = ("The heart is enlarged. There is a large right pneumothorax.", "Cardiomegaly and pneumothorax.")
OMITTING = ("No pleural effusion. No pneumothorax.", "No acute cardiopulmonary abnormality.")


class ScriptedBackend:
    """Answers with the scripted (findings, impression) pairs or exceptions, in order."""

    def __init__(self, answers: Iterable[tuple[str, str] | Exception], name: str = "scripted:test") -> None:
        self.answers = list(answers)
        self.name = name
        self.prompts: list[DraftPrompt] = []

    async def generate(self, prompt: DraftPrompt) -> DraftText:
        self.prompts.append(prompt)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return DraftText(answer[0], answer[1], self.name, completion_tokens=20, elapsed_s=0.01)


def fallbacks(backend: str, reason: str) -> float:
    return REGISTRY.get_sample_value("radalign_drafting_fallbacks_total", {"backend": backend, "reason": reason}) or 0.0


def context() -> DraftContext:
    return DraftContext.from_event(make_event(LABELS, CASES))


def test_check_draft_finds_unsupported_and_omitted():
    prediction = Prediction.from_scores(make_event(LABELS, CASES).concepts)
    labeler = default_labeler()
    assert check_draft(*GOOD, prediction, labeler).ok
    bad = check_draft(*HALLUCINATED, prediction, labeler)
    assert bad.unsupported == (Observation.PNEUMOTHORAX,) and bad.omitted == ()
    missing = check_draft(*OMITTING, prediction, labeler)
    assert missing.omitted == (Observation.CARDIOMEGALY,) and missing.unsupported == ()
    # uncertain predictions support a positive statement; below the omission threshold nothing is required
    assert check_draft("There is pulmonary edema. The heart is enlarged.", "Cardiomegaly.", prediction, labeler).ok
    assert check_draft(*OMITTING, prediction, labeler, omit_threshold=0.9).ok


async def test_off_topic_text_is_regenerated_with_a_correction():
    off_topic = ("The heart is enlarged. No pleural effusion. Left knee: degenerative change.", "Cardiomegaly. (The previous draft was wrong.)")
    prediction = Prediction.from_scores(make_event(LABELS, CASES).concepts)
    check = check_draft(*off_topic, prediction, default_labeler())
    assert check.off_topic == ("knee", "previous draft") and not check.ok
    backend = ScriptedBackend([off_topic, GOOD])
    result = await DraftGuard().run(context(), backend)
    assert result.guard.verdict is GuardVerdict.REGENERATED and result.draft.findings == GOOD[0]
    assert "remove the text about 'knee'" in backend.prompts[1].messages[1]["content"]
    assert any("off-topic knee" in change for change in result.guard.changes)


async def test_consistent_draft_passes():
    backend = ScriptedBackend([GOOD])
    result = await DraftGuard().run(context(), backend)
    assert result.guard.verdict is GuardVerdict.PASSED and result.draft.findings == GOOD[0]
    assert len(backend.prompts) == 1 and result.fallback_reason is None


async def test_hallucination_is_regenerated_with_corrections():
    backend = ScriptedBackend([HALLUCINATED, GOOD])
    result = await DraftGuard().run(context(), backend)
    assert result.guard.verdict is GuardVerdict.REGENERATED
    assert result.guard.unsupported == [Observation.PNEUMOTHORAX]
    assert result.draft.findings == GOOD[0]
    retry_prompt = backend.prompts[1].messages[1]["content"]
    assert "do not report pneumothorax" in retry_prompt
    assert "do not report" not in backend.prompts[0].messages[1]["content"]


async def test_second_failure_falls_back_to_deterministic_and_is_counted():
    before = fallbacks("scripted:test", "guard")
    backend = ScriptedBackend([OMITTING, OMITTING])
    result = await DraftGuard().run(context(), backend)
    assert result.guard.verdict is GuardVerdict.FELL_BACK and result.guard_fell_back
    assert result.guard.omitted == [Observation.CARDIOMEGALY]
    assert result.draft.drafter == "deterministic"
    labels = label_sections(result.draft.findings, result.draft.impression)
    assert labels[Observation.CARDIOMEGALY] is Certainty.PRESENT
    assert fallbacks("scripted:test", "guard") == before + 1


@pytest.mark.parametrize("when", ["first", "regeneration"])
async def test_backend_error_falls_back(when):
    error = DraftBackendError("timeout", "no answer")
    answers = [error] if when == "first" else [HALLUCINATED, error]
    before = fallbacks("scripted:test", "timeout")
    result = await DraftGuard().run(context(), ScriptedBackend(answers))
    assert result.guard.verdict is GuardVerdict.FELL_BACK and result.fallback_reason == "timeout"
    assert result.draft.drafter == "deterministic" and result.residual.ok
    assert fallbacks("scripted:test", "timeout") == before + 1


async def test_core_routes_guard_fallbacks_and_critical_findings_to_review():
    core = DraftingCore(Settings(), ScriptedBackend([OMITTING, OMITTING]))
    report = await core.draft(make_event(LABELS, CASES))
    assert report.needs_review and report.guard.verdict is GuardVerdict.FELL_BACK
    assert report.prompt_version == "deterministic-v2" and report.drafter == "deterministic"

    # a backend outage alone is not a review reason (without the Edema hedge, which is one)
    unhedged = {o: c for o, c in LABELS.items() if c is not Certainty.UNCERTAIN}
    core = DraftingCore(Settings(), ScriptedBackend([DraftBackendError("http_5xx", "HTTP 503")]))
    report = await core.draft(make_event(unhedged, CASES))
    assert not report.needs_review and report.guard.verdict is GuardVerdict.FELL_BACK and report.critical == []
    core = DraftingCore(Settings(), ScriptedBackend([DraftBackendError("http_5xx", "HTTP 503")]))
    report = await core.draft(make_event(LABELS, CASES))
    assert report.needs_review and report.guard.verdict is GuardVerdict.FELL_BACK and report.critical == []

    # pneumothorax is critical by default; the list is configurable
    critical_labels = {**LABELS, Observation.PNEUMOTHORAX: Certainty.PRESENT}
    report = await DraftingCore(Settings(), None).draft(make_event(critical_labels, CASES))
    assert report.critical == [Observation.PNEUMOTHORAX] and report.needs_review
    report = await DraftingCore(Settings(drafting_critical="Cardiomegaly"), None).draft(make_event(critical_labels, CASES))
    assert report.critical == [Observation.CARDIOMEGALY]


async def test_no_backend_is_counted_as_not_configured():
    before = fallbacks("none", "not_configured")
    result = await DraftGuard().run(context(), None)
    assert result.guard.verdict is GuardVerdict.PASSED and result.draft.drafter == "deterministic"
    assert fallbacks("none", "not_configured") == before + 1


async def test_a_reopened_study_gets_its_own_draft_id_linked_to_the_draft_it_replaces():
    """Issue 26: the same report_id for every version of the study, its own id per draft version."""
    first = make_event(LABELS, CASES)
    reopened = first.model_copy(update={"study": first.study.model_copy(update={"version": 2})})
    core = DraftingCore(Settings(), None)
    one, two = await core.draft(first), await core.draft(reopened)
    assert one.report_id == two.report_id
    assert (one.draft_version, one.replaces_draft_id) == (1, None) and one.draft_id == f"{one.report_id}-d1"
    assert (two.draft_version, two.draft_id, two.replaces_draft_id) == (2, f"{two.report_id}-d2", one.draft_id)
