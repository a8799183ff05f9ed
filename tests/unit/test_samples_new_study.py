"""Each demo run sends its sample DICOM as a new study: the gateway is idempotent, so the same
objects sent again would be duplicates and the second `make demo` on one state folder would wait
for reports that never come."""

import pytest

from radalign.samples import as_new_study, chest_cr_files


@pytest.fixture
def cr_files():
    try:
        return chest_cr_files()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_every_study_uid_is_replaced_consistently_and_anew_on_each_call(cr_files):
    from pydicom import dcmread

    originals = [dcmread(f) for f in cr_files]
    first, second = as_new_study(cr_files), as_new_study(cr_files)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        before = [str(getattr(ds, keyword)) for ds in originals]
        after = [str(getattr(ds, keyword)) for ds in first]
        assert not set(after) & set(before)
        # objects that shared a UID still share its replacement (and only those)
        assert [a == b for a in before for b in before] == [a == b for a in after for b in after]
        assert not set(after) & {str(getattr(ds, keyword)) for ds in second}
    new = first[0]
    assert new.StudyInstanceUID not in (new.SeriesInstanceUID, new.SOPInstanceUID)
    assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
    assert new.PixelData == originals[0].PixelData and new.PatientID == originals[0].PatientID

