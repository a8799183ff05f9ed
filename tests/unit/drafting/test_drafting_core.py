import pytest
from drafting_helpers import make_event

from radalign.config import Settings
from radalign.drafting.backends import OpenAICompatibleBackend
from radalign.drafting.core import DraftingCore, build_backend, parse_critical, report_id_for
from radalign.labeler import label_sections
from schemas.events import Certainty, GuardVerdict, Observation

LABELS = {Observation.CARDIOMEGALY: Certainty.PRESENT, Observation.PLEURAL_EFFUSION: Certainty.ABSENT}
CASES = [("iu-1", "The heart is enlarged. No pleural effusion.", "Cardiomegaly.")]


def test_report_id_is_deterministic_per_study_and_pipeline_version():
    a = report_id_for("st-0123456789abcdef", "radalign-0.1.0")
    assert a == report_id_for("st-0123456789abcdef", "radalign-0.1.0")
    assert a != report_id_for("st-0123456789abcdef", "radalign-0.2.0")
    assert a != report_id_for("st-1123456789abcdef", "radalign-0.1.0")


async def test_draft_report_without_llm_is_deterministic_and_complete():
    event = make_event(LABELS, CASES)
    core = DraftingCore(Settings())
    first = await core.draft(event)
    again = await core.draft(event)
    assert first.report_id == again.report_id == report_id_for(event.study.study_key, event.study.pipeline_version)
    assert (first.findings, first.impression) == (again.findings, again.impression)
    assert first.drafter == "deterministic" and first.prompt_version == "deterministic-v2"
    assert first.guard.verdict is GuardVerdict.PASSED and not first.needs_review
    assert first.case_keys == ["iu-1"] and first.view_position == "PA"
    assert first.timings == event.timings, "the stage's own timing is the runner's"
    assert label_sections(first.findings, first.impression)[Observation.CARDIOMEGALY] is Certainty.PRESENT


def test_parse_critical():
    assert parse_critical("Pneumothorax, pleural effusion") == {Observation.PNEUMOTHORAX, Observation.PLEURAL_EFFUSION}
    assert parse_critical("") == frozenset()
    with pytest.raises(ValueError, match="unknown critical"):
        parse_critical("Pneumothorax, Hangnail")


async def test_build_backend_follows_settings():
    assert build_backend(Settings(llm_url="")) is None
    backend = build_backend(Settings(llm_url="http://127.0.0.1:9/v1", llm_model="m"))
    assert isinstance(backend, OpenAICompatibleBackend) and backend.name == "openai:m"
    await backend.aclose()
    assert build_backend(Settings(llm_url="http://x", llm_backend="deterministic")) is None
    with pytest.raises(ValueError):
        build_backend(Settings(llm_backend="openai"))
