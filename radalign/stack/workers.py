"""Pipeline workers as stack processes: one `radalign worker <stage>` process per stage.

The lead's CLI implements `radalign worker <stage>`; this module only starts and names them, so
`stack down` / `stack status` treat them like the other components.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Iterable

import httpx
import psutil
from pydantic import SecretStr

from radalign.config import Settings
from radalign.pipeline import STAGES
from radalign.stack.process import StatePaths, start_process
from radalign.stack.readiness import wait_until_ready

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
        if isinstance(secret := getattr(settings, field), SecretStr):
            value = secret.get_secret_value()  # model_dump masks it
        if field == "state_dir":
            value = str(settings.state_dir.resolve())  # the child may run in another folder
        env[f"RADALIGN_{field.upper()}"] = str(value)
    return env


def start_workers(settings: Settings, stages: Iterable[str] = STAGES) -> list[psutil.Process]:
    """Start one worker process per stage (PID `run/worker-<stage>.pid`, log `logs/worker-<stage>.log`)."""
    paths = StatePaths.of(settings.state_dir)
    env = settings_env(settings)
    return [start_process(paths, worker_name(stage), worker_argv(stage), env) for stage in stages]


def worker_address(settings: Settings, stage: str) -> str:
    return f"http://127.0.0.1:{settings.web_port(stage)}"


def worker_ready(settings: Settings, stage: str, timeout_s: float = 2.0) -> bool:
    """The stage answers 200 on /health/ready: partitions assigned (consumers) and dependencies
    reachable (the gateway: database and broker)."""
    try:
        response = httpx.get(f"{worker_address(settings, stage)}/health/ready", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def wait_workers_ready(settings: Settings, procs: dict[str, psutil.Process], timeout_s: float = 180.0) -> None:
    """Wait until every started worker is ready; a worker that dies or stays unready raises
    StackStartError with the last lines of its log."""
    paths = StatePaths.of(settings.state_dir)
    deadline = time.monotonic() + timeout_s
    for stage, proc in procs.items():
        wait_until_ready(
            f"worker {stage}", functools.partial(worker_ready, settings, stage), timeout_s=max(1.0, deadline - time.monotonic()),
            log_file=paths.log_file(worker_name(stage)), proc=proc, interval_s=0.25,
        )
