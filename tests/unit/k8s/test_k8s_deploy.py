"""radalign.deploy: the generated manifests match the code's catalogue and are committed current."""

from __future__ import annotations

import pytest
from k8s_support import K8S, REPO, load_docs

from radalign import deploy
from radalign.pipeline import ALL_TOPICS, CONSUMER_STAGES, stage_spec


def test_generated_files_are_current():
    stale = deploy.stale_files(REPO)
    assert not stale, f"stale generated manifests {stale}: run `radalign k8s render`"


def test_check_mode_detects_a_stale_file(tmp_path):
    deploy.write_all(tmp_path)
    assert deploy.stale_files(tmp_path) == []
    target = tmp_path / "k8s/overlays/production/kafka-topics.yaml"
    target.write_text(target.read_text().replace("partitions: 4", "partitions: 3", 1))
    assert deploy.stale_files(tmp_path) == ["k8s/overlays/production/kafka-topics.yaml"]


def test_every_catalogue_topic_has_a_kafka_topic_with_its_partitions():
    manifests = deploy.kafka_topic_manifests()
    by_name = {m["spec"]["topicName"]: m for m in manifests}
    expected = {name: spec.partitions for spec in ALL_TOPICS for name in spec.names}
    assert {n: m["spec"]["partitions"] for n, m in by_name.items()} == expected
    assert len(manifests) == len(expected)
    # STAT twins exist where the catalogue has a STAT lane, and dead-letter topics for every stage.
    assert "radalign.study.received.v1.stat" in by_name and "radalign.dlq.drafting.v1" in by_name
    assert "radalign.report.drafted.v1.stat" in by_name  # delivery's STAT lane (issue 27)
    assert "radalign.report.review.v1.stat" not in by_name


@pytest.mark.parametrize("overlay,replicas", [("production", 3), ("dev", 1)])
def test_committed_kafka_topics_carry_strimzi_required_fields(overlay, replicas):
    docs = load_docs(K8S / "overlays" / overlay / "kafka-topics.yaml")
    assert {d.body["spec"]["topicName"] for d in docs} == {n for s in ALL_TOPICS for n in s.names}
    for d in docs:
        assert d.body["apiVersion"] == "kafka.strimzi.io/v1" and d.kind == "KafkaTopic"
        assert d.body["metadata"]["labels"]["strimzi.io/cluster"] == deploy.KAFKA_CLUSTER
        spec = d.body["spec"]
        assert spec["replicas"] == replicas and spec["partitions"] >= 1
        # min.insync below replicas: one broker down still accepts acks=all writes.
        assert 1 <= spec["config"]["min.insync.replicas"] <= max(1, replicas - 1)
        assert d.name == spec["topicName"]  # valid DNS-subdomain resource name


def test_topic_names_are_valid_resource_names():
    import re

    dns_subdomain = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    for m in deploy.kafka_topic_manifests():
        assert dns_subdomain.match(m["metadata"]["name"]) and len(m["metadata"]["name"]) <= 253


def test_dead_letter_topics_are_kept_longer_than_stream_topics():
    by_name = {m["spec"]["topicName"]: m["spec"]["config"]["retention.ms"] for m in deploy.kafka_topic_manifests()}
    assert by_name["radalign.dlq.preprocess.v1"] > by_name["radalign.study.received.v1"]


def test_keda_triggers_cover_both_lanes_with_a_lower_stat_threshold():
    for stage in CONSUMER_STAGES:
        obj = deploy.keda_scaled_object(stage)
        topics = {t["metadata"]["topic"]: int(t["metadata"]["lagThreshold"]) for t in obj["spec"]["triggers"]}
        spec = stage_spec(stage).input
        assert set(topics) == {n for s in stage_spec(stage).inputs for n in s.names}  # every topic it consumes
        if spec.has_stat_lane:  # every stage input has one, delivery's drafted reports included
            assert topics[f"{spec.name}.stat"] < topics[spec.name]
        assert obj["spec"]["maxReplicaCount"] == spec.partitions


def test_consumer_groups_match_the_faust_app_ids():
    """KEDA and the lag alerts name groups `radalign-<stage>`: the id Faust joins with."""
    import inspect

    from radalign.framework import faust_app

    assert 'f"radalign-{stage.name}"' in inspect.getsource(faust_app.create_app)
    assert deploy.consumer_group("retrieval") == "radalign-retrieval"


def test_typer_sub_app_checks_and_renders(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    runner = CliRunner()
    assert runner.invoke(deploy.deploy_app, ["check"]).exit_code == 0
    monkeypatch.setattr(deploy, "REPO_ROOT", tmp_path)
    assert runner.invoke(deploy.deploy_app, ["check"]).exit_code == 1  # nothing rendered there yet
    result = runner.invoke(deploy.deploy_app, ["render"])
    assert result.exit_code == 0, result.output
    assert "k8s/overlays/production/kafka-topics.yaml" in result.output.splitlines()
    assert runner.invoke(deploy.deploy_app, ["check"]).exit_code == 0


def test_ingresses_and_the_review_network_policy_offline():
    """Without kubectl: the generated Ingresses point at the exposed stages' HTTP ports, and each
    exposed stage's NetworkPolicy lets the ingress controller's namespace reach that port."""
    for ingress in deploy.ingress_manifests():
        stage = ingress["metadata"]["name"].removeprefix("radalign-")
        assert stage in deploy.EXPOSED_STAGES
        (rule,) = ingress["spec"]["rules"]
        assert ingress["spec"]["tls"] == [{"hosts": [rule["host"]], "secretName": f"radalign-{stage}-tls"}]
        assert rule["http"]["paths"][0]["backend"]["service"] == {"name": f"radalign-{stage}", "port": {"name": "http"}}
        assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"].endswith("m")
        policy = deploy.network_policy(stage)["spec"]["ingress"]
        port = {"protocol": "TCP", "port": stage_spec(stage).web_port}
        open_to_all = any("from" not in r and port in r["ports"] for r in policy)
        from_controller = any(
            port in r["ports"] and {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": deploy.INGRESS_NAMESPACE}}} in r.get("from", [])
            for r in policy
        )
        assert open_to_all or from_controller, stage
    # the other stages stay closed to the controller
    assert not any("ingress-nginx" in str(deploy.network_policy(s)) for s in ("preprocess", "concepts", "retrieval", "drafting", "delivery"))


def test_generated_workloads_carry_the_recommended_labels():
    for m in deploy.stage_manifests() + deploy.network_policy_manifests() + deploy.ingress_manifests():
        labels = m["metadata"]["labels"]
        assert labels["app.kubernetes.io/version"] and labels["app.kubernetes.io/instance"] == "radalign"
        assert labels["app.kubernetes.io/managed-by"] == "kustomize"
    for d in deploy.stage_manifests():
        if d["kind"] == "Deployment":  # selectors stay without the version: they are immutable
            assert "app.kubernetes.io/version" not in d["spec"]["selector"]["matchLabels"]
