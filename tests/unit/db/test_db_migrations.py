"""Migration discovery and ordering (applying them is in tests/integration/test_db_pool.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from radalign.config import Settings
from radalign.db import MigrationError, connect_kwargs, discover_migrations
from radalign.db.migrate import MIGRATIONS_DIR


def _write(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).write_text(f"-- {name}\nSELECT 1;\n")


def test_migrations_are_ordered_by_number_not_by_text(tmp_path: Path) -> None:
    _write(tmp_path, "100_later.sql", "020_cases.sql", "001_base.sql", "010_pseudonyms.sql")
    (tmp_path / "README.md").write_text("not a migration")
    found = discover_migrations(tmp_path)
    assert [m.name for m in found] == ["001_base", "010_pseudonyms", "020_cases", "100_later"]
    assert [m.number for m in found] == [1, 10, 20, 100]


def test_duplicate_numbers_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "010_a.sql", "010_b.sql")
    with pytest.raises(MigrationError, match="share number 010"):
        discover_migrations(tmp_path)


@pytest.mark.parametrize("bad", ["1_base.sql", "001-base.sql", "001_Base.sql", "base.sql"])
def test_misnamed_sql_files_are_refused(tmp_path: Path, bad: str) -> None:
    _write(tmp_path, bad)
    with pytest.raises(MigrationError, match="NNN_lowercase_name"):
        discover_migrations(tmp_path)


def test_checksum_follows_content(tmp_path: Path) -> None:
    _write(tmp_path, "001_a.sql")
    before = discover_migrations(tmp_path)[0].checksum
    (tmp_path / "001_a.sql").write_text("SELECT 2;")
    assert discover_migrations(tmp_path)[0].checksum != before


def test_packaged_migrations_start_with_the_vector_extension() -> None:
    found = discover_migrations(MIGRATIONS_DIR)
    assert found[0].name == "001_base"
    assert "CREATE EXTENSION IF NOT EXISTS vector" in found[0].sql


def test_connect_kwargs_carry_the_timeouts() -> None:
    settings = Settings(db_connect_timeout_s=2.6, db_statement_timeout_ms=1500)
    assert connect_kwargs(settings) == {"connect_timeout": 3, "options": "-c statement_timeout=1500"}
    assert connect_kwargs(Settings(db_connect_timeout_s=0.2))["connect_timeout"] == 1  # 0 would mean no timeout
    assert connect_kwargs(settings, statement_timeout_ms=0)["options"] == "-c statement_timeout=0"
