"""The manifests under k8s/: they parse, validate against the Kubernetes schemas, wire every stage
the way the code expects, and carry neither patient data nor real secrets."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
from k8s_support import CRD_KINDS, K8S, K8S_VERSION, KUSTOMIZE_KINDS, REPO, Build, Doc, all_yaml_files, kustomize, load_docs

from radalign.config import Settings
from radalign.deploy import consumer_group, workload_name
from radalign.pipeline import CONSUMER_STAGES, GRAPH, STAGES, stage_spec

OVERLAYS = ("dev", "production")


@pytest.mark.parametrize("path", all_yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_yaml_file_parses_into_kubernetes_objects(path):
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for d in docs:
        assert isinstance(d.body, dict), f"{path}: a document is not a mapping"
        assert d.body.get("apiVersion") and d.kind, f"{path}: a document lacks apiVersion/kind"
        if d.kind not in KUSTOMIZE_KINDS:
            assert d.name, f"{path}: a {d.kind} has no metadata.name"


def test_core_kinds_validate_strictly_against_the_kubernetes_schema(docs):
    checked = 0
    for d in docs:
        if d.kind in CRD_KINDS or d.kind in KUSTOMIZE_KINDS or d.path.parent.name in OVERLAYS and _is_partial_patch(d):
            continue
        try:
            kubernetes_validate.validate(d.body, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{d.path.relative_to(K8S)} {d.kind}/{d.name}: {path}: {exc.message}")
        checked += 1
    assert checked >= 20  # every stage's Deployment, Service and PDB at least


def _is_partial_patch(d: Doc) -> bool:
    """Overlay patch files are partial objects (no selector, no image): they are checked by
    `test_every_patch_has_a_target`, not against the full schema."""
    kfile = d.path.parent / "kustomization.yaml"
    (k,) = load_docs(kfile)
    return any(p.get("path") == d.path.name for p in k.body.get("patches", []))


def test_validator_rejects_an_unknown_field():
    """The strict check has teeth: a misspelt field fails."""
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}], "selectr": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _container(build: Build, stage: str) -> dict:
    (dep,) = build.find("Deployment", workload_name(stage))
    (container,) = dep.body["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_a_deployment_service_and_pdb(base, stage):
    name = workload_name(stage)
    (dep,) = base.find("Deployment", name)
    (svc,) = base.find("Service", name)
    (pdb,) = base.find("PodDisruptionBudget", name)
    pod_labels = dep.body["spec"]["template"]["metadata"]["labels"]
    for selector in (svc.body["spec"]["selector"], dep.body["spec"]["selector"]["matchLabels"], pdb.body["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items(), f"{name}: a selector does not match the pod labels"
    assert _container(base, stage)["args"] == ["worker", stage]


@pytest.mark.parametrize("stage", STAGES)
def test_probes_and_scrape_target_use_the_stage_port_and_paths(base, stage):
    port = stage_spec(stage).web_port
    container = _container(base, stage)
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named["http"] == port
    probe_paths = {kind: container[kind]["httpGet"]["path"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probe_paths == {"livenessProbe": "/health/live", "readinessProbe": "/health/ready", "startupProbe": "/health/live"}
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert named[container[kind]["httpGet"]["port"]] == port
    (dep,) = base.find("Deployment", workload_name(stage))
    ann = dep.body["spec"]["template"]["metadata"]["annotations"]
    assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    (svc,) = base.find("Service", workload_name(stage))
    assert {p["name"]: p["port"] for p in svc.body["spec"]["ports"]}["http"] == port


def test_gateway_service_exposes_http_and_dicom(base):
    (svc,) = base.find("Service", workload_name("gateway"))
    ports = {p["name"]: p["port"] for p in svc.body["spec"]["ports"]}
    assert ports == {"http": stage_spec("gateway").web_port, "dicom": Settings.model_fields["dicom_port"].default}
    container_ports = {p["name"] for p in _container(base, "gateway")["ports"]}
    assert {p["targetPort"] for p in svc.body["spec"]["ports"]} <= container_ports


def test_gateway_listens_on_all_interfaces_inside_the_pod(base):
    """The settings default (127.0.0.1) would make the gateway unreachable through its Service."""
    (cm,) = base.find("ConfigMap", "radalign-config")
    assert cm.body["data"]["RADALIGN_GATEWAY_HOST"] == "0.0.0.0"


def test_every_config_key_is_a_setting_the_code_reads(docs):
    """A misspelt key (RADALIGN_TRITON_URL) would be ignored silently by pydantic-settings."""
    settings = {f"RADALIGN_{f.upper()}" for f in Settings.model_fields}
    maps = [d for d in docs if d.kind == "ConfigMap" and d.name == "radalign-config"]
    assert len(maps) == 3  # base and the two overlays' patches
    for cm in maps:
        unknown = {k for k in cm.body["data"] if k.startswith("RADALIGN_")} - settings
        assert not unknown, f"{cm.path.relative_to(K8S)}: no such settings {unknown}"
        assert set(cm.body["data"]) - settings <= {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}


def test_configured_partitions_match_the_topic_catalogue(base):
    (cm,) = base.find("ConfigMap", "radalign-config")
    assert {s.input.partitions for s in GRAPH if s.input} == {int(cm.body["data"]["RADALIGN_KAFKA_PARTITIONS"])}


@pytest.mark.parametrize("stage", STAGES)
def test_pods_run_non_root_with_a_read_only_root_filesystem(base, stage):
    (dep,) = base.find("Deployment", workload_name(stage))
    pod = dep.body["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = _container(base, stage)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The state dir (Faust data) and /tmp must be writable volumes, since the root is read-only.
    mounts = {m["mountPath"] for m in _container(base, stage)["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in _container(base, stage)["env"]}
    assert {env["RADALIGN_STATE_DIR"], "/tmp"} <= mounts
    res = _container(base, stage)["resources"]
    assert set(res["requests"]) == set(res["limits"]) == {"cpu", "memory"}


def test_consumer_stages_autoscale_no_further_than_their_partitions(base):
    for stage in CONSUMER_STAGES:
        (hpa,) = base.find("HorizontalPodAutoscaler", workload_name(stage))
        spec = stage_spec(stage).input
        assert hpa.body["spec"]["scaleTargetRef"]["name"] == workload_name(stage)
        assert hpa.body["spec"]["maxReplicas"] == spec.partitions
        # An HPA-managed Deployment must not pin replicas (apply would undo the HPA).
        (dep,) = base.find("Deployment", workload_name(stage))
        assert "replicas" not in dep.body["spec"]
    assert not base.find("HorizontalPodAutoscaler", workload_name("gateway"))


def test_triton_serves_http_grpc_metrics_and_probes_readiness(base):
    (dep,) = base.find("Deployment", "radalign-triton")
    (svc,) = base.find("Service", "radalign-triton")
    (container,) = dep.body["spec"]["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert {p["name"]: p["port"] for p in svc.body["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    (cm,) = base.find("ConfigMap", "radalign-config")
    assert cm.body["data"]["RADALIGN_TRITON_GRPC_URL"] == "radalign-triton:8001"


def test_production_triton_asks_for_a_gpu_and_serves_the_kind_gpu_repository():
    prod = kustomize(K8S / "overlays" / "production")
    patches = [b for _, b in prod.patches if b.get("kind") == "Deployment" and b["metadata"]["name"] == "radalign-triton"]
    (patch,) = patches
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TRITON_MODEL_REPOSITORY"].endswith("/gpu")
    gpu_config = (REPO / "triton_models" / "concept_model" / "config.gpu.pbtxt").read_text()
    assert "KIND_GPU" in gpu_config  # what `prepare_model_repository(gpu=True)` lays out under /gpu


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_patch_has_a_target(overlay):
    build = kustomize(K8S / "overlays" / overlay)
    assert build.patches
    for source, patch in build.patches:
        if "inline" in patch:
            inline, target = patch["inline"], patch["target"] or {}
            kind = target.get("kind") or (inline.get("kind") if isinstance(inline, dict) else None)
            matches = [d for d in build.resources if d.kind == kind and (not target.get("name") or d.name == target["name"])]
        else:
            matches = build.find(patch["kind"], patch["metadata"]["name"])
        assert matches, f"{source.relative_to(K8S)}: a patch targets nothing in the {overlay} build"


def test_keda_component_deletes_exactly_the_hpas_it_replaces(base):
    comp = kustomize(K8S / "components" / "keda")
    scaled = {d.body["spec"]["scaleTargetRef"]["name"] for d in comp.resources if d.kind == "ScaledObject"}
    deleted = {p["inline"]["metadata"]["name"] for _, p in comp.patches if p["inline"].get("$patch") == "delete"}
    hpas = {d.name for d in base.resources if d.kind == "HorizontalPodAutoscaler"}
    assert scaled == deleted == hpas == {workload_name(s) for s in CONSUMER_STAGES}
    for d in comp.resources:
        groups = {t["metadata"]["consumerGroup"] for t in d.body["spec"]["triggers"]}
        assert groups == {consumer_group(d.name.removeprefix("radalign-"))}


def test_production_applies_no_secret_and_dev_generates_only_dev_values():
    """A Secret in the production build would overwrite the real one created out of band."""
    prod = kustomize(K8S / "overlays" / "production")
    assert not [d for d in prod.resources if d.kind == "Secret"] and not prod.generated_secrets
    dev = kustomize(K8S / "overlays" / "dev")
    (gen,) = dev.generated_secrets
    assert gen["name"] == "radalign-secrets"
    for literal in gen["literals"]:
        key, _, value = literal.partition("=")
        assert value == "" or "dev-only" in value, f"dev secret {key} holds something that is not a dev placeholder"


# --- no patient identifiers, no real secrets ----------------------------------------------------

PATIENT_PATTERNS = [
    re.compile(r"Patient(Name|ID|BirthDate|Sex|Age)\b", re.I),
    re.compile(r"\(0010,\s*[0-9a-f]{4}\)", re.I),  # DICOM patient-module tags
    re.compile(r"\b\d+(\.\d+){6,}\b"),  # DICOM UIDs (study/series/instance)
    re.compile(r"\bMRN\b"),
]
SECRET_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),  # GitHub tokens
    re.compile(r"\bsk-[A-Za-z0-9]{20,}\b"),  # API keys in the OpenAI style
]
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|DSN)", re.I)
PLACEHOLDER = re.compile(r"^(|CHANGE-ME|dev-only.*|.*dev-only-password@.*)$")


def _shipped_text_files():
    return [*all_yaml_files(), REPO / "Dockerfile", REPO / ".dockerignore"]


@pytest.mark.parametrize("path", _shipped_text_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_patient_identifier_or_credential_in_deployment_files(path):
    text = path.read_text(encoding="utf-8")
    for pattern in PATIENT_PATTERNS + SECRET_PATTERNS:
        assert not pattern.search(text), f"{path.relative_to(REPO)} matches {pattern.pattern}"


def test_secret_like_values_are_placeholders(docs):
    seen = 0
    for d in docs:
        if d.kind == "Secret":
            for key, value in {**d.body.get("stringData", {}), **d.body.get("data", {})}.items():
                assert PLACEHOLDER.match(str(value)), f"{d.path.name}: Secret key {key} holds a value"
                seen += 1
        if d.kind == "ConfigMap" and d.name == "radalign-config":
            leaked = [k for k in d.body.get("data", {}) if SECRET_NAME.search(k)]
            assert not leaked, f"{d.path.name}: secret settings in a ConfigMap: {leaked}"
        for container in _containers(d.body):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]) and "value" in env:
                    assert PLACEHOLDER.match(env["value"]), f"{d.path.name}: env {env['name']} holds a literal secret"
                    seen += 1
    assert seen >= 6  # the example Secret's keys at least


def test_secret_example_names_every_secret_setting_the_code_reads():
    (example,) = load_docs(K8S / "base" / "secret.example.yaml")
    keys = set(example.body["stringData"])
    assert {"RADALIGN_DATABASE_URL", "RADALIGN_DEID_SECRET", "RADALIGN_GATEWAY_TOKENS", "RADALIGN_LLM_API_KEY"} <= keys
    for key in keys - {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}:
        assert key.removeprefix("RADALIGN_").lower() in Settings.model_fields, f"{key} is no setting"


def _containers(body: dict) -> list[dict]:
    spec = body.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if isinstance(spec, dict) else {}
    return [*pod.get("containers", []), *pod.get("initContainers", [])]
