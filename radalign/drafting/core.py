"""The drafting stage's logic in one place: `CasesRetrieved` in, `ReportDrafted` out (no Kafka).

`DraftingCore.draft` builds the context, lets the guard run the drafter (structured draft, or an
LLM's rewrite checked and regenerated or replaced, `radalign.drafting.guard`), and decides what
goes to review. The Faust agent (`services/drafting/agent.py`) upserts the result in the reports
store and publishes it on the drafted topic, and on the review topic when `needs_review` is set.
"""

from __future__ import annotations

import logging
import uuid

from radalign.config import Settings, get_settings
from radalign.drafting.backends import DraftBackend, LlamaCppBackend, OpenAICompatibleBackend
from radalign.drafting.concepts import Prediction
from radalign.drafting.context import DraftContext
from radalign.drafting.deterministic import NAME as DETERMINISTIC
from radalign.drafting.deterministic import DeterministicDrafter
from radalign.drafting.guard import DraftGuard, GuardedDraft
from radalign.drafting.labels import ReportLabeler, default_labeler
from radalign.sites.macros import load_normal_macros
from schemas.events import CasesRetrieved, Certainty, Observation, ReportDrafted, ReportSection, model_provenance

log = logging.getLogger(__name__)

#: Version of the deterministic drafter's sentence rules; stands in for the prompt version of
#: reports it writes (no prompt is involved).
DETERMINISTIC_VERSION = "deterministic-v2"
_REPORT_ID_NAMESPACE = uuid.UUID("5b0e7a0c-3f7d-4f2e-9a51-0d6c2f0e8b11")


def report_id_for(study_key: str, pipeline_version: str) -> str:
    """Deterministic report id (UUID v5 of study key and pipeline version): a replayed event
    yields the same id, so every sink can upsert."""
    return str(uuid.uuid5(_REPORT_ID_NAMESPACE, f"{study_key}|{pipeline_version}"))


def draft_id_for(report_id: str, draft_version: int) -> str:
    """A draft version's own id (ReportDrafted.draft_id): a re-opened study's new draft gets
    another, a redelivery the same; signed versions are `{report_id}-v{n}` (ReportFinal.final_id)."""
    return f"{report_id}-d{draft_version}"


def parse_critical(value: str) -> frozenset[Observation]:
    """"Pneumothorax, Pleural Effusion" -> observations; unknown names raise ValueError."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    by_name = {o.value.lower(): o for o in Observation}
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        raise ValueError(f"unknown critical observation(s): {', '.join(unknown)}")
    return frozenset(by_name[n.lower()] for n in names)


def build_backend(settings: Settings) -> DraftBackend | None:
    """The configured LLM backend, or None for the deterministic drafter (CI default)."""
    kind: str = settings.llm_backend
    if kind == "auto":
        kind = "openai" if settings.llm_url else DETERMINISTIC
    if kind == DETERMINISTIC:
        return None
    if kind == "openai":
        if not settings.llm_url:
            raise ValueError("RADALIGN_LLM_BACKEND=openai needs RADALIGN_LLM_URL")
        return OpenAICompatibleBackend(
            settings.llm_url, settings.llm_model, api_key=settings.llm_api_key, timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries, concurrency=settings.llm_concurrency,
            structured_output=settings.llm_structured_output, backoff_base_s=settings.retry_base_delay_s,
            backoff_max_s=settings.retry_max_delay_s,
        )
    if kind == "llama-cpp":
        return LlamaCppBackend(settings.llm_model_path or None, model_name=settings.llm_model, timeout_s=settings.llm_timeout_s)
    raise ValueError(f"unknown RADALIGN_LLM_BACKEND {kind!r}")


class DraftingCore:
    """Drafts reports under the guard. One per process: it holds the labeler, the backend and
    the deterministic fallback drafter."""

    def __init__(
        self, settings: Settings | None = None, backend: DraftBackend | None = None, *,
        labeler: ReportLabeler | None = None, fallback: DeterministicDrafter | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.backend = backend
        self.critical = parse_critical(self.settings.drafting_critical)
        # RADALIGN_DRAFTING_REVIEW_PRESENT: observations whose stated (present) finding goes to
        # review, those whose measured precision is below the review bar. Read defensively: the
        # Settings field may not exist yet (then no observation is listed).
        try:
            self.review_present = parse_critical(getattr(self.settings, "drafting_review_present", "") or "")
        except ValueError as exc:
            raise ValueError(f"RADALIGN_DRAFTING_REVIEW_PRESENT: {exc}") from exc
        # Drafting owns its labeler and its fallback drafter (the site's normal macros included);
        # the guard is handed both and only guards.
        self.labeler = labeler or default_labeler()
        self.fallback = fallback or DeterministicDrafter(self.labeler, normal_macros=load_normal_macros(self.settings.sites_dir))
        self.guard = DraftGuard(
            self.labeler, self.fallback, omit_threshold=self.settings.drafting_omit_threshold,
            prompt_version=self.settings.drafting_prompt_version, max_tokens=self.settings.llm_max_tokens,
        )

    def critical_findings(self, prediction: Prediction, guarded: GuardedDraft) -> list[Observation]:
        """Critical observations predicted present or uncertain, or stated present in the draft."""
        stated = self.labeler.sections(guarded.draft.findings, guarded.draft.impression)
        return [
            o for o in Observation
            if o in self.critical
            and (prediction.states.get(o) in (Certainty.PRESENT, Certainty.UNCERTAIN) or stated.get(o) is Certainty.PRESENT)
        ]

    def review_findings(self, prediction: Prediction) -> list[Observation]:
        """Findings (not No Finding) that send the draft to review by policy: every hedged one
        (uncertain: a hedge always goes to review), and a stated (present) one whose observation
        is in `RADALIGN_DRAFTING_REVIEW_PRESENT` (precision below the review bar)."""
        return [
            o for o in Observation
            if o is not Observation.NO_FINDING
            and (prediction.states.get(o) is Certainty.UNCERTAIN or (prediction.states.get(o) is Certainty.PRESENT and o in self.review_present))
        ]

    async def draft(self, event: CasesRetrieved) -> ReportDrafted:
        context = DraftContext.from_event(event, max_cases=self.settings.drafting_max_cases)
        # a likely-normal film gets its site's normal report, never an LLM's rewrite of it
        backend = None if context.prediction.likely_normal else self.backend
        guarded = await self.guard.run(context, backend, form=self.settings.llm_prompt_form)
        critical = self.critical_findings(context.prediction, guarded)
        # Review: critical findings, images the model abstained on (OOD), drafts the guard had to
        # replace, drafts that still disagree with the concepts, and by policy hedged findings and
        # stated findings of low measured precision (`review_findings`). A plain backend outage is
        # not a review reason: the structured draft is grounded like any other (it is counted in
        # the fallback metric).
        needs_review = (
            bool(critical) or event.ood is not None or guarded.guard_fell_back or not guarded.residual.ok
            or bool(self.review_findings(context.prediction))
        )
        deterministic = guarded.draft.drafter == DETERMINISTIC
        # The structured draft's sections; an LLM's prose is one block, kept with the structured
        # sections it rewrote so consumers always see the section-by-section reading.
        structured = guarded.draft if guarded.draft.sections else self.fallback.draft(context)
        return ReportDrafted(
            study=event.study,
            report_id=(report_id := report_id_for(event.study.study_key, event.study.pipeline_version)),
            draft_id=draft_id_for(report_id, event.study.version),
            draft_version=event.study.version,
            replaces_draft_id=draft_id_for(report_id, event.study.version - 1) if event.study.version > 1 else None,
            findings=guarded.draft.findings,
            impression=guarded.draft.impression,
            concepts=list(event.concepts),
            not_assessed=context.prediction.not_assessed,
            ood=event.ood,
            sections=[ReportSection(name=name, sentences=list(sentences)) for name, sentences in structured.sections],  # type: ignore[arg-type]  # section names come from the phrase table, validated against the Literal when loaded
            footer=structured.footer,
            phrase_table_version=self.fallback.table.version,
            case_keys=[c.case_key for c in event.cases],
            view_position=event.view_position,
            **model_provenance(event),
            drafter=guarded.draft.drafter,
            prompt_version=DETERMINISTIC_VERSION if deterministic else self.settings.drafting_prompt_version,
            guard=guarded.guard,
            critical=critical,
            needs_review=needs_review,
            timings=list(event.timings),
        )

