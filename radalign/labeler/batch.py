"""Batch labeling of a provider's own report files, streamed: `radalign label FILE`.

Inputs (one report per row / line / file, read lazily so any size streams through in constant
memory):
- CSV with a header: the text in `report` or `text`, or in `findings` and/or `impression`; the id
  in the first of `id`, `case_id`, `report_id`, `study_id`, `uid`, `accession` (else the row
  number);
- JSONL (`.jsonl`, `.ndjson`): one object a line with the same keys;
- a folder of plain-text files (`*.txt`, one report each, id = the file name without `.txt`),
  or a single `.txt` file.

Output rows: the id, the 14 observations in CheXpert's coding (1 present, 0 absent, -1 uncertain,
blank unmentioned) and the observations the report says it could not assess. A row that cannot
be read (invalid JSON, no text) is skipped with its line number and reason, never its content.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from radalign.labeler.engine import ReportLabels, UncertaintyPolicy, assess_report
from schemas.events import Certainty, Observation

InputFormat = Literal["csv", "jsonl", "text"]
ID_KEYS = ("id", "case_id", "report_id", "study_id", "uid", "accession")
TEXT_KEYS = ("report", "text")
SECTION_KEYS = ("findings", "impression")
CHEXPERT_CODE: dict[Certainty, str] = {Certainty.PRESENT: "1", Certainty.ABSENT: "0", Certainty.UNCERTAIN: "-1"}
OUTPUT_COLUMNS = ("id", *(o.value for o in Observation), "not_assessed")


class BatchInputError(ValueError):
    """The input as a whole cannot be labelled (unknown format, no text column, not found)."""


@dataclass(frozen=True)
class ReportText:
    id: str
    text: str


@dataclass
class Skipped:
    """Rows that could not be read: counted, with up to `keep` reasons (line numbers only)."""

    count: int = 0
    reasons: list[str] = field(default_factory=list)
    keep: int = 20

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.reasons) < self.keep:
            self.reasons.append(reason)


def detect_format(path: Path) -> InputFormat:
    if path.is_dir():
        return "text"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".txt":
        return "text"
    raise BatchInputError(f"{path.name}: unknown format; give a .csv, .jsonl/.ndjson, .txt file or a folder of .txt files")


def _text_of(record: dict[str, Any]) -> str:
    for key in TEXT_KEYS:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value
    # Sections a blank line apart, as `label_sections` reads them.
    return "\n\n".join(str(record[k]) for k in SECTION_KEYS if isinstance(record.get(k), str) and record[k].strip())


def _id_of(record: dict[str, Any], fallback: str) -> str:
    for key in ID_KEYS:
        value = record.get(key)
        if value not in (None, ""):
            return str(value)
    return fallback


def _csv_reports(path: Path, skipped: Skipped) -> Iterator[ReportText]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # whole reports in one field
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = {(h or "").strip().lower() for h in reader.fieldnames or []}
        if not header & {*TEXT_KEYS, *SECTION_KEYS}:
            raise BatchInputError(f"{path.name}: no text column; need one of {', '.join((*TEXT_KEYS, *SECTION_KEYS))}")
        for number, row in enumerate(reader, start=1):
            record = {(k or "").strip().lower(): v for k, v in row.items()}
            text = _text_of(record)
            if not text.strip():
                skipped.add(f"row {number}: no report text")
                continue
            yield ReportText(_id_of(record, str(number)), text)


def _jsonl_reports(path: Path, skipped: Skipped) -> Iterator[ReportText]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                skipped.add(f"line {number}: invalid JSON ({exc.msg})")
                continue
            if not isinstance(record, dict):
                skipped.add(f"line {number}: not a JSON object")
                continue
            record = {str(k).lower(): v for k, v in record.items()}
            text = _text_of(record)
            if not text.strip():
                skipped.add(f"line {number}: no report text")
                continue
            yield ReportText(_id_of(record, str(number)), text)


def _text_files(path: Path) -> list[Path]:
    return sorted(p for p in path.glob("*.txt") if p.is_file()) if path.is_dir() else [path]


def _text_reports(path: Path, skipped: Skipped) -> Iterator[ReportText]:
    for file in _text_files(path):
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            skipped.add(f"{file.name}: unreadable ({type(exc).__name__})")
            continue
        if not text.strip():
            skipped.add(f"{file.name}: empty")
            continue
        yield ReportText(file.stem, text)


def read_reports(path: Path, skipped: Skipped | None = None, fmt: InputFormat | None = None) -> Iterator[ReportText]:
    """The reports of `path`, lazily. Raises BatchInputError for an input that cannot be read at all."""
    path = Path(path)
    if not path.exists():
        raise BatchInputError(f"{path}: no such file or folder")
    skipped = skipped if skipped is not None else Skipped()
    fmt = fmt or detect_format(path)
    readers = {"csv": _csv_reports, "jsonl": _jsonl_reports, "text": _text_reports}
    return readers[fmt](path, skipped)


def count_reports(path: Path, fmt: InputFormat) -> int | None:
    """A cheap total for the progress bar where one exists (folders: the files; JSONL: the lines)."""
    if fmt == "text":
        return len(_text_files(path))
    if fmt == "jsonl":
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    return None  # a CSV field may hold line breaks: counting would mean parsing twice


def output_row(report: ReportText, result: ReportLabels) -> dict[str, str]:
    row = {"id": report.id}
    row.update({o.value: CHEXPERT_CODE[result.labels[o]] if o in result.labels else "" for o in Observation})
    row["not_assessed"] = ";".join(o.value for o in Observation if o in result.not_assessed)
    return row


def label_stream(
    reports: Iterator[ReportText], *, uncertainty: UncertaintyPolicy = "keep", hierarchy: bool = True
) -> Iterator[dict[str, str]]:
    """One output row per report, as the reports arrive."""
    for report in reports:
        yield output_row(report, assess_report(report.text, uncertainty=uncertainty, hierarchy=hierarchy))
