"""`radalign label text` and `radalign label iu`."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from radalign.labeler.cli import label_app
from radalign.labeler.iu import iu_archive_path


def test_label_text_prints_labels_and_mentions() -> None:
    result = CliRunner().invoke(label_app, ["text", "Mild cardiomegaly. No pleural effusion.", "--mentions"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Cardiomegaly: present" in lines
    assert "Pleural Effusion: absent" in lines
    assert not any(line.startswith("No Finding") for line in lines)
    assert any("'effusion'" in line for line in lines)


@pytest.mark.skipif(iu_archive_path() is None, reason="IU reports absent: torchxrayvision==1.5.7 (--no-deps) not installed")
def test_label_iu_writes_one_row_per_report(tmp_path) -> None:
    out = tmp_path / "labels.csv"
    result = CliRunner().invoke(label_app, ["iu", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3955
    assert {r["split"] for r in rows} == {"dev", "heldout"}
    assert {r["Cardiomegaly"] for r in rows} <= {"1", "0", "-1", ""}
    assert sum(r["Cardiomegaly"] == "1" for r in rows) > 300
    assert sum(r["No Finding"] == "1" for r in rows) > 1000
