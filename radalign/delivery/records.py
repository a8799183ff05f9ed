"""Delivery records, one per (report, destination): PostgreSQL table `deliveries` (060)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True)
class DeliveryRecord:
    report_id: str
    destination: str
    study_key: str
    kind: str
    report_version: str
    report_status: str
    status: DeliveryStatus
    attempts: int = 0
    remote_ref: str = ""
    last_error: str = ""
    first_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    updated_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


class DeliveryRecords(Protocol):
    async def get(self, report_id: str, destination: str) -> DeliveryRecord | None: ...
    async def save(self, record: DeliveryRecord) -> None: ...
    async def for_study(self, study_key: str) -> list[DeliveryRecord]: ...


class MemoryDeliveryRecords:
    """In-process records for unit tests of the pure core (production: PostgresDeliveryRecords)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], DeliveryRecord] = {}

    async def get(self, report_id: str, destination: str) -> DeliveryRecord | None:
        return self.rows.get((report_id, destination))

    async def save(self, record: DeliveryRecord) -> None:
        now = datetime.now(UTC)
        old = self.rows.get((record.report_id, record.destination))
        self.rows[(record.report_id, record.destination)] = replace(
            record, first_attempt_at=old.first_attempt_at if old else now, updated_at=now
        )

    async def for_study(self, study_key: str) -> list[DeliveryRecord]:
        return sorted((r for r in self.rows.values() if r.study_key == study_key), key=lambda r: r.destination)


_UPSERT = """
INSERT INTO deliveries (report_id, destination, study_key, kind, report_version, report_status, status, attempts,
                        remote_ref, last_error, delivered_at)
VALUES (%(report_id)s, %(destination)s, %(study_key)s, %(kind)s, %(report_version)s, %(report_status)s, %(status)s,
        %(attempts)s, %(remote_ref)s, %(last_error)s, %(delivered_at)s)
ON CONFLICT (report_id, destination) DO UPDATE SET
    report_version = EXCLUDED.report_version, report_status = EXCLUDED.report_status, status = EXCLUDED.status,
    attempts = EXCLUDED.attempts, remote_ref = EXCLUDED.remote_ref, last_error = EXCLUDED.last_error,
    delivered_at = EXCLUDED.delivered_at, updated_at = now()
"""
_COLUMNS = (
    "report_id, destination, study_key, kind, report_version, report_status, status, attempts, remote_ref, last_error, "
    "first_attempt_at, delivered_at, updated_at"
)


class PostgresDeliveryRecords:
    """Through a pool from `radalign.db.open_pool` (its connections carry the timeouts)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def get(self, report_id: str, destination: str) -> DeliveryRecord | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE report_id = %s AND destination = %s", (report_id, destination))
            row = await cur.fetchone()
        return DeliveryRecord(**row) if row else None

    async def save(self, record: DeliveryRecord) -> None:
        values = {k: v for k, v in record.__dict__.items() if k not in ("first_attempt_at", "updated_at")}
        async with self.pool.connection() as conn:
            await conn.execute(_UPSERT, values)

    async def for_study(self, study_key: str) -> list[DeliveryRecord]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE study_key = %s ORDER BY report_id, destination", (study_key,))
            rows = await cur.fetchall()
        return [DeliveryRecord(**r) for r in rows]
