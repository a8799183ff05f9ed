"""The supervisor restarts every component `up` starts, the same way `up` starts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from radalign.config import Settings
from radalign.stack import components, supervisor, workers
from radalign.stack.components import SERVICES
from radalign.stack.process import StatePaths


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_is_restarted_through_ups_own_start(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[str, Path | None]] = []
    monkeypatch.setattr(components, "start_service", lambda settings, paths, component, repo: started.append((component, repo)))
    paths = StatePaths.of(tmp_path)
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    (paths.run_dir / "triton-model-repo").write_text(str(tmp_path / "models"))
    supervisor._restart(Settings(state_dir=tmp_path), paths, name)
    assert started == [(name, tmp_path / "models" if name == "triton" else None)]


def test_a_worker_is_restarted_as_a_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(workers, "start_workers", lambda settings, stages: started.append(list(stages)))
    supervisor._restart(Settings(state_dir=tmp_path), StatePaths.of(tmp_path), f"{workers.PREFIX}delivery")
    assert started == [["delivery"]]


def test_an_unknown_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="knows how to start"):
        supervisor._restart(Settings(state_dir=tmp_path), StatePaths.of(tmp_path), "someone-elses-process")
