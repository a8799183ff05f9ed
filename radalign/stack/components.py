"""The embedded stack's components and which of them the settings place elsewhere (shared by
`up`/`down`/`status` and the supervisor)."""

from __future__ import annotations

import ipaddress

from radalign.config import Settings, csv_list
from radalign.stack.broker import parse_bootstrap

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
