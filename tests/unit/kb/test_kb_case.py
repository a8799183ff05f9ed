from radalign.kb.case import CaseDraft, normalised_report, report_text
from schemas.events import Certainty as C
from schemas.events import Observation as O


def _draft(**changes):
    base = dict(
        case_key="case-1",
        patient_key="pt-1",
        source="t",
        findings="Heart is enlarged.",
        impression="Cardiomegaly.",
        labels={O.CARDIOMEGALY: C.PRESENT},
    )
    return CaseDraft(**(base | changes))


def test_content_hash_is_stable_and_covers_every_input():
    h = _draft().content_hash("enc")
    assert h == _draft().content_hash("enc")
    variants = [
        _draft(findings="Heart is normal."),
        _draft(impression="No acute disease."),
        _draft(labels={O.CARDIOMEGALY: C.UNCERTAIN}),
        _draft(patient_key="pt-2"),
        _draft(view="PA"),
        _draft(image_ref="/x.png"),
    ]
    hashes = {v.content_hash("enc") for v in variants}
    assert h not in hashes and len(hashes) == len(variants)
    assert _draft().content_hash("other-encoder") != h
    # The image model only matters for cases that have an image.
    assert _draft().content_hash("enc", "model-a") == h
    assert _draft(image_ref="/x.png").content_hash("enc", "a") != _draft(image_ref="/x.png").content_hash("enc", "b")


def test_report_text_labels_sections_and_skips_empty_ones():
    assert report_text("Clear lungs.", "Normal.") == "FINDINGS: Clear lungs.\nIMPRESSION: Normal."
    assert report_text("", "Normal.") == "IMPRESSION: Normal."


def test_normalised_report_ignores_case_space_and_punctuation_only():
    a = normalised_report("No  acute disease.", "Normal chest")
    assert a == normalised_report("no acute disease", "NORMAL CHEST.")
    assert a != normalised_report("No acute disease.", "Abnormal chest")
    # Findings and impression stay apart: moving text between sections is a different report.
    assert normalised_report("a b", "c") != normalised_report("a", "b c")
