"""Helpers for tests and benchmarks that run a private embedded stack beside a dev stack:
free ports, a short state folder, and a tiny Triton model repository."""

from __future__ import annotations

import json
import random
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from radalign.config import Settings
from radalign.pipeline import GRAPH


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_web_port_offset() -> int:
    """An offset that moves every stage's HTTP port onto a free one."""
    # Stage ports land in 20080-32106: above a dev stack's defaults (18080-18106) and below the
    # kernel's ephemeral range (32768+), where any outgoing connection may hold a port by chance
    # (a worker failed to bind 49316, taken by a client socket, in CI).
    for _ in range(50):
        offset = random.randrange(2000, 14000)
        if all(_port_free(s.web_port + offset) for s in GRAPH):
            return offset
    raise RuntimeError("no free range of stage web ports")


def short_state_dir(prefix: str = "radalign-") -> Path:
    """A new folder directly under the temp root: the PostgreSQL socket path inside it must stay
    under 107 bytes, and pytest's basetemp can be deep."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def stack_settings(state_dir: Path, **overrides: object) -> Settings:
    """Settings for a private stack in `state_dir`: every port free, nothing external."""
    grpc = free_port()
    values: dict[str, object] = {
        "state_dir": state_dir,
        "stack_external": "",
        "database_url": "",
        "kafka_bootstrap": f"127.0.0.1:{free_port()}",
        "triton_http_port": free_port(),
        "triton_grpc_port": grpc,
        "triton_grpc_url": f"127.0.0.1:{grpc}",
        "triton_metrics_port": free_port(),
        "gateway_port": free_port(),
        "dicom_port": free_port(),
        "orthanc_http_port": free_port(),
        "orthanc_dicom_port": free_port(),
        "web_port_offset": free_web_port_offset(),
    }
    return Settings.model_validate(values | overrides)


#: The IU reports an integration stack's case store holds: enough for retrieval to find
#: label-agreeing cases, quick to embed. The test session shares one store, and
#: `ensure_iu_cases` loads only into an empty one, so every module asks for this same number
#: (a module that loaded 200 first left 199 for one that needed 400, in that order only).
IU_CASES_FOR_TESTS = 400


ADD_ONE_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "INPUT", data_type: TYPE_FP32, dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""

ADD_ONE_MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            out = pb_utils.Tensor("OUTPUT", (x + 1).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""


def write_add_one_model(repo: Path, name: str = "add_one", model_py: str = ADD_ONE_MODEL) -> Path:
    """A one-model Triton repository (Python backend): FP32 vector `INPUT` in, `OUTPUT` = INPUT + 1."""
    version_dir = repo / name / "1"
    version_dir.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(ADD_ONE_CONFIG.format(name=name))
    (version_dir / "model.py").write_text(model_py)
    return repo


@contextmanager
def fresh_database(settings: Settings, prefix: str) -> Iterator[Settings]:
    """A new, migrated database beside the stack's own, dropped afterwards: tests that count rows
    never see what other tests wrote. Yields Settings pointing at it."""
    import uuid

    import psycopg

    from radalign.db import apply_migrations

    dbname = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {dbname}")
    dsn = psycopg.conninfo.make_conninfo(settings.dsn, dbname=dbname)
    try:
        apply_migrations(dsn)
        yield settings.model_copy(update={"database_url": dsn})
    finally:
        with psycopg.connect(settings.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


@asynccontextmanager
async def emptied_pool(settings: Settings, *tables: str) -> AsyncIterator[Any]:
    """A small connection pool on `settings`' database with `tables` emptied first (CASCADE), so
    each test of a module sharing a `fresh_database` starts from no rows."""
    from radalign.db import open_pool

    pool = await open_pool(settings, max_size=2)
    try:
        async with pool.connection() as conn:
            for table in tables:
                await conn.execute(f"TRUNCATE {table} CASCADE")
        yield pool
    finally:
        await pool.close()


def until(what: str, check: Callable[[], Any], timeout_s: float = 240.0, *, interval_s: float = 0.5,
          detail: Callable[[], object] | None = None) -> Any:
    """Poll `check` until it returns something truthy (returned); at the deadline fail naming
    `what` (and `detail()`, what was seen instead)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}" + (f": {detail()}" if detail else ""))


@contextmanager
def delivering_stack(settings: Settings, destinations: Callable[[str], list[dict[str, Any]]],
                     **updates: object) -> Iterator[tuple[Settings, Any]]:
    """Orthanc, a loopback FHIR server (R4) and every worker, delivering to `destinations(fhir
    base URL)`; yields the settings and the FHIR server. Orthanc is resumed (a test may freeze
    it) and stopped on exit."""
    from radalign.loopback.fhir_server import LoopbackFhirServer
    from radalign.stack import running, stop
    from radalign.stack.manager import up

    fhir = LoopbackFhirServer("R4")
    fhir.start()
    routes = json.dumps({"destinations": destinations(fhir.base_url)})
    settings = settings.model_copy(update={"delivery_destinations": routes, **updates})
    up(settings, ["orthanc"])
    try:
        with running_workers(settings):
            yield settings, fhir
    finally:
        if (process := running("orthanc", settings)) is not None:
            process.resume()
        stop("orthanc", settings)
        fhir.stop()


@contextmanager
def running_workers(settings: Settings) -> Iterator[Settings]:
    """Every worker of the stage graph up (returns once each answers /health/ready), all stopped
    on exit, whatever the test did."""
    from radalign.stack import stop
    from radalign.stack.manager import up
    from radalign.stack.workers import STAGES, worker_name

    try:
        up(settings, ["workers"])  # inside: a worker that fails to start leaves none of the others running
        yield settings
    finally:
        for stage in STAGES:
            stop(worker_name(stage), settings)


def write_audit_profile(settings: Settings, site: str, observations: tuple[str, ...] = ("Edema", "Pleural Effusion")) -> list[str]:
    """A site audit profile (`radalign audit`'s format, no claim policy) for `site` that assesses
    `observations` at the shipped checkpoint's validation operating points: tests that need a
    model which claims something use it, since the shipped generic model, under its claim policy,
    claims nothing. Written to `settings.concepts_site_profiles_dir`; returns the assessed list."""
    from radalign.concepts.calibration import OperatingPoint
    from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
    from radalign.concepts.gate import ServedGate, profile_path, save_profile

    ckpt = load_checkpoint(DEFAULT_CHECKPOINT)
    points = {o: OperatingPoint(**ckpt.meta["operating_points"][o]) for o in observations}
    gate = ServedGate(assessed=list(observations), operating_points=points, ood_threshold=ckpt.gate.ood_threshold if ckpt.gate else None, name=site)
    assert settings.concepts_site_profiles_dir is not None, "the settings name no site-profile folder"
    save_profile(gate, profile_path(settings.concepts_site_profiles_dir, site))
    return list(observations)
