import pytest

from radalign.kb.labels import (
    N_OBSERVATIONS,
    OBSERVATIONS,
    decode_label_vector,
    encode_label_vector,
    labels_from_json,
    labels_to_json,
)
from schemas.events import Certainty as C
from schemas.events import Observation as O


def test_vector_follows_chexpert_order_and_coding():
    vector = encode_label_vector({O.CARDIOMEGALY: C.PRESENT, O.NO_FINDING: C.ABSENT, O.SUPPORT_DEVICES: C.UNCERTAIN})
    assert len(vector) == N_OBSERVATIONS == 14
    assert OBSERVATIONS[0] is O.NO_FINDING and OBSERVATIONS[-1] is O.SUPPORT_DEVICES
    assert vector[0] == 0 and vector[2] == 1 and vector[13] == -1
    assert [v for i, v in enumerate(vector) if i not in (0, 2, 13)] == [None] * 11


def test_vector_round_trip_keeps_unmentioned_out():
    labels = {O.EDEMA: C.PRESENT, O.PNEUMOTHORAX: C.ABSENT, O.ATELECTASIS: C.UNCERTAIN}
    assert decode_label_vector(encode_label_vector(labels)) == labels
    assert decode_label_vector([None] * 14) == {}


def test_decode_refuses_wrong_length():
    with pytest.raises(ValueError):
        decode_label_vector([1, 0])


def test_json_round_trip_uses_names_and_states():
    labels = {O.PLEURAL_EFFUSION: C.PRESENT, O.FRACTURE: C.ABSENT}
    data = labels_to_json(labels)
    assert data == {"Pleural Effusion": "present", "Fracture": "absent"}
    assert labels_from_json(data) == labels
