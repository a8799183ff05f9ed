"""Generate `schemas/json/*.v1.json` from the payload models (`radalign schemas export`).

It lives in `radalign`, not `schemas`: each document names the topics that carry its contract,
which the stage graph (`radalign.pipeline`) declares, and the contracts import nothing of the project.
"""

from __future__ import annotations

import json
from pathlib import Path

from radalign.pipeline import ALL_TOPICS
from schemas.events import ALL_CONTRACTS, CONTRACT_VERSION, JSON_DIR, Contract, schema_file
from schemas.examples import EXAMPLES

#: Kafka record headers every event carries (CloudEvents binary mode + W3C trace context).
RECORD_HEADERS = {
    "ce_specversion": "1.0",
    "ce_id": "event id, deterministic per (stage, study_key, pipeline_version, study_version): redeliveries carry the same id",
    "ce_type": "the x-event-type below",
    "ce_source": "/radalign/<stage> (the same for every replica: source + id identify the event)",
    "ce_time": "RFC 3339 time of publication",
    "ce_dataschema": "absolute URI: RADALIGN_SCHEMA_BASE_URI (default urn:radalign:schema:) + this file's name",
    "content-type": "application/json",
    "traceparent": "W3C trace context; the trace id is kept from the gateway to the report",
}


def render(contract: type[Contract]) -> str:
    """The JSON Schema document for one contract, as it is written to disk."""
    schema = contract.model_json_schema(mode="validation")
    topics = sorted(n for t in ALL_TOPICS if t.contract is contract for n in t.names)
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://radalign.example/schemas/{schema_file(contract).name}",
        **schema,
        "x-event-type": contract.event_type,
        "x-contract-version": CONTRACT_VERSION,
        "x-topics": topics if contract.schema_name != "dead_letter" else ["radalign.dlq.<stage>.v1"],
        "x-key": "study.study_key (the study pseudonym)" if contract.schema_name != "dead_letter" else "the failed record's key",
        "x-headers": RECORD_HEADERS,
        "examples": EXAMPLES[contract.schema_name],
    }
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def export() -> list[Path]:
    JSON_DIR.mkdir(exist_ok=True)
    written = []
    for contract in ALL_CONTRACTS:
        path = schema_file(contract)
        path.write_text(render(contract), encoding="utf-8")
        written.append(path)
    return written
