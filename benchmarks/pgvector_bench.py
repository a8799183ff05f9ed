"""pgvector HNSW on case-store-shaped data: query latency and recall@5 against exact search.

Synthetic 384-d embeddings with the structure of report embeddings (not uniform noise, which
would be much harder than real data and mislead): an anisotropic space (a random mixing matrix
with a decaying spectrum, as sentence-encoder outputs have a few dominant directions) holding a
few hundred clusters (report "templates"), points L2-normalised; queries are fresh points from
the same distribution. Each size gets its own table with the production index
(`vector_cosine_ops`, m=16, ef_construction=64) and the production query shape (patient
exclusion filter, LIMIT 5), issued the way `CaseStore.search` issues it: a transaction that sets
hnsw.ef_search with set_config, then the prepared SELECT.

Ground truth is exact cosine top-5 computed in numpy on the same float32 vectors.

    .venv/bin/python benchmarks/pgvector_bench.py --dsn 'postgresql://postgres:@/postgres?host=...'
    .venv/bin/python benchmarks/pgvector_bench.py --sizes 10000,100000,1000000   # 1M: ~25+ min build

Runs in its own database (`radalign_bench`, dropped at the end unless --keep).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

DIM = 384
K = 5
BENCH_DB = "radalign_bench"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_space(rng: np.random.Generator, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    spectrum = 1.0 / np.sqrt(np.arange(1, DIM + 1))  # a few strong directions, a long tail
    mixing = rng.normal(size=(DIM, DIM)) * spectrum[None, :]
    centers = rng.normal(size=(n_clusters, DIM)) @ mixing.T
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    return centers.astype(np.float32), mixing.astype(np.float32)


def sample(rng: np.random.Generator, centers: np.ndarray, mixing: np.ndarray, n: int, spread: float) -> np.ndarray:
    # Zipf-like cluster sizes: a few common report patterns, many rare ones.
    weights = 1.0 / np.arange(1, len(centers) + 1) ** 0.8
    labels = rng.choice(len(centers), size=n, p=weights / weights.sum())
    noise = rng.normal(size=(n, DIM)).astype(np.float32) @ mixing.T
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    points = centers[labels] + spread * noise
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def exact_topk(data: np.ndarray, queries: np.ndarray, excluded: np.ndarray, patient_of: np.ndarray) -> np.ndarray:
    out = np.empty((len(queries), K), dtype=np.int64)
    for start in range(0, len(queries), 64):
        sims = queries[start : start + 64] @ data.T
        sims[patient_of[None, :] == excluded[start : start + 64, None]] = -np.inf
        top = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[start : start + 64] = np.take_along_axis(top, order, axis=1)
    return out


def admin_dsn_for(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


def load_table(conn: psycopg.Connection, table: str, data: np.ndarray, patient_of: np.ndarray) -> float:
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, patient_key text NOT NULL, embedding vector({DIM}) NOT NULL)")
    t0 = time.perf_counter()
    with conn.cursor() as cur, cur.copy(f"COPY {table} (id, patient_key, embedding) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "text", "vector"])
        for i in range(len(data)):
            copy.write_row((i, f"pt-{patient_of[i]:016x}", data[i]))
    conn.commit()
    return time.perf_counter() - t0


def build_index(conn: psycopg.Connection, table: str, workers: int) -> float:
    conn.execute("SET maintenance_work_mem = '2GB'")  # the graph must fit, or the build crawls
    conn.execute(f"SET max_parallel_maintenance_workers = {workers}")
    t0 = time.perf_counter()
    conn.execute(
        f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
    )
    conn.commit()
    return time.perf_counter() - t0


def run_queries(
    conn: psycopg.Connection, table: str, queries: np.ndarray, excluded: np.ndarray, ef: int, warmup: int = 20
) -> tuple[np.ndarray, list[list[int]]]:
    sql = (
        f"SELECT id FROM {table} WHERE patient_key IS DISTINCT FROM %(exclude)s "
        f"ORDER BY embedding <=> %(q)s LIMIT {K}"
    )
    latencies, results = [], []
    for i in range(-warmup, len(queries)):
        j = i % len(queries)
        t0 = time.perf_counter()
        with conn.transaction():
            conn.execute(
                "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', 'strict_order', true)",
                (str(ef),),
            )
            rows = conn.execute(sql, {"q": queries[j], "exclude": f"pt-{excluded[j]:016x}"}, prepare=True).fetchall()
        elapsed = time.perf_counter() - t0
        if i >= 0:
            latencies.append(elapsed * 1000.0)
            results.append([r[0] for r in rows])
    return np.asarray(latencies), results


def plan_uses_index(conn: psycopg.Connection, table: str, query: np.ndarray) -> bool:
    sql = (
        f"EXPLAIN (FORMAT JSON) SELECT id FROM {table} WHERE patient_key IS DISTINCT FROM %(exclude)s "
        f"ORDER BY embedding <=> %(q)s LIMIT {K}"
    )
    plan = conn.execute(sql, {"q": query, "exclude": "pt-x"}).fetchone()[0]
    return f"{table}_hnsw" in str(plan)


def exact_sql_latency(conn: psycopg.Connection, table: str, queries: np.ndarray, n: int = 5) -> float:
    """Sequential-scan top-5 as PostgreSQL runs it (what the index saves). prepare=False: a reused
    prepared statement would keep its index plan."""
    times = []
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        for q in queries[:n]:
            t0 = time.perf_counter()
            conn.execute(f"SELECT id FROM {table} ORDER BY embedding <=> %s LIMIT {K}", (q,), prepare=False).fetchall()
            times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def recall(approx: list[list[int]], exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e.tolist())) / K for a, e in zip(approx, exact, strict=True)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=None, help="server DSN (default: the settings' dsn)")
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated row counts")
    parser.add_argument("--ef", default="40,100,200", help="comma-separated hnsw.ef_search values")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--clusters", type=int, default=400)
    parser.add_argument("--spread", type=float, default=0.9, help="within-cluster noise (0.9 gives cosine ~0.75 to the center)")
    parser.add_argument(
        "--query-spread", type=float, default=1.2,
        help="queries are noisier than stored cases (an image embedding sits farther from report text than reports from each other)",
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel maintenance workers for the index build")
    parser.add_argument("--prewarm", action=argparse.BooleanOptionalAction, default=True,
                        help="load index and table into shared_buffers with pg_prewarm before querying")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    if args.dsn is None:
        from radalign.config import get_settings

        args.dsn = get_settings().dsn
    sizes = [int(s) for s in args.sizes.split(",")]
    efs = [int(e) for e in args.ef.split(",")]

    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        admin.execute(f"CREATE DATABASE {BENCH_DB}")
    # autocommit: each `conn.transaction()` below is a real transaction (as on a pooled
    # connection), so SET LOCAL / set_config(..., true) end with it instead of leaking.
    conn = psycopg.connect(admin_dsn_for(args.dsn, BENCH_DB), options="-c statement_timeout=0", autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.commit()
    register_vector(conn)
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    server = conn.execute("SHOW server_version").fetchone()[0]
    shared_buffers = conn.execute("SHOW shared_buffers").fetchone()[0]
    log(f"PostgreSQL {server} (shared_buffers {shared_buffers}), pgvector {version}; sizes {sizes}; ef_search {efs}; {args.queries} queries each")

    rng = np.random.default_rng(args.seed)
    centers, mixing = make_space(rng, args.clusters)
    biggest = max(sizes)
    data_all = sample(rng, centers, mixing, biggest, args.spread)
    # ~3 cases per patient, so the exclusion filter removes a few rows near each query.
    patient_all = rng.integers(0, max(biggest // 3, 1), size=biggest)
    queries = sample(rng, centers, mixing, args.queries, args.query_spread)
    excluded = rng.integers(0, max(biggest // 3, 1), size=args.queries)
    to_center = float(np.mean(np.max(data_all[:2000] @ centers.T, axis=1)))
    log(f"data: {args.clusters} clusters, mean cosine to nearest center {to_center:.2f}")

    rows_out = []
    try:
        for n in sizes:
            table = f"bench_{n}"
            data, patient_of = data_all[:n], patient_all[:n]
            log(f"n={n}: COPY ...")
            copy_s = load_table(conn, table, data, patient_of)
            log(f"n={n}: COPY {copy_s:.1f} s; building HNSW (m=16, ef_construction=64) ...")
            build_s = build_index(conn, table, args.workers)
            table_mb, index_mb = conn.execute(
                "SELECT pg_table_size(%s) / 1048576.0, pg_relation_size(%s) / 1048576.0", (table, f"{table}_hnsw")
            ).fetchone()
            log(f"n={n}: index built in {build_s:.1f} s (table {table_mb:.0f} MB, index {index_mb:.0f} MB); exact top-5 in numpy ...")
            # pgvector's patient_key filter compares pseudonym strings; map back to ints for numpy.
            exact = exact_topk(data, queries, excluded, patient_of)
            if args.prewarm:
                # Steady state of a serving database: graph and heap in shared_buffers (size
                # shared_buffers to hold them; the default 128 MB does not at 100k rows).
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
                conn.execute("SELECT pg_prewarm(%s), pg_prewarm(%s)", (f"{table}_hnsw", table))
            exact_ms = exact_sql_latency(conn, table, queries)
            uses_index = plan_uses_index(conn, table, queries[0])
            log(f"n={n}: exact SQL scan p50 {exact_ms:.1f} ms; query plan uses the HNSW index: {uses_index}")
            for ef in efs:
                lat, approx = run_queries(conn, table, queries, excluded, ef)
                r = recall(approx, exact)
                p50, p99 = np.percentile(lat, [50, 99])
                rows_out.append((n, ef, p50, p99, r, build_s, exact_ms, index_mb))
                log(f"n={n} ef_search={ef}: p50 {p50:.2f} ms  p99 {p99:.2f} ms  recall@5 {r:.3f}")
            if not args.keep:
                conn.execute(f"DROP TABLE {table}")
                conn.commit()
    finally:
        conn.close()
        if not args.keep:
            with psycopg.connect(args.dsn, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")

    print()
    print(f"{'rows':>8} {'ef_search':>9} {'p50 ms':>8} {'p99 ms':>8} {'recall@5':>9} {'build s':>8} {'exact ms':>9} {'index MB':>9}")
    for n, ef, p50, p99, r, build_s, exact_ms, index_mb in rows_out:
        print(f"{n:>8} {ef:>9} {p50:>8.2f} {p99:>8.2f} {r:>9.3f} {build_s:>8.1f} {exact_ms:>9.1f} {index_mb:>9.0f}")
    if len(sizes) > 1:
        small, large = min(sizes), max(sizes)
        print(f"\ngrowth {small} -> {large} rows (x{large / small:.0f}):")
        for ef in efs:
            a = next(r for r in rows_out if r[0] == small and r[1] == ef)
            b = next(r for r in rows_out if r[0] == large and r[1] == ef)
            print(f"  ef_search={ef}: p50 x{b[2] / a[2]:.2f}, p99 x{b[3] / a[3]:.2f}, recall {a[4]:.3f} -> {b[4]:.3f}")
        a, b = rows_out[0], rows_out[-1]
        print(f"  build x{b[5] / a[5]:.1f}, exact scan x{b[6] / a[6]:.1f}")
    if 1_000_000 not in sizes:
        print("\n1M rows: skipped (HNSW build ~25+ min on 2 cores); run with --sizes 10000,100000,1000000 to measure.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
