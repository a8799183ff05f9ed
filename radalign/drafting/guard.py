"""The hallucination guard: a draft may say only what this study's concepts support.

The guard is independent of the drafter: it reads the draft itself.
- The labeler (the same one that labels the knowledge base) reads the draft, which is compared
  with the concept model's prediction: a positive finding the concepts do not support is
  `unsupported_finding`; a finding assessed present (with at least `omit_threshold` probability)
  that the draft does not state is `omitted_finding`; any positive or hedged statement about an
  observation the model did not assess (every observation, when it abstained on the image: OOD)
  is `not_assessed_claim`.
- Each sentence is checked for what nothing in the study supports: laterality and location
  (right, left, bilateral, lobes, bases ...), sizes and measurements, comparisons and time
  (prior, unchanged, new, interval, improved ...), device positions, history, and other body
  parts (`radalign.drafting.sanitise`). Words the study supports can be allowed
  (`DraftContext.supported_words`; none by default: the concept model carries no location).
Every rejection is counted by reason (`radalign_drafting_guard_rejections_total`). A failing LLM
draft gets one constrained regeneration (the prompt lists what to fix); if that fails too, or the
backend fails, the structured deterministic draft is delivered instead.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

from radalign.drafting.backends import DraftBackend, DraftBackendError, DraftText
from radalign.drafting.concepts import NAMES, Prediction
from radalign.drafting.context import DraftContext, PromptForm
from radalign.drafting.deterministic import NAME, DeterministicDrafter
from radalign.drafting.labels import ReportLabeler, default_labeler
from radalign.drafting.metrics import FALLBACKS, GUARD_REJECTIONS, GUARD_VERDICTS
from radalign.drafting.prompt import DEFAULT_PROMPT_VERSION, build_prompt
from radalign.drafting.sanitise import unsafe_words
from radalign.drafting.text import off_topic_phrases, split_sentences
from schemas.events import Certainty, Guard, GuardRejection, GuardVerdict, Observation

log = logging.getLogger(__name__)

NO_BACKEND = "none"


@dataclass(frozen=True)
class GuardCheck:
    unsupported: tuple[Observation, ...] = ()
    omitted: tuple[Observation, ...] = ()
    off_topic: tuple[str, ...] = ()
    rejections: tuple[GuardRejection, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.omitted and not self.off_topic and not self.rejections

    @property
    def reasons(self) -> list[str]:
        """The distinct rejection reasons, in first-seen order."""
        return list(dict.fromkeys(r.reason for r in self.rejections))

    def corrections(self, prediction: Prediction) -> list[str]:
        """What the regeneration prompt asks to fix, one line each."""
        lines = [
            f"The draft describes {NAMES[o]} as present, but the image findings do not support it: do not report {NAMES[o]}."
            for o in self.unsupported
        ]
        lines += [
            f"The draft omits {NAMES[o]}, predicted PRESENT (score {prediction.probabilities.get(o, 0.0):.2f}): state it."
            for o in self.omitted
        ]
        lines += [f"Describe only this chest radiograph: remove the text about {phrase!r}." for phrase in self.off_topic]
        lines += [
            f"The model did not assess {r.detail}: say nothing about it." for r in self.rejections if r.reason == "not_assessed_claim"
        ]
        words = sorted({f"{r.detail!r} ({r.reason.replace('_', ' ')})" for r in self.rejections if r.reason in _WORD_REASONS})
        if words:
            lines.append("Nothing in this study supports these words; remove them: " + ", ".join(words) + ".")
        return lines

    def describe(self) -> str:
        parts = []
        if self.unsupported:
            parts.append("unsupported " + ", ".join(o.value for o in self.unsupported))
        if self.omitted:
            parts.append("omitted " + ", ".join(o.value for o in self.omitted))
        if self.off_topic:
            parts.append("off-topic " + ", ".join(self.off_topic))
        others = [r for r in self.rejections if r.reason in _WORD_REASONS or r.reason == "not_assessed_claim"]
        if others:
            parts.append(", ".join(sorted({f"{r.reason} {r.detail!r}" for r in others})))
        return "; ".join(parts) or "consistent"


#: Reasons found by words in a sentence (the rest come from the labeler).
_WORD_REASONS = frozenset({"laterality", "location", "measurement", "comparison", "temporal", "device_position", "history"})


def _sentence_with(sentences: list[str], labeler: ReportLabeler, observation: Observation, states: set[Certainty]) -> str:
    """The first sentence in which the labeler reads `observation` in one of `states` ("" if none alone)."""
    return next((s for s in sentences if labeler.text(s).get(observation) in states), "")


def check_draft(
    findings: str,
    impression: str,
    prediction: Prediction,
    labeler: ReportLabeler,
    *,
    omit_threshold: float = 0.0,
    supported_words: Collection[str] = (),
) -> GuardCheck:
    labels = labeler.sections(findings, impression)
    sentences = split_sentences(findings) + split_sentences(impression)
    supported = {Certainty.PRESENT, Certainty.UNCERTAIN}
    rejections: list[GuardRejection] = []
    # "No Finding" is judged through the specific findings (a draft that calls an abnormal study
    # normal omits its findings), not on its own.
    not_assessed = tuple(
        o for o in Observation
        if o is not Observation.NO_FINDING and not prediction.assessed(o) and labels.get(o) in supported
    )
    for o in not_assessed:
        rejections.append(GuardRejection(reason="not_assessed_claim", sentence=_sentence_with(sentences, labeler, o, supported), detail=NAMES[o]))
    unsupported = tuple(
        o for o in Observation
        if o is not Observation.NO_FINDING and labels.get(o) is Certainty.PRESENT and prediction.assessed(o)
        and prediction.states.get(o) not in supported
    )
    for o in unsupported:
        rejections.append(GuardRejection(reason="unsupported_finding", sentence=_sentence_with(sentences, labeler, o, {Certainty.PRESENT}), detail=NAMES[o]))
    omitted = tuple(
        o for o in prediction.findings(Certainty.PRESENT)
        if prediction.probabilities.get(o, 1.0) >= omit_threshold and labels.get(o) is not Certainty.PRESENT
    )
    rejections += [GuardRejection(reason="omitted_finding", detail=NAMES[o]) for o in omitted]
    for sentence in sentences:
        for reason, words in unsafe_words(sentence, allowed=supported_words):
            if reason == "off_topic":
                continue  # reported through `off_topic` below (one list for the whole draft)
            rejections.append(GuardRejection(reason=reason, sentence=sentence[:2000], detail=words[:500]))  # type: ignore[arg-type]  # reason is one of the Literal values the checks produce
    off_topic = off_topic_phrases(f"{findings}\n{impression}")
    rejections += [GuardRejection(reason="off_topic", detail=phrase) for phrase in off_topic]
    flagged = set(unsupported) | set(not_assessed)
    return GuardCheck(tuple(o for o in Observation if o in flagged), omitted, off_topic, tuple(rejections))


@dataclass(frozen=True)
class GuardedDraft:
    draft: DraftText
    guard: Guard
    #: Why the deterministic drafter wrote the report instead of the backend (a metric label), or None.
    fallback_reason: str | None
    #: Problems left in the delivered draft (non-empty only if even the fallback disagrees).
    residual: GuardCheck = field(default_factory=GuardCheck)
    attempts: int = 0

    @property
    def guard_fell_back(self) -> bool:
        """The LLM's drafts failed the guard twice: a human should look at this one."""
        return self.fallback_reason == "guard"


class DraftGuard:
    def __init__(
        self,
        labeler: ReportLabeler | None = None,
        fallback: DeterministicDrafter | None = None,
        *,
        omit_threshold: float = 0.0,
        prompt_version: str = DEFAULT_PROMPT_VERSION,
        max_tokens: int = 256,
    ) -> None:
        self.labeler = labeler or default_labeler()
        self.fallback = fallback or DeterministicDrafter(self.labeler)
        self.omit_threshold = omit_threshold
        self.prompt_version = prompt_version
        self.max_tokens = max_tokens

    def check(self, draft: DraftText, prediction: Prediction, supported_words: Collection[str] = ()) -> GuardCheck:
        return check_draft(
            draft.findings, draft.impression, prediction, self.labeler, omit_threshold=self.omit_threshold, supported_words=supported_words
        )

    def _checked(self, draft: DraftText, context: DraftContext, backend_name: str) -> GuardCheck:
        """Check a draft and count its rejection reasons."""
        result = self.check(draft, context.prediction, context.supported_words)
        for reason in result.reasons:
            GUARD_REJECTIONS.labels(backend=backend_name, reason=reason).inc()
        return result

    def _prompt(self, context: DraftContext, form: PromptForm, corrections: list[str] | None = None):
        return build_prompt(
            context, version=self.prompt_version, form=form, max_tokens=self.max_tokens, corrections=corrections or (),
            labeler=self.labeler if form == "completion" else None,
        )

    def _deterministic(
        self, context: DraftContext, backend_name: str, reason: str | None, verdict: GuardVerdict,
        changes: list[str], first: GuardCheck, attempts: int,
    ) -> GuardedDraft:
        draft = self.fallback.draft(context)
        residual = self._checked(draft, context, NAME)
        if not residual.ok:
            changes.append(f"deterministic draft still disagrees with the concepts ({residual.describe()})")
            log.warning("deterministic draft disagrees with the concepts: %s", residual.describe())
        if reason is not None:
            FALLBACKS.labels(backend=backend_name, reason=reason).inc()
        GUARD_VERDICTS.labels(backend=backend_name, verdict=verdict.value).inc()
        guard = Guard(
            verdict=verdict, unsupported=list(first.unsupported), omitted=list(first.omitted), changes=changes,
            rejections=list(first.rejections or residual.rejections),
        )
        return GuardedDraft(draft, guard, reason, residual, attempts)

    async def run(self, context: DraftContext, backend: DraftBackend | None, *, form: PromptForm = "chat") -> GuardedDraft:
        """Draft with `backend` under the guard; the deterministic drafter when `backend` is None."""
        if backend is None or isinstance(backend, DeterministicDrafter):
            # Counted as a fallback (reason not_configured) so dashboards show which share of
            # reports no LLM wrote; the verdict stays "passed": nothing failed.
            FALLBACKS.labels(backend=NO_BACKEND, reason="not_configured").inc()
            return self._deterministic(context, NO_BACKEND if backend is None else backend.name, None, GuardVerdict.PASSED, [], GuardCheck(), 0)
        if context.prediction.ood is not None:
            # The model abstained on the image: there is nothing for an LLM to word, and a prompt
            # would describe a chest film the model did not assess. The "not assessed" draft is the report.
            return self._deterministic(context, backend.name, None, GuardVerdict.PASSED, ["the model abstained on the image: no LLM call"], GuardCheck(), 0)
        changes: list[str] = []
        try:
            draft = await backend.generate(self._prompt(context, form))
        except DraftBackendError as exc:
            changes.append(f"{backend.name} failed ({exc.reason}); deterministic drafter used")
            return self._deterministic(context, backend.name, exc.reason, GuardVerdict.FELL_BACK, changes, GuardCheck(), 1)
        first = self._checked(draft, context, backend.name)
        if first.ok:
            GUARD_VERDICTS.labels(backend=backend.name, verdict=GuardVerdict.PASSED.value).inc()
            return GuardedDraft(draft, Guard(verdict=GuardVerdict.PASSED), None, GuardCheck(), 1)

        changes.append(f"draft rejected ({first.describe()}); regenerated with corrections")
        try:
            second = await backend.generate(self._prompt(context, form, first.corrections(context.prediction)))
        except DraftBackendError as exc:
            changes.append(f"{backend.name} failed on regeneration ({exc.reason}); deterministic drafter used")
            return self._deterministic(context, backend.name, exc.reason, GuardVerdict.FELL_BACK, changes, first, 2)
        again = self._checked(second, context, backend.name)
        if again.ok:
            GUARD_VERDICTS.labels(backend=backend.name, verdict=GuardVerdict.REGENERATED.value).inc()
            guard = Guard(
                verdict=GuardVerdict.REGENERATED, unsupported=list(first.unsupported), omitted=list(first.omitted), changes=changes,
                rejections=list(first.rejections),
            )
            return GuardedDraft(second, guard, None, GuardCheck(), 2)
        changes.append(f"regenerated draft rejected ({again.describe()}); deterministic drafter used")
        return self._deterministic(context, backend.name, "guard", GuardVerdict.FELL_BACK, changes, first, 2)
