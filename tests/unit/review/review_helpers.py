"""A drafted report to review, built from the contract's example."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemas.events import ReportDrafted
from schemas.examples import EXAMPLES


def drafted(study_key: str = "st-0000000000000001", *, priority: str = "routine", needs_review: bool = False,
            no_finding: float | None = 0.9, received_at: datetime | None = None, **changes: object) -> ReportDrafted:
    payload = json.loads(json.dumps(EXAMPLES["report_drafted"][0]))
    payload["study"].update(study_key=study_key, priority=priority,
                            received_at=(received_at or datetime(2026, 11, 30, 12, 0, tzinfo=UTC)).isoformat())
    payload["needs_review"] = needs_review
    concepts = [c for c in payload["concepts"] if c["observation"] != "No Finding"]
    if no_finding is not None:
        concepts.insert(0, {"observation": "No Finding", "probability": no_finding, "state": "present" if no_finding >= 0.5 else "absent",
                            "claim_precision": 0.84, "claim_films": 32})  # the serving model's measured figure for this claim
    payload["concepts"] = concepts
    payload.update(changes)
    return ReportDrafted.model_validate(payload)
