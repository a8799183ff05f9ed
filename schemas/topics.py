"""The topic catalogue: names, payload contract, key and partitioning, in one place.

Every record:
- key: the study pseudonym (`study.study_key`), so all events of a study stay in one partition
  and in order;
- value: UTF-8 JSON of the topic's contract (`schemas/json/<schema>.v1.json`);
- headers (CloudEvents binary mode over Kafka, plus W3C trace context):
  `ce_specversion`=1.0, `ce_id`, `ce_type`, `ce_source` (`/radalign/<stage>`, the same for every
  replica), `ce_time`, `content-type`=application/json, `traceparent`, and `ce_dataschema` (an
  absolute URI of the schema file). `ce_id` is deterministic per (stage, study_key,
  pipeline_version, study_version), so a redelivery carries the same source + id. RadAlign's own
  stages are idempotent by key (upserts per study and pipeline version); the delivery stage, whose
  effects leave the system, skips a report version it already delivered and counts it in
  `radalign_duplicates_skipped_total`.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import (
    CasesRetrieved,
    ConceptsInferred,
    Contract,
    DeadLetter,
    Priority,
    ReportDrafted,
    ReportFinal,
    StudyPreprocessed,
    StudyReceived,
)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    contract: type[Contract]
    partitions: int = 4
    #: True: a `<name>.stat` twin carries STAT studies so they never queue behind routine work.
    has_stat_lane: bool = True

    def lane(self, priority: Priority) -> str:
        """The topic name for a study of this priority."""
        if self.has_stat_lane and priority == Priority.STAT:
            return f"{self.name}.stat"
        return self.name

    @staticmethod
    def lane_of(topic: str) -> Priority:
        """The priority a concrete topic carries: its STAT twin, or the routine topic."""
        return Priority.STAT if topic.endswith(".stat") else Priority.ROUTINE

    @property
    def names(self) -> tuple[str, ...]:
        """Every concrete topic: the routine topic and, where there is one, its STAT twin."""
        return (self.name, f"{self.name}.stat") if self.has_stat_lane else (self.name,)


STUDY_RECEIVED = TopicSpec("radalign.study.received.v1", StudyReceived)
STUDY_PREPROCESSED = TopicSpec("radalign.study.preprocessed.v1", StudyPreprocessed)
CONCEPTS_INFERRED = TopicSpec("radalign.study.concepts.v1", ConceptsInferred)
CASES_RETRIEVED = TopicSpec("radalign.study.retrieved.v1", CasesRetrieved)
# Downstream systems subscribe to these. The drafted report has a STAT twin because the delivery
# stage consumes it and is the slowest stage on a loaded machine: on one topic a STAT draft waited
# behind the whole routine backlog before reaching the PACS (`radalign bench`, issue 27);
# subscribers read both (`REPORT_DRAFTED.names`). The review topic carries none: it is read
# continuously, and `needs_review` / `priority` in the payload tell its readers what is urgent.
REPORT_DRAFTED = TopicSpec("radalign.report.drafted.v1", ReportDrafted)
REPORT_REVIEW = TopicSpec("radalign.report.review.v1", ReportDrafted, has_stat_lane=False)
# Signed reports from the review stage (services/review: its web app publishes them when a
# radiologist signs); the delivery stage re-delivers them as FHIR `final` and SR `VERIFIED`.
REPORT_FINAL = TopicSpec("radalign.report.final.v1", ReportFinal, has_stat_lane=False)


def dead_letter_topic(stage: str) -> TopicSpec:
    """The dead-letter topic of a stage (the stages themselves are declared in `radalign.pipeline`)."""
    if not stage.isidentifier() or not stage.islower():
        raise ValueError(f"not a stage name: {stage!r}")
    return TopicSpec(f"radalign.dlq.{stage}.v1", DeadLetter, partitions=1, has_stat_lane=False)
