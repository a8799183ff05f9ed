"""Event payloads carried on the RadAlign Stream topics (contract version 1).

These pydantic models are the single definition of every topic payload. The JSON Schema files in
`schemas/json/` are generated from them (`radalign schemas export`) for consumers in other
languages, and `tests/unit/test_contracts.py` fails when a file is stale.

Rules every payload follows:
- no patient identifier: studies and patients are named by pseudonyms (`study_key`,
  `patient_key`) minted at the gateway; the mapping back lives only in PostgreSQL;
- no pixels: images travel as claim-check references (`BlobRef`) with a checksum;
- additive evolution inside a major version (new optional fields only); a breaking change gets
  new `.v2` topics and schema files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CONTRACT_VERSION = "1"

#: A pseudonymous key (study, patient, instance): the one pattern, for the contracts and for every
#: route that takes a study key in its path (`KEY_RE.fullmatch`).
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{7,127}$"
KEY_RE = re.compile(KEY_PATTERN)
_SHA256_PATTERN = r"^[0-9a-f]{64}$"
#: A sending site's name (also a file name under the site profiles folder: it cannot leave it).
SITE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SITE_RE = re.compile(SITE_PATTERN)


class Observation(str, Enum):
    """The 14 CheXpert observations, in CheXpert's order."""

    NO_FINDING = "No Finding"
    ENLARGED_CARDIOMEDIASTINUM = "Enlarged Cardiomediastinum"
    CARDIOMEGALY = "Cardiomegaly"
    LUNG_OPACITY = "Lung Opacity"
    LUNG_LESION = "Lung Lesion"
    EDEMA = "Edema"
    CONSOLIDATION = "Consolidation"
    PNEUMONIA = "Pneumonia"
    ATELECTASIS = "Atelectasis"
    PNEUMOTHORAX = "Pneumothorax"
    PLEURAL_EFFUSION = "Pleural Effusion"
    PLEURAL_OTHER = "Pleural Other"
    FRACTURE = "Fracture"
    SUPPORT_DEVICES = "Support Devices"


class Certainty(str, Enum):
    """A label's or a prediction's state, as CheXpert defines it (1 / 0 / -1)."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"


#: The 14 observations in CheXpert's order: the order of every score or label vector.
OBSERVATIONS: tuple[Observation, ...] = tuple(Observation)
#: A report's labels or a prediction's states, per observation (observations left out: unknown).
Labels = Mapping[Observation, Certainty]


class Priority(str, Enum):
    STAT = "stat"
    ROUTINE = "routine"


class Contract(BaseModel):
    """Base of every payload: strict (unknown fields are refused) and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    #: CloudEvents `type` of the event that carries this payload.
    event_type: ClassVar[str]
    #: Which JSON Schema file describes it.
    schema_name: ClassVar[str]


class BlobRef(BaseModel):
    """A claim check: where the bytes are and how to verify them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(description="file:///... or s3://bucket/key", min_length=1, max_length=2048)
    sha256: str = Field(pattern=_SHA256_PATTERN)
    size: int = Field(ge=0, description="bytes")
    media_type: str = Field(description="application/dicom, image/png, application/x-npy ...")


class StudyRef(BaseModel):
    """Who the event is about, pseudonymously, and how urgent it is. Every payload carries one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_key: str = Field(pattern=KEY_PATTERN, description="pseudonym of StudyInstanceUID; the record key")
    patient_key: str = Field(pattern=KEY_PATTERN, description="pseudonym of the patient")
    priority: Priority = Priority.ROUTINE
    version: int = Field(
        default=1, ge=1, description="the study's version: 1, then one more each time late instances re-open it (StudyReceived.study_version)"
    )
    received_at: datetime = Field(description="when the gateway published the study (UTC)")
    pipeline_version: str = Field(description="outputs are idempotent per (study_key, pipeline_version)")


class StageTiming(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str
    started_at: datetime
    duration_ms: float = Field(ge=0)


class Instance(BaseModel):
    """One image of a study as received (pixels stay in the blob store)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance_key: str = Field(pattern=KEY_PATTERN, description="pseudonym of SOPInstanceUID")
    source_format: Literal["dicom", "png", "jpeg"]
    view_position: str | None = Field(default=None, description="DICOM ViewPosition (PA, AP, LL ...) or null")
    blob: BlobRef
    rows: int | None = Field(default=None, ge=1)
    columns: int | None = Field(default=None, ge=1)
    not_chest_radiograph: bool = Field(
        default=False,
        description="the DICOM header says this image is not a chest radiograph (Modality, BodyPartExamined; "
        "radalign.ingest.dicom.header_not_chest_radiograph); false when the header does not say (PNG/JPEG included)",
    )
    child: bool = Field(
        default=False,
        description="the DICOM header gives the patient an age under 18 at the study (PatientAge, or StudyDate - PatientBirthDate; "
        "radalign.ingest.dicom.header_age_years); false when it does not say. The age itself never leaves the gateway",
    )


class StudyReceived(Contract):
    """A study the gateway assembled and accepted; topic `radalign.study.received.v1` (+ `.stat`)."""

    event_type: ClassVar[str] = "org.radalign.study.received.v1"
    schema_name: ClassVar[str] = "study_received"

    study: StudyRef
    modality: Literal["CR", "DX", "OT"] = Field(description="OT: plain image via HTTP or secondary capture")
    source: Literal["dicom-cstore", "dicomweb-stow", "http"]
    instances: list[Instance] = Field(min_length=1, max_length=64)
    study_version: int = Field(default=1, ge=1, description="bumped when late instances re-open a study")
    site: str | None = Field(
        default=None, pattern=SITE_PATTERN,
        description="the sending site: the patient issuer configured for the intake source (radalign/pseudonymizer.py); null when none is configured",
    )


class StudyPreprocessed(Contract):
    """The chosen image, decoded once and written as the model input; topic `radalign.study.preprocessed.v1`."""

    event_type: ClassVar[str] = "org.radalign.study.preprocessed.v1"
    schema_name: ClassVar[str] = "study_preprocessed"

    study: StudyRef
    instance_key: str = Field(pattern=KEY_PATTERN)
    view_position: str | None
    view_fallback: str | None = Field(default=None, description="why this image was chosen when ViewPosition did not decide")
    lateral_only: bool = False
    not_chest_radiograph: bool = Field(
        default=False, description="no instance's DICOM header allows a chest radiograph: the concept stage abstains without running the model"
    )
    child: bool = Field(default=False, description="the chosen instance's header says the patient is under 18 (Instance.child)")
    model_input: BlobRef = Field(description="float32 .npy, shape (1, H, W), values in [0, 1]")
    input_shape: list[int] = Field(min_length=3, max_length=3)
    original_rows: int = Field(ge=1)
    original_columns: int = Field(ge=1)
    preprocess_version: str
    timings: list[StageTiming] = Field(default_factory=list)
    site: str | None = Field(
        default=None, pattern=SITE_PATTERN,
        description="the sending site, when known (StudyReceived.site); selects the concept stage's site audit profile (null: the deployment's default)",
    )


class ConceptScore(BaseModel):
    """One observation the served model is validated to assess (see `ConceptsInferred.not_assessed`
    for the rest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    observation: Observation
    probability: float = Field(ge=0, le=1, description="calibrated probability (fitted on validation data)")
    state: Certainty = Field(description="present / absent / uncertain after the model's thresholds")
    present_threshold: float | None = Field(
        default=None, ge=0, le=1, description="calibrated probability at or above which the state is present"
    )
    absent_threshold: float | None = Field(
        default=None, ge=0, le=1, description="calibrated probability below which the state is absent"
    )
    claim_precision: float | None = Field(
        default=None, ge=0, le=1,
        description="Wilson 95 % lower bound of how often this state was right on the serving model's validation patients "
        "(precision of a stated or hedged finding, negative predictive value of an absent one); null without a claim policy",
    )
    claim_films: int | None = Field(default=None, ge=0, description="validation films that bound rests on")


class OutOfDistribution(BaseModel):
    """Why the model abstained on a whole image: every concept is then not assessed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Literal["lateral_only", "not_chest_radiograph", "far_from_training_data"]
    score: float | None = Field(default=None, description="the detector's score (higher: further from the training data)")
    threshold: float | None = Field(default=None, description="the score above which the image is out of distribution")


class ConceptsInferred(Contract):
    """Per-concept scores and the aligned image embedding; topic `radalign.study.concepts.v1`."""

    event_type: ClassVar[str] = "org.radalign.study.concepts.v1"
    schema_name: ClassVar[str] = "concepts_inferred"

    study: StudyRef
    view_position: str | None
    lateral_only: bool = False
    concepts: list[ConceptScore] = Field(
        max_length=14, description="assessed observations only; empty when the model abstained (`ood`)"
    )
    not_assessed: list[Observation] = Field(
        default_factory=list, description="observations the model is not validated for, or abstained on: no claim is made"
    )
    ood: OutOfDistribution | None = Field(default=None, description="set when the model abstained on the whole image")
    site_profile: str | None = Field(default=None, description="site audit profile applied (null: the shipped gate)")
    site: str | None = Field(default=None, pattern=SITE_PATTERN, description="the sending site (StudyPreprocessed.site)")
    site_head: str | None = Field(
        default=None, pattern=SITE_PATTERN, description="the site whose promoted site model scored the film (null: the generic model)"
    )
    site_head_version: str | None = Field(default=None, max_length=128, description="that site model's version (radalign sites list)")
    image_embedding: list[float] = Field(
        max_length=4096,
        description="L2-normalised, in the report encoder's text space (at least 8 values); empty only when the model was not run "
        "(`ood.reason` not_chest_radiograph)",
    )
    model_name: str
    model_version: str
    timings: list[StageTiming] = Field(default_factory=list)

    @model_validator(mode="after")
    def _embedding_unless_not_run(self) -> ConceptsInferred:
        if len(self.image_embedding) < 8 and not (not self.image_embedding and self.ood is not None and self.ood.reason == "not_chest_radiograph"):
            raise ValueError("image_embedding needs at least 8 values (empty only with ood reason not_chest_radiograph)")
        return self


class RetrievedCase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    case_key: str
    similarity: float = Field(description="cosine similarity of the aligned embeddings")
    label_agreement: float = Field(ge=0, le=1, description="share of observations where the case's labels agree with the predicted concepts")
    score: float = Field(description="re-ranking score; higher is better")
    findings: str
    impression: str


class CasesRetrieved(Contract):
    """Similar historical cases that ground the draft; topic `radalign.study.retrieved.v1`."""

    event_type: ClassVar[str] = "org.radalign.study.retrieved.v1"
    schema_name: ClassVar[str] = "cases_retrieved"

    study: StudyRef
    view_position: str | None
    lateral_only: bool = False
    concepts: list[ConceptScore] = Field(max_length=14)
    not_assessed: list[Observation] = Field(default_factory=list)
    ood: OutOfDistribution | None = None
    model_name: str
    model_version: str
    site: str | None = Field(default=None, pattern=SITE_PATTERN, description="the sending site (its normal report macro applies)")
    site_head: str | None = Field(default=None, pattern=SITE_PATTERN, description="ConceptsInferred.site_head")
    site_head_version: str | None = Field(default=None, max_length=128)
    cases: list[RetrievedCase] = Field(max_length=50)
    retrieval_version: str
    timings: list[StageTiming] = Field(default_factory=list)


class GuardVerdict(str, Enum):
    PASSED = "passed"
    REGENERATED = "regenerated"
    FELL_BACK = "fell_back"


#: Why the guard rejected a sentence of a draft (a bounded vocabulary: it is also a metric label).
GuardReason = Literal[
    "unsupported_finding",  # a positive finding the concepts do not support
    "omitted_finding",  # an assessed-present finding the draft does not state
    "not_assessed_claim",  # a positive or hedged statement about an observation the model did not assess (or any, when OOD)
    "laterality",  # right / left / bilateral ... that nothing in the study supports
    "location",  # lobe, base, apex, hilar ... that nothing in the study supports
    "measurement",  # sizes and measurements
    "comparison",  # compared with / prior / unchanged: there is no prior study
    "temporal",  # new / interval / improved / resolved ...
    "device_position",  # tip positions and courses of lines and tubes
    "history",  # clinical or surgical history
    "off_topic",  # other body parts, talk about the prompt
]


class GuardRejection(BaseModel):
    """One thing the guard found wrong in a draft it rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: GuardReason
    sentence: str = Field(default="", max_length=2000, description="the offending sentence of the draft (empty for an omission)")
    detail: str = Field(default="", max_length=500, description="the observation or words at fault")


class Guard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    verdict: GuardVerdict
    unsupported: list[Observation] = Field(default_factory=list, description="positive in the draft, not supported by the concepts")
    omitted: list[Observation] = Field(default_factory=list, description="confidently predicted, missing from the draft")
    changes: list[str] = Field(default_factory=list, description="what the guard did, in words")
    rejections: list[GuardRejection] = Field(
        default_factory=list, description="every problem found in the first rejected draft, with its reason (empty when it passed)"
    )


class ReportSection(BaseModel):
    """One part of the structured draft, in the order radiologists read a chest film."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["support_devices", "heart_mediastinum", "lungs", "pleura", "bones_soft_tissues"]
    sentences: list[str] = Field(default_factory=list)


class ReportDrafted(Contract):
    """The draft a radiologist edits; topic `radalign.report.drafted.v1` (and `radalign.report.review.v1`)."""

    event_type: ClassVar[str] = "org.radalign.report.drafted.v1"
    schema_name: ClassVar[str] = "report_drafted"

    study: StudyRef
    report_id: str = Field(
        description="the report (deterministic per study and pipeline version); every version of it, drafts and signed, shares it"
    )
    draft_id: str | None = Field(
        default=None, max_length=200,
        description="this draft version's own id, `{report_id}-d{draft_version}`: a redelivery carries the same, a re-opened study's "
        "new draft another; de-duplicate by it (null only from producers before it existed: use report_id)",
    )
    draft_version: int = Field(default=1, ge=1, description="1, 2, 3 ... per study: the study version the draft was written from")
    replaces_draft_id: str | None = Field(default=None, max_length=200, description="the draft this one replaces (null for the first)")
    findings: str = Field(min_length=1)
    impression: str = Field(min_length=1)
    concepts: list[ConceptScore]
    not_assessed: list[Observation] = Field(default_factory=list, description="listed in the report's footer")
    ood: OutOfDistribution | None = None
    sections: list[ReportSection] = Field(default_factory=list, description="the structured FINDINGS, section by section")
    footer: str | None = Field(default=None, description="the report's footer: what the model did not assess (no claim is made about it)")
    phrase_table_version: str | None = Field(default=None, description="version of the phrase table the structured draft was worded from")
    case_keys: list[str]
    view_position: str | None
    model_name: str
    model_version: str
    site: str | None = Field(default=None, pattern=SITE_PATTERN, description="the sending site (StudyPreprocessed.site)")
    site_head: str | None = Field(default=None, pattern=SITE_PATTERN, description="the site whose site model scored the film (null: generic)")
    site_head_version: str | None = Field(default=None, max_length=128, description="that site model's version")
    drafter: str = Field(description="backend that wrote the text: deterministic, openai:<model>, llama-cpp:<model>")
    prompt_version: str
    guard: Guard
    critical: list[Observation] = Field(default_factory=list, description="critical findings that route the report to review")
    needs_review: bool
    timings: list[StageTiming] = Field(default_factory=list)


class ReviewRole(str, Enum):
    """Who signed: a radiologist (attending) signs a final report; a resident's signature is
    preliminary until an attending co-signs it (radalign/review/lifecycle.py)."""

    RADIOLOGIST = "radiologist"
    RESIDENT = "resident"


class ReportFinal(Contract):
    """The report a radiologist signed; topic `radalign.report.final.v1`.

    Carries what a delivery stage needs to re-deliver it without reading the draft: the signed
    text, the draft it replaces (`report_id`), its version (1, 2, 3 ...; every signature is a new
    version, nothing is overwritten), its status (a resident's signature is preliminary, an
    attending's final, a change after final amended or corrected) and the version it replaces,
    who signed (a pseudonym and a role, never a name) and when. `ce_id` is deterministic per
    (study, pipeline version, version).
    """

    event_type: ClassVar[str] = "org.radalign.report.final.v1"
    schema_name: ClassVar[str] = "report_final"

    study: StudyRef
    report_id: str = Field(description="the drafted report this final version replaces (ReportDrafted.report_id)")
    final_id: str = Field(description="deterministic: report_id + version")
    version: int = Field(ge=1, description="1 for the first sign-off; a later amendment of the same study is 2, 3 ...")
    status: Literal["preliminary", "final", "amended", "corrected"] = Field(
        description="FHIR DiagnosticReport.status to deliver: preliminary (a resident signed; an attending's co-signature is due), "
        "final (an attending signed), amended / corrected (changed after a final version); HL7 OBR-25 P / F / C"
    )
    findings: str = Field(min_length=1, max_length=20000)
    impression: str = Field(min_length=1, max_length=20000)
    signer_key: str = Field(pattern=KEY_PATTERN, description="pseudonym of the signing user (HMAC of the login), never a name")
    signer_role: ReviewRole
    signed_at: datetime = Field(description="when the signer signed (UTC)")
    accepted_unchanged: bool = Field(description="the draft was signed as drafted")
    edit_distance: int = Field(ge=0, description="word-level Levenshtein distance, draft to final (findings + impression)")
    edit_ratio: float = Field(ge=0, description="edit_distance / number of words in the draft")
    labels: dict[Observation, Certainty] = Field(
        default_factory=dict, description="the signed text's CheXpert labels (the project's labeler); unmentioned observations omitted"
    )
    drafter: str = Field(description="backend that wrote the draft")
    model_version: str
    timings: list[StageTiming] = Field(default_factory=list)
    replaces_version: int | None = Field(
        default=None, ge=1, description="the signed version this one replaces (final_id `{report_id}-v{n}`); null for the first sign-off"
    )
    replaces_id: str | None = Field(
        default=None, max_length=200,
        description="the id of the version this one replaces: the signed version's final_id, or for the first sign-off the "
        "draft_id it was signed from",
    )

    @model_validator(mode="after")
    def _replaces_an_earlier_version(self) -> ReportFinal:
        if self.replaces_version is not None and self.replaces_version >= self.version:
            raise ValueError("replaces_version must be an earlier version")
        return self


class DeadLetter(Contract):
    """What a stage could not process, and why; topic `radalign.dlq.<stage>.v1`."""

    event_type: ClassVar[str] = "org.radalign.deadletter.v1"
    schema_name: ClassVar[str] = "dead_letter"

    stage: str
    destination: str | None = Field(
        default=None, max_length=40, description="delivery only: the destination that did not take the report (its configured name)"
    )
    reason: str = Field(min_length=1, max_length=4000, description="human-readable; never holds identifiers")
    error_type: Literal["validation", "decode", "dependency", "processing", "refused"]
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    key: str | None = Field(default=None, description="the record key (a pseudonym), if any")
    attempts: int = Field(ge=1)
    failed_at: datetime
    payload_b64: str = Field(description="the original record value, base64, for replay", max_length=1_500_000)


ALL_CONTRACTS: tuple[type[Contract], ...] = (
    StudyReceived,
    StudyPreprocessed,
    ConceptsInferred,
    CasesRetrieved,
    ReportDrafted,
    ReportFinal,
    DeadLetter,
)

#: Where the contracts' JSON Schema documents are published (`radalign schemas export` writes them).
JSON_DIR = Path(__file__).parent / "json"


#: The fields that say which model, and which site model, scored a study: concept inference sets
#: them, and every later event carries them on unchanged.
MODEL_PROVENANCE: tuple[str, ...] = ("model_name", "model_version", "site", "site_head", "site_head_version")


def model_provenance(event: ConceptsInferred | CasesRetrieved) -> dict[str, Any]:
    """The scoring model's provenance fields of `event`, to pass on to the next event."""
    return {name: getattr(event, name) for name in MODEL_PROVENANCE}


def schema_file(contract: type[Contract]) -> Path:
    """The JSON Schema file of a contract (its name is also the CloudEvents `dataschema`)."""
    return JSON_DIR / f"{contract.schema_name}.v{CONTRACT_VERSION}.json"
