import re

import pytest

from radalign.kb.pseudonym import case_key, patient_key
from schemas.events import _KEY_PATTERN


def test_patient_key_is_stable_formatted_and_secret_dependent():
    key = patient_key("MRN-0042", "s1")
    assert key == patient_key("MRN-0042", "s1") == patient_key("  MRN-0042 ", "s1")
    assert re.fullmatch(r"pt-[0-9a-f]{16}", key)
    assert re.fullmatch(_KEY_PATTERN, key)
    assert key != patient_key("MRN-0042", "s2")
    assert key != patient_key("MRN-0043", "s1")
    assert "0042" not in key


def test_case_key_is_namespaced_by_kind_and_source():
    assert re.fullmatch(r"case-[0-9a-f]{16}", case_key("hospital-a", "ACC1", "s"))
    assert case_key("hospital-a", "ACC1", "s") != case_key("hospital-b", "ACC1", "s")
    assert case_key("hospital-a", "X", "s")[5:] != patient_key("X", "s")[3:]


@pytest.mark.parametrize("identifier, secret", [("", "s"), ("   ", "s"), ("id", "")])
def test_refuses_empty_identifier_or_secret(identifier, secret):
    with pytest.raises(ValueError):
        patient_key(identifier, secret)


def test_matches_the_gateway_pseudonyms():
    # Same-patient exclusion compares the gateway's patient_key with the stored one.
    deid = pytest.importorskip("radalign.ingest.deid", reason="gateway de-identification not installed")
    assert patient_key("PAT-7", "secret") == deid.Pseudonymizer("secret").patient_key("PAT-7")
