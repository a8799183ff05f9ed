import random

import pytest
from drafting_helpers import make_event, retrieve_like

from radalign.drafting.concepts import criteria_by_observation
from radalign.drafting.context import DraftContext
from radalign.drafting.labels import default_labeler
from radalign.drafting.prompt import COMPLETION_STOP, build_prompt
from radalign.drafting.text import mentions_prior
from schemas.events import Certainty, Observation

LABELS = {Observation.CARDIOMEGALY: Certainty.PRESENT, Observation.EDEMA: Certainty.UNCERTAIN, Observation.PNEUMOTHORAX: Certainty.ABSENT}
CASES = [
    ("iu-a", "Heart is enlarged. Compared to prior, unchanged effusion. No pneumothorax.", "Cardiomegaly. Stable since the prior exam."),
    ("iu-b", "Heart size is normal. Lungs are clear.", "No acute disease."),
]


def test_chat_prompt_holds_concepts_criteria_and_examples_without_priors_or_identifiers():
    event = make_event(LABELS, CASES)
    prompt = build_prompt(DraftContext.from_event(event), form="chat", version="draft-v1")
    assert prompt.version == "draft-v1" and prompt.form == "chat" and prompt.json_schema is not None
    system, user = prompt.messages[0]["content"], prompt.messages[1]["content"]
    assert "FINDINGS:" in system and "IMPRESSION:" in system
    assert "- PRESENT: Cardiomegaly (score 0.85)" in user
    assert "- UNCERTAIN: Edema (score 0.50)" in user
    assert "- ABSENT: Pneumothorax (score 0.08)" in user
    # diagnostic criteria come from the concepts file
    assert criteria_by_observation()[Observation.CARDIOMEGALY][0] in user
    assert "Heart is enlarged." in user and "Heart size is normal." in user
    assert "unchanged effusion" not in user and "Stable since" not in user
    for identifier in (event.study.study_key, event.study.patient_key):
        assert identifier not in user and identifier not in system
    assert "view PA" in user


def test_completion_prompt_is_few_shot_and_ends_with_findings():
    event = make_event(LABELS, CASES)
    prompt = build_prompt(DraftContext.from_event(event), form="completion", labeler=default_labeler(), max_tokens=120)
    assert prompt.text.endswith("FINDINGS: ")
    assert prompt.stop == COMPLETION_STOP and prompt.max_tokens == 120
    assert prompt.text.count("IMPRESSION:") == 2  # the two examples; the study's is to be written
    # each example's key findings come from the labeler on its own text
    assert "KEY FINDINGS: cardiomegaly" in prompt.text
    assert prompt.text.rstrip().splitlines()[-2] == "KEY FINDINGS: cardiomegaly; possible edema; no pneumothorax"


def test_corrections_appear_in_both_forms():
    context = DraftContext.from_event(make_event(LABELS, CASES))
    fix = ["The draft omits cardiomegaly: state it."]
    chat = build_prompt(context, corrections=fix)
    assert "rejected by the consistency check" in chat.messages[1]["content"] and fix[0] in chat.messages[1]["content"]
    completion = build_prompt(context, form="completion", corrections=fix)
    assert fix[0] in completion.text and completion.text.endswith("FINDINGS: ")


def test_unknown_version_or_form_is_refused():
    context = DraftContext.from_event(make_event(LABELS, CASES))
    with pytest.raises(ValueError, match="unknown prompt version"):
        build_prompt(context, version="draft-v0")
    with pytest.raises(ValueError, match="unknown prompt form"):
        build_prompt(context, form="poem")  # type: ignore[arg-type]


def test_examples_from_real_iu_reports_carry_no_prior_comparison(labelled_iu):
    rng = random.Random(7)
    for report, labels in rng.sample(labelled_iu, 30):
        cases = retrieve_like(labels, [x for x in labelled_iu if x[0].uid != report.uid], rng, k=5)
        context = DraftContext.from_event(make_event(labels, cases), max_cases=3)
        assert len(context.cases) <= 3
        for case in context.cases:
            for sentence in (case.findings + " " + case.impression).split(". "):
                assert not mentions_prior(sentence)


def test_v2_chat_prompt_asks_to_rewrite_the_structured_draft_and_names_what_was_not_assessed():
    event = make_event(LABELS, CASES + [("iu-c", "Right lower lobe opacity. Heart size is normal.", "Right lower lobe pneumonia.")])
    prompt = build_prompt(DraftContext.from_event(event), form="chat")
    assert prompt.version == "draft-v2"
    system, user = prompt.messages[0]["content"], prompt.messages[1]["content"]
    assert "Rewrite it as fluent report prose" in system and "Add nothing" in system
    assert "Heart and mediastinum: The heart is enlarged." in user and "Lungs: Likely pulmonary edema." in user
    assert "IMPRESSION: Cardiomegaly. Likely pulmonary edema." in user
    assert "Not assessed by the model (say nothing about these): enlarged cardiomediastinum" in user and "pleural effusion" in user
    # retrieved wording is sanitised: another patient's side and lobe never reach the prompt
    assert "Right lower lobe" not in user and "Heart size is normal." in user
