"""What the soak's accepted studies became at each sink, read at the sink itself.

The soak's verdict must not trust the pipeline's own bookkeeping (delivery records, the reports
table), so each sink is read the way its consumer reads it: the report topic from offset zero,
the PACS through Orthanc's REST API, the FHIR server through its store. Each read gives, per study,
one entry per document write: `(version, document id)`. `tally` turns that into the soak's columns:

- delivered: studies with at least one document; lost: accepted studies with none;
- duplicated: studies where one version exists as two different documents (a consumer would see
  two reports for one version: a real duplicate);
- redelivered: extra writes of the same document (same id; at-least-once, harmless to a consumer
  that keeps the latest per study). Orthanc overwrites an instance stored again with the same
  SOP Instance UID, so the PACS cannot show redeliveries, only duplicates.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from radalign.config import Settings
from radalign.reports.fhir import VERSION_EXTENSION

#: One write of a document at a sink: (report version, document id).
Write = tuple[str, str]


@dataclass(frozen=True)
class SinkTally:
    sink: str
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    redelivered: int = 0


def tally(sink: str, expected: Iterable[str], writes: Mapping[str, list[Write]]) -> SinkTally:
    """Count one sink's documents for the `expected` studies (pure: unit-tested)."""
    expected = set(expected)
    delivered = {k for k in expected if writes.get(k)}
    duplicated = redelivered = 0
    for key in delivered:
        per_version: dict[str, Counter[str]] = {}
        for version, doc in writes[key]:
            per_version.setdefault(version, Counter())[doc] += 1
        duplicated += any(len(docs) > 1 for docs in per_version.values())
        redelivered += sum(n - 1 for docs in per_version.values() for n in docs.values())
    return SinkTally(sink, len(delivered), len(expected - delivered), duplicated, redelivered)


def report_version(event: Any) -> str:
    """The version a report event stands for: its own version number where the contract has one,
    else the study version it was drafted from (1 for a first draft)."""
    for name in ("draft_version", "version", "report_version", "study_version"):
        value = getattr(event, name, None)
        if value is not None:
            return str(value)
    return "1"


async def topic_writes(settings: Settings, keys: set[str]) -> dict[str, list[Write]]:
    """Every ReportDrafted record for `keys` on the report topic (both lanes), from offset zero."""
    from aiokafka import AIOKafkaConsumer

    from radalign.framework import codec
    from schemas.events import ReportDrafted
    from schemas.topics import REPORT_DRAFTED

    consumer = AIOKafkaConsumer(*REPORT_DRAFTED.names, **settings.kafka_client_kwargs(), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: dict[str, list[Write]] = {}
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=700)
            idle = 0 if batch else idle + 1
            for record in (r for records in batch.values() for r in records):
                key = (record.key or b"").decode()
                if key in keys:
                    event = codec.decode(ReportDrafted, record.value)
                    found.setdefault(key, []).append((report_version(event), event.report_id))
    finally:
        await consumer.stop()
    return found


def read_topic(settings: Settings, keys: set[str]) -> dict[str, list[Write]]:
    return asyncio.run(topic_writes(settings, keys))


def _study_uids(sender_id: str) -> set[str]:
    """The UIDs a study's outputs may carry: the sender's id when it is a UID, else the one
    derived from it (`dicom_study_uid`)."""
    from radalign.reports.reidentification import dicom_study_uid

    return {sender_id, dicom_study_uid(sender_id)}


def pacs_studies(base_url: str, sender_ids: Mapping[str, str]) -> set[str]:
    """The studies Orthanc holds anything of (one query: cheap enough to poll)."""
    by_uid = {uid: key for key, sender_id in sender_ids.items() for uid in _study_uids(sender_id)}
    found = httpx.post(f"{base_url}/tools/find", json={"Level": "Study", "Query": {}, "Expand": True}, timeout=30).json()
    return {by_uid[uid] for s in found if (uid := s.get("MainDicomTags", {}).get("StudyInstanceUID")) in by_uid}


def pacs_writes(base_url: str, sender_ids: Mapping[str, str]) -> dict[str, list[Write]]:
    """SR instances Orthanc holds per study (`sender_ids`: study key -> the sender's study id);
    a document is one SOP Instance UID; its version the SOP class, the SR's completion and
    verification, and the document it replaces (Predecessor Documents Sequence), so that a new
    version is not mistaken for a duplicate of the one before."""
    found: dict[str, list[Write]] = {}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for key, sender_id in sender_ids.items():
            for uid in _study_uids(sender_id):
                hits = client.post("/tools/find", json={"Level": "Instance", "Query": {"StudyInstanceUID": uid, "Modality": "SR"}}).json()
                for instance in hits:
                    tags = client.get(f"/instances/{instance}/simplified-tags").json()
                    replaces = [p.get("ReferencedSOPSequence", [{}]) for p in _items(tags.get("PredecessorDocumentsSequence"))]
                    version = f"{tags.get('SOPClassUID')}|{tags.get('CompletionFlag')}|{tags.get('VerificationFlag')}|{replaces}"
                    found.setdefault(key, []).append((version, str(tags.get("SOPInstanceUID"))))
    return found


def _items(value: Any) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else []


def _fhir_study(report: dict[str, Any], by_uid: Mapping[str, str]) -> str | None:
    studies = report.get("imagingStudy") or report.get("study") or []
    return next((by_uid[s["identifier"]["value"]] for s in studies if s.get("identifier", {}).get("value") in by_uid), None)


def _by_uid(sender_ids: Mapping[str, str]) -> dict[str, str]:
    return {f"urn:oid:{uid}": key for key, sender_id in sender_ids.items() for uid in _study_uids(sender_id)}


def fhir_studies(reports: list[dict[str, Any]], sender_ids: Mapping[str, str]) -> set[str]:
    """The studies with a DiagnosticReport on the FHIR server (cheap: no history read)."""
    by_uid = _by_uid(sender_ids)
    return {key for report in reports if (key := _fhir_study(report, by_uid)) is not None}


def _fhir_version(resource: dict[str, Any]) -> str:
    """The report version a stored DiagnosticReport is: its version extension (the draft's or
    signed version's own id), else its status."""
    ids = [e.get("valueIdentifier", {}).get("value") for e in resource.get("extension", []) if e.get("url") == VERSION_EXTENSION]
    return str(ids[0]) if ids else str(resource.get("status"))


def fhir_writes(reports: list[dict[str, Any]], history: Callable[[str], list[dict[str, Any]]],
                sender_ids: Mapping[str, str]) -> dict[str, list[Write]]:
    """DiagnosticReports per study, matched on the imaging study's UID; every stored version of a
    resource is one write (`history(resource_id)` lists them), its version `_fhir_version`."""
    by_uid = _by_uid(sender_ids)
    found: dict[str, list[Write]] = {}
    for report in reports:
        key = _fhir_study(report, by_uid)
        if key is not None:
            found.setdefault(key, []).extend((_fhir_version(v), str(report["id"])) for v in history(report["id"]))
    return found
