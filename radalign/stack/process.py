"""A small process supervisor: start a detached process with a PID file and a log file, stop it
(and everything it spawned) by PID.

Written by hand because the stack's processes must outlive the `radalign stack up` that started
them (so no in-process supervisor such as supervisord's or honcho's foreground model fits) and
the only state is a PID file per process under the state folder.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class StatePaths:
    """Where the stack keeps its state: `<state>/run/<name>.pid`, `<state>/logs/<name>.log`,
    `<state>/<name>/` for data."""

    root: Path

    @classmethod
    def of(cls, state_dir: Path | str) -> StatePaths:
        return cls(Path(state_dir).resolve())

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def data_dir(self, name: str) -> Path:
        return self.root / name

    def names(self) -> list[str]:
        """Names of every process that has a PID file."""
        if not self.run_dir.is_dir():
            return []
        return sorted(p.stem for p in self.run_dir.glob("*.pid"))


@dataclass(frozen=True)
class PidRecord:
    pid: int
    #: psutil's create_time of the process, so a recycled PID is not mistaken for ours.
    create_time: float | None = None


def write_pid_file(path: Path, pid: int, create_time: float | None = None) -> None:
    """Write `pid` (line 1) and the process' start time (line 2) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pid.tmp")
    lines = [str(pid)] + ([repr(create_time)] if create_time is not None else [])
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in `path`, or None when it is missing or unreadable."""
    try:
        lines = path.read_text().split()
        pid = int(lines[0])
        create_time = float(lines[1]) if len(lines) > 1 else None
    except (OSError, ValueError, IndexError):
        return None
    return PidRecord(pid, create_time) if pid > 0 else None


def live_process(record: PidRecord | None) -> psutil.Process | None:
    """The running process of `record`, or None when it exited (zombies count as exited) or its
    PID now belongs to another process."""
    if record is None:
        return None
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if record.create_time is not None and abs(proc.create_time() - record.create_time) > 1.0:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def start_process(
    paths: StatePaths,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | None = None,
    inherit_env: bool = True,
) -> psutil.Process:
    """Start `argv` detached (own session, so it survives the caller and its terminal), stdout and
    stderr appended to `logs/<name>.log`, PID in `run/<name>.pid`.

    `env` is laid over the caller's environment (or replaces it when `inherit_env` is False).
    Raises RuntimeError if a live process already owns the name.
    """
    pid_file = paths.pid_file(name)
    if (running := live_process(read_pid_file(pid_file))) is not None:
        raise RuntimeError(f"{name} is already running (pid {running.pid}); stop it first")
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    full_env = (dict(os.environ) if inherit_env else {}) | dict(env or {})
    with paths.log_file(name).open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start {name}: {' '.join(argv)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    proc = psutil.Process(popen.pid)
    write_pid_file(pid_file, popen.pid, proc.create_time())
    # The process is detached: its PID file is the handle. Mark the Popen done so its __del__ does
    # not warn "still running"; psutil's wait() in stop_process reaps it if we are still its parent.
    popen.returncode = 0
    return proc


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _gone(proc: psutil.Process) -> bool:
    """Exited. A zombie counts: it runs nothing, and its parent (perhaps a slow-reaping init)
    only has to collect its exit status. Our own children are reaped here."""
    try:
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
        if proc.ppid() == os.getpid():
            proc.wait(0)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        pass
    return True


def _wait_gone(procs: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while alive:
        alive = [p for p in alive if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def terminate_tree(procs: Sequence[psutil.Process], timeout_s: float = 10.0) -> list[int]:
    """SIGTERM each process, wait up to `timeout_s`, SIGKILL the rest. Returns the PIDs killed
    with SIGKILL."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    alive = _wait_gone(procs, timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_gone(alive, 5.0)
    return [p.pid for p in alive]


def stop_process(paths: StatePaths, name: str, timeout_s: float = 10.0) -> bool:
    """Stop the process `name` and its descendants (SIGTERM, wait, SIGKILL) and remove its PID file.
    Returns True when something was running."""
    pid_file = paths.pid_file(name)
    proc = live_process(read_pid_file(pid_file))
    if proc is not None:
        # Collect descendants first: once the parent dies they are re-parented and lost from view.
        terminate_tree(_tree(proc), timeout_s)
    pid_file.unlink(missing_ok=True)
    return proc is not None


def stop_processes(paths: StatePaths, names: Sequence[str], timeout_s: float = 10.0) -> list[str]:
    """`stop_process` for several names at once: one SIGTERM round and one shared wait, so N
    workers that each take a second to shut down cost a second, not N. Returns the names that
    were running."""
    trees: list[psutil.Process] = []
    was_running: list[str] = []
    for name in names:
        proc = live_process(read_pid_file(paths.pid_file(name)))
        if proc is not None:
            trees.extend(_tree(proc))
            was_running.append(name)
    if trees:
        terminate_tree(trees, timeout_s)
    for name in names:
        paths.pid_file(name).unlink(missing_ok=True)
    return was_running


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains `text` (e.g. a state folder): what `down`
    must leave none of."""
    found = []
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}  # never the caller or its shell
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["pid"] in spared or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(text in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
