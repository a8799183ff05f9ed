"""Nothing patient-specific travels from a retrieved report into another patient's draft."""

import pytest

from radalign.drafting.sanitise import check_sentence, sanitise, unsafe_words


@pytest.mark.parametrize(
    ("sentence", "reason"),
    [
        ("A patchy infiltrate is also present in the right lower lobe.", "laterality"),
        ("Bibasilar atelectasis.", "laterality"),
        ("Opacity at the lung bases.", "location"),
        ("Apical pleural thickening.", "location"),
        ("Calcified granuloma in the lingula.", "location"),
        ("There is a 2 cm nodule.", "measurement"),
        ("Small pleural effusion.", "measurement"),
        ("Clearing of airspace disease.", "temporal"),
        ("The opacity is again seen.", "comparison"),
        ("Unchanged cardiomegaly.", "comparison"),
        ("Compared with the prior study, the effusion is smaller.", "comparison"),
        ("New consolidation.", "temporal"),
        ("Interval improvement of edema.", "temporal"),
        ("The catheter tip terminates in the SVC.", "device_position"),
        ("Status post CABG.", "history"),
        ("History of tuberculosis.", "history"),
        ("Degenerative change of the knee.", "off_topic"),
        ("The XXXX are normal.", "history"),
    ],
)
def test_patient_specific_sentences_are_refused_with_their_reason(sentence, reason):
    verdict = check_sentence(sentence)
    assert not verdict.ok and reason in {r for r, _ in verdict.reasons}, verdict.reasons


@pytest.mark.parametrize(
    "sentence",
    ["The lungs are clear.", "Heart size is normal.", "No pneumothorax or pleural effusion.", "No acute bony abnormality.",
     "The cardiomediastinal silhouette is within normal limits.", "There is pulmonary edema.", "Support hardware is in place.",
     "Heart size is at the upper limits of normal.", "PA and lateral views of the chest were obtained."],
)
def test_general_statements_pass(sentence):
    assert check_sentence(sentence).ok, check_sentence(sentence).reasons


def test_sanitise_keeps_only_safe_sentences_and_allowed_words_pass():
    text = "Heart size is normal. Left basilar opacity, unchanged. No pneumothorax. Right PICC tip in the SVC."
    assert sanitise(text) == "Heart size is normal. No pneumothorax."
    assert unsafe_words("Left effusion.", allowed={"left"}) == []


@pytest.mark.parametrize("sentence", ["Air in the transverse colon.", "The liver is enlarged.", "Bowel gas pattern is normal."])
def test_other_body_parts_are_off_topic(sentence):
    assert "off_topic" in {r for r, _ in check_sentence(sentence).reasons}
