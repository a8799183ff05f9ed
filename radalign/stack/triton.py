"""NVIDIA Triton Inference Server of the embedded stack: the `tritonserver` binary bundled in the
nvidia-pytriton wheel, run directly on a standard model repository (CPU, Python backend).

The package itself is never imported (it pins numpy and starts its own server); we only use its
files. See ENVIRONMENT.md for why LD_LIBRARY_PATH and PATH are set the way they are.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

import httpx
import psutil

from radalign.config import Settings
from radalign.sites.registry import seeded_registry
from radalign.stack.process import StatePaths, start_process
from radalign.stack.readiness import StackStartError, tcp_open, wait_until_ready

NAME = "triton"
#: The repository's model repository (`triton_models/` beside the packages).
DEFAULT_MODEL_REPO = Path(__file__).resolve().parents[2] / "triton_models"


def pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise StackStartError("nvidia-pytriton is not installed (scripts/bootstrap.sh installs it --no-deps)")
    return Path(next(iter(spec.submodule_search_locations)))


def tritonserver_binary(root: Path | None = None) -> Path:
    return (root or pytriton_dir()) / "tritonserver" / "bin" / "tritonserver"


def wheel_libs_dir(root: Path | None = None) -> Path:
    """The wheel's bundled shared libraries (libcudart etc.), beside `pytriton/`."""
    return (root or pytriton_dir()).parent / "nvidia_pytriton.libs"


def python_version_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def prepare_backend_dir(dest: Path, root: Path | None = None) -> Path:
    """Build `dest/python/` = the wheel's Python backend plus the stub for this interpreter's
    Python version (the wheel keeps stubs per version elsewhere). Copies only what changed."""
    server = (root or pytriton_dir()) / "tritonserver"
    stub = server / "python_backend_stubs" / python_version_tag() / "triton_python_backend_stub"
    if not stub.is_file():
        raise StackStartError(f"no Python-backend stub for Python {python_version_tag()} at {stub}")
    target = dest / "python"
    target.mkdir(parents=True, exist_ok=True)
    sources = [p for p in (server / "backends" / "python").iterdir() if p.is_file()] + [stub]
    for src in sources:
        out = target / src.name
        if not out.exists() or out.stat().st_size != src.stat().st_size or out.stat().st_mtime < src.stat().st_mtime:
            shutil.copy2(src, out)
    return dest


def triton_env(base: Mapping[str, str], root: Path | None = None) -> dict[str, str]:
    """The server's environment: our libpython before Debian's (the stub otherwise loads the
    system one and fails), then the wheel's libraries; our venv's `bin` first on PATH because the
    stub runs the models with the first `python` on PATH (numpy<2 needed)."""
    env = dict(base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, str(wheel_libs_dir(root)), base.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), base.get("PATH", "")) if p)
    return env


def triton_argv(binary: Path, model_repo: Path, backend_dir: Path, settings: Settings) -> list[str]:
    return [
        str(binary),
        f"--model-repository={model_repo}",
        f"--backend-directory={backend_dir}",
        "--model-control-mode=none",  # load every model of the repository at start, no API to (un)load
        "--strict-readiness=true",  # ready only when every model is ready
        "--exit-on-error=true",  # a model that fails to load stops the server: start fails loudly
        "--http-address=127.0.0.1",
        f"--http-port={settings.triton_http_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={settings.triton_grpc_port}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={settings.triton_metrics_port}",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=10",
    ]


def ready_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.triton_http_port}/v2/health/ready"


def triton_healthy(settings: Settings, timeout_s: float = 1.0) -> bool:
    try:
        return httpx.get(ready_url(settings), timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def start_triton(
    settings: Settings, paths: StatePaths, model_repo: Path | None = None, timeout_s: float = 180.0
) -> psutil.Process:
    """Start tritonserver on the settings' ports and wait until every model is loaded.

    Without `model_repo`, the project's `triton_models/` is copied under the state folder with the
    concept model exported into it (TorchScript; re-exported only when the checkpoint changed)."""
    if model_repo is None:
        from radalign.concepts_training.export import prepare_model_repository

        model_repo = prepare_model_repository(DEFAULT_MODEL_REPO, paths.data_dir(NAME) / "models", site_models_dir=seeded_registry(settings.sites_dir))
    model_repo = Path(model_repo).resolve()
    if not model_repo.is_dir():
        raise StackStartError(f"model repository {model_repo} does not exist")
    for port in (settings.triton_http_port, settings.triton_grpc_port, settings.triton_metrics_port):
        if tcp_open("127.0.0.1", port):
            raise StackStartError(f"port 127.0.0.1:{port} is already taken; is another Triton running?")
    root = pytriton_dir()
    backend_dir = prepare_backend_dir(paths.data_dir(NAME) / "backends", root)
    proc = start_process(
        paths,
        NAME,
        triton_argv(tritonserver_binary(root), model_repo, backend_dir, settings),
        env=triton_env(os.environ, root),
        inherit_env=False,
    )
    wait_until_ready(
        f"Triton on 127.0.0.1:{settings.triton_http_port} (models from {model_repo})",
        lambda: triton_healthy(settings, timeout_s=0.5),
        timeout_s=timeout_s,
        log_file=paths.log_file(NAME),
        proc=proc,
        interval_s=0.25,
    )
    return proc
