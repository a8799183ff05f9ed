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


class _ReviewSettings(Settings):
    """Settings with `drafting_review_present` whether or not Settings has the field yet."""

    drafting_review_present: str = ""


async def test_a_hedged_finding_always_goes_to_review():
    hedged = {Observation.CARDIOMEGALY: Certainty.PRESENT, Observation.EDEMA: Certainty.UNCERTAIN}
    report = await DraftingCore(Settings()).draft(make_event(hedged, CASES))
    assert report.needs_review and report.critical == [] and report.guard.verdict is GuardVerdict.PASSED
    # an uncertain "No Finding" is not a hedged finding: it states nothing about a finding
    unsure_normal = {**LABELS, Observation.NO_FINDING: Certainty.UNCERTAIN}
    assert not (await DraftingCore(Settings()).draft(make_event(unsure_normal, CASES))).needs_review


async def test_stated_findings_of_low_precision_go_to_review_when_configured():
    core = DraftingCore(_ReviewSettings(drafting_review_present="Cardiomegaly, lung opacity"))
    assert core.review_present == {Observation.CARDIOMEGALY, Observation.LUNG_OPACITY}
    report = await core.draft(make_event(LABELS, CASES))  # Cardiomegaly present
    assert report.needs_review and report.critical == []
    # a listed observation that is absent, or a present one not listed, does not
    other = DraftingCore(_ReviewSettings(drafting_review_present="Pleural Effusion"))
    assert not (await other.draft(make_event(LABELS, CASES))).needs_review
    assert not (await DraftingCore(_ReviewSettings()).draft(make_event(LABELS, CASES))).needs_review
    with pytest.raises(ValueError, match="RADALIGN_DRAFTING_REVIEW_PRESENT"):
        DraftingCore(_ReviewSettings(drafting_review_present="Cardiomegaly, Hangnail"))


async def test_the_core_owns_its_fallback_drafter_and_labeler():
    from radalign.drafting.deterministic import DeterministicDrafter
    from radalign.drafting.labels import default_labeler

    labeler = default_labeler()
    fallback = DeterministicDrafter(labeler)
    core = DraftingCore(Settings(), labeler=labeler, fallback=fallback)
    assert core.labeler is labeler and core.fallback is fallback
    # the guard is handed the core's own objects (it guards; it builds no drafter of its own)
    assert core.guard.labeler is labeler and core.guard.fallback is fallback
    report = await core.draft(make_event(LABELS, CASES))
    assert report.drafter == "deterministic" and report.phrase_table_version == fallback.table.version
