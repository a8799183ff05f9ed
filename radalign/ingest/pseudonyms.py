"""Where the gateway keeps pseudonym -> original identifiers (PostgreSQL, migration 010).

The only place identifiers are stored. `save` is an idempotent upsert: the same instance sent
twice leaves one row; routing facts seen later are merged in (jsonb `||`), not lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from radalign.ingest.deid import OriginalIdentifiers


@dataclass(frozen=True)
class PseudonymRecord:
    study_key: str
    patient_key: str
    instance_key: str
    source: str
    original: OriginalIdentifiers


class PseudonymStore(Protocol):
    async def save(self, record: PseudonymRecord) -> None: ...

    async def mark_published(self, study_key: str, version: int) -> None: ...

    async def published_version(self, study_key: str) -> int: ...


class InMemoryPseudonymStore:
    """For unit tests and the dev loop without a database. Same merge semantics as PostgreSQL."""

    def __init__(self) -> None:
        self.studies: dict[str, dict] = {}
        self.instances: dict[str, dict] = {}

    async def save(self, record: PseudonymRecord) -> None:
        o = record.original
        study = self.studies.setdefault(
            record.study_key,
            {"patient_key": record.patient_key, "study_instance_uid": o.study_uid, "patient_id": o.patient_id,
             "patient_name": o.patient_name, "accession_number": o.accession_number, "routing": {},
             "source": record.source, "published_version": 0},
        )
        for name in ("patient_id", "patient_name", "accession_number"):
            study[name] = study[name] or getattr(o, name)
        study["routing"] = {**study["routing"], **o.routing}
        self.instances.setdefault(
            record.instance_key,
            {"study_key": record.study_key, "sop_instance_uid": o.sop_instance_uid or "",
             "series_instance_uid": o.series_uid or "", "sop_class_uid": o.sop_class_uid or ""},
        )

    async def mark_published(self, study_key: str, version: int) -> None:
        if study_key in self.studies:
            self.studies[study_key]["published_version"] = max(self.studies[study_key]["published_version"], version)

    async def published_version(self, study_key: str) -> int:
        return int(self.studies.get(study_key, {}).get("published_version", 0))


_UPSERT_STUDY = """
INSERT INTO study_pseudonyms
    (study_key, patient_key, study_instance_uid, patient_id, patient_name, accession_number, routing, source)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (study_key) DO UPDATE SET
    patient_id = CASE WHEN study_pseudonyms.patient_id = '' THEN EXCLUDED.patient_id ELSE study_pseudonyms.patient_id END,
    patient_name = CASE WHEN study_pseudonyms.patient_name = '' THEN EXCLUDED.patient_name ELSE study_pseudonyms.patient_name END,
    accession_number = CASE WHEN study_pseudonyms.accession_number = '' THEN EXCLUDED.accession_number
                            ELSE study_pseudonyms.accession_number END,
    routing = study_pseudonyms.routing || EXCLUDED.routing,
    updated_at = now()
"""

_UPSERT_INSTANCE = """
INSERT INTO instance_pseudonyms (instance_key, study_key, sop_instance_uid, series_instance_uid, sop_class_uid)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (instance_key) DO NOTHING
"""


class PostgresPseudonymStore:
    """Upserts through a pool from `radalign.db.open_pool` (its connections carry the timeouts)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def save(self, record: PseudonymRecord) -> None:
        o = record.original
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                _UPSERT_STUDY,
                (record.study_key, record.patient_key, o.study_uid, o.patient_id, o.patient_name,
                 o.accession_number, Jsonb(json.loads(json.dumps(o.routing))), record.source),
            )
            await conn.execute(
                _UPSERT_INSTANCE,
                (record.instance_key, record.study_key, o.sop_instance_uid or "", o.series_uid or "", o.sop_class_uid or ""),
            )

    async def mark_published(self, study_key: str, version: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE study_pseudonyms SET published_version = GREATEST(published_version, %s), updated_at = now() WHERE study_key = %s",
                (version, study_key),
            )

    async def published_version(self, study_key: str) -> int:
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT published_version FROM study_pseudonyms WHERE study_key = %s", (study_key,))).fetchone()
        return int(row[0]) if row else 0
