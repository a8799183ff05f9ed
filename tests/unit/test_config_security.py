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


# --- one parser for list settings; production refuses blank secrets and allow-lists -------------

BLANKS = ["", " ", "\n", "\r\n", "\t", ",", ",,", " , \n", "\n,\n", " ,\t, "]

GOOD_PRODUCTION = {
    "env": "production", "gateway_tokens": "ingest-1,ingest-2", "read_tokens": "reader-1",
    "dicom_allowed_aes": "PACS1", "deid_secret": "s" * 40,
}

#: Every secret or allow-list the production guard checks, and the name its complaint carries.
REQUIRED = {
    "gateway_tokens": "RADALIGN_GATEWAY_TOKENS",
    "read_tokens": "RADALIGN_READ_TOKENS",
    "dicom_allowed_aes": "RADALIGN_DICOM_ALLOWED_AES",
    "deid_secret": "RADALIGN_DEID_SECRET",
}
OPTIONAL_SECRETS = {"kafka_sasl_password": "RADALIGN_KAFKA_SASL_PASSWORD", "llm_api_key": "RADALIGN_LLM_API_KEY"}


@pytest.mark.parametrize(
    ("raw", "entries"),
    [
        ("", ()), (" ", ()), ("\n", ()), (",", ()), (" , ,\n", ()),
        ("a", ("a",)), (" a ,b\n", ("a", "b")), ("a,,b,", ("a", "b")), ("a\n,\tb\r\n", ("a", "b")),
        ("PACS A , B", ("PACS A", "B")),  # inner whitespace belongs to the entry
    ],
)
def test_csv_list_strips_whitespace_and_drops_empty_entries(raw: str, entries: tuple[str, ...]) -> None:
    from radalign.config import csv_list
    from radalign.framework.auth import parse_tokens

    assert csv_list(raw) == entries
    assert parse_tokens(raw) == frozenset(entries)  # the auth check reads the list as the guard does


def test_the_good_production_settings_start() -> None:
    settings = Settings(**GOOD_PRODUCTION)
    assert settings.env == "production" and settings.allowed_calling_aes == ("PACS1",)


@pytest.mark.parametrize("blank", BLANKS)
@pytest.mark.parametrize("field", sorted(REQUIRED))
def test_production_refuses_a_blank_required_secret_or_allow_list(field: str, blank: str) -> None:
    from radalign.config import InsecureSettings

    with pytest.raises(Exception, match=REQUIRED[field]) as refused:
        Settings(**(GOOD_PRODUCTION | {field: blank}))
    assert isinstance(refused.value.__cause__ or refused.value, (InsecureSettings, ValueError))
    if blank and field != "deid_secret":
        assert "only whitespace, newlines or commas" in str(refused.value)


@pytest.mark.parametrize("blank", [b for b in BLANKS if b.strip()] + [" " * 40, "\n" * 40])
def test_production_refuses_a_deid_secret_long_only_by_its_whitespace(blank: str) -> None:
    with pytest.raises(Exception, match="RADALIGN_DEID_SECRET"):
        Settings(**(GOOD_PRODUCTION | {"deid_secret": blank}))
    with pytest.raises(Exception, match="RADALIGN_DEID_SECRET"):
        Settings(**(GOOD_PRODUCTION | {"deid_secret": "short-secret" + " " * 30 + "\n"}))


@pytest.mark.parametrize("blank", [b for b in BLANKS if b and not b.strip()])
@pytest.mark.parametrize("field", sorted(OPTIONAL_SECRETS))
def test_production_refuses_an_optional_secret_set_to_whitespace(field: str, blank: str) -> None:
    with pytest.raises(Exception, match=f"{OPTIONAL_SECRETS[field]} is set but holds only whitespace"):
        Settings(**(GOOD_PRODUCTION | {field: blank}))
    assert Settings(**(GOOD_PRODUCTION | {field: ""})).env == "production"  # unset stays a choice


@pytest.mark.parametrize(
    ("ingest", "read"), [("tok\n", "tok"), (" tok ,x", "y,\ntok\n"), ("a,tok", "tok,")]
)
def test_a_token_shared_by_ingest_and_read_is_found_through_whitespace(ingest: str, read: str) -> None:
    with pytest.raises(Exception, match="both an ingest and a read token"):
        Settings(**(GOOD_PRODUCTION | {"gateway_tokens": ingest, "read_tokens": read}))


def test_values_from_secret_files_with_trailing_newlines_are_used_as_their_entries() -> None:
    from radalign.framework.auth import bearer_authorized, parse_tokens

    settings = Settings(**(GOOD_PRODUCTION | {"gateway_tokens": "ingest-1\n", "read_tokens": "reader-1,\nreader-2\n",
                                              "dicom_allowed_aes": " PACS1 ,\nPACS2\n"}))
    assert parse_tokens(settings.gateway_tokens) == {"ingest-1"}
    assert parse_tokens(settings.read_api_tokens) == {"reader-1", "reader-2"}
    assert settings.allowed_calling_aes == ("PACS1", "PACS2")
    assert bearer_authorized("Bearer ingest-1", parse_tokens(settings.gateway_tokens))
    assert not bearer_authorized("Bearer ingest-1\n", parse_tokens(settings.read_api_tokens))


@pytest.mark.parametrize("blank", BLANKS)
def test_dev_reads_blank_read_tokens_as_unset(blank: str) -> None:
    """Dev falls back to the ingest tokens when the read tokens have no entry, blank or empty alike."""
    assert Settings(gateway_tokens="dev-token", read_tokens=blank).read_api_tokens == "dev-token"
    from radalign.config import csv_list

    assert csv_list(Settings(gateway_tokens="dev-token", read_tokens=f"{blank}reader").read_api_tokens) == ("reader",)


def test_the_scp_allow_list_is_the_parsed_list(tmp_path) -> None:
    import asyncio

    from services.gateway.dicom_scp import DicomScp

    loop = asyncio.new_event_loop()
    try:
        scp = DicomScp(Settings(state_dir=tmp_path, dicom_allowed_aes="PACS1,\n PACS2 ,"), core=None, loop=loop)
        assert scp.ae.require_calling_aet == ["PACS1", "PACS2"]
        scp = DicomScp(Settings(state_dir=tmp_path, dicom_allowed_aes=" ,\n"), core=None, loop=loop)
        assert scp.ae.require_calling_aet == []  # dev: no entry, no allow-list
    finally:
        loop.close()


def test_other_list_settings_use_the_same_parser() -> None:
    from radalign.framework.faust_app import broker_urls
    from radalign.pseudonymizer import IssuerPolicy
    from radalign.stack.broker import parse_bootstrap

    assert broker_urls(" k1:9092 ,\nk2:9092\n,") == "kafka://k1:9092;kafka://k2:9092"
    assert parse_bootstrap("\n k1:9092 , k2:9092") == ("k1", 9092)
    with pytest.raises(ValueError, match="names no server"):
        parse_bootstrap(" ,\n")
    policy = IssuerPolicy.from_settings(Settings(patient_issuers="dicom-cstore:PACS_A=HOSP-A,\n http=HOSP-B\n,"))
    assert dict(policy.by_source) == {"dicom-cstore:PACS_A": "HOSP-A", "http": "HOSP-B"}
