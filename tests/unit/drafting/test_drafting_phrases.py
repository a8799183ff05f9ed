"""The phrase table: every sentence reads back, through the project's labeler, as exactly the
observations and states it is written for, and carries nothing patient-specific."""

import json

import pytest

from radalign.drafting.phrases import load_phrase_table, parse_phrase_table
from radalign.drafting.sanitise import check_sentence
from radalign.labeler import label_report
from schemas.events import Certainty, Observation

TABLE = load_phrase_table()
EXPECTED = {"present": Certainty.PRESENT, "likely": Certainty.UNCERTAIN, "possible": Certainty.UNCERTAIN}


def _read(sentence: str) -> dict[Observation, Certainty]:
    return {o: c for o, c in label_report(sentence).items() if o is not Observation.NO_FINDING}


@pytest.mark.parametrize("observation", list(TABLE.observations))
@pytest.mark.parametrize("band", ["present", "likely", "possible", "absent"])
def test_each_sentence_reads_back_as_written(observation, band):
    sentence = TABLE.observations[observation].sentence(band)
    if sentence is None:
        assert band == "absent"
        return
    read = _read(sentence)
    if band == "absent":
        # a normal statement: nothing positive or hedged, and at most this observation negated
        assert set(read) <= {observation} and all(c is Certainty.ABSENT for c in read.values()), (sentence, read)
    else:
        assert read == {observation: EXPECTED[band]}, (sentence, read)
    assert check_sentence(sentence).ok, (sentence, check_sentence(sentence).reasons)


@pytest.mark.parametrize("group", TABLE.absent_groups, ids=lambda g: g.sentence)
def test_absent_groups_claim_nothing_outside_the_group(group):
    read = _read(group.sentence)
    assert read and set(read) <= group.observations and all(c is Certainty.ABSENT for c in read.values()), read
    assert check_sentence(group.sentence).ok


def test_impression_and_footer_wording_claims_nothing():
    for key in ("normal", "normal_partial", "not_normal_unspecified", "ood_impression"):
        assert _read(TABLE.impression[key]) == {}, key
    for reason in TABLE.ood_reasons.values():
        text = TABLE.impression["ood_findings"].format(reason=reason)
        assert _read(text) == {} and check_sentence(text).ok, text


def test_malformed_table_is_refused_with_a_reason():
    raw = json.loads((__import__("importlib.resources").resources.files("radalign.drafting") / "phrases.v1.json").read_text())
    del raw["observations"]["Pneumothorax"]
    with pytest.raises(ValueError, match="no phrases for Pneumothorax"):
        parse_phrase_table(raw)
    raw = json.loads((__import__("importlib.resources").resources.files("radalign.drafting") / "phrases.v1.json").read_text())
    raw["observations"]["Edema"]["section"] = "abdomen"
    with pytest.raises(ValueError, match="unknown section"):
        parse_phrase_table(raw)
    with pytest.raises(ValueError, match="unknown phrase table"):
        load_phrase_table("phrases.v0.json")
