"""`radalign demo`: the whole pipeline on the embedded stack with the sample studies.

Brings the stack up (broker, PostgreSQL, Triton, Orthanc where installed, the six workers), loads the IU reports into the
case store on first use, sends the chest CR from pydicom-data by DICOM C-STORE and the chest JPEGs
from pneumonia-model-package over HTTP (as new studies on each run, so a second run drafts again),
then reads the report topic until every study has a report (or a dead letter) and prints the
drafts with per-stage timings.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from radalign.config import Settings, csv_list, get_settings
from radalign.framework import codec
from radalign.pipeline import STAGES
from radalign.report_page import write_reports_page
from radalign.samples import as_new_study, chest_cr_files, chest_jpeg_files, dicom_bytes, send_c_store
from schemas.events import DeadLetter, ReportDrafted
from schemas.topics import REPORT_DRAFTED, dead_letter_topic

if TYPE_CHECKING:
    from pydicom import Dataset

console = Console()


@dataclass
class DemoResult:
    reports: dict[str, ReportDrafted] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    sent: int = 0
    wall_s: float = 0.0


def send_dicom(settings: Settings, datasets: list[Dataset]) -> int:
    """C-STORE the objects to the gateway's SCP, as a modality or PACS would."""
    try:
        statuses = send_c_store("127.0.0.1", settings.dicom_port, datasets, calling_ae="DEMO-SCU", called_ae=settings.dicom_ae_title)
    except ConnectionError as exc:
        raise RuntimeError(f"the gateway's DICOM SCP on port {settings.dicom_port}: {exc}") from exc
    if any(status != 0x0000 for status in statuses):
        raise RuntimeError(f"C-STORE failed with statuses {[hex(s) for s in statuses]}")
    return 1  # one study: both files share a StudyInstanceUID


def send_images(settings: Settings, files: list[Path], run: str) -> list[str]:
    """POST each JPEG as its own study through the HTTP API; returns the study pseudonyms. `run`
    makes the study ids new on each demo run (the same id again would be a duplicate)."""
    import httpx

    headers = {}
    if tokens := csv_list(settings.gateway_tokens):
        headers["Authorization"] = f"Bearer {tokens[0]}"
    keys = []
    base = f"http://{settings.gateway_host}:{settings.gateway_port}"
    with httpx.Client(base_url=base, timeout=30.0, headers=headers) as client:
        for i, path in enumerate(files):
            response = client.post(
                "/v1/studies",
                data={
                    "study_id": f"DEMO-{run}-STUDY-{i:03d}",
                    "patient_id": f"DEMO-PATIENT-{i:03d}",
                    "view_position": "AP",  # pediatric films in that set are AP
                    "priority": "stat" if i == 0 else "routine",
                },
                files={"file": (path.name, path.read_bytes(), "image/jpeg")},
            )
            response.raise_for_status()
            keys.append(response.json()["study_key"])
    return keys


async def collect(settings: Settings, expected: int, timeout_s: float, start_offsets: dict) -> DemoResult:
    """Read reports and dead letters from the offsets taken before sending."""
    from aiokafka import AIOKafkaConsumer

    result = DemoResult()
    dlq_topics = [dead_letter_topic(s).name for s in STAGES]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(start_offsets))
        for tp, offset in start_offsets.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(result.reports) + len(result.dead_letters) < expected:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batches.items():
                for msg in messages:
                    if tp.topic in REPORT_DRAFTED.names:
                        report = codec.decode(ReportDrafted, msg.value)
                        if report.study.study_key not in result.reports:
                            result.reports[report.study.study_key] = report
                            console.print(f"  report {len(result.reports)}/{expected}: {report.study.study_key} ({report.drafter})")
                    elif tp.topic in dlq_topics:
                        letter = codec.decode(DeadLetter, msg.value)
                        result.dead_letters.append(letter)
                        console.print(f"  [red]dead letter[/red] from {letter.stage}: {letter.reason[:120]}")
    finally:
        await consumer.stop()
    return result


async def end_offsets(settings: Settings) -> dict:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topics = [*REPORT_DRAFTED.names, *(dead_letter_topic(s).name for s in STAGES)]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # fetches cluster metadata, so that partitions are known
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


def structured_text(report: ReportDrafted) -> str:
    """The draft as a radiologist reads it: FINDINGS section by section in reading order, then
    IMPRESSION, then the footer naming what the model did not assess (rich markup)."""
    from radalign.drafting.phrases import load_phrase_table

    titles = dict(load_phrase_table().sections)
    lines = ["[bold]FINDINGS[/bold]"]
    if report.sections:
        for section in report.sections:
            lines.append(f"  [bold]{escape(titles.get(section.name, section.name))}:[/bold] {escape(' '.join(section.sentences))}")
    else:
        lines.append(f"  {escape(report.findings)}")
    if report.sections and report.drafter != "deterministic":
        lines.append(f"  [dim]as written by {escape(report.drafter)}:[/dim] {escape(report.findings)}")
    lines.append(f"[bold]IMPRESSION[/bold]\n  {escape(report.impression)}")
    if report.ood is not None:
        lines.append(f"[yellow]model abstained on this image: {report.ood.reason}[/yellow]")
    if report.footer:
        lines.append(f"[dim]{escape(report.footer)}[/dim]")
    return "\n".join(lines)


def print_reports(result: DemoResult) -> None:
    for report in result.reports.values():
        assessed = ", ".join(f"{c.observation.value} {c.probability:.2f} ({c.state.value})" for c in report.concepts) or "none"
        rejected = ", ".join(sorted({r.reason for r in report.guard.rejections}))
        body = (
            f"{structured_text(report)}\n\n"
            f"[dim]assessed concepts: {escape(assessed)}\ncases: {', '.join(report.case_keys[:5]) or '-'}\n"
            f"drafter {report.drafter}, prompt {report.prompt_version}, phrases {report.phrase_table_version or '-'}, "
            f"model {report.model_name} v{report.model_version}, guard {report.guard.verdict.value}"
            f"{' (rejected: ' + rejected + ')' if rejected else ''}{', REVIEW' if report.needs_review else ''}[/dim]"
        )
        title = escape(f"{report.study.study_key} [{report.study.priority.value}] view {report.view_position or '?'}")
        console.print(Panel(body, title=title, expand=False))


def timing_table(result: DemoResult) -> Table:
    per_stage: dict[str, list[float]] = defaultdict(list)
    e2e: list[float] = []
    for report in result.reports.values():
        for t in report.timings:
            per_stage[t.stage].append(t.duration_ms)
        if report.timings:
            last = report.timings[-1]
            done = last.started_at.timestamp() + last.duration_ms / 1000
            e2e.append((done - report.study.received_at.timestamp()) * 1000)
    table = Table(title="Per-stage latency over the demo's studies (ms)")
    for col in ("stage", "n", "median", "p95", "max"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    rows = [(s, per_stage[s]) for s in STAGES if per_stage.get(s)] + [("end to end (gateway -> report)", e2e)]
    for name, values in rows:
        if not values:
            continue
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        table.add_row(name, str(len(values)), f"{statistics.median(values):.1f}", f"{p95:.1f}", f"{max(values):.1f}")
    return table


def run_demo(keep_running: bool = False, timeout_s: float = 300.0, settings: Settings | None = None) -> int:
    from radalign.demo import delivery as delivery_demo
    from radalign.demo import sites as sites_demo
    from radalign.kb.ingest import ensure_iu_cases
    from radalign.stack import manager, orthanc

    settings, fhir, ris = delivery_demo.prepare(settings or get_settings())
    settings = sites_demo.prepare(settings)
    orthanc_study = None
    started = time.perf_counter()
    console.rule("RadAlign Stream demo")
    console.print("[bold]1/4[/bold] starting the embedded stack (broker, PostgreSQL, Triton, workers)...")
    for row in manager.up(settings):
        console.print(f"  {row.name:<18} {row.detail:<16} pid {row.pid or '-':<7} {row.address}")
    try:
        console.print("[bold]2/4[/bold] case store: the IU reports (first run embeds 3,955 reports)...")
        console.print(f"  {asyncio.run(ensure_iu_cases(settings))} cases available for retrieval")
        offsets = asyncio.run(end_offsets(settings))
        console.print("[bold]3/4[/bold] sending sample studies...")
        if orthanc.installed():
            orthanc_study = delivery_demo.route_from_orthanc(settings, dicom_bytes(as_new_study(chest_cr_files()[:1])[0]))
            sent = 1
            console.print("  PACS routing: the chest CR from pydicom-data uploaded to Orthanc, which C-STOREs it to the gateway")
        else:
            sent = send_dicom(settings, as_new_study(chest_cr_files()))
            console.print(f"  C-STORE: the chest CR from pydicom-data ({sent} study, 2 instances; Orthanc not installed)")
        keys = send_images(settings, chest_jpeg_files(), run=datetime.now(UTC).strftime("%Y%m%dT%H%M%S"))
        console.print(f"  HTTP: {len(keys)} chest JPEGs from pneumonia-model-package (first one STAT)")
        expected = sent + len(keys)
        console.print(f"[bold]4/4[/bold] waiting for {expected} reports...")
        result = asyncio.run(collect(settings, expected, timeout_s, offsets))
        result.sent = expected
        result.wall_s = time.perf_counter() - started
        print_reports(result)
        console.print(timing_table(result))
        page = write_reports_page(list(result.reports.values()), settings.state_dir / "demo" / "reports.html")
        console.print(f"per-concept scores and timings as a page: {page.resolve()}")
        rows = delivery_demo.wait_for_deliveries(settings, len(result.reports))
        ris_statuses = None
        if ris is not None and result.reports:
            first = sorted(result.reports)[0]
            signed = delivery_demo.sign_one(settings, first)
            console.print(f"  signed {first} through the review service: {' then '.join(signed) or 'not signed (see the review log)'}")
            ris_statuses = delivery_demo.wait_for_ris(ris, len(signed))
        console.print(delivery_demo.summary(settings, rows, fhir, orthanc_study, ris_statuses))
        console.print(sites_demo.shadow_summary(settings))
        console.print(
            f"[bold]{len(result.reports)}/{expected} reports[/bold], {len(result.dead_letters)} dead letters, "
            f"demo wall time {result.wall_s:.1f} s"
        )
        return 0 if len(result.reports) == expected else 1
    finally:
        if not keep_running:
            console.print("stopping the stack (`radalign demo --keep-running` leaves it up)...")
            manager.down(settings)
        if fhir is not None:
            fhir.stop()
        if ris is not None:
            ris.stop()
