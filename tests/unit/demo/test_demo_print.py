"""The demo prints each draft as a radiologist reads it: sections in order, impression, footer."""

import sys
from pathlib import Path

from radalign.config import Settings
from radalign.demo import structured_text
from radalign.drafting.core import DraftingCore
from schemas.events import Certainty, Observation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "drafting"))
from drafting_helpers import make_event


async def test_structured_draft_is_printed_section_by_section_with_its_footer():
    labels = {o: Certainty.ABSENT for o in (Observation.CARDIOMEGALY, Observation.PLEURAL_EFFUSION, Observation.PNEUMOTHORAX)}
    labels[Observation.EDEMA] = Certainty.PRESENT
    report = await DraftingCore(Settings(), None).draft(make_event(labels, []))
    text = structured_text(report)
    heart, lungs, pleura = text.index("Heart and mediastinum:"), text.index("Lungs:"), text.index("Pleura:")
    assert heart < lungs < pleura < text.index("IMPRESSION")
    assert "There is pulmonary edema." in text and "Not assessed by the model" in text and "fracture" in text
