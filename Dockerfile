# syntax=docker/dockerfile:1.7
# RadAlign Stream images. NOT BUILT HERE: no Docker daemon runs on the development machines;
# CI (or a workstation with Docker/BuildKit) builds and pushes them.
#
#   docker build -t radalign-stream .                  # worker image (CPU): every stage, `radalign worker <stage>`
#   docker build --target triton -t radalign-triton .  # NVIDIA Triton + the concept model repository (CPU and GPU)
#
# GPU: the workers never need one (the model runs in Triton), so the worker image carries CPU
# torch only. The `triton` target is the GPU image: NVIDIA's Triton container with CUDA torch for
# the Python-backend model, and both model repositories (KIND_CPU and KIND_GPU) baked in.

# Base images pinned to exact releases (a rebuild gets the same OS and Python); production CI
# should also pin their digests (`docker buildx imagetools inspect IMAGE`) once it can reach the registry.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG TORCH_VERSION=2.13.0
# Triton 2.51.0 = NGC 24.10, the server version the embedded dev stack runs (nvidia-pytriton 0.7.0).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

# --- build: the project and its dependencies in a virtual environment ---------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
ARG TORCH_VERSION
# CPU torch from PyTorch's CPU index: PyPI's Linux wheel bundles CUDA (gigabytes the workers never use).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
# Dependencies before the source: this layer is rebuilt only when pyproject.toml changes, not on
# every code change. The list is read from pyproject.toml (dependencies + the `s3` extra).
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['s3']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && python -c "import numpy; assert numpy.__version__.startswith('1.'), numpy.__version__"
COPY . /src
# Not editable: the image holds the installed package only; its dependencies are already there.
RUN pip install --no-deps "/src"

# --- models: export the concept model and lay out Triton's model repositories --------------------
FROM build AS models
# Needs the checkpoint radalign/concepts/checkpoints/concept_head.v2.pt in the build context.
# Site heads are read at run time from the site-model registry volume (k8s: radalign-site-models,
# mounted at /var/lib/radalign/sites; `radalign sites ...` and the retrain CronJob write it).
RUN cd /src && python -c "from radalign.concepts_training.export import prepare_model_repository as prep; \
s = '/var/lib/radalign/sites'; prep('triton_models', '/models/cpu', site_models_dir=s); prep('triton_models', '/models/gpu', gpu=True, site_models_dir=s)"

# --- triton: NVIDIA's Triton with the model repositories -----------------------------------------
FROM ${TRITON_IMAGE} AS triton
ARG TORCH_VERSION
# The Python backend runs model.py with the image's python3: it needs torch (the CUDA build from
# PyPI, matching the version that exported the TorchScript file) and numpy<2 (numpy 2 breaks
# the backend's output tensors, see README "Environment").
RUN python3 -m pip install --no-cache-dir "numpy<2" "torch==${TORCH_VERSION}"
COPY --from=models --chown=1000:1000 /models /opt/radalign/models
# `triton-server` (uid 1000), the non-root user of NVIDIA's image; k8s runs it with a read-only root.
USER 1000
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/opt/radalign/models/cpu"]

# --- worker (default target): one image for every stage ------------------------------------------
FROM ${PYTHON_IMAGE} AS worker
RUN groupadd --gid 10001 radalign && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin radalign \
 && install -d -o 10001 -g 10001 /var/lib/radalign
COPY --from=build /opt/venv /opt/venv
# Read-only root filesystem in Kubernetes: no bytecode writes, caches under /tmp, state on a volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RADALIGN_STATE_DIR=/var/lib/radalign \
    RADALIGN_GATEWAY_HOST=0.0.0.0 \
    RADALIGN_WEB_HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/radalign
# Stage HTTP ports (radalign.config.STAGE_WEB_PORTS) and the gateway's DICOM port.
EXPOSE 18080 18101 18102 18103 18104 18105 11112
ENTRYPOINT ["radalign"]
CMD ["--help"]
