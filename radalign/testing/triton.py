"""A private Triton serving the concept model, for the integration test and the benchmark.

Uses the embedded stack's launcher (`radalign.stack`) on free ports and a temporary state
folder, so it can run beside a developer's stack."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT
from radalign.concepts_training.export import prepare_model_repository
from radalign.config import Settings
from radalign.sites.registry import seeded_registry
from radalign.testing.stack import free_port as _free_port


@contextlib.contextmanager
def local_concept_triton(checkpoint: str | Path = DEFAULT_CHECKPOINT, model_repo: Path | None = None) -> Iterator[Settings]:
    """Export the checkpoint into a model repository, start tritonserver on it, yield Settings
    whose `triton_grpc_url` reaches it; stop it and remove the state folder on exit."""
    from radalign.stack import stop
    from radalign.stack.manager import up

    # directly under /tmp: socket paths of the stack must stay short
    state_dir = Path(tempfile.mkdtemp(prefix="radalign-triton-"))
    grpc = _free_port()
    settings = Settings(
        state_dir=state_dir, triton_http_port=_free_port(), triton_grpc_port=grpc, triton_grpc_url=f"127.0.0.1:{grpc}",
        triton_metrics_port=_free_port(), stack_external="",
    )
    repo = prepare_model_repository(dst=model_repo or state_dir / "models", checkpoint=checkpoint, site_models_dir=seeded_registry(settings.sites_dir))
    try:
        up(settings, ["triton"], model_repo=repo)
        yield settings
    finally:
        stop("triton", settings)
        shutil.rmtree(state_dir, ignore_errors=True)
