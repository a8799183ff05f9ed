"""The embedded dev/CI stack: Kafka-protocol broker (tansu), PostgreSQL + pgvector, Triton and
the pipeline workers, each its own OS process with PID file, log and data under
`Settings().state_dir`.

    from radalign.stack import up, down, status
    up(settings)            # broker, postgres (+ migrations), triton, workers
    status(settings)        # [ComponentStatus(name, pid, address, healthy, detail), ...]
    down(settings)          # nothing of the stack is left running

`start_process` / `stop` / `running` supervise any other process the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import psutil

from radalign.config import Settings, get_settings
from radalign.stack import process as _process
from radalign.stack.manager import (
    COMPONENTS,
    SERVICES,
    ComponentStatus,
    down,
    external_components,
    status,
    up,
)
from radalign.stack.readiness import StackStartError


def start_process(
    name: str, argv: Sequence[str], env: Mapping[str, str] | None = None, settings: Settings | None = None
) -> psutil.Process:
    """Start `argv` detached under the stack's supervision (`run/<name>.pid`, `logs/<name>.log`);
    `env` is laid over the current environment. `down()` stops it with the rest."""
    settings = settings or get_settings()
    return _process.start_process(_process.StatePaths.of(settings.state_dir), name, argv, env)


def stop(name: str, settings: Settings | None = None, timeout_s: float = 10.0) -> bool:
    """Stop the supervised process `name` and its children; True when it was running."""
    settings = settings or get_settings()
    return _process.stop_process(_process.StatePaths.of(settings.state_dir), name, timeout_s)


def running(name: str, settings: Settings | None = None) -> psutil.Process | None:
    """The live process recorded under `name`, or None."""
    settings = settings or get_settings()
    paths = _process.StatePaths.of(settings.state_dir)
    return _process.live_process(_process.read_pid_file(paths.pid_file(name)))


__all__ = [
    "COMPONENTS",
    "SERVICES",
    "ComponentStatus",
    "StackStartError",
    "down",
    "external_components",
    "running",
    "start_process",
    "status",
    "stop",
    "up",
]
