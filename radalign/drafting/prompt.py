"""Prompts for the drafting LLM, from versioned templates in `templates/<version>.*.txt`.

Two forms share one content:
- `chat`: system + user messages for instruction models on an OpenAI-compatible endpoint;
- `completion`: a few-shot continuation for base models (Gemma-3-270M): the retrieved reports as
  examples, then the study's key findings and "FINDINGS:" for the model to continue.

The prompt holds no identifier: studies are described by view and priority only, examples by
their FINDINGS/IMPRESSION text with comparisons to priors removed. The template version travels
with every report (`ReportDrafted.prompt_version`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib.resources import files
from string import Template
from typing import Any

from radalign.drafting.concepts import NAMES, Prediction, criteria_by_observation
from radalign.drafting.context import DraftContext, DraftPrompt, PromptForm
from radalign.drafting.deterministic import DeterministicDrafter
from radalign.drafting.labels import ReportLabeler
from radalign.drafting.phrases import load_phrase_table
from schemas.events import Certainty, Observation

PROMPT_VERSIONS = ("draft-v1", "draft-v2")
#: draft-v2: the LLM rewrites the structured draft (v1: drafted from the concepts and cases).
DEFAULT_PROMPT_VERSION = "draft-v2"

#: Structured output for endpoints that support `response_format: json_schema`.
REPORT_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "findings": {"type": "string", "minLength": 1},
        "impression": {"type": "string", "minLength": 1},
    },
    "required": ["findings", "impression"],
    "additionalProperties": False,
}
# Where a base model's continuation ends: a blank line closes the report, a new header starts
# the next (invented) example.
COMPLETION_STOP = ("\n\n", "FINDINGS:", "KEY FINDINGS:", "STUDY:")


@lru_cache(maxsize=32)
def _template(version: str, part: str) -> Template:
    if version not in PROMPT_VERSIONS:
        raise ValueError(f"unknown prompt version {version!r}; known: {', '.join(PROMPT_VERSIONS)}")
    return Template(files("radalign.drafting").joinpath("templates", f"{version}.{part}.txt").read_text(encoding="utf-8"))


def concepts_text(prediction: Prediction) -> str:
    criteria = criteria_by_observation()
    lines: list[str] = []
    for state, heading in ((Certainty.PRESENT, "PRESENT"), (Certainty.UNCERTAIN, "UNCERTAIN"), (Certainty.ABSENT, "ABSENT")):
        for observation in prediction.with_state(state):
            score = prediction.probabilities.get(observation, 0.0)
            lines.append(f"- {heading}: {observation.value} (score {score:.2f}); criteria: {'; '.join(criteria[observation])}")
    return "\n".join(lines) if lines else "- none predicted"


def key_findings_text(states: dict[Observation, Certainty] | Prediction) -> str:
    """One line: "cardiomegaly; possible edema; no pleural effusion" (base-model header)."""
    state_of = states.states if isinstance(states, Prediction) else states
    parts: list[str] = []
    for prefix, state in (("", Certainty.PRESENT), ("possible ", Certainty.UNCERTAIN), ("no ", Certainty.ABSENT)):
        parts += [f"{prefix}{NAMES[o]}" for o in Observation if o is not Observation.NO_FINDING and state_of.get(o) == state]
    if state_of.get(Observation.NO_FINDING) is Certainty.PRESENT and not any(
        state_of.get(o) is Certainty.PRESENT for o in Observation if o is not Observation.NO_FINDING
    ):
        parts.insert(0, "normal study")
    return "; ".join(parts) if parts else "not stated"


def structured_draft_text(context: DraftContext) -> str:
    """The structured deterministic draft of the study, as the LLM is asked to rewrite it."""
    draft = DeterministicDrafter().draft(context)
    titles: dict[str, str] = dict(load_phrase_table().sections)
    lines = [f"{titles.get(name, name)}: {' '.join(sentences)}" for name, sentences in draft.sections] or [f"FINDINGS: {draft.findings}"]
    return "\n".join([*lines, f"IMPRESSION: {draft.impression}"])


def corrections_text(version: str, corrections: Sequence[str]) -> str:
    if not corrections:
        return ""
    return _template(version, "correction").substitute(problems="\n".join(f"- {c}" for c in corrections))


def build_prompt(
    context: DraftContext,
    *,
    version: str = DEFAULT_PROMPT_VERSION,
    form: PromptForm = "chat",
    max_tokens: int = 256,
    corrections: Sequence[str] = (),
    labeler: ReportLabeler | None = None,
) -> DraftPrompt:
    """The prompt of one study. `labeler` (completion form): header each example with its own
    key findings, so a base model sees how key findings map to report text."""
    fix = corrections_text(version, corrections)
    if form == "chat":
        examples = "\n\n".join(
            f"Case {i} (similarity {case.similarity:.2f}):\nFINDINGS: {case.findings}\nIMPRESSION: {case.impression}"
            for i, case in enumerate(context.cases, 1)
        ) or "(no similar case retrieved)"
        fields = {"study_context": context.study_context(), "examples": examples, "corrections": fix}
        if version == "draft-v1":
            fields["concepts"] = concepts_text(context.prediction)
        else:
            fields["structured_draft"] = structured_draft_text(context)
            fields["not_assessed"] = ", ".join(o.value.lower() for o in context.prediction.not_assessed if o is not Observation.NO_FINDING) or "none"
        user = _template(version, "user").substitute(fields)
        messages = ({"role": "system", "content": _template(version, "system").template.strip()}, {"role": "user", "content": user})
        return DraftPrompt(
            version=version, form="chat", context=context, messages=messages, max_tokens=max_tokens,
            json_schema=REPORT_JSON_SCHEMA, corrections=tuple(corrections),
        )
    if form == "completion":
        blocks = []
        for case in context.cases:
            header = "STUDY: chest radiograph\n"
            if labeler is not None:
                header += f"KEY FINDINGS: {key_findings_text(dict(labeler.sections(case.findings, case.impression)))}\n"
            blocks.append(f"{header}FINDINGS: {case.findings}\nIMPRESSION: {case.impression}\n")
        text = _template(version, "fewshot").substitute(
            examples="\n".join(blocks),
            study_context=context.study_context(),
            key_findings=key_findings_text(context.prediction),
            corrections=" (" + " ".join(fix.split()) + ")" if fix else "",
        )
        # The template ends with "FINDINGS:"; one space invites the continuation.
        text = text.rstrip() + " "
        return DraftPrompt(
            version=version, form="completion", context=context, text=text, stop=COMPLETION_STOP,
            max_tokens=max_tokens, corrections=tuple(corrections),
        )
    raise ValueError(f"unknown prompt form {form!r}")
