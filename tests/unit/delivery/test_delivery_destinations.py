"""The destination configuration: YAML, JSON or a file; secrets by environment variable."""

import pytest
from pydantic import ValidationError

from radalign.delivery.destinations import ClientCredentialsAuth, DicomDestination, FhirDestination, load_config

YAML = """
destinations:
  - {name: pacs, kind: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: 4242}
  - {name: dicomweb, kind: stow, url: "http://127.0.0.1:8042/dicom-web", auth: {type: bearer, token_env: PACS_TOKEN}}
  - name: ehr
    kind: fhir
    base_url: https://fhir.example/r4
    version: R4
    auth: {type: oauth2-client-credentials, token_url: https://auth.example/token, client_id: radalign, client_secret_env: EHR_SECRET}
    retry: {attempts: 6, base_delay_s: 1, max_delay_s: 60, timeout_s: 20}
"""


def test_yaml_file_and_inline_json_give_the_same_config(tmp_path):
    path = tmp_path / "destinations.yaml"
    path.write_text(YAML)
    config = load_config(str(path))
    assert [d.name for d in config.destinations] == ["pacs", "dicomweb", "ehr"]
    assert isinstance(config.destinations[0], DicomDestination) and config.destinations[0].calling_ae_title == "RADALIGN"
    ehr = config.destinations[2]
    assert isinstance(ehr, FhirDestination) and ehr.version == "R4" and ehr.retry.attempts == 6
    assert isinstance(ehr.auth, ClientCredentialsAuth)
    assert load_config(config.model_dump_json()) == config
    assert load_config("").destinations == []


def test_secrets_come_from_the_environment_only(monkeypatch):
    config = load_config(YAML)
    auth = config.destinations[2].auth
    monkeypatch.delenv("EHR_SECRET", raising=False)
    with pytest.raises(ValueError, match="EHR_SECRET"):
        auth.client_secret()
    monkeypatch.setenv("EHR_SECRET", "s3cret")
    assert auth.client_secret() == "s3cret"
    with pytest.raises(ValidationError):  # an inline secret is not a field
        load_config('{"destinations": [{"name": "x", "kind": "stow", "url": "http://a/b", "auth": {"type": "bearer", "token": "abc"}}]}')


@pytest.mark.parametrize(
    "bad",
    [
        '[{"name": "a", "kind": "dicom", "ae_title": "A", "host": "h", "port": 1}, {"name": "a", "kind": "dicom", "ae_title": "B", "host": "h", "port": 2}]',
        '[{"name": "Patient Smith", "kind": "dicom", "ae_title": "A", "host": "h", "port": 1}]',  # names are metric labels: slugs only
        '[{"name": "a", "kind": "hl7v2", "host": "h"}]',
        '[{"name": "a", "kind": "fhir", "base_url": "not a url"}]',
        '[{"name": "a", "kind": "dicom", "ae_title": "THIS-AE-TITLE-IS-TOO-LONG", "host": "h", "port": 1}]',
    ],
)
def test_bad_configs_are_refused_with_a_reason(bad):
    with pytest.raises(ValidationError):
        load_config(bad)
