"""Fixtures of the drafting tests: the real IU reports and their labels (skipped when absent)."""

from __future__ import annotations

import pytest

from radalign.labeler import IUReport, iu_archive_path, label_sections, load_iu_reports
from schemas.events import Certainty, Observation


@pytest.fixture(scope="session")
def iu_reports() -> list[IUReport]:
    if iu_archive_path() is None:
        pytest.skip("the IU reports archive (torchxrayvision wheel, data/NLMCXR_reports.tgz) is not installed")
    return [r for r in load_iu_reports() if r.findings and r.impression]


@pytest.fixture(scope="session")
def labelled_iu(iu_reports: list[IUReport]) -> list[tuple[IUReport, dict[Observation, Certainty]]]:
    return [(r, label_sections(r.findings, r.impression)) for r in iu_reports]
