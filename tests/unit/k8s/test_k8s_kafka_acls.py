"""Least privilege on the broker (issue 26): one Strimzi KafkaUser per stage whose ACLs let it read
its inputs in its own consumer group and write its outputs and its dead-letter topic, nothing
else. Expectations are built from the stage graph's declaration (topic names and lanes as
declared), and read against the committed file, not against the generator's own helpers."""

from __future__ import annotations

import pytest
import yaml
from k8s_support import K8S

from radalign.pipeline import GRAPH, StageSpec

USERS_FILE = K8S / "overlays" / "production" / "kafka-users.yaml"


def _users() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(USERS_FILE.read_text()) if d]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "KafkaUser"}


def _lanes(topic) -> set[str]:
    return {topic.name, f"{topic.name}.stat"} if topic.has_stat_lane else {topic.name}


def _granted(user: dict, kind: str, operation: str) -> set[str]:
    return {
        a["resource"]["name"] for a in user["spec"]["authorization"]["acls"]
        if a["resource"]["type"] == kind and operation in a["operations"]
    }


@pytest.mark.parametrize("spec", GRAPH, ids=lambda s: s.name)
def test_each_stage_reads_its_inputs_and_writes_its_outputs_and_dead_letters_only(spec: StageSpec):
    user = _users()[f"radalign-{spec.name}"]
    assert user["spec"]["authentication"]["type"] == "tls"
    inputs = set().union(*(_lanes(t) for t in ((spec.input,) if spec.input else ()) + spec.extra_inputs)) if spec.consumes else set()
    outputs = set().union(set(), *(_lanes(t) for t in spec.outputs)) | {f"radalign.dlq.{spec.name}.v1"}
    assert _granted(user, "topic", "Read") == inputs
    assert _granted(user, "topic", "Write") == outputs
    assert _granted(user, "group", "Read") == ({f"radalign-{spec.name}"} if spec.consumes else set())
    for acl in user["spec"]["authorization"]["acls"]:
        assert acl["resource"]["patternType"] == "literal", "a prefix would reach topics added later"
        assert set(acl["operations"]) <= {"Read", "Write", "Describe"}, "no Create, Delete, Alter or All for a stage"
        assert acl["resource"]["type"] in {"topic", "group"}, "no cluster or transactional-id rights"


def test_drafting_cannot_write_final_reports_and_only_review_can():
    users = _users()
    assert "radalign.report.final.v1" not in _granted(users["radalign-drafting"], "topic", "Write")
    writers = {name for name, u in users.items() if "radalign.report.final.v1" in _granted(u, "topic", "Write")}
    assert writers == {"radalign-review"}
    # delivery's outputs leave Kafka: it writes its dead letters and nothing else
    assert _granted(users["radalign-delivery"], "topic", "Write") == {"radalign.dlq.delivery.v1"}


def test_keda_only_describes():
    keda = _users()["radalign-keda"]
    assert {op for a in keda["spec"]["authorization"]["acls"] for op in a["operations"]} == {"Describe"}


def test_every_stage_deployment_mounts_its_own_certificate():
    patches = [d for d in yaml.safe_load_all((K8S / "overlays" / "production" / "kafka-tls-volumes.yaml").read_text()) if d]
    mounted = {}
    for patch in patches:
        (volume,) = patch["spec"]["template"]["spec"]["volumes"]
        secrets = {s["secret"]["name"] for s in volume["projected"]["sources"]}
        mounted[patch["metadata"]["name"]] = secrets - {"radalign-kafka-cluster-ca-cert"}
    assert mounted == {f"radalign-{s.name}": {f"radalign-{s.name}"} for s in GRAPH}
