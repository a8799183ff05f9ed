import pytest

from radalign.drafting.text import MalformedReport, parse_sections, split_sentences, strip_priors


def test_split_sentences_keeps_abbreviations_and_drops_numbering():
    text = "1. Heart size is normal. 2. No effusion, i.e. the angles are sharp. Lungs clear"
    assert split_sentences(text) == ["Heart size is normal.", "No effusion, i.e. the angles are sharp.", "Lungs clear."]


def test_strip_priors_removes_comparisons_and_redactions():
    text = (
        "Heart size is normal. Compared to the prior study, the effusion is smaller. "
        "Unchanged right basilar scarring. Interval placement of a catheter. "
        "Stable calcified granuloma. The XXXX are intact. No pneumothorax."
    )
    assert strip_priors(text) == "Heart size is normal. No pneumothorax."


@pytest.mark.parametrize(
    ("text", "continuation", "expected"),
    [
        ("FINDINGS: Heart normal.\nIMPRESSION: Normal chest.", False, ("Heart normal.", "Normal chest.")),
        ("**Findings:** Heart normal.\n**Impression:** Normal chest.", False, ("Heart normal.", "Normal chest.")),
        (" Heart normal. Lungs clear.\nIMPRESSION: Normal chest.", True, ("Heart normal. Lungs clear.", "Normal chest.")),
        # a model that starts a second report: the first sections win
        ("FINDINGS: A.\nIMPRESSION: B.\nFINDINGS: C.\nIMPRESSION: D.", False, ("A.", "B.")),
    ],
)
def test_parse_sections(text, continuation, expected):
    assert parse_sections(text, starts_in_findings=continuation) == expected


@pytest.mark.parametrize("text", ["FINDINGS: Heart normal.", "IMPRESSION: Normal.", "FINDINGS:\nIMPRESSION: x", "just prose"])
def test_parse_sections_rejects_missing_sections(text):
    with pytest.raises(MalformedReport):
        parse_sections(text)
