"""The contracts: generated files are current, examples validate, bad payloads are refused with a reason."""

from __future__ import annotations

import json

import jsonschema
import pytest

from radalign.framework import codec
from radalign.pipeline import ALL_TOPICS, GRAPH, stage_spec
from radalign.schemas_export import render
from schemas.events import ALL_CONTRACTS, Priority, StudyReceived, schema_file
from schemas.examples import EXAMPLES
from schemas.topics import STUDY_RECEIVED, dead_letter_topic


@pytest.mark.parametrize("contract", ALL_CONTRACTS, ids=lambda c: c.schema_name)
def test_schema_file_is_current(contract):
    assert schema_file(contract).read_text(encoding="utf-8") == render(contract), (
        f"{schema_file(contract).name} is stale: run `radalign schemas export`"
    )


@pytest.mark.parametrize("contract", ALL_CONTRACTS, ids=lambda c: c.schema_name)
def test_examples_validate_against_json_schema_and_model(contract):
    document = json.loads(schema_file(contract).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(document)
    validator = jsonschema.Draft202012Validator(document)
    assert document["examples"], "every schema carries at least one example"
    for example in document["examples"]:
        validator.validate(example)
        model = contract.model_validate(example)
        # Round trip through the wire format gives the same payload.
        assert codec.decode(contract, codec.encode(model)) == model


def _example(name: str) -> dict:
    return json.loads(json.dumps(EXAMPLES[name][0]))


@pytest.mark.parametrize(
    ("mutate", "reason_part"),
    [
        (lambda p: p.pop("instances"), "instances: Field required"),
        (lambda p: p.update(instances=[]), "instances: List should have at least 1 item"),
        (lambda p: p["study"].update(study_key="Jane Doe"), "study.study_key"),
        (lambda p: p.update(modality="CT"), "modality"),
        (lambda p: p.update(patient_name="DOE^JANE"), "patient_name: Extra inputs are not permitted"),
        (lambda p: p["instances"][0]["blob"].update(sha256="abc"), "sha256"),
    ],
)
def test_invalid_payloads_are_refused_with_a_reason(mutate, reason_part):
    payload = _example("study_received")
    mutate(payload)
    with pytest.raises(codec.ContractViolation) as info:
        codec.decode(StudyReceived, json.dumps(payload).encode())
    assert reason_part in str(info.value)
    document = json.loads(schema_file(StudyReceived).read_text(encoding="utf-8"))
    assert not jsonschema.Draft202012Validator(document).is_valid(payload)


def test_not_json_is_refused():
    with pytest.raises(codec.ContractViolation, match="study_received"):
        codec.decode(StudyReceived, b"\x00\x01 not json")
    with pytest.raises(codec.ContractViolation, match="tombstone"):
        codec.decode(StudyReceived, None)


def test_topic_catalogue_flows_one_way_and_has_stat_lanes():
    names = [n for t in ALL_TOPICS for n in t.names]
    assert len(names) == len(set(names))
    assert STUDY_RECEIVED.lane(Priority.STAT) == "radalign.study.received.v1.stat"
    assert STUDY_RECEIVED.lane(Priority.ROUTINE) == "radalign.study.received.v1"
    # Each stage reads what a stage declared before it writes: data flows one way.
    for i, stage in enumerate(GRAPH):
        for spec in stage.inputs:
            assert any(spec in upstream.outputs for upstream in GRAPH[:i]), (stage.name, spec.name)
    assert dead_letter_topic("concepts").name == "radalign.dlq.concepts.v1"
    with pytest.raises(ValueError):
        stage_spec("nope")
    with pytest.raises(ValueError):
        dead_letter_topic("no such/stage")
