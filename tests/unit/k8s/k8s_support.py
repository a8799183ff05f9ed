"""Loading the manifests under k8s/ the way kustomize would see them (offline, no kubectl)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "k8s"
#: Kinds that come from CRDs: no upstream JSON schema; their required fields are checked by hand.
CRD_KINDS = {
    "PrometheusRule", "PodMonitor", "ServiceMonitor", "KafkaTopic", "KafkaUser", "Kafka", "KafkaNodePool", "ScaledObject",
    "TriggerAuthentication", "Cluster",
}
KUSTOMIZE_KINDS = {"Kustomization", "Component"}
#: Kubernetes version the manifests are validated against (kubernetes-validate's bundled schemas).
K8S_VERSION = "1.30.0"


@dataclass
class Doc:
    path: Path
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.body.get("kind", "")

    @property
    def name(self) -> str:
        return self.body.get("metadata", {}).get("name", "")


def load_docs(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as f:
        return [Doc(path, d) for d in yaml.safe_load_all(f) if d]


def all_yaml_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def all_docs() -> list[Doc]:
    return [d for p in all_yaml_files() for d in load_docs(p)]


@dataclass
class Build:
    """What a kustomization pulls in: resources (recursively), patches and generated Secrets."""

    resources: list[Doc] = field(default_factory=list)
    patches: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    generated_secrets: list[dict[str, Any]] = field(default_factory=list)

    def find(self, kind: str, name: str) -> list[Doc]:
        return [d for d in self.resources if d.kind == kind and d.name == name]


def kustomize(directory: Path, build: Build | None = None) -> Build:
    """Follow `resources`, `components`, `patches` and `secretGenerator` of a kustomization.

    Not a renderer: it collects what each overlay would contain so that tests can check that
    every referenced file exists and every patch has a target."""
    build = build or Build()
    kfile = directory / "kustomization.yaml"
    assert kfile.is_file(), f"{directory} has no kustomization.yaml"
    (kdoc,) = load_docs(kfile)
    k = kdoc.body
    for ref in [*k.get("resources", []), *k.get("components", [])]:
        target = (directory / ref).resolve()
        assert target.exists(), f"{kfile}: resource {ref} does not exist"
        if target.is_dir():
            kustomize(target, build)
        else:
            build.resources.extend(load_docs(target))
    for patch in k.get("patches", []):
        if "path" in patch:
            ppath = directory / patch["path"]
            assert ppath.is_file(), f"{kfile}: patch {patch['path']} does not exist"
            if "target" in patch:  # a JSON 6902 patch file (a list of operations) with its target
                build.patches.append((ppath, {"target": patch["target"], "inline": yaml.safe_load(ppath.read_text())}))
                continue
            for d in load_docs(ppath):
                build.patches.append((ppath, d.body))
        else:
            assert "patch" in patch, f"{kfile}: a patch needs `path` or `patch`"
            body = yaml.safe_load(patch["patch"])
            build.patches.append((kfile, {"target": patch.get("target"), "inline": body}))
    build.generated_secrets.extend(k.get("secretGenerator", []))
    return build
