"""Fixtures of the k8s tests; the helpers live in k8s_support.py (a unique module name, since
test modules import them and other folders have conftest.py files of their own)."""

from __future__ import annotations

import pytest
from k8s_support import K8S, Build, Doc, all_docs, kustomize


@pytest.fixture(scope="session")
def docs() -> list[Doc]:
    return all_docs()


@pytest.fixture(scope="session")
def base() -> Build:
    return kustomize(K8S / "base")
