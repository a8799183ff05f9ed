"""The per-destination delivery queue (PostgreSQL `delivery_queue`, migration 100).

The delivery stage enqueues one row per (report version, destination) and returns, so Kafka
commits the offset once every destination's work is durable; each destination's lane
(`radalign.delivery.lanes`) drains only its own rows, STAT first, so one slow destination never
holds another's deliveries or the partition. A row leaves the queue when it was delivered (or
skipped: a delivery record says it went out already) and turns `dead` when it was dead-lettered;
dead rows are requeued when their destination comes back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from radalign.framework import codec
from radalign.framework.producer import topic_for
from schemas.events import Priority, ReportDrafted, ReportFinal
from schemas.topics import REPORT_DRAFTED, REPORT_FINAL

QueueStatus = Literal["queued", "dead"]
#: Why a row was dead-lettered (a metric label: a class, never an identifier).
ReasonClass = Literal["timeout", "unavailable", "circuit_open", "refused", "invalid"]


def priority_of(priority: Priority) -> int:
    """Queue order: STAT (0) before routine (1)."""
    return 0 if priority == Priority.STAT else 1


def work_id(payload: bytes) -> str:
    """A redelivered record (same bytes) maps to the same row."""
    return hashlib.sha256(payload).hexdigest()[:40]


@dataclass(frozen=True)
class QueuedDelivery:
    destination: str
    work_id: str
    report_id: str
    study_key: str
    priority: int
    source_topic: str
    payload: bytes
    status: QueueStatus = "queued"
    reason_class: str = ""
    attempts: int = 0
    last_error: str = ""
    enqueued_at: datetime | None = None
    not_before: datetime | None = None


def queued_rows(event: ReportDrafted | ReportFinal, destinations: list[str]) -> list[QueuedDelivery]:
    """One row per destination; the payload is the contract as consumed, for the send and for a
    dead letter's replay to the topic it came from."""
    spec = REPORT_FINAL if isinstance(event, ReportFinal) else REPORT_DRAFTED
    payload = codec.encode(event)
    return [
        QueuedDelivery(
            destination=name, work_id=work_id(payload), report_id=event.report_id, study_key=event.study.study_key,
            priority=priority_of(event.study.priority), source_topic=topic_for(spec, event), payload=payload,
        )
        for name in destinations
    ]


class DeliveryQueue(Protocol):
    async def enqueue(self, rows: list[QueuedDelivery]) -> None:
        """Add rows; a row already queued is kept, a dead one is queued again (a replay)."""

    async def claim(self, destination: str, lease_s: float, *, dead_too: bool = False) -> QueuedDelivery | None:
        """The next due row (STAT first, then oldest), leased for `lease_s`; `dead_too`: a dead
        row (not refused) may be the probe of a half-open circuit."""

    async def done(self, row: QueuedDelivery) -> None: ...
    async def retry_later(self, row: QueuedDelivery, delay_s: float, error: str) -> None: ...
    async def dead(self, row: QueuedDelivery, reason_class: ReasonClass, error: str) -> None: ...

    async def expired(self, destination: str, older_than_s: float, limit: int = 100) -> list[QueuedDelivery]:
        """Queued rows enqueued longer ago than the destination's budget (not leased now)."""

    async def requeue_dead(self, destination: str) -> int:
        """The destination is back: queue its dead rows again (refused content excepted)."""


class MemoryDeliveryQueue:
    """In-process queue for unit tests of the lanes (production: PostgresDeliveryQueue)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], QueuedDelivery] = {}

    async def enqueue(self, rows: list[QueuedDelivery]) -> None:
        now = datetime.now(UTC)
        for row in rows:
            old = self.rows.get((row.destination, row.work_id))
            if old is None or old.status == "dead":
                self.rows[(row.destination, row.work_id)] = replace(row, status="queued", enqueued_at=now, not_before=now)

    async def claim(self, destination: str, lease_s: float, *, dead_too: bool = False) -> QueuedDelivery | None:
        now = datetime.now(UTC)
        due = [
            r for r in self.rows.values()
            if r.destination == destination and r.not_before is not None and r.not_before <= now
            and (r.status == "queued" or (dead_too and r.status == "dead" and r.reason_class not in ("refused", "invalid")))
        ]
        if not due:
            return None
        row = min(due, key=lambda r: (r.status != "queued", r.priority, r.enqueued_at))
        claimed = replace(row, attempts=row.attempts + 1, not_before=now + timedelta(seconds=lease_s))
        self.rows[(row.destination, row.work_id)] = claimed
        return claimed

    async def done(self, row: QueuedDelivery) -> None:
        self.rows.pop((row.destination, row.work_id), None)

    async def retry_later(self, row: QueuedDelivery, delay_s: float, error: str) -> None:
        self._update(row, not_before=datetime.now(UTC) + timedelta(seconds=delay_s), last_error=error)

    async def dead(self, row: QueuedDelivery, reason_class: ReasonClass, error: str) -> None:
        self._update(row, status="dead", reason_class=reason_class, last_error=error, not_before=datetime.now(UTC))

    def _update(self, row: QueuedDelivery, **changes: object) -> None:
        key = (row.destination, row.work_id)
        if key in self.rows:
            self.rows[key] = replace(self.rows[key], **changes)  # type: ignore[arg-type]  # dataclass fields by name

    async def expired(self, destination: str, older_than_s: float, limit: int = 100) -> list[QueuedDelivery]:
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=older_than_s)
        return [
            r for r in self.rows.values()
            if r.destination == destination and r.status == "queued" and r.enqueued_at is not None and r.enqueued_at < cutoff
            and r.not_before is not None and r.not_before <= now
        ][:limit]

    async def requeue_dead(self, destination: str) -> int:
        now = datetime.now(UTC)
        back = [r for r in self.rows.values() if r.destination == destination and r.status == "dead" and r.reason_class not in ("refused", "invalid")]
        for row in back:
            self.rows[(row.destination, row.work_id)] = replace(row, status="queued", reason_class="", enqueued_at=now, not_before=now)
        return len(back)


_COLUMNS = (
    "destination, work_id, report_id, study_key, priority, source_topic, payload, status, reason_class, attempts, last_error, "
    "enqueued_at, not_before"
)
_ENQUEUE = """
INSERT INTO delivery_queue (destination, work_id, report_id, study_key, priority, source_topic, payload)
VALUES (%(destination)s, %(work_id)s, %(report_id)s, %(study_key)s, %(priority)s, %(source_topic)s, %(payload)s)
ON CONFLICT (destination, work_id) DO UPDATE SET status = 'queued', reason_class = '', enqueued_at = now(), not_before = now()
    WHERE delivery_queue.status = 'dead'
"""
# SKIP LOCKED: replicas never wait on each other; the lease (not_before) keeps a claimed row from
# a second worker, and brings it back if the worker dies mid-send (at-least-once).
_CLAIM = f"""
UPDATE delivery_queue SET attempts = attempts + 1, not_before = now() + make_interval(secs => %(lease)s)
WHERE (destination, work_id) = (
    SELECT destination, work_id FROM delivery_queue
    WHERE destination = %(destination)s AND not_before <= now()
      AND (status = 'queued' OR (%(dead_too)s AND status = 'dead' AND reason_class NOT IN ('refused', 'invalid')))
    ORDER BY status <> 'queued', priority, enqueued_at LIMIT 1 FOR UPDATE SKIP LOCKED
) RETURNING {_COLUMNS}
"""
_EXPIRED = f"""
SELECT {_COLUMNS} FROM delivery_queue
WHERE destination = %s AND status = 'queued' AND enqueued_at < now() - make_interval(secs => %s) AND not_before <= now()
ORDER BY priority, enqueued_at LIMIT %s
"""


class PostgresDeliveryQueue:
    """Through a pool from `radalign.db.open_pool` (its connections carry the timeouts)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def enqueue(self, rows: list[QueuedDelivery]) -> None:
        values = [{k: getattr(r, k) for k in ("destination", "work_id", "report_id", "study_key", "priority", "source_topic", "payload")} for r in rows]
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(_ENQUEUE, values)

    async def claim(self, destination: str, lease_s: float, *, dead_too: bool = False) -> QueuedDelivery | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_CLAIM, {"destination": destination, "lease": lease_s, "dead_too": dead_too})
            row = await cur.fetchone()
        return QueuedDelivery(**row) if row else None

    async def done(self, row: QueuedDelivery) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM delivery_queue WHERE destination = %s AND work_id = %s", (row.destination, row.work_id))

    async def retry_later(self, row: QueuedDelivery, delay_s: float, error: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE delivery_queue SET not_before = now() + make_interval(secs => %s), last_error = %s WHERE destination = %s AND work_id = %s",
                (delay_s, error[:1000], row.destination, row.work_id),
            )

    async def dead(self, row: QueuedDelivery, reason_class: ReasonClass, error: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE delivery_queue SET status = 'dead', reason_class = %s, last_error = %s, not_before = now() "
                "WHERE destination = %s AND work_id = %s",
                (reason_class, error[:1000], row.destination, row.work_id),
            )

    async def expired(self, destination: str, older_than_s: float, limit: int = 100) -> list[QueuedDelivery]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_EXPIRED, (destination, older_than_s, limit))
            rows = await cur.fetchall()
        return [QueuedDelivery(**r) for r in rows]

    async def requeue_dead(self, destination: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE delivery_queue SET status = 'queued', reason_class = '', enqueued_at = now(), not_before = now() "
                "WHERE destination = %s AND status = 'dead' AND reason_class NOT IN ('refused', 'invalid')",
                (destination,),
            )
            return cur.rowcount
