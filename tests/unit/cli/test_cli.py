"""The command line starts without importing what a command does not need."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

HEAVY = ("torch", "sklearn", "pydicom", "psycopg", "aiokafka", "radalign.labeler.engine")


def _imported_after(args: list[str]) -> set[str]:
    code = (
        "import sys\nfrom radalign.cli import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit:\n    pass\n"
        f"print('IMPORTED:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    [line] = [line for line in out.splitlines() if line.startswith("IMPORTED:")]
    return set(filter(None, line.removeprefix("IMPORTED:").split(",")))


def test_help_lists_every_group_without_importing_them() -> None:
    from radalign.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("stack", "label", "kb", "train", "eval", "k8s", "worker", "dlq"):
        assert name in result.output
    assert _imported_after(["--help"]) == set()


def test_label_text_loads_only_the_labeler() -> None:
    # What makes the CLI start fast (measured in the README, not timed here: the machine is shared).
    assert _imported_after(["label", "text", "No pneumothorax."]) == {"radalign.labeler.engine"}


def test_lazy_groups_still_run() -> None:
    from radalign.cli import app

    result = CliRunner().invoke(app, ["kb", "--help"])
    assert result.exit_code == 0 and "ingest" in result.output



def test_review_export_manifest_is_a_subcommand(tmp_path, monkeypatch) -> None:
    """`radalign review export-manifest FILE` reaches the command (typer used to collapse the
    one-command group, so FILE was an unexpected extra argument). The database is stubbed: no
    signed study, so the manifest is the CSV header."""
    from radalign.cli import app
    from radalign.config import get_settings
    from radalign.review.manifest import FIELDS

    class NoPool:
        async def close(self) -> None:
            pass

    async def open_pool(settings, name):  # stands in for radalign.db.open_pool
        return NoPool()

    async def no_rows(self):  # stands in for ReviewStore.signed_rows
        return []

    monkeypatch.setattr("radalign.db.open_pool", open_pool)
    monkeypatch.setattr("radalign.review.store.ReviewStore.signed_rows", no_rows)
    monkeypatch.setenv("RADALIGN_STATE_DIR", str(tmp_path))
    get_settings.cache_clear()
    out = tmp_path / "corrections.csv"
    try:
        result = CliRunner().invoke(app, ["review", "export-manifest", str(out), "--all"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "0 rows from 0 signed studies" in result.output
    assert out.read_text().splitlines() == [",".join(FIELDS)]  # the header, no row
    listing = CliRunner().invoke(app, ["review", "--help"])
    assert listing.exit_code == 0 and "export-manifest" in listing.output
