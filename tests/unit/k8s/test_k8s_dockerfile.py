"""The Dockerfile: dependencies installed before the source is copied (layer cache), base images
pinned to exact releases."""

import re

from k8s_support import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")


def _lines() -> list[str]:
    return [line.strip() for line in DOCKERFILE.replace("\\\n", " ").splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dependencies_are_installed_before_the_source_is_copied():
    lines = _lines()
    copy_source = next(i for i, line in enumerate(lines) if line.startswith("COPY . "))
    copy_pyproject = next(i for i, line in enumerate(lines) if line.startswith("COPY pyproject.toml"))
    install_deps = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    assert copy_pyproject < install_deps < copy_source
    stage_end = next((i for i, line in enumerate(lines) if i > copy_source and line.startswith("FROM ")), len(lines))
    after = [line for line in lines[copy_source:stage_end] if "pip install" in line]
    assert after and all("--no-deps" in line for line in after), "after the source, only the package itself is installed"


def test_base_images_are_pinned_to_exact_releases():
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE, re.M))
    images = [args[m.group(1)] if m.group(1) else m.group(2) for m in re.finditer(r"^FROM \$\{(\w+)\}|^FROM (\S+)", DOCKERFILE, re.M)]
    external = [i for i in images if ":" in i or "/" in i]
    assert external, images
    for image in external:
        tag = image.rsplit(":", 1)[-1]
        assert tag not in ("latest", "slim") and re.search(r"\d+\.\d+", tag), f"{image} is not pinned to a release"
