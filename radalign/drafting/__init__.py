"""Report drafting: prompts, LLM backends, the deterministic drafter, the hallucination guard,
and the report outputs (FHIR DiagnosticReport, DICOM Basic Text SR, reports store).

Public API:
- `build_prompt(context, version=, form=, ...) -> DraftPrompt`, `DraftContext.from_event(event)`
- `DraftBackend` protocol; `OpenAICompatibleBackend`, `LlamaCppBackend`, `DeterministicDrafter`
- `DraftGuard(labeler).run(context, backend) -> GuardedDraft`, `check_draft(...)` (rejections by reason)
- `DeterministicDrafter` writes the structured draft from the phrase table (`phrases.load_phrase_table`);
  `sanitise.sanitise(text)` keeps only what may travel from another patient's report
- `evaluate.run(...)`: `radalign eval reports` (drafts vs references beside the baselines)
- `ReportStore(pool)`, `StudyIdentity`, `Reidentifier`, `PostgresReidentifier`
- `diagnostic_report(...)` (fhir), `basic_text_sr(...)` (sr)
Imports below are light (no torch); FHIR/SR modules load on first use.
"""

from radalign.drafting.backends import (
    DraftBackend,
    DraftBackendError,
    DraftText,
    LlamaCppBackend,
    OpenAICompatibleBackend,
    llama_cpp_available,
)
from radalign.drafting.context import DraftContext, DraftPrompt
from radalign.drafting.deterministic import DeterministicDrafter
from radalign.drafting.guard import DraftGuard, GuardCheck, GuardedDraft, check_draft
from radalign.drafting.identity import PostgresReidentifier, Reidentifier, StaticReidentifier, StudyIdentity
from radalign.drafting.prompt import DEFAULT_PROMPT_VERSION, build_prompt
from radalign.drafting.store import ReportStore

__all__ = [
    "DEFAULT_PROMPT_VERSION",
    "DeterministicDrafter",
    "DraftBackend",
    "DraftBackendError",
    "DraftContext",
    "DraftGuard",
    "DraftPrompt",
    "DraftText",
    "GuardCheck",
    "GuardedDraft",
    "LlamaCppBackend",
    "OpenAICompatibleBackend",
    "PostgresReidentifier",
    "Reidentifier",
    "ReportStore",
    "StaticReidentifier",
    "StudyIdentity",
    "build_prompt",
    "check_draft",
    "llama_cpp_available",
]
