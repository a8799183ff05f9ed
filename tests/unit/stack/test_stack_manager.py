"""`up` / `down` / `status` decisions that need no running service, and the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radalign.config import Settings
from radalign.stack import manager, running, start_process, stop
from radalign.stack.cli import stack_app
from radalign.stack.process import StatePaths, write_pid_file


def _settings(tmp_path: Path, **kw: object) -> Settings:
    base = {"state_dir": tmp_path, "database_url": "", "stack_external": ""}
    return Settings(**(base | kw))


def test_defaults_are_all_embedded(tmp_path: Path) -> None:
    assert manager.external_components(_settings(tmp_path)) == set()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"database_url": "postgresql://u:pw@db.internal/radalign"}, {"postgres"}),
        ({"kafka_bootstrap": "kafka-0.kafka.svc:9092"}, {"broker"}),
        ({"kafka_bootstrap": "localhost:9092"}, set()),
        ({"triton_grpc_url": "triton.svc:8001"}, {"triton"}),
        ({"triton_grpc_url": "[::1]:8001"}, set()),
        ({"stack_external": "broker, triton"}, {"broker", "triton"}),
    ],
)
def test_external_components(tmp_path: Path, overrides: dict, expected: set[str]) -> None:
    assert manager.external_components(_settings(tmp_path, **overrides)) == expected


def test_unknown_external_component_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown components"):
        manager.external_components(_settings(tmp_path, stack_external="kafka"))


def test_public_dsn_hides_the_password() -> None:
    shown = manager.public_dsn("postgresql://app:s3cret@db.internal:5432/radalign")
    assert "s3cret" not in shown and "db.internal" in shown and "***" in shown
    assert "password" not in manager.public_dsn("postgresql://postgres:@/postgres?host=/tmp/x")


def test_up_rejects_unknown_components(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown components"):
        manager.up(_settings(tmp_path), ["kafka"])


def test_up_skips_external_components_without_starting_them(tmp_path: Path) -> None:
    settings = _settings(tmp_path, stack_external="broker,triton", database_url="postgresql://u:p@db.example/x")
    rows = manager.up(settings, ["broker", "postgres", "triton"])
    assert [(r.name, r.pid, r.detail) for r in rows] == [
        ("broker", None, "external: not started"),
        ("postgres", None, "external: not started"),
        ("triton", None, "external: not started"),
    ]
    assert StatePaths.of(tmp_path).names() == []


def test_status_of_an_empty_state_dir(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_bootstrap="127.0.0.1:1", triton_http_port=1)
    rows = manager.status(settings)
    assert [(r.name, r.healthy, r.detail) for r in rows] == [
        ("broker", False, "not running"),
        ("postgres", False, "not running"),
        ("triton", False, "not running"),
    ]


def test_status_lists_supervised_processes_and_stale_pid_files(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    proc = start_process("worker-x", [sys.executable, "-c", "import time; time.sleep(60)"], settings=settings)
    write_pid_file(StatePaths.of(tmp_path).pid_file("worker-gone"), 2**22 + 12345)  # no such process
    try:
        rows = {r.name: r for r in manager.status(settings)}
        assert rows["worker-x"].pid == proc.pid and rows["worker-x"].healthy
        assert not rows["worker-gone"].healthy and "exited" in rows["worker-gone"].detail
        assert running("worker-x", settings) is not None
    finally:
        assert stop("worker-x", settings)
    assert running("worker-x", settings) is None


def test_down_stops_supervised_processes_and_cleans_pid_files(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_bootstrap="127.0.0.1:1")
    proc = start_process("worker-y", [sys.executable, "-c", "import time; time.sleep(60)"], settings=settings)
    write_pid_file(StatePaths.of(tmp_path).pid_file("worker-stale"), 2**22 + 12345)
    stopped = manager.down(settings, timeout_s=2)
    assert stopped == ["worker-y"]
    assert not proc.is_running() or proc.status() == "zombie"
    assert StatePaths.of(tmp_path).names() == []


def test_cli_status_exits_1_when_nothing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from radalign.config import get_settings

    monkeypatch.setenv("RADALIGN_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RADALIGN_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("RADALIGN_TRITON_HTTP_PORT", "1")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(stack_app, ["status"], env={"COLUMNS": "200"})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "not running" in result.output and "broker" in result.output and "127.0.0.1:1" in result.output


def test_a_component_that_never_gets_ready_is_stopped_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from radalign.stack import broker
    from radalign.stack.process import start_process as supervise
    from radalign.stack.readiness import StackStartError

    spawned = []

    def start_then_time_out(settings: Settings, paths: StatePaths) -> None:
        spawned.append(supervise(paths, "broker", [sys.executable, "-c", "import time; time.sleep(60)"]))
        raise StackStartError("broker was not ready after 15 s")

    monkeypatch.setattr(broker, "start_broker", start_then_time_out)
    settings = _settings(tmp_path)
    with pytest.raises(StackStartError, match="not ready"):
        manager.up(settings, ["broker", "postgres"])
    assert not spawned[0].is_running() or spawned[0].status() == "zombie"
    assert StatePaths.of(tmp_path).names() == []
    assert not (tmp_path / "postgres").exists()  # the failure stopped `up` before PostgreSQL
