"""PostgreSQL access of the review service: model inputs (070 `review_images`), drafted reports
(030 `reports`, read-only), signed versions (070/091 `report_finals`: one immutable row per version, with
its status and the version it replaces), case texts (020 `cases`, read-only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from schemas.events import BlobRef, ReportDrafted, ReportFinal, StudyPreprocessed

if TYPE_CHECKING:
    from radalign.config import Settings

_RECORD_IMAGE = """
INSERT INTO review_images (study_key, pipeline_version, model_input, instance_key, view_position, received_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (study_key, pipeline_version) DO UPDATE SET
    model_input = EXCLUDED.model_input, instance_key = EXCLUDED.instance_key,
    view_position = EXCLUDED.view_position, received_at = EXCLUDED.received_at, recorded_at = now()
WHERE review_images.model_input IS DISTINCT FROM EXCLUDED.model_input
"""
# The latest pipeline version's draft of each study not yet released (no final / amended /
# corrected version: unsigned, or signed preliminary by a resident and waiting for an attending).
_UNSIGNED = """
SELECT DISTINCT ON (r.study_key) r.payload
FROM reports r
WHERE NOT EXISTS (SELECT 1 FROM report_finals f WHERE f.study_key = r.study_key AND f.status <> 'preliminary')
ORDER BY r.study_key, r.updated_at DESC
LIMIT %s
"""
_LATEST_DRAFT = "SELECT payload, updated_at FROM reports WHERE study_key = %s ORDER BY updated_at DESC LIMIT 1"
_IMAGE = "SELECT model_input FROM review_images WHERE study_key = %s AND pipeline_version = %s"
_ANY_IMAGE = "SELECT model_input FROM review_images WHERE study_key = %s ORDER BY recorded_at DESC LIMIT 1"
_FINALS_OF = "SELECT payload, signer_name FROM report_finals WHERE study_key = %s ORDER BY version"
_NEXT_VERSION = "SELECT coalesce(max(version), 0) + 1 FROM report_finals WHERE study_key = %s"
_HISTORY = "SELECT version, status FROM report_finals WHERE study_key = %s ORDER BY version"
_LATEST_FINAL = "SELECT payload FROM report_finals WHERE study_key = %s ORDER BY version DESC LIMIT 1"
_INSERT_FINAL = """
INSERT INTO report_finals (study_key, version, pipeline_version, report_id, final_id, signer_name, signer_key,
    signer_role, signed_at, opened_at, edit_distance, edit_ratio, payload, draft_concepts, status, replaces_version)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
_MARK_PUBLISHED = "UPDATE report_finals SET published_at = now() WHERE final_id = %s AND published_at IS NULL"
_UNPUBLISHED = "SELECT payload FROM report_finals WHERE published_at IS NULL ORDER BY signed_at LIMIT %s"
_KB_PENDING = "SELECT payload FROM report_finals WHERE kb_ingested_at IS NULL ORDER BY signed_at LIMIT %s"
_MARK_INGESTED = "UPDATE report_finals SET kb_case_key = %s, kb_ingested_at = now() WHERE final_id = %s"
_FINAL_ROWS = """
SELECT f.payload, f.draft_concepts, f.signed_at, i.model_input
FROM report_finals f
LEFT JOIN review_images i ON i.study_key = f.study_key AND i.pipeline_version = f.pipeline_version
WHERE f.signed_at >= coalesce(%s, '-infinity'::timestamptz)
ORDER BY f.signed_at
"""
_CASES = "SELECT case_key, source, findings, impression FROM cases WHERE case_key = ANY(%s)"
_QUEUE = """
SELECT count(*), coalesce(extract(epoch FROM now() - min((r.payload->'study'->>'received_at')::timestamptz)), 0)
FROM (SELECT DISTINCT ON (study_key) study_key, payload FROM reports ORDER BY study_key, updated_at DESC) r
WHERE NOT EXISTS (SELECT 1 FROM report_finals f WHERE f.study_key = r.study_key AND f.status <> 'preliminary')
"""

_QUEUE_BY_PRIORITY = """
SELECT r.payload->'study'->>'priority', extract(epoch FROM now() - min((r.payload->'study'->>'received_at')::timestamptz))
FROM (SELECT DISTINCT ON (study_key) study_key, payload FROM reports ORDER BY study_key, updated_at DESC) r
WHERE NOT EXISTS (SELECT 1 FROM report_finals f WHERE f.study_key = r.study_key AND f.status <> 'preliminary')
GROUP BY 1
"""


_AUDIT = "INSERT INTO review_audit (action, study_key, reviewer_key, role, via, detail) VALUES (%s, %s, %s, %s, %s, %s)"
_AUDIT_OF = "SELECT at, action, reviewer_key, role, via, detail FROM review_audit WHERE study_key = %s ORDER BY at, id"


class VersionConflict(RuntimeError):
    """Another sign-off of the same study took this version number first."""


@dataclass(frozen=True)
class SignedRow:
    final: ReportFinal
    draft_concepts: dict[str, str]
    signed_at: datetime
    model_input: BlobRef | None


class ReviewStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def record_image(self, event: StudyPreprocessed) -> None:
        study = event.study
        async with self.pool.connection() as conn:
            await conn.execute(
                _RECORD_IMAGE,
                (study.study_key, study.pipeline_version, Jsonb(event.model_input.model_dump(mode="json")),
                 event.instance_key, event.view_position, study.received_at),
            )

    async def unsigned_drafts(self, limit: int = 500) -> list[ReportDrafted]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_UNSIGNED, (limit,))).fetchall()
        return [ReportDrafted.model_validate(r[0]) for r in rows]

    async def latest_draft(self, study_key: str) -> ReportDrafted | None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_LATEST_DRAFT, (study_key,))).fetchone()
        return ReportDrafted.model_validate(row[0]) if row else None

    async def model_input(self, study_key: str, pipeline_version: str) -> BlobRef | None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_IMAGE, (study_key, pipeline_version))).fetchone()
            if row is None:  # drafted by another pipeline version than the image was recorded for
                row = await (await conn.execute(_ANY_IMAGE, (study_key,))).fetchone()
        return BlobRef.model_validate(row[0]) if row else None

    async def finals(self, study_key: str) -> list[tuple[ReportFinal, str]]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_FINALS_OF, (study_key,))).fetchall()
        return [(ReportFinal.model_validate(r[0]), r[1]) for r in rows]

    async def history(self, study_key: str) -> list[tuple[int, str]]:
        """(version, status) of every signed version of the study, oldest first."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_HISTORY, (study_key,))).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    async def latest_final(self, study_key: str) -> ReportFinal | None:
        """The study's latest signed version (any status), or None."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_LATEST_FINAL, (study_key,))).fetchone()
        return ReportFinal.model_validate(row[0]) if row else None

    async def next_version(self, study_key: str) -> int:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_NEXT_VERSION, (study_key,))).fetchone()
        return int(row[0]) if row else 1

    async def insert_final(self, final: ReportFinal, *, signer_name: str, opened_at: datetime | None, draft_concepts: dict[str, str]) -> None:
        """Store a signed version; VersionConflict when that version exists (a concurrent sign-off)."""
        import psycopg

        study = final.study
        try:
            async with self.pool.connection() as conn:
                await conn.execute(
                    _INSERT_FINAL,
                    (study.study_key, final.version, study.pipeline_version, final.report_id, final.final_id, signer_name,
                     final.signer_key, final.signer_role.value, final.signed_at, opened_at, final.edit_distance,
                     final.edit_ratio, Jsonb(final.model_dump(mode="json")), Jsonb(draft_concepts), final.status,
                     final.replaces_version),
                )
        except psycopg.errors.UniqueViolation as exc:
            raise VersionConflict(f"version {final.version} of this study was signed meanwhile") from exc

    async def mark_published(self, final_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(_MARK_PUBLISHED, (final_id,))

    async def unpublished(self, limit: int = 100) -> list[ReportFinal]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_UNPUBLISHED, (limit,))).fetchall()
        return [ReportFinal.model_validate(r[0]) for r in rows]

    async def kb_pending(self, limit: int = 50) -> list[ReportFinal]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_KB_PENDING, (limit,))).fetchall()
        return [ReportFinal.model_validate(r[0]) for r in rows]

    async def mark_ingested(self, final_id: str, case_key: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(_MARK_INGESTED, (case_key, final_id))

    async def signed_rows(self, since: datetime | None = None) -> list[SignedRow]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_FINAL_ROWS, (since,))).fetchall()
        return [
            SignedRow(ReportFinal.model_validate(r[0]), dict(r[1]), r[2], BlobRef.model_validate(r[3]) if r[3] else None)
            for r in rows
        ]

    async def audit(self, action: str, study_key: str | None, reviewer_key: str | None, role: str | None, via: str,
                    detail: dict[str, Any] | None = None) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(_AUDIT, (action, study_key, reviewer_key, role, via, Jsonb(detail or {})))

    async def audit_trail(self, study_key: str) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_AUDIT_OF, (study_key,))).fetchall()
        return [{"at": r[0].isoformat(), "action": r[1], "reviewer_key": r[2], "role": r[3], "via": r[4], "detail": r[5]} for r in rows]

    async def cases(self, case_keys: list[str]) -> dict[str, dict[str, Any]]:
        """The retrieved cases' texts, by key (read-only use of the case store's table)."""
        if not case_keys:
            return {}
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_CASES, (case_keys,))).fetchall()
        return {r[0]: {"source": r[1], "findings": r[2], "impression": r[3]} for r in rows}

    async def queue(self) -> tuple[int, float]:
        """(unsigned drafted studies, seconds the oldest has waited since arrival)."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_QUEUE)).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    async def queue_age_by_priority(self) -> dict[str, float]:
        """Seconds the oldest unsigned drafted study of each priority has waited since arrival (absent: none waiting)."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_QUEUE_BY_PRIORITY)).fetchall()
        return {str(r[0]): float(r[1] or 0.0) for r in rows if r[0]}


async def read_signed_rows(settings: Settings, pool_name: str) -> list[SignedRow]:
    """Every signed report, through a pool opened for this one read (the manifest export, its test)."""
    from radalign.db import open_pool

    pool = await open_pool(settings, name=pool_name)
    try:
        return await ReviewStore(pool).signed_rows()
    finally:
        await pool.close()
