"""The gateway's outbox: where an accepted instance waits, durably, until its study is published.

`PostgresOutbox` (migration 050) is the production one: a sender is acknowledged only after
`add` committed, so a gateway killed at any moment (inside the quiet window included) loses
nothing; on start, or on another replica, the assembler finds every pending study and publishes
it. `InMemoryOutbox` has the same semantics for unit tests and benchmarks only (it is not durable).

Semantics shared by both:
- `add` is idempotent per (study, instance): an instance sent again is a duplicate (False); if it
  is still pending it restarts the study's quiet window (the sender is still sending).
- `due` returns the studies whose last new instance is older than the quiet window (all pending
  ones with `force`), each with every instance known for it (published ones included, so a
  re-opened study is published whole) and claims them for `claim_s` so that two assemblers do
  not publish the same study at once.
- `mark_published` records the version and clears `pending` unless instances arrived meanwhile.
- `release` gives a study back after a failed publish, to be retried after `retry_in_s`.
- `prune` (retention) deletes studies that are not pending and whose last instance arrived more
  than `older_than_s` ago, with their instances, in batches of `batch` studies. Pending studies
  are never pruned. A late instance for a pruned study re-opens it as a new outbox study: it is
  published as the next version (the version continues from study_pseudonyms.published_version,
  which pruning keeps) carrying only the instances still known, i.e. the late one(s); the
  instances published before the retention are no longer re-sent with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from radalign.ingest.refusal import Refusal, RefusalReason
from schemas.events import Instance

#: StudyReceived.instances max_length: a study holds at most this many instances.
MAX_INSTANCES = 64


@dataclass(frozen=True)
class OutboxItem:
    """One accepted instance and what its study event needs."""

    study_key: str
    patient_key: str
    instance: Instance
    modality: str
    source: str
    stat: bool = False
    #: The sending site (`IssuerPolicy.site`); a study keeps the site of its first instance.
    site: str | None = None


@dataclass(frozen=True)
class DueStudy:
    study_key: str
    patient_key: str
    source: str
    stat: bool
    published_version: int
    instances: list[Instance]  # arrival order, published ones included
    modalities: list[str]
    pending_keys: list[str]  # the instances this publish delivers for the first time
    site: str | None = None


class Outbox(Protocol):
    async def add(self, item: OutboxItem) -> bool: ...

    async def due(self, quiet_s: float, *, force: bool = False, claim_s: float = 30.0, limit: int = 100) -> list[DueStudy]: ...

    async def mark_published(self, study_key: str, version: int, instance_keys: list[str]) -> None: ...

    async def release(self, study_key: str, error: str, retry_in_s: float) -> None: ...

    async def pending_count(self) -> int: ...

    async def prune(self, older_than_s: float, *, batch: int = 1000, max_batches: int = 10) -> int: ...


def _too_many() -> Refusal:
    return Refusal(RefusalReason.TOO_LARGE, f"a study holds at most {MAX_INSTANCES} instances")


@dataclass
class _MemStudy:
    patient_key: str
    source: str
    stat: bool = False
    site: str | None = None
    published_version: int = 0
    last_received: float = 0.0
    claimed_until: float = 0.0
    # instance_key -> (instance, modality, published version or None), in arrival order
    instances: dict[str, tuple[Instance, str, int | None]] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        return any(v is None for _, _, v in self.instances.values())


class InMemoryOutbox:
    """Not durable: for unit tests and benchmarks. Same semantics as `PostgresOutbox`."""

    durable = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.studies: dict[str, _MemStudy] = {}
        # published_version of pruned studies: PostgresOutbox keeps it in study_pseudonyms, so a
        # late instance after the retention is published as the next version, never as v1 again.
        self.pruned_versions: dict[str, int] = {}

    async def add(self, item: OutboxItem) -> bool:
        study = self.studies.get(item.study_key)
        if study is None:
            study = self.studies[item.study_key] = _MemStudy(
                item.patient_key, item.source, site=item.site, published_version=self.pruned_versions.get(item.study_key, 0)
            )
        key = item.instance.instance_key
        if key in study.instances:
            if study.instances[key][2] is None:
                study.last_received = self._clock()
            return False
        if len(study.instances) >= MAX_INSTANCES:
            raise _too_many()
        study.instances[key] = (item.instance, item.modality, None)
        study.stat = study.stat or item.stat
        study.last_received = self._clock()
        return True

    async def due(self, quiet_s: float, *, force: bool = False, claim_s: float = 30.0, limit: int = 100) -> list[DueStudy]:
        now = self._clock()
        found: list[DueStudy] = []
        # STAT first, then the longest waiting (as PostgresOutbox's claim orders them)
        for key, s in sorted(self.studies.items(), key=lambda kv: (not kv[1].stat, kv[1].last_received)):
            if not s.pending or s.claimed_until > now or not (force or now - s.last_received >= quiet_s):
                continue
            s.claimed_until = now + claim_s
            found.append(DueStudy(
                key, s.patient_key, s.source, s.stat, s.published_version,
                [i for i, _, _ in s.instances.values()], [m for _, m, _ in s.instances.values()],
                [k for k, (_, _, v) in s.instances.items() if v is None], s.site,
            ))
            if len(found) >= limit:
                break
        return found

    async def mark_published(self, study_key: str, version: int, instance_keys: list[str]) -> None:
        s = self.studies[study_key]
        for k in instance_keys:
            instance, modality, published = s.instances[k]
            if published is None:
                s.instances[k] = (instance, modality, version)
        s.published_version = max(s.published_version, version)
        s.claimed_until = 0.0

    async def release(self, study_key: str, error: str, retry_in_s: float) -> None:
        self.studies[study_key].claimed_until = self._clock() + retry_in_s

    async def pending_count(self) -> int:
        return sum(1 for s in self.studies.values() if s.pending)

    async def prune(self, older_than_s: float, *, batch: int = 1000, max_batches: int = 10) -> int:
        if older_than_s <= 0:
            return 0  # retention off
        cutoff = self._clock() - older_than_s
        old = [k for k, s in self.studies.items() if not s.pending and s.last_received < cutoff][: batch * max_batches]
        for key in old:
            self.pruned_versions[key] = self.studies.pop(key).published_version
        return len(old)


_ADD_STUDY = """
INSERT INTO gateway_outbox_studies (study_key, patient_key, source, site)
VALUES (%s, %s, %s, %s) ON CONFLICT (study_key) DO NOTHING
"""
_LOCK_STUDY = "SELECT 1 FROM gateway_outbox_studies WHERE study_key = %s FOR UPDATE"
_ADD_INSTANCE = """
INSERT INTO gateway_outbox_instances (study_key, instance_key, modality, instance)
VALUES (%s, %s, %s, %s) ON CONFLICT (study_key, instance_key) DO NOTHING RETURNING seq
"""
_TOUCH_IF_PENDING = """
UPDATE gateway_outbox_studies s SET last_received_at = now()
WHERE s.study_key = %s AND EXISTS (
    SELECT 1 FROM gateway_outbox_instances i WHERE i.study_key = s.study_key AND i.instance_key = %s AND i.published_version IS NULL)
"""
_COUNT = "SELECT count(*) FROM gateway_outbox_instances WHERE study_key = %s"
_MARK_PENDING = """
UPDATE gateway_outbox_studies SET pending = true, stat = stat OR %s, last_received_at = now() WHERE study_key = %s
"""
# Claims due studies for this assembler (SKIP LOCKED: replicas never wait on each other). The
# version continues from study_pseudonyms.published_version too, which predates this table.
_CLAIM_DUE = """
WITH due AS (
    SELECT study_key FROM gateway_outbox_studies
    WHERE pending AND (claimed_until IS NULL OR claimed_until < now())
      AND (%(force)s OR last_received_at <= now() - make_interval(secs => %(quiet)s))
    -- STAT first: behind a routine backlog in the outbox, a STAT study is published next (issue 27)
    ORDER BY stat DESC, last_received_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
UPDATE gateway_outbox_studies s SET claimed_until = now() + make_interval(secs => %(claim)s)
FROM due WHERE s.study_key = due.study_key
RETURNING s.study_key, s.patient_key, s.source, s.stat,
    GREATEST(s.published_version, COALESCE(
        (SELECT p.published_version FROM study_pseudonyms p WHERE p.study_key = s.study_key), 0)), s.site
"""
_INSTANCES = """
SELECT study_key, instance_key, modality, instance, published_version FROM gateway_outbox_instances
WHERE study_key = ANY(%s) ORDER BY seq
"""
_MARK_INSTANCES = """
UPDATE gateway_outbox_instances SET published_version = %s
WHERE study_key = %s AND instance_key = ANY(%s) AND published_version IS NULL
"""
_MARK_STUDY = """
UPDATE gateway_outbox_studies s SET published_version = GREATEST(s.published_version, %s), claimed_until = NULL,
    attempts = 0, last_error = '',
    pending = EXISTS (SELECT 1 FROM gateway_outbox_instances i WHERE i.study_key = s.study_key AND i.published_version IS NULL)
WHERE s.study_key = %s
"""
_MARK_PSEUDONYM = """
UPDATE study_pseudonyms SET published_version = GREATEST(published_version, %s), updated_at = now() WHERE study_key = %s
"""
# Retention: one batch of old, fully published studies; their instances go with them (ON DELETE
# CASCADE). SKIP LOCKED: a study an `add` holds right now (a late instance) is left for next time.
_PRUNE_BATCH = """
DELETE FROM gateway_outbox_studies WHERE study_key IN (
    SELECT study_key FROM gateway_outbox_studies
    WHERE NOT pending AND last_received_at < now() - make_interval(secs => %s)
    ORDER BY last_received_at LIMIT %s FOR UPDATE SKIP LOCKED
)
"""
_RELEASE = """
UPDATE gateway_outbox_studies SET claimed_until = now() + make_interval(secs => %s), attempts = attempts + 1, last_error = %s
WHERE study_key = %s
"""


class PostgresOutbox:
    """The durable outbox (migration 050) through a pool from `radalign.db.open_pool`."""

    durable = True

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def add(self, item: OutboxItem) -> bool:
        key = item.instance.instance_key
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_ADD_STUDY, (item.study_key, item.patient_key, item.source, item.site))
            if await (await conn.execute(_LOCK_STUDY, (item.study_key,))).fetchone() is None:  # serialises adds to one study
                # `prune` deleted the (old, published) study between our insert and the lock: add it again.
                await conn.execute(_ADD_STUDY, (item.study_key, item.patient_key, item.source, item.site))
                await conn.execute(_LOCK_STUDY, (item.study_key,))
            inserted = await (await conn.execute(
                _ADD_INSTANCE, (item.study_key, key, item.modality, Jsonb(item.instance.model_dump(mode="json")))
            )).fetchone()
            if inserted is None:
                await conn.execute(_TOUCH_IF_PENDING, (item.study_key, key))
                return False
            (count,) = await (await conn.execute(_COUNT, (item.study_key,))).fetchone()  # type: ignore[misc]  # COUNT(*) always returns one row
            if count > MAX_INSTANCES:
                raise _too_many()  # rolls the transaction back
            await conn.execute(_MARK_PENDING, (item.stat, item.study_key))
        return True

    async def due(self, quiet_s: float, *, force: bool = False, claim_s: float = 30.0, limit: int = 100) -> list[DueStudy]:
        params = {"force": force, "quiet": float(quiet_s), "claim": float(claim_s), "limit": limit}
        async with self.pool.connection() as conn, conn.transaction():
            studies = await (await conn.execute(_CLAIM_DUE, params)).fetchall()
            if not studies:
                return []
            rows = await (await conn.execute(_INSTANCES, ([s[0] for s in studies],))).fetchall()
        by_study: dict[str, list[tuple]] = {}
        for row in rows:
            by_study.setdefault(row[0], []).append(row)
        found = []
        for study_key, patient_key, source, stat, version, site in studies:
            items = by_study.get(study_key, [])
            found.append(DueStudy(
                study_key, patient_key, source, bool(stat), int(version),
                [Instance.model_validate(r[3]) for r in items], [r[2] for r in items],
                [r[1] for r in items if r[4] is None], site,
            ))
        return found

    async def mark_published(self, study_key: str, version: int, instance_keys: list[str]) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_MARK_INSTANCES, (version, study_key, instance_keys))
            await conn.execute(_MARK_STUDY, (version, study_key))
            await conn.execute(_MARK_PSEUDONYM, (version, study_key))

    async def release(self, study_key: str, error: str, retry_in_s: float) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(_RELEASE, (float(retry_in_s), error[:300], study_key))

    async def pending_count(self) -> int:
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT count(*) FROM gateway_outbox_studies WHERE pending")).fetchone()
        return int(row[0]) if row else 0

    async def prune(self, older_than_s: float, *, batch: int = 1000, max_batches: int = 10) -> int:
        if older_than_s <= 0:
            return 0  # retention off
        pruned = 0
        # One transaction per batch, so a large backlog never holds its locks for long.
        for _ in range(max_batches):
            async with self.pool.connection() as conn, conn.transaction():
                deleted = (await conn.execute(_PRUNE_BATCH, (float(older_than_s), batch))).rowcount
            pruned += deleted
            if deleted < batch:
                break
        return pruned


# Recovery after a broker lost what it had acknowledged (the embedded broker's memory storage, or
# a Kafka cluster restored from an old state): every study published recently that has no report
# yet is made pending again, so the assembler publishes it once more (as the next version, with all
# its instances). Studies that were merely still in flight are processed twice; the stages are
# idempotent per study and pipeline version, so that yields the same report, not a second one.
_REQUEUE_UNREPORTED = """
UPDATE gateway_outbox_studies s SET pending = true, claimed_until = NULL
WHERE s.published_version > 0 AND NOT s.pending
  AND s.last_received_at > now() - make_interval(secs => %(window)s)
  AND (NOT EXISTS (SELECT 1 FROM reports r WHERE r.study_key = s.study_key)
       OR (%(delivering)s
           AND NOT EXISTS (SELECT 1 FROM delivery_queue q WHERE q.study_key = s.study_key)
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.study_key = s.study_key)))
"""


def requeue_unreported(conn, window_s: float = 24 * 3600, *, delivering: bool = False) -> int:  # a psycopg (sync) connection
    """Make the published studies of the last `window_s` that a broker loss may have swallowed
    pending again: those without a report and, where delivery is configured (`delivering`), those
    whose drafted report never reached the delivery stage. The assembler republishes each as the
    same version (nothing new arrived), so consumers see a redelivery, not a new version.
    Returns how many."""
    return conn.execute(_REQUEUE_UNREPORTED, {"window": float(window_s), "delivering": delivering}).rowcount
