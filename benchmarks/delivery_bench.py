"""Delivery throughput and latency per destination kind, beside plain baselines, in one run:

- C-STORE of the SR to Orthanc through the delivery core (render + validate + one association per
  report version, as the stage does) vs a plain pynetdicom loop sending pre-rendered SRs over one
  association (the protocol's floor on this machine);
- STOW-RS of the SR to Orthanc's DICOMweb plugin through the core;
- FHIR: the transaction Bundle (Device, Observations, DiagnosticReport, Provenance) to the loopback
  FHIR server, which validates every resource with fhir.resources, vs rendering the same Bundle alone;
- a redelivery of every version (skipped by the delivery records).

    .venv/bin/python benchmarks/delivery_bench.py [--reports 50]

Needs Orthanc + orthanc-dicomweb (Debian packages); a private Orthanc is started and stopped.
Delivery records are the in-memory implementation (the PostgreSQL upsert is not in these figures).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pynetdicom import AE

from radalign.config import Settings
from radalign.delivery.core import DeliveryCore
from radalign.delivery.destinations import DicomDestination, FhirDestination, RetryPolicy, StowDestination
from radalign.delivery.records import MemoryDeliveryRecords
from radalign.delivery.senders import DicomStoreSender, FhirSender, StowSender, sr_for
from radalign.delivery.version import ReportVersion
from radalign.loopback.fhir_server import LoopbackFhirServer
from radalign.reports.fhir import transaction_bundle
from radalign.reports.reidentification import StaticReidentifier, StudyIdentity
from radalign.reports.sr import BASIC_TEXT_SR
from radalign.stack import orthanc
from radalign.stack.manager import down, up
from radalign.testing.stack import short_state_dir, stack_settings
from schemas.events import Certainty, ConceptScore, Guard, GuardVerdict, Observation, ReportDrafted, StudyRef


def reports(n: int) -> list[tuple[ReportDrafted, StudyIdentity]]:
    out = []
    for i in range(n):
        key = f"st-{i:016x}"
        study = StudyRef(study_key=key, patient_key=f"pt-{i:016x}", received_at=datetime.now(UTC), pipeline_version="bench")
        report = ReportDrafted(
            study=study, report_id=str(uuid.uuid4()), findings="The heart is enlarged. No pleural effusion. No pneumothorax.",
            impression="Cardiomegaly.", concepts=[
                ConceptScore(observation=o, probability=p, state=s) for o, p, s in (
                    (Observation.CARDIOMEGALY, 0.86, Certainty.PRESENT), (Observation.PLEURAL_EFFUSION, 0.05, Certainty.ABSENT),
                    (Observation.PNEUMOTHORAX, 0.02, Certainty.ABSENT), (Observation.EDEMA, 0.1, Certainty.ABSENT),
                )
            ], case_keys=[], view_position="PA", model_name="concept_model", model_version="1", drafter="deterministic",
            prompt_version="draft-v1", guard=Guard(verdict=GuardVerdict.PASSED), needs_review=False,
        )
        identity = StudyIdentity(
            study_key=key, study_instance_uid=f"2.25.{uuid.uuid4().int}", patient_id=f"BENCH-{i}", patient_name="Bench^Patient",
            accession_number=f"ACC-{i}", study_date="20261130", study_time="101500",
        )
        out.append((report, identity))
    return out


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, round(q * (len(values) - 1)))]


async def through_core(name: str, sender, items, settings: Settings) -> tuple[float, list[float], float]:
    identities = {r.study.study_key: ident for r, ident in items}
    core = DeliveryCore({sender.name: sender}, MemoryDeliveryRecords(), StaticReidentifier(identities), settings)
    latencies = []
    begin = time.perf_counter()
    for report, _ in items:
        t0 = time.perf_counter()
        results = await core.deliver(ReportVersion(report))
        assert results[0].outcome == "delivered", results
        latencies.append((time.perf_counter() - t0) * 1000)
    wall = time.perf_counter() - begin
    t0 = time.perf_counter()
    for report, _ in items:
        assert (await core.deliver(ReportVersion(report)))[0].outcome == "skipped"
    skip_ms = (time.perf_counter() - t0) * 1000 / len(items)
    await core.close()
    return len(items) / wall, latencies, skip_ms


def plain_cstore(settings: Settings, items) -> float:
    datasets = [sr_for(ReportVersion(r), ident) for r, ident in items]  # rendered before the clock starts
    ae = AE(ae_title="RADALIGN")
    ae.add_requested_context(BASIC_TEXT_SR)
    begin = time.perf_counter()
    assoc = ae.associate("127.0.0.1", settings.orthanc_dicom_port, ae_title=settings.orthanc_ae_title)
    assert assoc.is_established
    for ds in datasets:
        ds.SOPInstanceUID = f"2.25.{uuid.uuid4().int}"  # new instances: Orthanc stores each
        assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    return len(datasets) / (time.perf_counter() - begin)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=50)
    args = parser.parse_args()
    if not (orthanc.installed() and orthanc.dicomweb_plugin()):
        print("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)", file=sys.stderr)
        return 2
    state = short_state_dir("radalign-delivery-bench-")
    settings = stack_settings(state)
    fhir = LoopbackFhirServer("R4")
    fhir.start()
    fast = RetryPolicy(attempts=2, base_delay_s=0.05, timeout_s=30)
    rows = []
    try:
        print(f"[1/5] Orthanc up ({state}) ...", flush=True)
        up(settings, ["orthanc"])
        sets = [reports(args.reports) for _ in range(3)]
        print(f"[2/5] C-STORE through the delivery core, {args.reports} reports ...", flush=True)
        pacs = DicomStoreSender(DicomDestination(name="pacs", kind="dicom", ae_title=settings.orthanc_ae_title, host="127.0.0.1", port=settings.orthanc_dicom_port, retry=fast))
        rows.append(("C-STORE (core: render + association per report)", *asyncio.run(through_core("pacs", pacs, sets[0], settings))))
        print("[3/5] STOW-RS through the delivery core ...", flush=True)
        stow = StowSender(StowDestination(name="dicomweb", kind="stow", url=orthanc.dicomweb_url(settings), retry=fast))
        rows.append(("STOW-RS (core)", *asyncio.run(through_core("dicomweb", stow, sets[1], settings))))
        print("[4/5] FHIR transaction through the delivery core ...", flush=True)
        ehr = FhirSender(FhirDestination(name="ehr", kind="fhir", base_url=fhir.base_url, patient="create", order="identifier", retry=fast))
        rows.append(("FHIR transaction (core, server validates)", *asyncio.run(through_core("ehr", ehr, sets[2], settings))))
        print("[5/5] baselines ...", flush=True)
        plain = plain_cstore(settings, reports(args.reports))
        t0 = time.perf_counter()
        for report, ident in sets[2]:
            transaction_bundle(report, ident, issued=datetime.now(UTC))
        render_only = len(sets[2]) / (time.perf_counter() - t0)
    finally:
        fhir.stop()
        down(settings)
        shutil.rmtree(state, ignore_errors=True)
    print(f"\n{'destination':<46} {'reports/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'redelivery skip ms':>19}")
    for name, rate, lat, skip in rows:
        print(f"{name:<46} {rate:>9.1f} {statistics.median(lat):>8.1f} {pct(lat, 0.95):>8.1f} {skip:>19.3f}")
    print(f"{'baseline: plain C-STORE, pre-rendered, 1 assoc.':<46} {plain:>9.1f}")
    print(f"{'baseline: FHIR Bundle render + validate only':<46} {render_only:>9.1f}")
    print(f"FHIR server: {fhir.transactions} transactions, {len(fhir.rejected)} rejected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
