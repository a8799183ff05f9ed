"""The case store: `cases` in PostgreSQL + pgvector (migration 020), behind an async pool.

- `upsert_many` is idempotent: rows go through a COPY into a transaction-local staging table,
  then one `INSERT ... ON CONFLICT DO UPDATE ... WHERE content_hash differs`; unchanged rows are
  not rewritten (no dead tuples, no HNSW churn) and are not counted.
- `search` runs in a short transaction that sets `hnsw.ef_search` and a statement timeout with
  `set_config(..., is_local => true)` (the SQL form of SET LOCAL, which takes parameters), so
  the settings never leak to other users of a pooled connection. The query is prepared
  server-side (`prepare=True`) and reused on that connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from psycopg.types.json import Jsonb

from radalign.kb.case import Candidate, CaseRecord, SearchBy
from radalign.kb.labels import OBSERVATIONS, labels_to_json

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from radalign.config import Settings

log = logging.getLogger(__name__)

EMBEDDING_DIM = 384
#: pgvector accepts hnsw.ef_search in [1, 1000].
MAX_EF_SEARCH = 1000

_COLUMNS = (
    "case_key",
    "patient_key",
    "study_key",
    "view",
    "source",
    "findings",
    "impression",
    "labels",
    "label_vector",
    "text_embedding",
    "image_embedding",
    "content_hash",
)
_COPY_TYPES = ["text", "text", "text", "text", "text", "text", "text", "jsonb", "int2[]", "vector", "vector", "text"]
_COLS = ", ".join(_COLUMNS)
_UPDATE_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS if c != "case_key")

_STAGING = f"CREATE TEMP TABLE cases_staging ON COMMIT DROP AS SELECT {_COLS} FROM cases WITH NO DATA"
_MERGE = f"""
INSERT INTO cases ({_COLS})
SELECT {_COLS} FROM cases_staging
ON CONFLICT (case_key) DO UPDATE SET {_UPDATE_SET}, updated_at = now()
WHERE cases.content_hash IS DISTINCT FROM EXCLUDED.content_hash
"""

# One statement per index; `patient_key IS DISTINCT FROM NULL` keeps every row when there is no
# patient to exclude, so one prepared statement serves both cases.
_SEARCH_SQL: dict[str, str] = {
    "text": """
SELECT case_key, findings, impression, label_vector, 1 - (text_embedding <=> %(q)s) AS similarity
FROM cases
WHERE patient_key IS DISTINCT FROM %(exclude)s
ORDER BY text_embedding <=> %(q)s
LIMIT %(k)s
""",
    "image": """
SELECT case_key, findings, impression, label_vector, 1 - (image_embedding <=> %(q)s) AS similarity
FROM cases
WHERE image_embedding IS NOT NULL AND patient_key IS DISTINCT FROM %(exclude)s
ORDER BY image_embedding <=> %(q)s
LIMIT %(k)s
""",
}
# Label-profile search: every case's expected agreement with the query's concept profile,
# sum_i w_i * credit_i / sum_i w_i, credit = p_i if the case says present, 1 - p_i if absent or
# unmentioned (CheXpert's convention), 0.5 if uncertain; observations with w_i = 0 (not assessed)
# drop out. The embedding enters the order only with a positive weight; ties fall back to a
# per-study hash, so one study always gets the same cases and different studies different ones.
_PROFILE_SQL = """
SELECT case_key, findings, impression, label_vector, similarity, agreement FROM (
    SELECT case_key, findings, impression, label_vector,
           CASE WHEN %(ew)s > 0 THEN 1 - (text_embedding <=> %(q)s) ELSE 0 END AS similarity,
           (SELECT sum(t.w * CASE t.lv WHEN 1 THEN t.p WHEN -1 THEN 0.5 ELSE 1 - t.p END)
              FROM unnest(label_vector, %(p)s::float8[], %(w)s::float8[]) AS t(lv, p, w)) / %(wsum)s AS agreement
    FROM cases
    WHERE patient_key IS DISTINCT FROM %(exclude)s AND NOT (case_key = ANY(%(exclude_cases)s))
) scored
ORDER BY (1 - %(ew)s) * agreement + %(ew)s * similarity DESC, md5(case_key || %(salt)s)
LIMIT %(k)s
"""

# strict_order: when the patient filter drops rows from the first ef_search candidates, pgvector
# (>= 0.8) keeps scanning the graph instead of returning fewer than k rows.
_SEARCH_SETTINGS = """
SELECT set_config('hnsw.ef_search', %s, true),
       set_config('hnsw.iterative_scan', 'strict_order', true),
       set_config('statement_timeout', %s, true)
"""


@dataclass(frozen=True)
class CaseStoreStats:
    total: int
    by_source: dict[str, int]
    with_image_embedding: int
    patients: int
    present_counts: dict[str, int] = field(default_factory=dict)  # observation -> cases labelled present


def _as_vector(embedding: Sequence[float] | np.ndarray) -> np.ndarray:
    if hasattr(embedding, "to_numpy"):  # pgvector.Vector, as read back by the binary loader
        embedding = embedding.to_numpy()
    vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if vector.shape[0] != EMBEDDING_DIM:
        raise ValueError(f"the case store holds {EMBEDDING_DIM}-d embeddings, got {vector.shape[0]}")
    if not np.all(np.isfinite(vector)):
        raise ValueError("embedding holds NaN or infinity")
    return vector


class CaseStore:
    """Async access to `cases`. The pool must register pgvector's types (`radalign.db.open_pool`)."""

    def __init__(self, pool: AsyncConnectionPool, *, search_timeout_ms: int = 2000, owns_pool: bool = False) -> None:
        self._pool = pool
        self._search_timeout_ms = int(search_timeout_ms)
        self._owns_pool = owns_pool

    @classmethod
    async def open(cls, settings: Settings, *, max_size: int = 4, dsn: str | None = None) -> CaseStore:
        """A store on its own pool (closed by `close()`)."""
        from radalign.db import open_pool

        pool = await open_pool(settings, max_size=max_size, dsn=dsn, name="radalign-kb")
        return cls(pool, search_timeout_ms=settings.db_statement_timeout_ms, owns_pool=True)

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()

    async def __aenter__(self) -> CaseStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writing ------------------------------------------------------------------------------

    async def upsert_many(self, cases: Iterable[CaseRecord], *, batch_size: int = 1000) -> int:
        """Insert new cases and rewrite those whose content hash changed; returns how many rows
        changed (0 when everything was already stored as given). Each batch is one transaction."""
        changed = 0
        batch: dict[str, CaseRecord] = {}
        for case in cases:
            # One key twice in a batch would make ON CONFLICT touch a row twice (an error): the
            # last version wins, as it would across batches.
            batch[case.case_key] = case
            if len(batch) >= batch_size:
                changed += await self._upsert_batch(list(batch.values()))
                batch = {}
        if batch:
            changed += await self._upsert_batch(list(batch.values()))
        return changed

    async def _upsert_batch(self, cases: list[CaseRecord]) -> int:
        async with self._pool.connection() as conn:
            async with conn.transaction():
                async with conn.cursor() as cur:
                    # Bulk loads may take longer than a search; give the batch the connection's
                    # own statement timeout rather than the search one.
                    await cur.execute(_STAGING)
                    async with cur.copy(f"COPY cases_staging ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(_COPY_TYPES)
                        for case in cases:
                            await copy.write_row(_copy_row(case))
                    await cur.execute(_MERGE)
                    return max(cur.rowcount, 0)

    async def existing_hashes(self, case_keys: Sequence[str]) -> dict[str, str]:
        """case_key -> content_hash for the keys already stored (lets ingest skip re-embedding)."""
        if not case_keys:
            return {}
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT case_key, content_hash FROM cases WHERE case_key = ANY(%s)", (list(case_keys),)
            )
            return dict(await cur.fetchall())

    # -- reading ------------------------------------------------------------------------------

    async def search(
        self,
        embedding: Sequence[float] | np.ndarray,
        k_candidates: int = 40,
        exclude_patient_key: str | None = None,
        ef_search: int = 100,
        by: SearchBy = "text",
    ) -> list[Candidate]:
        """The `k_candidates` nearest cases by cosine similarity of `embedding` to the cases' text
        (`by="text"`) or image (`by="image"`) embeddings, leaving out `exclude_patient_key`'s
        cases. `ef_search` is raised to `k_candidates` when lower (HNSW returns at most
        ef_search rows per scan) and capped at pgvector's 1000."""
        if by not in _SEARCH_SQL:
            raise ValueError(f"search by 'text' or 'image', not {by!r}")
        if k_candidates < 1:
            raise ValueError("k_candidates must be at least 1")
        query = _as_vector(embedding)
        ef = min(max(int(ef_search), k_candidates), MAX_EF_SEARCH)
        async with self._pool.connection() as conn:
            async with conn.transaction():
                await conn.execute(_SEARCH_SETTINGS, (str(ef), str(self._search_timeout_ms)))
                cur = await conn.execute(
                    _SEARCH_SQL[by], {"q": query, "exclude": exclude_patient_key, "k": k_candidates}, prepare=True
                )
                rows = await cur.fetchall()
        return [
            Candidate(
                case_key=key,
                findings=findings,
                impression=impression,
                label_vector=tuple(label_vector),
                similarity=float(similarity),
                by=by,
            )
            for key, findings, impression, label_vector, similarity in rows
        ]

    async def search_by_profile(
        self,
        probabilities: Sequence[float],
        weights: Sequence[float],
        k_candidates: int = 40,
        *,
        embedding: Sequence[float] | np.ndarray | None = None,
        embedding_weight: float = 0.0,
        exclude_patient_key: str | None = None,
        exclude_case_keys: Sequence[str] = (),
        tie_salt: str = "",
    ) -> list[tuple[Candidate, float]]:
        """The `k_candidates` cases whose labels best agree with a concept profile (per observation,
        in CheXpert order: a calibrated probability and a weight, 0 for not assessed), optionally
        fused with the cosine of `embedding` to the cases' text embeddings:
        `(1 - embedding_weight) * agreement + embedding_weight * cosine`. Returns (candidate,
        agreement) pairs, best first; the candidate's similarity is the cosine (0 when unused)."""
        if len(probabilities) != len(OBSERVATIONS) or len(weights) != len(OBSERVATIONS):
            raise ValueError(f"a concept profile has {len(OBSERVATIONS)} probabilities and weights")
        if not 0.0 <= embedding_weight <= 1.0:
            raise ValueError("embedding_weight must lie in [0, 1]")
        wsum = float(sum(weights))
        if wsum <= 0:
            raise ValueError("the profile has no assessed observation (all weights 0)")
        if embedding_weight > 0 and embedding is None:
            raise ValueError("an embedding weight needs an embedding")
        query = _as_vector(embedding) if embedding is not None else np.zeros(EMBEDDING_DIM, dtype=np.float32)
        params = {
            "p": [float(x) for x in probabilities], "w": [float(x) for x in weights], "wsum": wsum,
            "ew": float(embedding_weight), "q": query, "exclude": exclude_patient_key,
            "exclude_cases": list(exclude_case_keys), "salt": tie_salt, "k": int(k_candidates),
        }
        async with self._pool.connection() as conn:
            async with conn.transaction():
                await conn.execute(_SEARCH_SETTINGS, ("100", str(self._search_timeout_ms)))
                rows = await (await conn.execute(_PROFILE_SQL, params, prepare=True)).fetchall()
        return [
            (
                Candidate(case_key=key, findings=findings, impression=impression, label_vector=tuple(label_vector),
                          similarity=float(similarity), by="text"),
                float(agreement),
            )
            for key, findings, impression, label_vector, similarity, agreement in rows
        ]

    async def stats(self) -> CaseStoreStats:
        async with self._pool.connection() as conn:
            counts = await (
                await conn.execute(
                    "SELECT count(*), count(image_embedding), count(DISTINCT patient_key) FROM cases"
                )
            ).fetchone()
            assert counts is not None  # an aggregate without GROUP BY returns exactly one row
            total, images, patients = counts
            by_source: dict[str, int] = dict(await (await conn.execute("SELECT source, count(*) FROM cases GROUP BY source ORDER BY source")).fetchall())
            present = await (
                await conn.execute(
                    "SELECT " + ", ".join(f"count(*) FILTER (WHERE label_vector[{i + 1}] = 1)" for i in range(len(OBSERVATIONS)))
                    + " FROM cases"
                )
            ).fetchone()
            assert present is not None  # an aggregate without GROUP BY returns exactly one row
        return CaseStoreStats(
            total=total,
            by_source=by_source,
            with_image_embedding=images,
            patients=patients,
            present_counts={o.value: int(n) for o, n in zip(OBSERVATIONS, present, strict=True)},
        )


def _copy_row(case: CaseRecord) -> tuple:
    return (
        case.case_key,
        case.patient_key,
        case.study_key,
        case.view,
        case.source,
        case.findings,
        case.impression,
        Jsonb(labels_to_json(case.labels)),
        list(case.label_vector),
        _as_vector(case.text_embedding),
        None if case.image_embedding is None else _as_vector(case.image_embedding),
        case.content_hash,
    )
