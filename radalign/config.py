"""Settings from the environment (prefix `RADALIGN_`), one object for every service.

Defaults point at the embedded stack on 127.0.0.1 under the state folder; production sets the
addresses of the real services (Kafka bootstrap servers, PostgreSQL DSN, Triton, LLM endpoint).
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from radalign import PIPELINE_VERSION
from radalign.pipeline import stage_spec

#: The public development default of `deid_secret`; refused when `env` is production.
DEV_DEID_SECRET = "dev-only-change-me"


class InsecureSettings(ValueError):
    """`RADALIGN_ENV=production` with a setting that is only acceptable on a developer machine."""


def csv_list(value: str | None) -> tuple[str, ...]:
    """The entries of a comma-separated setting (tokens, AE titles, issuers, bootstrap servers...).

    Each entry is stripped of surrounding whitespace (spaces, tabs, newlines: a secret mounted from
    a file often ends in one) and empty entries are dropped, so `" , \\n"` has no entry at all.
    The one parser of such settings: the production guard and every consumer read them alike.
    """
    return tuple(entry for entry in (part.strip() for part in (value or "").split(",")) if entry)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RADALIGN_", env_file=None, extra="ignore")

    env: Literal["dev", "production"] = Field(
        default="dev",
        description="production (set by the k8s overlays) refuses to start with empty tokens, an empty AE list or the dev secret",
    )
    state_dir: Path = Field(default=Path(".radalign"), description="PIDs, logs and data of the embedded stack")
    stack_external: str = Field(
        default="",
        description="comma-separated stack components run elsewhere (broker, postgres, triton): `stack up` skips them",
    )
    pipeline_version: str = PIPELINE_VERSION

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_session_timeout_ms: int = 6000  # tansu joins take about half the session timeout
    kafka_heartbeat_ms: int = 1000
    # How long a worker's fetch waits for records (Faust fixes 1,500 ms): radalign/framework/kafka_fetch.py
    kafka_fetch_max_wait_ms: int = 500
    kafka_partitions: int = 4
    # Kafka security (aiokafka and Faust alike). PLAINTEXT is the embedded broker's; production
    # clusters use SSL or SASL_SSL.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: str = Field(default="", description="CA bundle of the brokers; empty: the system store")
    kafka_ssl_certfile: str = Field(default="", description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: str = ""

    # PostgreSQL + pgvector. Empty: the embedded server's socket under the state folder.
    database_url: str = ""
    db_connect_timeout_s: float = 5.0
    db_statement_timeout_ms: int = 5000

    # Triton
    triton_grpc_url: str = "127.0.0.1:18001"
    triton_http_port: int = 18000
    triton_grpc_port: int = 18001
    triton_metrics_port: int = 18002
    triton_model: str = "concept_model"
    triton_timeout_s: float = 30.0
    triton_concurrency: int = 8
    # Concept-stage site audit profiles (`radalign audit`): <dir>/<site>.json, chosen by the study's
    # `site` or, when a deployment serves one site, `concepts_default_site`. Empty dir: <state_dir>/site_profiles.
    concepts_site_profiles_dir: Path | None = None
    concepts_default_site: str = ""
    # Site models (`radalign sites ...`): the registry Triton serves each site's head from and the
    # sites' training sets. Empty: <state_dir>/sites.
    site_models_dir: Path | None = None

    # LLM. Empty URL: the deterministic drafter (CI default).
    llm_url: str = ""
    llm_model: str = "gemma-3-270m"
    llm_api_key: str = ""
    llm_timeout_s: float = 60.0
    llm_concurrency: int = 2
    llm_max_tokens: int = 256
    llm_backend: Literal["auto", "openai", "llama-cpp", "deterministic"] = Field(
        default="auto", description="auto (openai if llm_url else deterministic), openai, llama-cpp, deterministic",
    )
    llm_max_retries: int = 2
    llm_prompt_form: Literal["chat", "completion"] = Field(default="chat", description="chat (instruction models) or completion (few-shot, base models)")
    llm_structured_output: bool = True
    llm_model_path: str = Field(default="", description="GGUF for llama-cpp; empty: Gemma-3-270M from its package")

    # Drafting
    drafting_prompt_version: str = "draft-v2"
    drafting_max_cases: int = 3
    drafting_review_present: str = Field(
        default="", description="comma-separated observations whose stated (present) finding routes a report to review (precision below the review bar)"
    )
    drafting_critical: str = Field(default="Pneumothorax", description="comma-separated observations that route a report to review")
    drafting_omit_threshold: float = Field(default=0.0, description="predicted-present findings below this probability may be omitted")

    # Delivery (radalign/delivery/destinations.py): a YAML/JSON file path or inline document.
    delivery_destinations: str = Field(default="", description="destinations of the delivery stage (PACS, DICOMweb, FHIR); empty: none")

    # CloudEvents: ce_dataschema = this base + the schema file name (an absolute URI). Set it to the
    # URL where schemas/json/ is published, if it is.
    schema_base_uri: str = "urn:radalign:schema:"

    # Orthanc, the embedded stack's optional PACS (radalign/stack/orthanc.py), where installed.
    orthanc_http_port: int = 18042
    orthanc_dicom_port: int = 14242
    orthanc_ae_title: str = "ORTHANC"

    # Claim-check blob store: file:///path or s3://bucket/prefix. Empty: <state_dir>/blobs.
    blob_url: str = ""
    s3_endpoint_url: str = ""

    # Retries of outside calls (Triton, PostgreSQL, LLM, blob store)
    retry_attempts: int = 4
    retry_base_delay_s: float = 0.2
    retry_max_delay_s: float = 5.0

    # Retrieval
    retrieval_k: int = 5
    retrieval_candidates: int = 40
    retrieval_ef_search: int = 100
    retrieval_label_weight: float = 0.5
    retrieval_embedding_weight: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="weight of the image->report embedding cosine next to the concept-profile agreement; "
        "0 because the shipped embedding measured no better than chance (README, benchmarks/retrieval_bench.py)",
    )

    # Gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = stage_spec("gateway").web_port
    gateway_tokens: str = Field(default="", description="comma-separated bearer tokens of the ingest API; empty disables auth (dev only)")
    read_tokens: str = Field(
        default="",
        description="comma-separated bearer tokens of the report read API (re-identified FHIR/SR); must differ from the ingest "
        "tokens in production; empty in dev: the ingest tokens",
    )
    gateway_max_bytes: int = 64 * 1024 * 1024
    dicom_ae_title: str = "RADALIGN"
    dicom_port: int = 11112
    dicom_allowed_aes: str = Field(default="", description="comma-separated calling AE titles; empty allows any")
    dicom_max_associations: int = 10
    study_quiet_s: float = 2.0
    outbox_retention_days: int = Field(
        default=30, ge=0,
        description="days a fully published study stays in the gateway outbox after its last instance (re-opened studies are "
        "published whole within it); 0 keeps everything",
    )
    max_image_pixels: int = Field(
        default=25_000_000,
        description="pixel budget of one image before decoding: DICOM Rows x Columns x samples x frames, PNG/JPEG width x height "
        "(also Pillow's decompression-bomb limit)",
    )
    deid_refuse_burned_in: bool = Field(
        default=True, description="refuse objects with BurnedInAnnotation=YES (their pixels may show identifiers)"
    )
    deid_secret: str = Field(default=DEV_DEID_SECRET, description="HMAC key for pseudonyms; set a secret in production")
    patient_issuer: str = Field(
        default="LOCAL", description="issuer (namespace) of patient ids when neither the source nor the object names one"
    )
    patient_issuers: str = Field(
        default="",
        description="issuer per source, comma-separated <source>[:<calling AE>]=<issuer>, e.g. 'dicom-cstore:PACS_A=HOSP-A,http=HOSP-A' "
        "(radalign/pseudonymizer.py); wins over the object's IssuerOfPatientID",
    )

    # Observability. Stage HTTP ports are the graph's (radalign.pipeline) + web_port_offset (the gateway's is gateway_port),
    # so a second stack (tests) can run beside a dev stack.
    web_port_offset: int = 0
    web_host: str = Field(default="127.0.0.1", description="bind address of the stages' HTTP servers; 0.0.0.0 in a pod")
    metrics_dir: Path | None = Field(default=None, description="PROMETHEUS_MULTIPROC_DIR for multi-process workers")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    # Review sign-in (issue 24): OpenID Connect, authorization code + PKCE, against the provider's IdP.
    # Empty issuer: the dev token login (name, role, token), refused outside dev.
    review_oidc_issuer: str = Field(default="", description="the IdP's issuer URL (discovery at /.well-known/openid-configuration)")
    review_oidc_client_id: str = "radalign-review"
    review_oidc_client_secret: SecretStr = SecretStr("")
    review_oidc_scope: str = "openid profile roles"
    review_oidc_role_claim: str = Field(default="roles", description="the ID token claim listing the user's roles (or groups)")
    review_oidc_attending_roles: str = Field(default="attending,radiologist", description="claim values that make an attending (final sign-off)")
    review_oidc_resident_roles: str = Field(default="resident", description="claim values that make a resident (preliminary sign-off)")
    review_public_url: str = Field(default="", description="the review service's external base URL (redirect URI); default http://127.0.0.1:PORT")
    review_session_secret: SecretStr = Field(default=SecretStr(""), description="seals the session cookie; default derived from RADALIGN_DEID_SECRET")
    review_session_idle_s: int = Field(default=1800, ge=60, description="a review session ends after this long without a request")
    review_session_max_s: int = Field(default=12 * 3600, ge=300, description="and this long after sign-in in any case")
    # Dev/CI identity provider (radalign.stack.idp: npm oidc-provider), started by the stack when node is installed.
    idp_port: int = 18190

    @model_validator(mode="after")
    def _secure_outside_dev(self) -> Settings:
        """Outside dev, settings that silently disable a protection stop the process instead."""
        if self.env != "production":
            return self
        problems = []
        ingest, read = set(csv_list(self.gateway_tokens)), set(csv_list(self.read_tokens))
        if not ingest:
            problems.append(f"RADALIGN_GATEWAY_TOKENS is empty{_blank(self.gateway_tokens)} (the ingest API would accept anyone)")
        if not read:
            problems.append(f"RADALIGN_READ_TOKENS is empty{_blank(self.read_tokens)} (the report API would accept anyone)")
        if ingest & read:
            problems.append("a token is both an ingest and a read token (uploaders could read re-identified reports)")
        if not csv_list(self.dicom_allowed_aes):
            problems.append(f"RADALIGN_DICOM_ALLOWED_AES is empty{_blank(self.dicom_allowed_aes)} (any calling AE could store)")
        secret = self.deid_secret.strip()
        if secret == DEV_DEID_SECRET or len(secret) < 32:
            problems.append(
                "RADALIGN_DEID_SECRET is the public default or shorter than 32 characters, surrounding whitespace not counted "
                "(pseudonyms could be recomputed)"
            )
        # Optional secrets: unset is a choice, set to only whitespace is a broken secret mount.
        optional_secrets = {
            "RADALIGN_KAFKA_SASL_PASSWORD": self.kafka_sasl_password.get_secret_value(),
            "RADALIGN_LLM_API_KEY": self.llm_api_key,
        }
        for name, value in optional_secrets.items():
            if value and not value.strip():
                problems.append(f"{name} is set but holds only whitespace")
        if self.kafka_sasl_mechanism and not self.kafka_security_protocol.startswith("SASL"):
            problems.append("RADALIGN_KAFKA_SASL_MECHANISM is set but the security protocol is not SASL_*")
        if problems:
            raise InsecureSettings("refusing to start with RADALIGN_ENV=production: " + "; ".join(problems))
        return self

    @property
    def read_api_tokens(self) -> str:
        """Tokens of the report read API: `read_tokens`, or in dev the ingest tokens when it has none."""
        if csv_list(self.read_tokens):
            return self.read_tokens
        return self.gateway_tokens if self.env == "dev" else ""

    @property
    def allowed_calling_aes(self) -> tuple[str, ...]:
        """`dicom_allowed_aes` as a list; empty: any calling AE (refused in production)."""
        return csv_list(self.dicom_allowed_aes)

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        if self.kafka_security_protocol not in ("SSL", "SASL_SSL"):
            return None
        context = ssl.create_default_context(cafile=self.kafka_ssl_cafile or None)
        if self.kafka_ssl_certfile:
            context.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile or None)
        return context

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client (producer, consumer, admin) gets."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap, "security_protocol": self.kafka_security_protocol}
        if (context := self.kafka_ssl_context()) is not None:
            kwargs["ssl_context"] = context
        if self.kafka_security_protocol.startswith("SASL"):
            kwargs |= {
                "sasl_mechanism": self.kafka_sasl_mechanism or "PLAIN",
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": self.kafka_sasl_password.get_secret_value(),
            }
        return kwargs

    def faust_broker_credentials(self) -> Any:
        """`broker_credentials` for Faust: SASL or SSL credentials, None for PLAINTEXT."""
        import faust

        context = self.kafka_ssl_context()
        if self.kafka_security_protocol.startswith("SASL"):
            return faust.SASLCredentials(
                username=self.kafka_sasl_username, password=self.kafka_sasl_password.get_secret_value(),
                mechanism=self.kafka_sasl_mechanism or "PLAIN", ssl_context=context,
            )
        return faust.SSLCredentials(context) if context is not None else None

    @property
    def blob_root(self) -> str:
        return self.blob_url or (self.state_dir.resolve() / "blobs").as_uri()

    @property
    def sites_dir(self) -> Path:
        return (self.site_models_dir or self.state_dir / "sites").resolve()

    @property
    def pg_data_dir(self) -> Path:
        return self.state_dir.resolve() / "postgres"

    @property
    def dsn(self) -> str:
        return self.database_url or f"postgresql://postgres:@/postgres?host={self.pg_data_dir}"

    def web_port(self, stage: str) -> int:
        if stage == "gateway":
            return self.gateway_port
        return stage_spec(stage).web_port + self.web_port_offset


def _blank(value: str) -> str:
    """Says why a non-empty value of a list setting counts as empty."""
    return " (it holds only whitespace, newlines or commas)" if value else ""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
