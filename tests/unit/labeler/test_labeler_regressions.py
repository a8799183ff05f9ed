"""Regression corpus of issue 11: every misreading reported, as sentences written here, plus line
wrapping over the whole IU corpus (0 negation-scope errors across line breaks)."""

from __future__ import annotations

import textwrap

import pytest

from radalign.labeler import (
    assess_report,
    label_report,
    label_sections,
    load_iu_reports,
    split_sentences,
)
from radalign.labeler.iu import iu_archive_path
from schemas.events import Certainty
from schemas.events import Observation as O

P, A, U = Certainty.PRESENT, Certainty.ABSENT, Certainty.UNCERTAIN

#: (text, expected states; None = the observation must not be labelled at all)
CORPUS: list[tuple[str, dict[O, Certainty | None]]] = [
    # a line break inside a sentence keeps the negation's scope
    ("There is no\npneumothorax.", {O.PNEUMOTHORAX: A}),
    ("There is no\nPneumothorax or pleural effusion.", {O.PNEUMOTHORAX: A, O.PLEURAL_EFFUSION: A}),
    ("No focal consolidation,\npleural effusion or pneumothorax.", {O.CONSOLIDATION: A, O.PLEURAL_EFFUSION: A, O.PNEUMOTHORAX: A}),
    ("THERE IS NO\nPNEUMOTHORAX. THE HEART IS\nENLARGED.", {O.PNEUMOTHORAX: A, O.CARDIOMEGALY: P}),
    # ... while a line that is its own statement still ends there
    ("No pleural effusion\nMild cardiomegaly", {O.PLEURAL_EFFUSION: A, O.CARDIOMEGALY: P}),
    ("IMPRESSION:\nNo acute process.\n\nFINDINGS:\nsmall left effusion", {O.PLEURAL_EFFUSION: P}),
    # synonyms
    ("There is enlargement of the cardiac silhouette.", {O.CARDIOMEGALY: P}),
    ("Right arm PICC with tip in the SVC.", {O.SUPPORT_DEVICES: P}),
    ("PICC.", {O.SUPPORT_DEVICES: P}),
    ("The mediastinum is widened.", {O.ENLARGED_CARDIOMEDIASTINUM: P}),
    ("The left pleural space is filled with air.", {O.PNEUMOTHORAX: P}),
    ("Air within the right pleural space.", {O.PNEUMOTHORAX: P}),
    # an enlarged heart with normal contours is enlarged
    ("The heart is mildly enlarged with normal contours.", {O.CARDIOMEGALY: P}),
    ("Heart size is normal.", {O.CARDIOMEGALY: A}),
    # not cleared is still there
    ("The right basilar opacity has not cleared.", {O.LUNG_OPACITY: P}),
    ("Left lower lobe consolidation has not yet resolved.", {O.CONSOLIDATION: P}),
    ("The right basilar opacity has cleared.", {O.LUNG_OPACITY: A}),
    # anatomy: mediastinal masses are no lung lesions, abdominal devices no chest support devices
    ("Anterior mediastinal mass.", {O.LUNG_LESION: None, O.ENLARGED_CARDIOMEDIASTINUM: P}),
    ("There is a mass in the anterior mediastinum.", {O.LUNG_LESION: None, O.ENLARGED_CARDIOMEDIASTINUM: P}),
    ("Spiculated mass in the right upper lobe.", {O.LUNG_LESION: P}),
    ("Cholecystectomy clips in the right upper quadrant.", {O.SUPPORT_DEVICES: None}),
    ("Surgical clips are present in the abdomen.", {O.SUPPORT_DEVICES: None}),
    ("Gastrostomy tube in the left upper abdomen.", {O.SUPPORT_DEVICES: None}),
    ("Enteric tube tip in the stomach.", {O.SUPPORT_DEVICES: P}),
    ("Feeding tube tip in the upper abdomen.", {O.SUPPORT_DEVICES: P}),
    # "cannot be assessed": no claim either way
    ("Pneumothorax cannot be assessed on this supine film.", {O.PNEUMOTHORAX: None}),
    ("The heart size cannot be accurately assessed.", {O.CARDIOMEGALY: None}),
    # double negation
    ("Pleural effusion is not absent.", {O.PLEURAL_EFFUSION: P}),
    ("It is not true that there is no pneumothorax.", {O.PNEUMOTHORAX: P}),
    # the basics still hold
    ("No pleural effusion or pneumothorax.", {O.PLEURAL_EFFUSION: A, O.PNEUMOTHORAX: A}),
    ("Possible right lower lobe pneumonia.", {O.PNEUMONIA: U}),
]


@pytest.mark.parametrize(("text", "expected"), CORPUS, ids=[t[:40] for t, _ in CORPUS])
def test_regression_corpus(text: str, expected: dict[O, Certainty | None]) -> None:
    got = label_report(text)
    for observation, state in expected.items():
        assert got.get(observation) is state, (observation, got)


def test_not_assessed_is_reported_and_outranks_only_negation() -> None:
    result = assess_report("Pneumothorax cannot be assessed. The heart is enlarged.")
    assert result.not_assessed == {O.PNEUMOTHORAX}
    assert O.PNEUMOTHORAX not in result.labels and result.labels[O.CARDIOMEGALY] is P
    # a negative elsewhere does not establish absence; a positive does establish presence
    assert assess_report("No pneumothorax on the right. Left pneumothorax cannot be assessed.").not_assessed == {O.PNEUMOTHORAX}
    both = assess_report("Small left pneumothorax. The right side cannot be assessed for pneumothorax.")
    assert both.labels[O.PNEUMOTHORAX] is P and both.not_assessed == frozenset()
    # nothing positive but something not assessed: no claim of No Finding either
    assert O.NO_FINDING not in assess_report("Pneumothorax cannot be assessed.").labels


def test_chexpert_hierarchy_lifts_lung_opacity_from_each_child() -> None:
    for text, state in [
        ("Right lower lobe consolidation.", P), ("Pulmonary edema.", P), ("Left basilar atelectasis.", P),
        ("A 2 cm nodule in the left upper lobe.", P), ("Possible pneumonia.", U),
    ]:
        assert label_report(text, hierarchy=True)[O.LUNG_OPACITY] is state, text
        assert O.LUNG_OPACITY not in label_report(text), "off by default: the text's own mentions"
    # a positive parent is not lowered by an uncertain child; a negated child says nothing
    assert label_report("Patchy opacity, possibly pneumonia.", hierarchy=True)[O.LUNG_OPACITY] is P
    assert O.LUNG_OPACITY not in label_report("No pneumonia.", hierarchy=True)
    assert label_sections("Left lower lobe atelectasis", "", hierarchy=True)[O.LUNG_OPACITY] is P


def test_uncertainty_policy() -> None:
    text = "Possible small left pleural effusion. No pneumothorax."
    assert label_report(text)[O.PLEURAL_EFFUSION] is U and O.NO_FINDING not in label_report(text)
    strict = label_report(text, uncertainty="strict")
    assert strict[O.PLEURAL_EFFUSION] is A and strict[O.NO_FINDING] is P
    assert label_report(text, uncertainty="lenient")[O.PLEURAL_EFFUSION] is P
    with pytest.raises(ValueError, match="policy"):
        label_report(text, uncertainty="maybe")  # type: ignore[arg-type]


def test_sections_without_final_period_do_not_run_together() -> None:
    assert label_sections("No pleural effusion", "Cardiomegaly") [O.CARDIOMEGALY] is P
    assert len(split_sentences("No pleural effusion\n\nCardiomegaly")) == 2


def _wrap(text: str, width: int) -> str:
    return "\n\n".join(textwrap.fill(paragraph, width) for paragraph in text.split("\n\n"))


@pytest.mark.skipif(iu_archive_path() is None, reason="IU reports need torchxrayvision==1.5.7 (installed --no-deps)")
@pytest.mark.parametrize(("width", "upper"), [(28, False), (48, True)])
def test_no_negation_scope_error_across_line_breaks_in_the_iu_corpus(width: int, upper: bool) -> None:
    """Every IU report wrapped at a fixed width (as report systems do): a finding negated in the
    unwrapped text is never read as present or uncertain once wrapped (0 negation-scope errors),
    and the labels are otherwise the same for at least 99.9 % of reports."""
    reports = [r for r in load_iu_reports() if r.text.strip()]
    scope_errors, changed = [], 0
    for report in reports:
        text = report.text.upper() if upper else report.text
        plain, wrapped = label_report(text), label_report(_wrap(text, width))
        changed += plain != wrapped
        scope_errors += [(report.uid, o) for o, c in plain.items() if c is A and wrapped.get(o) in (P, U)]
    assert scope_errors == []
    assert changed <= len(reports) // 1000, f"{changed} of {len(reports)} reports labelled differently once wrapped"
