"""Render the overlays with a real kustomize (`kubectl kustomize`, offline) where kubectl exists,
and validate what a cluster would receive. Skipped where no kubectl is installed: the offline
checks in test_k8s_manifests.py still run there."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from k8s_support import CRD_KINDS, K8S, K8S_VERSION

from radalign.deploy import workload_name
from radalign.pipeline import CONSUMER_STAGES, STAGES, stage_spec


def _kubectl() -> str | None:
    # The Google Cloud SDK ships kubectl outside PATH on some images.
    return shutil.which("kubectl") or next(
        (str(p) for p in (Path("/usr/lib/google-cloud-sdk/bin/kubectl"), Path("/usr/local/bin/kubectl")) if p.is_file()), None
    )


KUBECTL = _kubectl()
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (for `kubectl kustomize`) is not installed")


def build(directory: Path) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, f"kustomize {directory} failed: {out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: build(K8S / "overlays" / name) for name in ("dev", "production")}


def _find(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_rendered_overlay_validates_and_is_namespaced(rendered, overlay):
    docs = rendered[overlay]
    for d in docs:
        if d["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "radalign", f"{d['kind']}/{d['metadata']['name']} has no namespace"
    for stage in STAGES:
        dep = _find(docs, "Deployment", workload_name(stage))
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        assert "/" in image and ":" in image, f"{stage}: image {image} was not set by the overlay"


def test_dev_secret_reference_follows_the_generated_name(rendered):
    docs = rendered["dev"]
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    dep = _find(docs, "Deployment", workload_name("retrieval"))
    refs = [e["secretRef"]["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["envFrom"] if "secretRef" in e]
    assert refs == [secret["metadata"]["name"]]


def test_production_render_has_gpu_triton_two_consumers_and_no_secret(rendered):
    docs = rendered["production"]
    triton = _find(docs, "Deployment", "radalign-triton")
    container = triton["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {e["name"]: e["value"] for e in container["env"]}["TRITON_MODEL_REPOSITORY"] == "/opt/radalign/models/gpu"
    # KEDA is the production default: lag-based ScaledObjects (over the TLS listener) replace the
    # CPU HPAs, and keep two consumers per stage at least
    assert "HorizontalPodAutoscaler" not in {d["kind"] for d in docs}
    for stage in CONSUMER_STAGES:
        scaled = _find(docs, "ScaledObject", workload_name(stage))["spec"]
        assert scaled["minReplicaCount"] >= 2
        assert all(t["metadata"]["bootstrapServers"].endswith(":9093") and t["metadata"]["tls"] == "enable" for t in scaled["triggers"])
    assert not [d for d in docs if d["kind"] == "Secret"]
    assert {"PrometheusRule", "PodMonitor", "KafkaTopic", "KafkaUser", "Kafka", "KafkaNodePool", "TriggerAuthentication"} <= {d["kind"] for d in docs}
    assert {d["apiVersion"] for d in docs if d["kind"].startswith("Kafka")} == {"kafka.strimzi.io/v1"}
    for stage in STAGES:  # the workers use that listener with the KafkaUser's certificate
        container = _find(docs, "Deployment", workload_name(stage))["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RADALIGN_KAFKA_SECURITY_PROTOCOL"] == "SSL" and env["RADALIGN_KAFKA_BOOTSTRAP"].endswith(":9093")
        assert any(m["name"] == "kafka-tls" for m in container["volumeMounts"])
        pod = _find(docs, "Deployment", workload_name(stage))["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "kafka-tls"]
        # its own KafkaUser's certificate (least privilege), beside the cluster CA
        assert {s["secret"]["name"] for s in volume["projected"]["sources"]} == {"radalign-kafka-cluster-ca-cert", f"radalign-{stage}"}
    (kafka,) = [d for d in docs if d["kind"] == "Kafka"]
    tls = [lst for lst in kafka["spec"]["kafka"]["listeners"] if lst["tls"]]
    assert tls and tls[0]["authentication"]["type"] == "tls"


def _build_with_component(tmp_path: Path, overlay: str, component: str) -> list[dict]:
    """`kustomize build` of an overlay with one component added (kustomize takes relative roots only)."""
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp_path)],
        "components": [os.path.relpath(K8S / "components" / component, tmp_path)],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return build(tmp_path)


def test_cloudnative_pg_component_gives_every_workload_the_operator_secret(tmp_path):
    docs = _build_with_component(tmp_path, "production", "cloudnative-pg")
    (cluster,) = [d for d in docs if d["kind"] == "Cluster"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1" and "vector" in cluster["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"][0]
    for stage in STAGES:
        env = _find(docs, "Deployment", workload_name(stage))["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "RADALIGN_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "radalign-pg-app", "key": "uri"}}} in env
    job = _find(docs, "Job", "radalign-db-migrate")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert any(e["name"] == "RADALIGN_DATABASE_URL" for e in job)
    triton = _find(docs, "Deployment", "radalign-triton")["spec"]["template"]["spec"]["containers"][0].get("env", [])
    assert not any(e["name"] == "RADALIGN_DATABASE_URL" for e in triton)


def test_keda_component_replaces_the_hpas(tmp_path):
    docs = _build_with_component(tmp_path, "dev", "keda")
    kinds = {d["kind"] for d in docs}
    assert "HorizontalPodAutoscaler" not in kinds
    assert {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "ScaledObject"} == {workload_name(s) for s in CONSUMER_STAGES}


def test_production_render_exposes_the_review_app_through_an_ingress(rendered):
    """TLS, host, nginx body size; the backend is the review Service's HTTP port; the NetworkPolicy
    admits the ingress controller's namespace on that port (the render is validated above)."""
    docs = rendered["production"]
    ingress = _find(docs, "Ingress", workload_name("review"))
    spec = ingress["spec"]
    (rule,) = spec["rules"]
    assert spec["ingressClassName"] == "nginx" and spec["tls"][0]["hosts"] == [rule["host"]] and spec["tls"][0]["secretName"]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    service = _find(docs, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    policy = _find(docs, "NetworkPolicy", workload_name("review"))["spec"]
    port = stage_spec("review").web_port
    assert any(
        any(f.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "ingress-nginx" for f in r.get("from", []))
        and {"protocol": "TCP", "port": port} in r["ports"]
        for r in policy["ingress"]
    )
    gateway = _find(docs, "Ingress", workload_name("gateway"))
    assert gateway["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "64m"
    assert "Ingress" not in {d["kind"] for d in rendered["dev"]}


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_workloads_carry_the_recommended_labels(rendered, overlay):
    for d in rendered[overlay]:
        if d["kind"] in {"Deployment", "Service", "Ingress", "NetworkPolicy"} and d["metadata"]["name"] in {workload_name(s) for s in STAGES}:
            labels = d["metadata"]["labels"]
            for key in ("app.kubernetes.io/version", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
                assert labels.get(key), f"{d['kind']}/{d['metadata']['name']} has no {key}"
