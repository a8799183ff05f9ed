"""The patient's age from the DICOM header, read at the gateway before de-identification removes it."""

import pytest
from pydicom import Dataset

from radalign.ingest.dicom import header_age_years


@pytest.mark.parametrize(
    ("fields", "years"),
    [
        ({"PatientAge": "045Y"}, 45.0),
        ({"PatientAge": "018M"}, 1.5),
        ({"PatientAge": "026W"}, 26 / 52.1775),
        ({"PatientAge": "030D"}, 30 / 365.25),
        ({"PatientBirthDate": "20100315", "StudyDate": "20200316"}, 10.0),
        ({"PatientAge": "45"}, None),  # malformed: no unit, no dates
        ({"PatientBirthDate": "2010", "StudyDate": "20200316"}, None),
        ({}, None),
    ],
)
def test_age_from_patient_age_or_dates(fields, years):
    ds = Dataset()
    for keyword, value in fields.items():
        setattr(ds, keyword, value)
    got = header_age_years(ds)
    assert got == pytest.approx(years, abs=0.01) if years is not None else got is None
