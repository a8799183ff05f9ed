"""CheXpert label sets as the case store keeps them: a jsonb map and a compact smallint[14].

The compact vector follows CheXpert's own coding (1 present, 0 absent, -1 uncertain, blank when
the report does not mention the observation), in the order of `schemas.events.Observation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas.events import OBSERVATIONS, Certainty, Labels, Observation

#: CheXpert's order; index i of a label vector is OBSERVATIONS[i].
N_OBSERVATIONS = len(OBSERVATIONS)

LabelVector = tuple[int | None, ...]

_CODE = {Certainty.PRESENT: 1, Certainty.ABSENT: 0, Certainty.UNCERTAIN: -1}
_STATE = {code: state for state, code in _CODE.items()}


def encode_label_vector(labels: Labels) -> LabelVector:
    """`{Cardiomegaly: present}` -> `(None, None, 1, None, ...)` (length 14)."""
    return tuple(_CODE[Certainty(labels[o])] if o in labels else None for o in OBSERVATIONS)


def decode_label_vector(vector: Sequence[int | None]) -> dict[Observation, Certainty]:
    if len(vector) != N_OBSERVATIONS:
        raise ValueError(f"a label vector has {N_OBSERVATIONS} entries, got {len(vector)}")
    return {o: _STATE[int(code)] for o, code in zip(OBSERVATIONS, vector, strict=True) if code is not None}


def labels_to_json(labels: Labels) -> dict[str, str]:
    """`{Observation.CARDIOMEGALY: Certainty.PRESENT}` -> `{"Cardiomegaly": "present"}` in CheXpert order."""
    return {o.value: Certainty(labels[o]).value for o in OBSERVATIONS if o in labels}


def labels_from_json(data: Mapping[str, str]) -> dict[Observation, Certainty]:
    return {Observation(name): Certainty(state) for name, state in data.items()}
