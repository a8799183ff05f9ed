"""`up`, `down` and `status` of the embedded stack (broker, PostgreSQL, Triton, workers).

Each component is its own OS process with a PID file, a log file and data under
`settings.state_dir`, so the stack outlives the command that started it and `down` needs
nothing but the state folder. Components that the settings place elsewhere (external mode) are
skipped by `up`/`down` and only probed by `status`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from radalign.config import Settings
from radalign.db import apply_migrations
from radalign.stack import broker, idp, orthanc, postgres, supervisor, triton, workers
from radalign.stack.components import COMPONENTS, SERVICES, external_components, start_service
from radalign.stack.process import (
    StatePaths,
    live_process,
    processes_mentioning,
    read_pid_file,
    start_process,
    stop_process,
    stop_processes,
    terminate_tree,
)
from radalign.stack.readiness import StackStartError, tcp_open

log = logging.getLogger(__name__)

#: Services started only where installed (else `up` skips them and says why).
OPTIONAL: dict[str, Callable[[], bool]] = {"orthanc": orthanc.installed, "idp": idp.installed}


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    address: str
    healthy: bool
    detail: str = ""
    #: Seconds `up` took to start it and wait until it was ready (None when not started by `up`).
    started_in_s: float | None = None


def public_dsn(dsn: str) -> str:
    """The DSN without its password, for display."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - display only: whatever psycopg raises, show no DSN
        return "(unparsable DSN)"
    if params.pop("password", None):
        params["password"] = "***"
    return make_conninfo("", **params)


def address_of(settings: Settings, component: str) -> str:
    if component == "broker":
        return settings.kafka_bootstrap
    if component == "postgres":
        return public_dsn(settings.dsn)
    if component == "triton":
        return f"grpc {settings.triton_grpc_url}, http 127.0.0.1:{settings.triton_http_port}"
    if component == "orthanc":
        return f"http {orthanc.http_url(settings)}, dicom {settings.orthanc_ae_title}@127.0.0.1:{settings.orthanc_dicom_port}"
    if component == "idp":
        return f"issuer {idp.issuer(settings)}"
    return ""


@contextmanager
def _stack_lock(paths: StatePaths) -> Iterator[None]:
    """One `up`/`down` at a time per state folder (two `up`s would race for ports and PID files)."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    with (paths.run_dir / "stack.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _running(paths: StatePaths, name: str) -> psutil.Process | None:
    return live_process(read_pid_file(paths.pid_file(name)))


def _catch_up(settings: Settings, component: str) -> str:
    """Bring an already running service up to date with the code: topics added to the
    catalogue, migration files added since it started. Both steps are idempotent."""
    if component == "broker":
        created = broker.run_coroutine(broker.create_topics(settings.kafka_bootstrap, broker.topic_partitions()))
        return f"already running; created topics {', '.join(created)}" if created else "already running"
    if component == "postgres":
        applied = apply_migrations(settings.dsn)
        return f"already running; applied {', '.join(applied)}" if applied else "already running"
    return "already running"


def up(
    settings: Settings,
    components: Iterable[str] = COMPONENTS,
    *,
    model_repo: Path | None = None,
    supervise: bool = False,
) -> list[ComponentStatus]:
    """Start the requested components that are neither external nor already running, in
    dependency order (broker, postgres + migrations, triton, workers), each waited on until
    ready. On a failure, what this call started is stopped again and StackStartError raised.
    Returns one status per requested component, with the start time of those it started.

    A broker started here gets an epoch marker (`radalign.stack.supervisor`), so that a broker
    that comes back empty is noticed. With `supervise` (what `radalign stack up` does) a
    supervisor process restarts crashed components with backoff; tests leave it off, since some
    of them stop components on purpose."""
    wanted = list(components)
    unknown = set(wanted) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; known: {', '.join(COMPONENTS)}")
    paths = StatePaths.of(settings.state_dir)
    external = external_components(settings)
    results: list[ComponentStatus] = []
    started: list[str] = []
    with _stack_lock(paths):
        try:
            for component in SERVICES:
                if component in wanted:
                    results.append(_up_service(settings, paths, component, external, started, model_repo))
            if "workers" in wanted:
                results += _up_workers(settings, paths, started)
            if supervise and _running(paths, supervisor.NAME) is None:
                env = workers.settings_env(settings)
                start_process(paths, supervisor.NAME, [sys.executable, "-c", "from radalign.stack.supervisor import main; main()"], env)
                results.append(ComponentStatus(supervisor.NAME, None, "", True, "started: restarts crashed components"))
        except BaseException:
            for name in reversed(started):
                _stop_component(settings, paths, name)
            raise
    return results


def _up_service(
    settings: Settings, paths: StatePaths, component: str, external: Iterable[str], started: list[str], model_repo: Path | None,
) -> ComponentStatus:
    """One service (not the workers): left alone when external, not installed, not configured or
    running, else started and waited on; `started` names it before it starts."""
    if component in external:
        return ComponentStatus(component, None, address_of(settings, component), True, "external: not started")
    if component in OPTIONAL and not OPTIONAL[component]():
        return ComponentStatus(component, None, "", True, "not installed: skipped")
    if component == "idp" and not idp.wanted(settings):
        return ComponentStatus(component, None, "", True, "not configured: skipped")
    if (proc := _running(paths, component)) is not None:
        detail = _catch_up(settings, component)
        return ComponentStatus(component, proc.pid, address_of(settings, component), True, detail)
    begin = time.monotonic()
    started.append(component)  # before starting: a half-started process is stopped too
    proc = start_service(settings, paths, component, model_repo)
    if component == "broker":
        supervisor.mark_broker(settings)
    if component == "triton" and model_repo is not None:
        (paths.run_dir / "triton-model-repo").write_text(str(Path(model_repo).resolve()))
    elapsed = time.monotonic() - begin
    log.info("%s ready in %.2f s (pid %d)", component, elapsed, proc.pid)
    return ComponentStatus(component, proc.pid, address_of(settings, component), True, "started", elapsed)


def _up_workers(settings: Settings, paths: StatePaths, started: list[str]) -> list[ComponentStatus]:
    """The stage workers not running yet, started together and waited on until each is ready."""
    begin = time.monotonic()
    missing = [s for s in workers.STAGES if _running(paths, workers.worker_name(s)) is None]
    started.extend(workers.worker_name(s) for s in missing)
    procs = workers.start_workers(settings, missing)
    log.info("workers %s started; waiting until each answers /health/ready", ", ".join(missing))
    workers.wait_workers_ready(settings, dict(zip(missing, procs, strict=True)))
    elapsed = time.monotonic() - begin
    log.info("workers ready in %.2f s", elapsed)
    return [
        ComponentStatus(workers.worker_name(stage), proc.pid, workers.worker_address(settings, stage), True, "started", elapsed)
        for stage, proc in zip(missing, procs, strict=True)
    ]


def _stop_component(settings: Settings, paths: StatePaths, name: str, timeout_s: float = 10.0) -> bool:
    if name == "postgres":
        return postgres.stop_postgres(settings, paths, timeout_s * 2)
    return stop_process(paths, name, timeout_s)


def down(settings: Settings, timeout_s: float = 10.0) -> list[str]:
    """Stop every process of the stack (workers first, the broker last), remove the PID files,
    then kill any process still naming the state folder (orphans of a crashed parent).
    Returns the names stopped. Raises RuntimeError if a process survives SIGKILL."""
    paths = StatePaths.of(settings.state_dir)
    stopped: list[str] = []
    external = external_components(settings)
    with _stack_lock(paths):
        # The supervisor first: it must not restart what this call stops. Only the supervisor
        # itself (not its process tree): components it restarted are its children, and they are
        # stopped below by name like the others.
        if (proc := _running(paths, supervisor.NAME)) is not None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except psutil.TimeoutExpired:
                proc.kill()
            paths.pid_file(supervisor.NAME).unlink(missing_ok=True)
            stopped.append(supervisor.NAME)
        supervisor.state_file(paths).unlink(missing_ok=True)
        supervised = [n for n in paths.names() if n not in SERVICES]  # workers and other start_process names
        begin = time.monotonic()
        stopped.extend(stop_processes(paths, supervised, timeout_s))  # consumers first, all at once
        if stopped:
            log.info("%s stopped in %.2f s", ", ".join(stopped), time.monotonic() - begin)
        for name in (s for s in reversed(SERVICES) if s not in external):
            begin = time.monotonic()
            if _stop_component(settings, paths, name, timeout_s):
                stopped.append(name)
                log.info("%s stopped in %.2f s", name, time.monotonic() - begin)
        leftovers = processes_mentioning(f"{paths.root}{os.sep}")
        if leftovers:
            log.warning("killing %d orphaned stack processes: %s", len(leftovers), [p.pid for p in leftovers])
            terminate_tree(leftovers, timeout_s=timeout_s)
        survivors = [p for p in processes_mentioning(f"{paths.root}{os.sep}") if p.is_running()]
        if survivors:
            raise RuntimeError(f"processes survived SIGKILL: {[p.pid for p in survivors]}")
    return stopped


def _probe(settings: Settings, component: str) -> bool:
    if component == "broker":
        return broker.broker_healthy(settings)
    if component == "postgres":
        return postgres.postgres_healthy(settings)
    if component == "triton":
        return triton.triton_healthy(settings)
    if component == "orthanc":
        return orthanc.orthanc_healthy(settings)
    if component == "idp":
        return idp.healthy(settings)
    return False


def _restarts(state: supervisor.SupervisorState, name: str) -> str:
    record = state.components.get(name)
    if record is None or not record.restarts:
        return ""
    when = time.strftime("%H:%M:%S", time.localtime(record.last_restart or 0))
    error = f", last attempt failed: {record.last_error}" if record.last_error else ""
    return f"; restarted {record.restarts}x by the supervisor (last {when}{error})"


def status(settings: Settings) -> list[ComponentStatus]:
    """One row per service (embedded or external) and per worker that has a PID file."""
    paths = StatePaths.of(settings.state_dir)
    external = external_components(settings)
    supervision = supervisor.read_state(paths)
    rows: list[ComponentStatus] = []
    for component in SERVICES:
        address = address_of(settings, component)
        if component in external:
            if component == "triton":  # only the gRPC address is known for an external Triton
                host, _, port = settings.triton_grpc_url.rpartition(":")
                healthy = port.isdigit() and tcp_open(host.strip("[]"), int(port))
            else:
                healthy = _probe(settings, component)
            rows.append(ComponentStatus(component, None, address, healthy, "external"))
            continue
        proc = _running(paths, component)
        if proc is None and component in OPTIONAL:
            continue  # an optional component (Orthanc) is listed only while it runs
        if proc is None:
            rows.append(ComponentStatus(component, None, address, False, "not running"))
            continue
        healthy = _probe(settings, component)
        detail = "ready" if healthy else "running, not ready"
        if component == "broker" and healthy and supervisor.broker_kept_its_data(settings) is False:
            healthy, detail = False, "came back EMPTY: it lost every event, dead letter and report it held (memory storage)"
        elif component == "broker" and supervision.broker_data_lost:
            lost = time.strftime("%H:%M:%S", time.localtime(supervision.broker_data_lost[-1]))
            detail += f"; came back EMPTY at {lost} ({len(supervision.broker_data_lost)}x): data from before was lost"
        rows.append(ComponentStatus(component, proc.pid, address, healthy, detail + _restarts(supervision, component)))
    for name in paths.names():
        if name in SERVICES:
            continue
        proc = _running(paths, name)
        stage = name.removeprefix(workers.PREFIX)
        if proc is None:
            rows.append(ComponentStatus(name, None, "", False, f"exited; see {paths.log_file(name)}"))
        elif stage in workers.STAGES:
            ready = workers.worker_ready(settings, stage)
            rows.append(ComponentStatus(name, proc.pid, workers.worker_address(settings, stage), ready,
                                        ("ready" if ready else "running, not ready") + _restarts(supervision, name)))
        elif name == supervisor.NAME:
            age = time.time() - supervision.heartbeat if supervision.heartbeat else None
            fresh = age is not None and age < 5 * supervisor.CHECK_S
            rows.append(ComponentStatus(name, proc.pid, "", fresh, f"last round {age:.0f} s ago" if age is not None else "starting"))
        else:
            rows.append(ComponentStatus(name, proc.pid, "", True, "running"))
    return rows


__all__ = [
    "COMPONENTS",
    "SERVICES",
    "ComponentStatus",
    "StackStartError",
    "address_of",
    "down",
    "external_components",
    "status",
    "up",
]
