"""Reports store: drafted reports in PostgreSQL (`reports`, migration 030), idempotent upserts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from schemas.events import ReportDrafted

_UPSERT = """
INSERT INTO reports (study_key, pipeline_version, report_id, drafter, needs_review, payload, content_hash)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (study_key, pipeline_version) DO UPDATE SET
    report_id = EXCLUDED.report_id,
    drafter = EXCLUDED.drafter,
    needs_review = EXCLUDED.needs_review,
    payload = EXCLUDED.payload,
    content_hash = EXCLUDED.content_hash,
    updated_at = now()
WHERE reports.content_hash <> EXCLUDED.content_hash
RETURNING (xmax = 0) AS inserted
"""
_GET_LATEST = """
SELECT payload, created_at, updated_at FROM reports WHERE study_key = %s ORDER BY updated_at DESC LIMIT 1
"""
_GET_VERSION = """
SELECT payload, created_at, updated_at FROM reports WHERE study_key = %s AND pipeline_version = %s
"""


def content_hash(report: ReportDrafted) -> str:
    """Hash of what the report says (timings excluded: a replay takes other times)."""
    data = report.model_dump(mode="json", exclude={"timings"})
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class StoredReport:
    report: ReportDrafted
    created_at: datetime
    updated_at: datetime


class ReportStore:
    """Through a pool from `radalign.db.open_pool` (its connections carry the timeouts)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def upsert(self, report: ReportDrafted) -> bool:
        """Store `report`; True when it created the row. A replay with the same content changes
        nothing; a changed draft of the same (study, pipeline version) replaces the row."""
        study = report.study
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _UPSERT,
                (study.study_key, study.pipeline_version, report.report_id, report.drafter, report.needs_review,
                 Jsonb(report.model_dump(mode="json")), content_hash(report)),
            )
            row = await cur.fetchone()
        return bool(row and row[0])

    async def get_stored(self, study_key: str, pipeline_version: str | None = None) -> StoredReport | None:
        async with self.pool.connection() as conn:
            if pipeline_version is None:
                cur = await conn.execute(_GET_LATEST, (study_key,))
            else:
                cur = await conn.execute(_GET_VERSION, (study_key, pipeline_version))
            row = await cur.fetchone()
        if row is None:
            return None
        return StoredReport(ReportDrafted.model_validate(row[0]), row[1], row[2])

    async def get(self, study_key: str, pipeline_version: str | None = None) -> ReportDrafted | None:
        """The study's report (the most recently written pipeline version unless one is named)."""
        stored = await self.get_stored(study_key, pipeline_version)
        return stored.report if stored else None
