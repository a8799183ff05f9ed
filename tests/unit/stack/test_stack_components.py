"""Command lines and environments of the broker, PostgreSQL, Triton and workers (nothing started)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from radalign.config import Settings
from radalign.pipeline import ALL_TOPICS, STAGES
from radalign.stack import broker, postgres, triton, workers
from radalign.stack.readiness import StackStartError


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("127.0.0.1:19092", ("127.0.0.1", 19092)),
        ("kafka-0.kafka:9092,kafka-1.kafka:9092", ("kafka-0.kafka", 9092)),
        ("tcp://localhost:9", ("localhost", 9)),
        ("[::1]:9092", ("::1", 9092)),
    ],
)
def test_parse_bootstrap(bootstrap: str, expected: tuple[str, int]) -> None:
    assert broker.parse_bootstrap(bootstrap) == expected


@pytest.mark.parametrize("bad", ["localhost", "host:", ":9092"])
def test_parse_bootstrap_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        broker.parse_bootstrap(bad)


def test_broker_command_line_listens_and_advertises_the_same_address() -> None:
    argv = broker.broker_argv(Path("/x/tansu"), "127.0.0.1", 29092)
    assert argv[:2] == ["/x/tansu", "broker"]
    assert argv[argv.index("--listener-url") + 1] == "tcp://127.0.0.1:29092"
    assert argv[argv.index("--advertised-listener-url") + 1] == "tcp://127.0.0.1:29092"
    assert argv[argv.index("--storage-engine") + 1].startswith("memory://")


def test_tansu_binary_ships_in_the_wheel() -> None:
    binary = broker.tansu_binary()
    assert binary.name == "tansu" and os.access(binary, os.X_OK)


def test_topic_partitions_cover_both_lanes_and_dead_letters() -> None:
    topics = broker.topic_partitions()
    assert topics["radalign.study.received.v1"] == 4
    assert topics["radalign.study.received.v1.stat"] == 4
    assert topics["radalign.report.drafted.v1.stat"] == 4  # delivery's STAT lane
    assert "radalign.report.review.v1.stat" not in topics
    assert topics["radalign.dlq.gateway.v1"] == 1
    assert len(topics) == sum(len(spec.names) for spec in ALL_TOPICS)


def test_postgres_command_lines(tmp_path: Path) -> None:
    data = tmp_path / "postgres"
    init = postgres.initdb_argv(Path("/pg/bin"), data)
    assert init[0] == "/pg/bin/initdb" and init[init.index("-D") + 1] == str(data)
    assert "--auth=trust" in init and "--no-sync" in init and init[init.index("-U") + 1] == "postgres"
    start = postgres.pg_ctl_start_argv(Path("/pg/bin"), data, tmp_path / "pg.log", 30)
    assert start[-1] == "start" and "-w" in start and start[start.index("-t") + 1] == "30"
    server_options = start[start.index("-o") + 1]
    assert "listen_addresses=''" in server_options  # socket only, no TCP
    assert f"-k {data}" in server_options
    stop = postgres.pg_ctl_stop_argv(Path("/pg/bin"), data, 20)
    assert stop[-1] == "stop" and stop[stop.index("-m") + 1] == "fast"


def test_settings_dsn_points_at_the_socket_folder(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, database_url="")
    assert settings.pg_data_dir == tmp_path.resolve() / "postgres"
    assert f"host={settings.pg_data_dir}" in settings.dsn
    assert postgres.socket_path(settings.pg_data_dir).name == ".s.PGSQL.5432"


def test_postgres_refuses_a_socket_path_that_is_too_long(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    settings = Settings(state_dir=deep, database_url="")
    from radalign.stack.process import StatePaths

    with pytest.raises(StackStartError, match="too long for a Unix socket"):
        postgres.start_postgres(settings, StatePaths.of(deep))


def test_postgres_binaries_ship_in_the_wheel() -> None:
    for name in ("initdb", "pg_ctl", "postgres"):
        assert (postgres.bin_dir() / name).is_file()


def test_postmaster_pid_reads_line_one(tmp_path: Path) -> None:
    assert postgres.postmaster_pid(tmp_path) is None
    (tmp_path / "postmaster.pid").write_text("4321\n/data\n1700000000\n5432\n")
    assert postgres.postmaster_pid(tmp_path) == 4321


def test_triton_command_line_uses_settings_ports() -> None:
    settings = Settings(triton_http_port=28000, triton_grpc_port=28001, triton_metrics_port=28002)
    argv = triton.triton_argv(Path("/t/tritonserver"), Path("/models"), Path("/state/backends"), settings)
    assert argv[0] == "/t/tritonserver"
    for flag in (
        "--model-repository=/models",
        "--backend-directory=/state/backends",
        "--model-control-mode=none",
        "--http-port=28000",
        "--grpc-port=28001",
        "--metrics-port=28002",
        "--http-address=127.0.0.1",
    ):
        assert flag in argv
    assert triton.ready_url(settings) == "http://127.0.0.1:28000/v2/health/ready"


def test_triton_env_orders_libraries_and_path(tmp_path: Path) -> None:
    import sysconfig

    env = triton.triton_env({"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib", "KEEP": "1"}, root=tmp_path / "pytriton")
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert libs == [sysconfig.get_config_var("LIBDIR"), str(tmp_path / "nvidia_pytriton.libs"), "/opt/lib"]
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]
    assert env["KEEP"] == "1"


def _fake_pytriton(root: Path, version: str) -> Path:
    server = root / "tritonserver"
    (server / "backends" / "python").mkdir(parents=True)
    (server / "backends" / "python" / "libtriton_python.so").write_bytes(b"so")
    (server / "backends" / "python" / "triton_python_backend_utils.py").write_text("# utils")
    (server / "python_backend_stubs" / version).mkdir(parents=True)
    (server / "python_backend_stubs" / version / "triton_python_backend_stub").write_bytes(b"stub" + version.encode())
    return root


def test_prepare_backend_dir_adds_this_pythons_stub(tmp_path: Path) -> None:
    root = _fake_pytriton(tmp_path / "pytriton", triton.python_version_tag())
    dest = triton.prepare_backend_dir(tmp_path / "backends", root)
    python = dest / "python"
    assert sorted(p.name for p in python.iterdir()) == [
        "libtriton_python.so",
        "triton_python_backend_stub",
        "triton_python_backend_utils.py",
    ]
    assert (python / "triton_python_backend_stub").read_bytes() == b"stub" + triton.python_version_tag().encode()
    triton.prepare_backend_dir(tmp_path / "backends", root)  # again: nothing breaks


def test_prepare_backend_dir_without_stub_for_this_python(tmp_path: Path) -> None:
    root = _fake_pytriton(tmp_path / "pytriton", "2.7")
    with pytest.raises(StackStartError, match="no Python-backend stub"):
        triton.prepare_backend_dir(tmp_path / "backends", root)


def test_real_wheel_has_tritonserver_and_stub() -> None:
    assert triton.tritonserver_binary().is_file()
    assert triton.wheel_libs_dir().is_dir()


def test_worker_command_and_names() -> None:
    assert workers.worker_argv("preprocess") == [sys.executable, "-m", "radalign.cli", "worker", "preprocess"]
    assert [workers.worker_name(s) for s in STAGES][0] == "worker-gateway"


def test_settings_env_rebuilds_the_same_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(state_dir=tmp_path / "s", kafka_bootstrap="127.0.0.1:1", triton_http_port=3, deid_secret="k")
    env = workers.settings_env(settings)
    assert env["RADALIGN_STATE_DIR"] == str((tmp_path / "s").resolve())
    assert env["RADALIGN_KAFKA_BOOTSTRAP"] == "127.0.0.1:1"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rebuilt = Settings()
    assert rebuilt.model_dump(exclude={"state_dir"}) == settings.model_dump(exclude={"state_dir"})
    assert rebuilt.state_dir == settings.state_dir.resolve()


def test_private_stack_settings_use_distinct_free_ports(tmp_path: Path) -> None:
    from radalign.testing.stack import stack_settings

    settings = stack_settings(tmp_path, log_level="DEBUG")
    ports = [
        broker.parse_bootstrap(settings.kafka_bootstrap)[1],
        settings.triton_http_port,
        settings.triton_grpc_port,
        settings.triton_metrics_port,
        settings.gateway_port,
        settings.dicom_port,
    ]
    assert len(set(ports)) == len(ports)
    assert settings.triton_grpc_url == f"127.0.0.1:{settings.triton_grpc_port}"
    assert settings.log_level == "DEBUG" and settings.database_url == ""
    assert settings.web_port("preprocess") not in ports


def test_add_one_model_repository_layout(tmp_path: Path) -> None:
    from radalign.testing.stack import write_add_one_model

    repo = write_add_one_model(tmp_path / "models", name="plus")
    config = (repo / "plus" / "config.pbtxt").read_text()
    assert 'name: "plus"' in config and 'backend: "python"' in config
    compile((repo / "plus" / "1" / "model.py").read_text(), "model.py", "exec")
