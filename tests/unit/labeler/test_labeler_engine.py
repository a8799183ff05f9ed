"""The labeler's rules: negation and its scope, uncertainty, normal phrases, precedence, No Finding."""

from __future__ import annotations

import pytest

from radalign.labeler import (
    find_mentions,
    label_report,
    label_sections,
    split_sentences,
)
from schemas.events import Certainty
from schemas.events import Observation as O

P, A, U = Certainty.PRESENT, Certainty.ABSENT, Certainty.UNCERTAIN


def labels(text: str) -> dict[O, Certainty]:
    return label_report(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No pleural effusion or pneumothorax.", {O.PLEURAL_EFFUSION: A, O.PNEUMOTHORAX: A}),
        ("No focal consolidation, pneumothorax, or large pleural effusion.",
         {O.CONSOLIDATION: A, O.PNEUMOTHORAX: A, O.PLEURAL_EFFUSION: A}),
        ("The lungs are free of focal airspace disease.", {O.LUNG_OPACITY: A}),
        ("Negative for pneumothorax.", {O.PNEUMOTHORAX: A}),
        ("There is no evidence of pneumonia.", {O.PNEUMONIA: A}),
        ("Lungs are clear without infiltrate.", {O.LUNG_OPACITY: A}),
        ("Pleural effusion and pneumothorax are not seen.", {O.PLEURAL_EFFUSION: A, O.PNEUMOTHORAX: A}),
        ("The left pleural effusion has resolved.", {O.PLEURAL_EFFUSION: A}),
        ("Interval resolution of the right lower lobe consolidation.", {O.CONSOLIDATION: A}),
        ("The heart is not enlarged.", {O.CARDIOMEGALY: A}),
        # ---- the negation's scope ----
        # a negation's scope ends at "but" / "however" / "with": what follows is positive
        ("No pneumothorax, but there is a small left pleural effusion.", {O.PNEUMOTHORAX: A, O.PLEURAL_EFFUSION: P}),
        ("No pneumothorax; however, mild cardiomegaly is present.", {O.PNEUMOTHORAX: A, O.CARDIOMEGALY: P}),
        ("No cardiomegaly with bilateral small pleural effusions.", {O.CARDIOMEGALY: A, O.PLEURAL_EFFUSION: P}),
        # the scope ends with the sentence
        ("No pneumothorax. Small right effusion.", {O.PNEUMOTHORAX: A, O.PLEURAL_EFFUSION: P}),
        # pseudo-negation: "no change" does not negate what follows
        ("No change in the moderate cardiomegaly.", {O.CARDIOMEGALY: P}),
        ("No focal air space opacity to suggest a pneumonia.", {O.LUNG_OPACITY: A, O.PNEUMONIA: A}),
    ],
)
def test_negation_and_its_scope(text: str, expected: dict[O, Certainty]) -> None:
    got = labels(text)
    for observation, certainty in expected.items():
        assert got[observation] is certainty, (observation, got)


@pytest.mark.parametrize(
    ("text", "observation"),
    [
        ("Cannot exclude a small right pleural effusion.", O.PLEURAL_EFFUSION),
        ("A small pleural effusion cannot be excluded.", O.PLEURAL_EFFUSION),
        ("Possible left lower lobe pneumonia.", O.PNEUMONIA),
        ("Opacity may represent atelectasis.", O.ATELECTASIS),
        ("Findings are suspicious for pneumonia.", O.PNEUMONIA),
        ("Small bilateral pleural effusions suspected.", O.PLEURAL_EFFUSION),
        ("Atelectasis versus pneumonia.", O.PNEUMONIA),
        ("Atelectasis versus pneumonia.", O.ATELECTASIS),
        ("Interstitial opacities could be due to edema.", O.EDEMA),
    ],
)
def test_uncertainty(text: str, observation: O) -> None:
    assert labels(text)[observation] is U


def test_uncertainty_is_scoped_forward_only_for_may_represent() -> None:
    got = labels("Left basilar opacity may represent atelectasis.")
    assert got[O.LUNG_OPACITY] is P
    assert got[O.ATELECTASIS] is U


def test_multi_observation_sentence() -> None:
    got = labels("Mild cardiomegaly with small bilateral pleural effusions and pulmonary edema.")
    assert got[O.CARDIOMEGALY] is P
    assert got[O.PLEURAL_EFFUSION] is P
    assert got[O.EDEMA] is P
    assert O.NO_FINDING not in got


def test_nearest_trigger_wins_in_a_mixed_sentence() -> None:
    got = labels("Possible right basilar atelectasis, no pneumothorax.")
    assert got[O.ATELECTASIS] is U
    assert got[O.PNEUMOTHORAX] is A


@pytest.mark.parametrize(
    ("text", "negated"),
    [
        ("Heart size is normal.", {O.CARDIOMEGALY}),
        ("The heart is normal in size.", {O.CARDIOMEGALY}),
        ("Normal heart size.", {O.CARDIOMEGALY}),
        ("Heart size within normal limits.", {O.CARDIOMEGALY}),
        ("Heart size is upper limits of normal.", {O.CARDIOMEGALY}),
        ("Heart and mediastinum normal.", {O.CARDIOMEGALY, O.ENLARGED_CARDIOMEDIASTINUM}),
        ("The lungs are clear.", {O.LUNG_OPACITY, O.CONSOLIDATION}),
        ("Clear lungs.", {O.LUNG_OPACITY, O.CONSOLIDATION}),
        ("Pulmonary vascularity is within normal limits.", {O.EDEMA}),
    ],
)
def test_normal_phrases_are_negative(text: str, negated: set[O]) -> None:
    got = labels(text)
    for observation in negated:
        assert got[observation] is A, (observation, got)
    assert got[O.NO_FINDING] is P


@pytest.mark.parametrize(
    "text",
    ["Cardiomegaly.", "The heart is mildly enlarged.", "Heart size is enlarged.", "Enlarged cardiac silhouette.",
     "Borderline cardiomegaly.", "Stable moderate cardiomegaly."],
)
def test_cardiomegaly_phrasings(text: str) -> None:
    assert labels(text)[O.CARDIOMEGALY] is P


def test_positive_beats_uncertain_beats_negative() -> None:
    # CheXpert precedence over several mentions of one observation
    assert labels("No pleural effusion. Small left pleural effusion.")[O.PLEURAL_EFFUSION] is P
    assert labels("No pleural effusion. Possible small right effusion.")[O.PLEURAL_EFFUSION] is U
    assert labels("Small right effusion. Possible left effusion.")[O.PLEURAL_EFFUSION] is P


def test_no_finding_rule() -> None:
    assert labels("No acute cardiopulmonary abnormality.") == {O.NO_FINDING: P}
    # support devices do not count as a pathology
    got = labels("Right PICC line tip in the SVC. Lungs are clear.")
    assert got[O.SUPPORT_DEVICES] is P and got[O.NO_FINDING] is P
    # an uncertain pathology removes No Finding, as a positive one does
    assert O.NO_FINDING not in labels("Possible pneumonia.")
    assert O.NO_FINDING not in labels("Small pneumothorax.")
    # a negated pathology leaves No Finding
    assert labels("No pneumothorax.")[O.NO_FINDING] is P


def test_only_mentioned_observations_are_returned() -> None:
    assert set(labels("Small right pneumothorax.")) == {O.PNEUMOTHORAX}


def test_mentions_carry_spans_sentences_and_phrases() -> None:
    text = "Heart size is normal. There is a small left pleural effusion."
    mentions = find_mentions(text)
    effusion = [m for m in mentions if m.observation is O.PLEURAL_EFFUSION]
    assert len(effusion) == 1
    m = effusion[0]
    assert m.sentence_index == 1 and m.certainty is P
    assert text[m.span[0]:m.span[1]] == m.phrase
    assert "effusion" in m.phrase.lower()
    assert [m.sentence_index for m in mentions] == sorted(m.sentence_index for m in mentions)


def test_case_and_whitespace_do_not_matter() -> None:
    assert labels("NO PLEURAL   EFFUSION.")[O.PLEURAL_EFFUSION] is A
    assert labels("mild CARDIOMEGALY")[O.CARDIOMEGALY] is P


def test_split_sentences_keeps_decimals() -> None:
    text = "A 1.5 cm nodule. No effusion.\nImpression: nodule."
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == ["A 1.5 cm nodule.", "No effusion.", "Impression: nodule."]


def test_label_sections_reads_both_sections() -> None:
    got = label_sections("Heart size is normal. No pneumothorax.", "Small right pleural effusion.")
    assert got[O.PLEURAL_EFFUSION] is P and got[O.CARDIOMEGALY] is A and got[O.PNEUMOTHORAX] is A
    assert label_sections("", "") == {O.NO_FINDING: P}


def test_empty_text() -> None:
    assert find_mentions("") == []
