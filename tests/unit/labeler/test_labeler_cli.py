"""`radalign label text` and `radalign label iu`."""

from __future__ import annotations

import csv
import json

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


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(text.splitlines()))


def test_label_file_reads_csv_jsonl_and_text_folders(tmp_path) -> None:
    runner = CliRunner()
    source = tmp_path / "reports.csv"
    source.write_text(
        'id,findings,impression\nA1,"There is no\npneumothorax.",Cardiomegaly.\nA2,,\nA3,Pneumothorax cannot be assessed.,\n'
    )
    result = runner.invoke(label_app, [str(source), "--no-progress"])  # `radalign label FILE`
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in _rows(result.stdout)}
    assert set(rows) == {"A1", "A3"}
    assert rows["A1"]["Pneumothorax"] == "0" and rows["A1"]["Cardiomegaly"] == "1" and rows["A1"]["No Finding"] == ""
    assert rows["A3"]["Pneumothorax"] == "" and rows["A3"]["not_assessed"] == "Pneumothorax"
    assert "labelled 2 reports" in result.stderr and "reports/s" in result.stderr and "row 2: no report text" in result.stderr

    jsonl = tmp_path / "reports.jsonl"
    jsonl.write_text('{"case_id": 7, "report": "Possible pneumonia."}\nnot json\n{"text": "Mild edema."}\n')
    out = tmp_path / "out.jsonl"
    result = runner.invoke(label_app, ["file", str(jsonl), "--format", "jsonl", "--out", str(out), "--no-progress", "--uncertainty", "lenient"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["7", "3"]
    assert lines[0]["Pneumonia"] == "1" and lines[0]["Lung Opacity"] == "1"  # lenient, and the hierarchy
    assert lines[1]["Edema"] == "1" and "line 2: invalid JSON" in result.stderr

    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "r1.txt").write_text("NO PLEURAL\nEFFUSION. HEART IS\nENLARGED.")
    (folder / "r2.txt").write_text("Lungs are clear.")
    result = runner.invoke(label_app, [str(folder), "--no-progress", "--no-hierarchy"])
    rows = {r["id"]: r for r in _rows(result.stdout)}
    assert rows["r1"]["Pleural Effusion"] == "0" and rows["r1"]["Cardiomegaly"] == "1" and rows["r2"]["No Finding"] == "1"


def test_label_file_refuses_what_it_cannot_read(tmp_path) -> None:
    runner = CliRunner()
    assert runner.invoke(label_app, [str(tmp_path / "missing.csv")]).exit_code == 2
    (tmp_path / "x.pdf").write_text("x")
    result = runner.invoke(label_app, [str(tmp_path / "x.pdf")])
    assert result.exit_code == 2 and "unknown format" in result.stderr
    (tmp_path / "bad.csv").write_text("id,notes\n1,heart enlarged\n")
    result = runner.invoke(label_app, [str(tmp_path / "bad.csv"), "--no-progress"])
    assert result.exit_code == 2 and "no text column" in result.stderr
