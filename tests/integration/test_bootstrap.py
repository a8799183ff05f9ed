"""The two commands on one clone: `make test`'s set-up (with the embedded LLM) and `make demo`'s
(without it) run in either order, and the project stays installed from this checkout, so the
demo finds `triton_models/` beside the packages (a non-editable install once put a copy in
site-packages, and the demo then failed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _bootstrap(with_llm: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RADALIGN_WITH_LLM": with_llm, "RADALIGN_VENV": str(VENV)}
    return subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)


def _installed_from() -> tuple[Path, Path]:
    code = "import radalign.concepts_training.export as e, radalign; print(radalign.__file__); print(e.REPO_MODELS)"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120, check=True).stdout.split()
    return Path(out[0]).resolve(), Path(out[1]).resolve()


@pytest.mark.skipif(VENV == Path(sys.base_prefix), reason="runs the bootstrap in the project's virtual environment only")
@pytest.mark.parametrize("order", [("1", "0"), ("0", "1")], ids=["test-then-demo", "demo-then-test"])
def test_set_ups_of_both_commands_keep_the_checkout_installed(order):
    for with_llm in order:
        result = _bootstrap(with_llm)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        package, models = _installed_from()
        assert package == REPO / "radalign" / "__init__.py", f"radalign imported from {package}"
        assert models == REPO / "triton_models" and (models / "concept_model" / "config.pbtxt").exists()
