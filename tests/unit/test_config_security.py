"""Kafka TLS / SASL settings reach aiokafka and Faust, and secrets survive the trip to child processes."""

from __future__ import annotations

import ssl

import faust
import pytest

from radalign.config import Settings
from radalign.stack.workers import settings_env


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = Settings(kafka_bootstrap="k:9092")
    assert settings.kafka_client_kwargs() == {"bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}
    assert settings.faust_broker_credentials() is None


def test_sasl_ssl_reaches_aiokafka_and_faust() -> None:
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                        kafka_sasl_username="svc", kafka_sasl_password="pw-123")
    kwargs = settings.kafka_client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL" and isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("SCRAM-SHA-512", "svc", "pw-123")
    credentials = settings.faust_broker_credentials()
    assert isinstance(credentials, faust.SASLCredentials) and credentials.username == "svc"
    assert "pw-123" not in repr(settings)  # the password is a SecretStr


def test_ssl_only_gives_ssl_credentials_and_a_missing_ca_fails_loudly(tmp_path) -> None:
    assert isinstance(Settings(kafka_security_protocol="SSL").faust_broker_credentials(), faust.SSLCredentials)
    with pytest.raises(OSError):
        Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "missing.crt")).kafka_client_kwargs()


def test_child_processes_get_the_real_secret(tmp_path) -> None:
    env = settings_env(Settings(state_dir=tmp_path, kafka_sasl_password="pw-123"))
    assert env["RADALIGN_KAFKA_SASL_PASSWORD"] == "pw-123"
