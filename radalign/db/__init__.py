"""PostgreSQL access: one place that knows how to connect, pool and migrate.

Every connection carries `connect_timeout` and `statement_timeout` from `Settings`, so no query
can hang a worker. pgvector's types are registered on every pooled connection.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from radalign.config import Settings, get_settings
from radalign.db.migrate import MigrationError, apply_migrations, discover_migrations

__all__ = ["MigrationError", "apply_migrations", "connect", "connect_kwargs", "discover_migrations", "open_pool", "pool_ready"]


def connect_kwargs(settings: Settings, *, statement_timeout_ms: int | None = None) -> dict[str, Any]:
    """libpq keyword arguments that put the settings' timeouts on a connection."""
    timeout_ms = settings.db_statement_timeout_ms if statement_timeout_ms is None else statement_timeout_ms
    return {
        # libpq takes whole seconds; at least 1 s, because 0 would mean "wait forever".
        "connect_timeout": max(1, round(settings.db_connect_timeout_s)),
        "options": f"-c statement_timeout={int(timeout_ms)}",
    }


def connect(
    dsn: str | None = None,
    *,
    settings: Settings | None = None,
    statement_timeout_ms: int | None = None,
    **kwargs: Any,
) -> psycopg.Connection:
    """A blocking connection to `dsn` (default: `settings.dsn`) with the settings' timeouts.

    `kwargs` go to `psycopg.connect` (for example `autocommit=True`).
    """
    settings = settings or get_settings()
    params = connect_kwargs(settings, statement_timeout_ms=statement_timeout_ms) | kwargs
    return psycopg.connect(dsn or settings.dsn, **params)


async def _configure_pooled(conn: psycopg.AsyncConnection) -> None:
    # Deferred import: pgvector pulls numpy, which the migration CLI does not need.
    from pgvector.psycopg import register_vector_async

    await register_vector_async(conn)
    # The type look-up opened a transaction on a non-autocommit connection; the pool refuses
    # connections that are not idle when configure returns.
    await conn.commit()


async def open_pool(
    settings: Settings | None = None,
    min_size: int = 1,
    max_size: int = 4,
    *,
    dsn: str | None = None,
    name: str = "radalign",
) -> AsyncConnectionPool:
    """An open async pool whose connections know pgvector's types (`vector`, `halfvec`, ...).

    Waits at most `settings.db_connect_timeout_s` for the first `min_size` connections and raises
    `psycopg_pool.PoolTimeout` when the database does not answer. The `vector` extension must
    exist (migration 001 creates it). Close it with `await pool.close()` or `async with pool`.
    """
    settings = settings or get_settings()
    pool = AsyncConnectionPool(
        dsn or settings.dsn,
        min_size=min_size,
        max_size=max_size,
        kwargs=connect_kwargs(settings),
        configure=_configure_pooled,
        timeout=settings.db_connect_timeout_s,  # how long getconn() waits for a free connection
        name=name,
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=settings.db_connect_timeout_s)
    except BaseException:
        await pool.close()
        raise
    return pool


async def pool_ready(pool: AsyncConnectionPool, timeout_s: float = 2.0) -> tuple[bool, str]:
    """A readiness probe for services that hold a pool: can it hand out a working connection?"""
    try:
        async with pool.connection(timeout=timeout_s) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - a probe answers, it does not raise
        return False, f"postgres: {type(exc).__name__}"
    return True, "postgres reachable"
