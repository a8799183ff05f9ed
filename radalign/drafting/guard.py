"""The hallucination guard: the draft must agree with the predicted concepts.

The drafted text is labelled with the same rule-based labeler that labels the knowledge base,
and compared with the concept model's prediction:
- unsupported: the draft states a finding as present that the concepts predict absent (or do
  not predict at all);
- omitted: a finding predicted present (with at least `omit_threshold` probability) that the
  draft does not state as present.
A failing draft gets one constrained regeneration (the prompt lists what to fix); if that fails
too, or the backend fails, the deterministic drafter writes the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from radalign.drafting.backends import DraftBackend, DraftBackendError, DraftText
from radalign.drafting.concepts import NAMES, Prediction
from radalign.drafting.deterministic import DeterministicDrafter
from radalign.drafting.labels import ReportLabeler, default_labeler
from radalign.drafting.metrics import FALLBACKS, GUARD_VERDICTS
from radalign.drafting.prompt import DEFAULT_PROMPT_VERSION, DraftContext, PromptForm, build_prompt
from radalign.drafting.text import off_topic_phrases
from schemas.events import Certainty, Guard, GuardVerdict, Observation

log = logging.getLogger(__name__)

NO_BACKEND = "none"


@dataclass(frozen=True)
class GuardCheck:
    unsupported: tuple[Observation, ...] = ()
    omitted: tuple[Observation, ...] = ()
    off_topic: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.omitted and not self.off_topic

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
        return lines

    def describe(self) -> str:
        parts = []
        if self.unsupported:
            parts.append("unsupported " + ", ".join(o.value for o in self.unsupported))
        if self.omitted:
            parts.append("omitted " + ", ".join(o.value for o in self.omitted))
        if self.off_topic:
            parts.append("off-topic " + ", ".join(self.off_topic))
        return "; ".join(parts) or "consistent"


def check_draft(
    findings: str, impression: str, prediction: Prediction, labeler: ReportLabeler, *, omit_threshold: float = 0.0
) -> GuardCheck:
    labels = labeler.sections(findings, impression)
    supported = {Certainty.PRESENT, Certainty.UNCERTAIN}
    # "No Finding" is judged through the specific findings (a draft that calls an abnormal study
    # normal omits its findings), not on its own.
    unsupported = tuple(
        o for o in Observation
        if o is not Observation.NO_FINDING and labels.get(o) is Certainty.PRESENT and prediction.states.get(o) not in supported
    )
    omitted = tuple(
        o for o in prediction.findings(Certainty.PRESENT)
        if prediction.probabilities.get(o, 1.0) >= omit_threshold and labels.get(o) is not Certainty.PRESENT
    )
    return GuardCheck(unsupported, omitted, off_topic_phrases(f"{findings}\n{impression}"))


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

    def check(self, draft: DraftText, prediction: Prediction) -> GuardCheck:
        return check_draft(draft.findings, draft.impression, prediction, self.labeler, omit_threshold=self.omit_threshold)

    def _prompt(self, context: DraftContext, form: PromptForm, corrections: list[str] | None = None):  # noqa: ANN202
        return build_prompt(
            context, version=self.prompt_version, form=form, max_tokens=self.max_tokens, corrections=corrections or (),
            labeler=self.labeler if form == "completion" else None,
        )

    def _deterministic(
        self, context: DraftContext, backend_name: str, reason: str | None, verdict: GuardVerdict,
        changes: list[str], first: GuardCheck, attempts: int,
    ) -> GuardedDraft:
        draft = self.fallback.draft(context)
        residual = self.check(draft, context.prediction)
        if not residual.ok:
            changes.append(f"deterministic draft still disagrees with the concepts ({residual.describe()})")
            log.warning("deterministic draft disagrees with the concepts: %s", residual.describe())
        if reason is not None:
            FALLBACKS.labels(backend=backend_name, reason=reason).inc()
        GUARD_VERDICTS.labels(backend=backend_name, verdict=verdict.value).inc()
        guard = Guard(verdict=verdict, unsupported=list(first.unsupported), omitted=list(first.omitted), changes=changes)
        return GuardedDraft(draft, guard, reason, residual, attempts)

    async def run(self, context: DraftContext, backend: DraftBackend | None, *, form: PromptForm = "chat") -> GuardedDraft:
        """Draft with `backend` under the guard; the deterministic drafter when `backend` is None."""
        if backend is None or isinstance(backend, DeterministicDrafter):
            # Counted as a fallback (reason not_configured) so dashboards show which share of
            # reports no LLM wrote; the verdict stays "passed": nothing failed.
            FALLBACKS.labels(backend=NO_BACKEND, reason="not_configured").inc()
            return self._deterministic(context, NO_BACKEND if backend is None else backend.name, None, GuardVerdict.PASSED, [], GuardCheck(), 0)
        changes: list[str] = []
        try:
            draft = await backend.generate(self._prompt(context, form))
        except DraftBackendError as exc:
            changes.append(f"{backend.name} failed ({exc.reason}); deterministic drafter used")
            return self._deterministic(context, backend.name, exc.reason, GuardVerdict.FELL_BACK, changes, GuardCheck(), 1)
        first = self.check(draft, context.prediction)
        if first.ok:
            GUARD_VERDICTS.labels(backend=backend.name, verdict=GuardVerdict.PASSED.value).inc()
            return GuardedDraft(draft, Guard(verdict=GuardVerdict.PASSED), None, GuardCheck(), 1)

        changes.append(f"draft rejected ({first.describe()}); regenerated with corrections")
        try:
            second = await backend.generate(self._prompt(context, form, first.corrections(context.prediction)))
        except DraftBackendError as exc:
            changes.append(f"{backend.name} failed on regeneration ({exc.reason}); deterministic drafter used")
            return self._deterministic(context, backend.name, exc.reason, GuardVerdict.FELL_BACK, changes, first, 2)
        again = self.check(second, context.prediction)
        if again.ok:
            GUARD_VERDICTS.labels(backend=backend.name, verdict=GuardVerdict.REGENERATED.value).inc()
            guard = Guard(verdict=GuardVerdict.REGENERATED, unsupported=list(first.unsupported), omitted=list(first.omitted), changes=changes)
            return GuardedDraft(second, guard, None, GuardCheck(), 2)
        changes.append(f"regenerated draft rejected ({again.describe()}); deterministic drafter used")
        return self._deterministic(context, backend.name, "guard", GuardVerdict.FELL_BACK, changes, first, 2)
