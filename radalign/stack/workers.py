"""Pipeline workers as stack processes: one `radalign worker <stage>` process per stage.

The lead's CLI implements `radalign worker <stage>`; this module only starts and names them, so
`stack down` / `stack status` treat them like the other components.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import psutil

from radalign.config import Settings
from radalign.stack.process import StatePaths, start_process
from schemas.topics import STAGES

PREFIX = "worker-"


def worker_name(stage: str) -> str:
    return f"{PREFIX}{stage}"


def worker_argv(stage: str) -> list[str]:
    return [sys.executable, "-m", "radalign.cli", "worker", stage]


def settings_env(settings: Settings) -> dict[str, str]:
    """`RADALIGN_*` variables that make a child process build the same Settings (same state
    folder, ports, DSN), whatever the child's own environment says."""
    env: dict[str, str] = {}
    for field, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if field == "state_dir":
            value = str(settings.state_dir.resolve())  # the child may run in another folder
        env[f"RADALIGN_{field.upper()}"] = str(value)
    return env


def start_workers(settings: Settings, stages: Iterable[str] = STAGES) -> list[psutil.Process]:
    """Start one worker process per stage (PID `run/worker-<stage>.pid`, log `logs/worker-<stage>.log`)."""
    paths = StatePaths.of(settings.state_dir)
    env = settings_env(settings)
    return [start_process(paths, worker_name(stage), worker_argv(stage), env) for stage in stages]
