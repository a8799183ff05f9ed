"""Forward-only SQL migrations: `radalign/db/migrations/NNN_name.sql`, applied once each, in order.

Hand-written rather than Alembic/yoyo because the schema is plain SQL owned by several services
and the whole need is "run each file once, in order, safely from many workers": ~80 lines.

- Each file runs in its own transaction together with its row in `schema_migrations`, so a
  failing file leaves nothing half-applied and is retried on the next start.
- A session-level `pg_advisory_lock` serialises concurrent callers (several workers starting at
  once): the first applies, the others wait, then see everything applied and do nothing.
- Files must not use statements that refuse a transaction (`CREATE INDEX CONCURRENTLY`,
  `VACUUM`); numbers leave gaps (001 base, 010 pseudonyms, 020 case store, 030 reports).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE_NAME = re.compile(r"^(?P<number>\d{3})_(?P<label>[a-z0-9_]+)\.sql$")
# One lock id for every RadAlign process on the database; hashtext keeps it readable.
_LOCK_KEY_SQL = "hashtext('radalign.schema_migrations')"


class MigrationError(RuntimeError):
    """The migration set is malformed, a file failed, or the lock was not obtained in time."""


@dataclass(frozen=True)
class Migration:
    number: int
    name: str  # file stem, e.g. "001_base": the key recorded in schema_migrations
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every `NNN_name.sql` in `directory`, by number. Raises on a duplicate number or a stray
    `.sql` file whose name does not follow the pattern (it would silently never run)."""
    found: dict[int, Migration] = {}
    for path in sorted(Path(directory).glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_lowercase_name.sql")
        number = int(match["number"])
        if number in found:
            raise MigrationError(f"migrations {found[number].path.name} and {path.name} share number {number:03d}")
        found[number] = Migration(number, path.stem, path)
    return [found[n] for n in sorted(found)]


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def _acquire_lock(conn: psycopg.Connection, timeout_s: float) -> None:
    # Polling try-lock rather than a blocking pg_advisory_lock: the wait gets a deadline and a
    # clear error instead of depending on statement_timeout.
    deadline = time.monotonic() + timeout_s
    while True:
        got = conn.execute(f"SELECT pg_try_advisory_lock({_LOCK_KEY_SQL})").fetchone()
        if got and got[0]:
            return
        if time.monotonic() >= deadline:
            raise MigrationError(f"another process held the migration lock for more than {timeout_s:.0f} s")
        time.sleep(0.1)


def apply_migrations(
    dsn: str,
    directory: Path = MIGRATIONS_DIR,
    *,
    connect_timeout_s: float = 10.0,
    lock_timeout_s: float = 300.0,
) -> list[str]:
    """Apply the migrations of `directory` not yet recorded in `schema_migrations`.

    Returns the names applied by this call (empty when the database was up to date).
    No statement timeout: a migration may build an index for minutes.
    """
    migrations = discover_migrations(directory)
    applied_now: list[str] = []
    with psycopg.connect(
        dsn, autocommit=True, connect_timeout=max(1, round(connect_timeout_s)), options="-c statement_timeout=0"
    ) as conn:
        _acquire_lock(conn, lock_timeout_s)
        try:
            conn.execute(_CREATE_TABLE)
            recorded: dict[str, str] = dict(conn.execute("SELECT name, checksum FROM schema_migrations").fetchall())
            for migration in migrations:
                checksum = migration.checksum
                if migration.name in recorded:
                    if recorded[migration.name] != checksum:
                        # Warn, do not fail: a dev database keeps running after someone edits a
                        # file; production adds a new file instead of editing an applied one.
                        log.warning("migration %s changed after it was applied; not re-run", migration.name)
                    continue
                log.info("applying migration %s", migration.name)
                try:
                    with conn.transaction():
                        conn.execute(migration.sql)
                        conn.execute(
                            "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                            (migration.name, checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
                applied_now.append(migration.name)
        finally:
            if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY_SQL})")
    return applied_now
