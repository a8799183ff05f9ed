"""Wire format of every record: JSON value, study pseudonym key, CloudEvents + W3C trace headers.

Pure functions, so that the Faust adapter, the gateway's producer, the demo and the tests share
one encoding (and one validation step) of the contracts in `schemas/`.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import ValidationError

from schemas.events import Contract, schema_file

C = TypeVar("C", bound=Contract)

Headers = list[tuple[str, bytes]]


class ContractViolation(ValueError):
    """A record that does not satisfy its topic's contract; the message is the reason."""


def event_id(stage: str, study_key: str, pipeline_version: str, study_version: int = 1) -> str:
    """Deterministic per (stage, study, pipeline version): redeliveries carry the same id."""
    digest = hashlib.sha256(f"{stage}|{study_key}|{pipeline_version}|{study_version}".encode()).hexdigest()
    return f"ev-{digest[:32]}"


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def child_traceparent(parent: str | None) -> str:
    """Same trace id, new span id (W3C trace context); a fresh trace when there is no valid parent."""
    parts = (parent or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return f"00-{parts[1]}-{secrets.token_hex(8)}-{parts[3]}"
    return new_traceparent()


def encode(event: Contract) -> bytes:
    return event.model_dump_json().encode("utf-8")


def event_source(stage: str) -> str:
    """`ce_source`: the stage, never the pod. Replicas of a stage emit the same `ce_id` for the
    same event (redeliveries, a replica taking over a partition), so source + id identify it
    whichever replica sent it; a per-pod source would make two copies look like two events."""
    return f"/radalign/{stage}"


def dataschema_uri(contract: type[Contract]) -> str:
    """`ce_dataschema`: an absolute URI (CloudEvents 1.0), `RADALIGN_SCHEMA_BASE_URI` + the
    schema file name. The default base is a URN; a deployment that publishes schemas/json/ over
    HTTP sets the base to that URL."""
    from radalign.config import get_settings

    base = get_settings().schema_base_uri
    name = schema_file(contract).name
    return f"{base}{name}" if base.endswith((":", "/")) else f"{base}/{name}"


def build_headers(event: Contract, *, stage: str, ev_id: str, traceparent: str | None) -> Headers:
    source = event_source(stage)
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", ev_id.encode()),
        ("ce_type", event.event_type.encode()),
        ("ce_source", source.encode()),
        ("ce_time", datetime.now(UTC).isoformat().encode()),
        ("ce_dataschema", dataschema_uri(type(event)).encode()),
        ("content-type", b"application/json"),
        ("traceparent", (traceparent or new_traceparent()).encode()),
    ]


def header(headers: Headers | dict | None, name: str) -> str | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
    return None


def decode(contract: type[C], value: bytes | None) -> C:
    """Parse and validate a record value; raises ContractViolation with a readable reason."""
    if value is None:
        raise ContractViolation("empty record value (tombstone) where a payload was expected")
    try:
        return contract.model_validate_json(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise ContractViolation(f"does not match {contract.schema_name} v1: {problems}") from None
