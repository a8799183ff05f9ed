"""The Kafka headers every record carries, read back by the CloudEvents SDK (Kafka binding)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from radalign.config import get_settings
from radalign.framework import codec
from schemas.events import DeadLetter, schema_file


def _letter() -> DeadLetter:
    from datetime import UTC, datetime

    return DeadLetter(stage="drafting", reason="bad", error_type="validation", source_topic="t", attempts=1, failed_at=datetime.now(UTC), payload_b64="")


def _event(headers: codec.Headers, value: bytes):
    return from_binary(KafkaMessage(headers=dict(headers), key=b"st-0123456789abcdef", value=value), JSONFormat())


def test_headers_are_a_valid_binary_mode_cloudevent(monkeypatch):
    letter = _letter()
    value = codec.encode(letter)
    headers = codec.build_headers(letter, stage="drafting", ev_id="ev-1", traceparent=None)
    event = _event(headers, value)  # the SDK validates required and optional attributes
    assert event.get_specversion() == "1.0" and event.get_id() == "ev-1" and event.get_type() == DeadLetter.event_type
    assert event.get_datacontenttype() == "application/json"
    assert json.loads(event.get_data() if isinstance(event.get_data(), bytes | str) else json.dumps(event.get_data()))["stage"] == "drafting"
    schema = urlsplit(event.get_dataschema())
    assert schema.scheme and event.get_dataschema().endswith(schema_file(DeadLetter).name)  # an absolute URI


def test_source_is_stable_across_replicas(monkeypatch):
    letter = _letter()
    monkeypatch.setenv("HOSTNAME", "radalign-drafting-7d9f-abc")
    one = _event(codec.build_headers(letter, stage="drafting", ev_id="ev-1", traceparent=None), codec.encode(letter))
    monkeypatch.setenv("HOSTNAME", "radalign-drafting-7d9f-xyz")
    other = _event(codec.build_headers(letter, stage="drafting", ev_id="ev-1", traceparent=None), codec.encode(letter))
    assert (one.get_source(), one.get_id()) == (other.get_source(), other.get_id()) == ("/radalign/drafting", "ev-1")


def test_dataschema_base_is_configurable(monkeypatch):
    monkeypatch.setenv("RADALIGN_SCHEMA_BASE_URI", "https://schemas.example.org/radalign")
    get_settings.cache_clear()
    try:
        assert codec.dataschema_uri(DeadLetter) == "https://schemas.example.org/radalign/dead_letter.v1.json"
    finally:
        get_settings.cache_clear()


def test_the_sdk_refuses_what_is_not_a_cloudevent():
    letter = _letter()
    headers = [h for h in codec.build_headers(letter, stage="drafting", ev_id="ev-1", traceparent=None) if h[0] != "ce_source"]
    with pytest.raises(Exception, match="source"):
        _event(headers, codec.encode(letter))
