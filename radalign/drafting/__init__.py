"""Report drafting: prompts, LLM backends, the deterministic drafter and the hallucination guard.
The report outputs (FHIR, DICOM SR, the reports store, re-identification) are `radalign.reports`.

Public API:
- `build_prompt(context, version=, form=, ...) -> DraftPrompt`, `DraftContext.from_event(event)`
- `DraftBackend` protocol; `OpenAICompatibleBackend`, `LlamaCppBackend`, `DeterministicDrafter`
- `DraftGuard(labeler).run(context, backend) -> GuardedDraft`, `check_draft(...)` (rejections by reason)
- `DeterministicDrafter` writes the structured draft from the phrase table (`phrases.load_phrase_table`);
  `sanitise.sanitise(text)` keeps only what may travel from another patient's report
- `evaluate.run(...)`: `radalign eval reports` (drafts vs references beside the baselines)
Imports below are light (no torch).
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
from radalign.drafting.prompt import DEFAULT_PROMPT_VERSION, build_prompt

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
    "build_prompt",
    "check_draft",
    "llama_cpp_available",
]
