"""Where reports go: the destination configuration (`RADALIGN_DELIVERY_DESTINATIONS`).

A YAML or JSON document, given as a file path or inline:

    destinations:
      - {name: pacs, kind: dicom, ae_title: ORTHANC, host: pacs.example, port: 4242}
      - {name: dicomweb, kind: stow, url: https://pacs.example/dicom-web, auth: {type: bearer, token_env: PACS_TOKEN}}
      - {name: ris, kind: hl7, host: ris.example, port: 2575, receiving_application: RIS, receiving_facility: HOSP,
         retry: {attempts: 5, timeout_s: 10}}
      - name: ehr
        kind: fhir
        base_url: https://fhir.example/r4
        version: R4          # the default; R5 on request
        patient: conditional # Patient?identifier=...; "create": conditional create of the Patient
        order: conditional   # ServiceRequest?identifier=<placer order number>; "identifier": no reference
        patient_identifier_system: urn:oid:1.2.3.4
        auth: {type: oauth2-client-credentials, token_url: https://auth.example/token,
               client_id: radalign, client_secret_env: EHR_CLIENT_SECRET, scope: system/*.write}
        retry: {attempts: 6, base_delay_s: 1, max_delay_s: 60, timeout_s: 30}
        queue: {concurrency: 4, breaker_failures: 5, breaker_cooldown_s: 30, dead_letter_after_s: 600}

Each destination is drained by its own lane (`radalign.delivery.lanes`): `queue` sets how many
sends it has in flight, when its circuit breaker opens and for how long, and how long a report may
wait for it before it is dead-lettered; `retry.timeout_s` bounds each send and `retry.base_delay_s`
/ `max_delay_s` space a lane's tries (one send per try; `retry.attempts` bounds only
`DeliveryCore.deliver`, the all-at-once path of tools and tests).

Secrets are never in the document: it names the environment variables that hold them. A
destination's `name` appears in metric labels and delivery records, so it is a short slug.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

_NAME = r"^[a-z][a-z0-9-]{0,39}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Model):
    """Bounded retries with exponential backoff (radalign.framework.retry), per destination."""

    attempts: int = Field(default=4, ge=1, le=20)
    base_delay_s: float = Field(default=0.5, gt=0)
    max_delay_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0, description="per attempt")


class QueuePolicy(_Model):
    """How a destination's lane drains its queue (radalign.delivery.lanes)."""

    concurrency: int = Field(default=2, ge=1, le=32, description="sends in flight to this destination")
    breaker_failures: int = Field(default=5, ge=1, le=100, description="consecutive failed sends that open the circuit")
    breaker_cooldown_s: float = Field(default=30.0, gt=0, le=3600, description="open circuit: seconds before one probe is let through")
    dead_letter_after_s: float = Field(
        default=600.0, gt=0, description="a report still undelivered this long after it was queued is dead-lettered (the budget)"
    )


class BearerAuth(_Model):
    type: Literal["bearer"]
    token_env: str = Field(description="environment variable holding the token")

    def token(self) -> str:
        return _secret(self.token_env)


class ClientCredentialsAuth(_Model):
    """OAuth 2.0 client credentials grant (RFC 6749 4.4), e.g. SMART Backend Services' token."""

    type: Literal["oauth2-client-credentials"]
    token_url: HttpUrl
    client_id: str
    client_secret_env: str
    scope: str = ""

    def client_secret(self) -> str:
        return _secret(self.client_secret_env)


Auth = Annotated[BearerAuth | ClientCredentialsAuth, Field(discriminator="type")]


def _secret(env: str) -> str:
    value = os.environ.get(env, "")
    if not value:
        raise ValueError(f"environment variable {env} (a delivery secret) is not set")
    return value


class _Destination(_Model):
    """What every destination has: a name (its delivery records, metrics and lane), its retry
    policy (per try) and its queue (concurrency, circuit breaker, dead-letter budget)."""

    name: str = Field(pattern=_NAME)
    retry: RetryPolicy = RetryPolicy()
    queue: QueuePolicy = QueuePolicy()


class DicomDestination(_Destination):
    """A PACS reached by DICOM C-STORE (the Basic Text SR and, beside it, the AI's results as a
    TID 1500 Comprehensive 3D SR)."""

    kind: Literal["dicom"]
    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str = Field(default="RADALIGN", min_length=1, max_length=16)
    ai_results_sr: bool = Field(
        default=True,
        description="also store the model's results as a TID 1500 Comprehensive 3D SR (none when the model claimed nothing)",
    )


class StowDestination(_Destination):
    """A DICOMweb server: STOW-RS of the SR to `{url}/studies`."""

    kind: Literal["stow"]
    url: HttpUrl = Field(description="the DICOMweb base, e.g. http://orthanc:8042/dicom-web")
    auth: Auth | None = None


class FhirDestination(_Destination):
    """A FHIR server: one transaction Bundle of conditional updates per report version."""

    kind: Literal["fhir"]
    base_url: HttpUrl
    version: Literal["R4", "R5"] = Field(default="R4", description="FHIR R4 (US Core DiagnosticReport Note profile) or R5")
    patient: Literal["conditional", "create"] = Field(
        default="conditional",
        description="conditional: the subject is `Patient?identifier=system|value` (the server must hold that Patient); "
        "create: a Patient entry with a conditional create (ifNoneExist), where the server lets this client create patients",
    )
    order: Literal["conditional", "identifier"] = Field(
        default="conditional",
        description="conditional: basedOn is `ServiceRequest?identifier=` of the placer (else filler) order number, which the "
        "server must hold; identifier: the order by identifier only (a server without the orders)",
    )
    order_identifier_system: str = Field(default="", description="system of the placer order number (empty: any system)")
    patient_identifier_system: str = Field(
        default="urn:radalign:fhir:NamingSystem:patient-id", description="system of the patient identifier (the MRN's issuer)"
    )
    ai_results: bool = Field(
        default=True,
        description="on a signed version, also send the model's own Observations (marked as the AI device's, outside "
        "DiagnosticReport.result); the signed report's labels are the result either way",
    )
    auth: Auth | None = None


class Hl7Destination(_Destination):
    """A RIS taking HL7 v2.5.1 ORU^R01 over MLLP (radalign/delivery/hl7.py); signed versions only."""

    kind: Literal["hl7"]
    host: str
    port: int = Field(ge=1, le=65535)
    sending_application: str = Field(default="RADALIGN", max_length=180)
    sending_facility: str = Field(default="", max_length=180)
    receiving_application: str = Field(default="RIS", max_length=180)
    receiving_facility: str = Field(default="", max_length=180)
    processing_id: Literal["P", "T", "D"] = Field(default="P", description="MSH-11: production, training, debugging")
    retry: RetryPolicy = RetryPolicy(timeout_s=10.0)


Destination = Annotated[DicomDestination | StowDestination | FhirDestination | Hl7Destination, Field(discriminator="kind")]


class DeliveryConfig(_Model):
    destinations: list[Destination] = Field(default_factory=list)

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, value: list[Destination]) -> list[Destination]:
        names = [d.name for d in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"destination names must be unique: {', '.join(duplicates)}")
        return value


def load_config(source: str) -> DeliveryConfig:
    """From a file path or an inline YAML/JSON document; empty: no destinations."""
    if not source.strip():
        return DeliveryConfig()
    text = source
    if "\n" not in source and not source.lstrip().startswith(("{", "[")) and Path(source).is_file():
        text = Path(source).read_text()
    data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    if isinstance(data, list):
        data = {"destinations": data}
    return DeliveryConfig.model_validate(data or {})
