"""The embedded stack's components, how each service starts, and which of them the settings place
elsewhere (shared by `up`/`down`/`status` and the supervisor)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import psutil

from radalign.config import Settings, csv_list
from radalign.db import apply_migrations
from radalign.stack import broker, idp, orthanc, postgres, triton
from radalign.stack.broker import parse_bootstrap
from radalign.stack.process import StatePaths

log = logging.getLogger(__name__)

SERVICES: tuple[str, ...] = ("broker", "postgres", "triton", "orthanc", "idp")
COMPONENTS: tuple[str, ...] = (*SERVICES, "workers")


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def external_components(settings: Settings) -> set[str]:
    """Components the settings place outside this machine's embedded stack: the ones listed in
    `stack_external`, PostgreSQL when `database_url` is set, the broker / Triton when their
    address is not a loopback one."""
    external = set(csv_list(settings.stack_external))
    unknown = external - set(SERVICES)
    if unknown:
        raise ValueError(f"stack_external names unknown components {sorted(unknown)}; known: {', '.join(SERVICES)}")
    if settings.database_url:
        external.add("postgres")
    if not _is_loopback(parse_bootstrap(settings.kafka_bootstrap)[0]):
        external.add("broker")
    if not _is_loopback(settings.triton_grpc_url.rpartition(":")[0].strip("[]")):
        external.add("triton")
    return external


def start_service(settings: Settings, paths: StatePaths, component: str, model_repo: Path | None) -> psutil.Process:
    """Start one service the way `up` does (and the supervisor, when it died)."""
    if component == "broker":
        return broker.start_broker(settings, paths)
    if component == "postgres":
        proc = postgres.start_postgres(settings, paths)
        try:
            applied = apply_migrations(settings.dsn)
        except Exception:
            postgres.stop_postgres(settings, paths)
            raise
        log.info("migrations applied: %s", ", ".join(applied) or "none (up to date)")
        return proc
    if component == "triton":
        return triton.start_triton(settings, paths, model_repo)
    if component == "orthanc":
        return orthanc.start_orthanc(settings, paths)
    if component == "idp":
        return idp.start_idp(settings, paths)
    raise ValueError(f"unknown component {component!r}")
