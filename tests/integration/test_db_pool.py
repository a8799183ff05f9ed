"""radalign.db against the session's embedded PostgreSQL: migrations under concurrency and
failure, pooled connections with pgvector types, timeouts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import PoolTimeout

from radalign.config import Settings
from radalign.db import MigrationError, apply_migrations, connect, open_pool

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch_dsn(embedded_stack: Settings) -> Iterator[str]:
    """A database of the test's own on the session server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with connect(settings=embedded_stack, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield make_conninfo(**(conninfo_to_dict(embedded_stack.dsn) | {"dbname": name}))
    with connect(settings=embedded_stack, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


def test_concurrent_workers_apply_each_migration_once(scratch_dsn: str, tmp_path: Path) -> None:
    directory = _migrations(
        tmp_path / "m",
        {
            "001_base.sql": "CREATE EXTENSION IF NOT EXISTS vector;",
            # Not idempotent on purpose: a second run would fail or double the rows.
            "002_items.sql": "CREATE TABLE items (id int PRIMARY KEY, v vector(3)); INSERT INTO items VALUES (1, '[1,2,3]');",
            "010_slow.sql": "SELECT pg_sleep(0.5); INSERT INTO items VALUES (2, '[0,0,1]');",
        },
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: apply_migrations(scratch_dsn, directory), range(4)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == ["001_base", "002_items", "010_slow"]  # each exactly once, by one worker
    with psycopg.connect(scratch_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (2,)
        rows = conn.execute("SELECT name FROM schema_migrations ORDER BY applied_at, name").fetchall()
    assert [r[0] for r in rows] == ["001_base", "002_items", "010_slow"]
    assert apply_migrations(scratch_dsn, directory) == []


def test_a_failing_migration_leaves_nothing_behind(scratch_dsn: str, tmp_path: Path) -> None:
    directory = _migrations(
        tmp_path / "m",
        {"001_ok.sql": "CREATE TABLE ok (id int);", "002_bad.sql": "CREATE TABLE half (id int); SELECT no_such_column FROM ok;"},
    )
    with pytest.raises(MigrationError, match="002_bad"):
        apply_migrations(scratch_dsn, directory)
    with psycopg.connect(scratch_dsn) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM schema_migrations")] == ["001_ok"]
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
    # Fixed file: the next start applies it.
    (directory / "002_bad.sql").write_text("CREATE TABLE half (id int);")
    assert apply_migrations(scratch_dsn, directory) == ["002_bad"]


def test_changed_applied_migration_is_not_rerun(scratch_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = _migrations(tmp_path / "m", {"001_t.sql": "CREATE TABLE t (id int);"})
    assert apply_migrations(scratch_dsn, directory) == ["001_t"]
    (directory / "001_t.sql").write_text("CREATE TABLE t (id int, extra text);")
    assert apply_migrations(scratch_dsn, directory) == []
    assert "changed after it was applied" in caplog.text


def test_the_project_migrations_apply_on_a_fresh_database(scratch_dsn: str) -> None:
    applied = apply_migrations(scratch_dsn)
    assert applied[0] == "001_base"
    with psycopg.connect(scratch_dsn) as conn:
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone() is not None


def test_statement_timeout_applies_to_connections(embedded_stack: Settings) -> None:
    settings = embedded_stack.model_copy(update={"db_statement_timeout_ms": 200})
    begin = time.monotonic()
    with connect(settings=settings) as conn, pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("SELECT pg_sleep(5)")
    assert time.monotonic() - begin < 3


async def test_pool_registers_vector_types_and_times_out(embedded_stack: Settings) -> None:
    import numpy as np
    from pgvector import Vector

    pool = await open_pool(embedded_stack, min_size=2, max_size=3)
    async with pool:
        async def query(i: int) -> Vector:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT %s::vector", (np.array([i, i + 1, i + 2], dtype=np.float32),))
                return (await cur.fetchone())[0]

        results = await asyncio.gather(*(query(i) for i in range(6)))
        assert [r.to_list() for r in results] == [[float(i), float(i + 1), float(i + 2)] for i in range(6)]
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'")
            timeout_ms = (await cur.fetchone())[0]  # pg_settings gives milliseconds
        assert int(timeout_ms) == embedded_stack.db_statement_timeout_ms


async def test_pool_on_a_dead_database_fails_within_its_timeout(tmp_path: Path) -> None:
    settings = Settings(database_url=f"postgresql://postgres:@/postgres?host={tmp_path}", db_connect_timeout_s=1.0)
    begin = time.monotonic()
    with pytest.raises(PoolTimeout):
        await open_pool(settings)
    assert time.monotonic() - begin < 5
