"""The process supervisor: PID files, detached start, stop of a whole process tree."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil
import pytest

from radalign.stack.process import PidRecord, StatePaths, live_process, processes_mentioning, read_pid_file, start_process, stop_process, tail, write_pid_file
from radalign.stack.readiness import StackStartError, wait_until_ready


def test_pid_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run" / "x.pid"
    write_pid_file(path, 1234, 1700000000.25)
    assert path.read_text().splitlines()[0] == "1234"
    assert read_pid_file(path) == PidRecord(1234, 1700000000.25)
    assert not path.with_suffix(".pid.tmp").exists()


@pytest.mark.parametrize("content", ["", "abc", "-5", "0\n"])
def test_unreadable_pid_file_reads_as_none(tmp_path: Path, content: str) -> None:
    path = tmp_path / "x.pid"
    path.write_text(content)
    assert read_pid_file(path) is None
    assert read_pid_file(tmp_path / "missing.pid") is None


def test_plain_pid_file_without_start_time(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    path.write_text("42\n")
    assert read_pid_file(path) == PidRecord(42, None)


def test_live_process_rejects_recycled_pid() -> None:
    me = psutil.Process()
    assert live_process(PidRecord(me.pid, me.create_time())) is not None
    assert live_process(PidRecord(me.pid, None)) is not None
    # Same PID, other start time: the PID now belongs to someone else.
    assert live_process(PidRecord(me.pid, me.create_time() - 3600)) is None
    assert live_process(None) is None


def test_state_paths_layout(tmp_path: Path) -> None:
    paths = StatePaths.of(tmp_path)
    assert paths.pid_file("broker") == tmp_path.resolve() / "run" / "broker.pid"
    assert paths.log_file("broker") == tmp_path.resolve() / "logs" / "broker.log"
    assert paths.data_dir("postgres") == tmp_path.resolve() / "postgres"
    assert paths.names() == []
    write_pid_file(paths.pid_file("b"), 1)
    write_pid_file(paths.pid_file("a"), 2)
    assert paths.names() == ["a", "b"]


def test_tail_returns_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 3).splitlines() == ["line 97", "line 98", "line 99"]
    assert "no log" in tail(tmp_path / "missing.log")


# A parent that starts a child and both sleep: stop must take down the child too.
_PARENT_WITH_CHILD = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print('env', __import__('os').environ.get('STACK_TEST_VAR'), flush=True); time.sleep(60)"
)


def test_start_and_stop_process_tree(tmp_path: Path) -> None:
    paths = StatePaths.of(tmp_path)
    proc = start_process(paths, "tree", [sys.executable, "-c", _PARENT_WITH_CHILD], {"STACK_TEST_VAR": "hello"})
    wait_until_ready("child", lambda: len(proc.children()) == 1, timeout_s=10)
    child = proc.children()[0]
    assert read_pid_file(paths.pid_file("tree")) == PidRecord(proc.pid, proc.create_time())
    assert proc.pid != psutil.Process().pid
    assert psutil.Process(proc.pid).ppid() == psutil.Process().pid
    assert proc.pid == __import__("os").getsid(proc.pid)  # its own session: survives our terminal
    wait_until_ready("log", lambda: "env hello" in paths.log_file("tree").read_text(), timeout_s=10)
    with pytest.raises(RuntimeError, match="already running"):
        start_process(paths, "tree", [sys.executable, "-c", "pass"])

    assert stop_process(paths, "tree", timeout_s=5) is True
    for p in (proc, child):
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    assert not paths.pid_file("tree").exists()
    assert stop_process(paths, "tree") is False  # idempotent


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    paths = StatePaths.of(tmp_path)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('armed', flush=True); time.sleep(60)"
    proc = start_process(paths, "stubborn", [sys.executable, "-c", stubborn])
    wait_until_ready("armed", lambda: "armed" in paths.log_file("stubborn").read_text(), timeout_s=10)
    begin = time.monotonic()
    assert stop_process(paths, "stubborn", timeout_s=0.5)
    assert time.monotonic() - begin < 5
    assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


def test_processes_mentioning_finds_by_cmdline(tmp_path: Path) -> None:
    paths = StatePaths.of(tmp_path)
    marker = str(tmp_path / "marker-arg")
    proc = start_process(paths, "m", [sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        assert [p.pid for p in processes_mentioning(marker)] == [proc.pid]
    finally:
        stop_process(paths, "m")
    assert processes_mentioning(marker) == []


def test_wait_until_ready_reports_exit_with_log(tmp_path: Path) -> None:
    paths = StatePaths.of(tmp_path)
    proc = start_process(paths, "dies", [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"])
    with pytest.raises(StackStartError, match="exited before it was ready(.|\n)*boom: bad config"):
        wait_until_ready("dies", lambda: False, timeout_s=30, log_file=paths.log_file("dies"), proc=proc)
    stop_process(paths, "dies")


def test_wait_until_ready_times_out() -> None:
    begin = time.monotonic()
    with pytest.raises(StackStartError, match="not ready after 0 s"):
        wait_until_ready("never", lambda: False, timeout_s=0.3, interval_s=0.05)
    assert time.monotonic() - begin < 2


def test_stop_processes_stops_several_in_one_wait(tmp_path: Path) -> None:
    from radalign.stack.process import stop_processes

    paths = StatePaths.of(tmp_path)
    # Each takes 0.8 s to exit after SIGTERM; stopped one by one they would take 2.4 s.
    slow_exit = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.8), sys.exit(0))); print('armed', flush=True); time.sleep(60)"
    procs = [start_process(paths, f"w{i}", [sys.executable, "-c", slow_exit]) for i in range(3)]
    for i in range(3):
        wait_until_ready("armed", lambda i=i: "armed" in paths.log_file(f"w{i}").read_text(), timeout_s=10)
    begin = time.monotonic()
    assert stop_processes(paths, ["w0", "w1", "w2", "never-started"], timeout_s=5) == ["w0", "w1", "w2"]
    assert time.monotonic() - begin < 2.0
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)
    assert paths.names() == []
