"""TLS settings for every Kafka client (the production overlay's mutual TLS)."""

import ssl
import subprocess

import pytest

from radalign.config import Settings
from radalign.framework.kafka_tls import aiokafka_kwargs, faust_credentials, ssl_context


def test_plaintext_by_default():
    settings = Settings()
    assert ssl_context(settings) is None and aiokafka_kwargs(settings) == {} and faust_credentials(settings) is None


def test_ssl_loads_the_client_certificate_and_verifies_the_server(tmp_path):
    key, cert = tmp_path / "user.key", tmp_path / "user.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=radalign"],
        check=True, capture_output=True, timeout=60,
    )
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(cert), kafka_ssl_certfile=str(cert), kafka_ssl_keyfile=str(key))
    context = ssl_context(settings)
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    kwargs = aiokafka_kwargs(settings)
    assert kwargs["security_protocol"] == "SSL" and kwargs["ssl_context"] is not None
    assert faust_credentials(settings) is not None
    with pytest.raises(FileNotFoundError):
        ssl_context(settings.model_copy(update={"kafka_ssl_certfile": str(tmp_path / "missing.crt")}))


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="PLAINTEXT or SSL"):
        ssl_context(Settings(kafka_security_protocol="SASL_SSL"))
