"""The delivery part of `radalign demo`: results back where radiologists work.

Where Orthanc is installed, the demo's DICOM study enters the way a PACS routing rule would send
it (uploaded to Orthanc, then C-STOREd by Orthanc to the gateway), and the delivery stage sends
each SR back to Orthanc; every report also goes to a FHIR server (the loopback one, which
validates every resource with fhir.resources: no FHIR server installs from the registries here),
and signed versions go to a RIS as HL7 ORU^R01 over MLLP (a real MLLP listener, python-hl7's
asyncio server, stands in for the RIS). The demo signs one report through the review service (a
resident, then an attending's co-signature) so the RIS receives P then F.
A user's own `RADALIGN_DELIVERY_DESTINATIONS` is left as it is.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
from rich.table import Table

from radalign.config import Settings
from radalign.delivery.destinations import load_config
from radalign.loopback.fhir_server import LoopbackFhirServer
from radalign.loopback.mllp import MllpListener
from radalign.stack import orthanc


def prepare(settings: Settings) -> tuple[Settings, LoopbackFhirServer | None, MllpListener | None]:
    """Settings whose workers deliver to Orthanc (where installed), a loopback FHIR server and an
    MLLP listener standing in for the RIS."""
    if settings.delivery_destinations.strip():
        return settings, None, None
    fhir = LoopbackFhirServer("R4")
    fhir.start()
    ris = MllpListener()
    ris.start()
    destinations: list[dict] = [
        {"name": "fhir", "kind": "fhir", "base_url": fhir.base_url, "version": "R4", "patient": "create", "order": "identifier"},
        {"name": "ris", "kind": "hl7", "host": "127.0.0.1", "port": ris.port, "receiving_application": "RIS", "receiving_facility": "DEMO"},
    ]
    if orthanc.installed():
        destinations.insert(
            0, {"name": "pacs", "kind": "dicom", "ae_title": settings.orthanc_ae_title, "host": "127.0.0.1", "port": settings.orthanc_dicom_port}
        )
    return settings.model_copy(update={"delivery_destinations": json.dumps({"destinations": destinations})}), fhir, ris


def sign_one(settings: Settings, study_key: str, timeout_s: float = 60.0) -> list[str]:
    """Sign one drafted study through the review service as a resident, then co-sign it as an
    attending (the review service's dev login form and sign route; nothing is signed when the
    review service signs in with an identity provider); returns the statuses signed."""
    if settings.review_oidc_issuer:
        return []
    from radalign.framework.auth import parse_tokens

    token = next(iter(sorted(parse_tokens(settings.read_api_tokens))), "")
    base = f"http://127.0.0.1:{settings.web_port('review')}"
    statuses: list[str] = []
    deadline = time.monotonic() + timeout_s
    for name, identifier, role in (("Rex Resident", "demo-res-1", "resident"), ("Ann Attending", "demo-att-1", "radiologist")):
        with httpx.Client(base_url=base, timeout=30) as client:
            login = {"name": name, "identifier": identifier, "role": role, "token": token, "next": "/"}
            if client.post("/login", data=login).status_code != 303:  # 303: logged in, sent on to `next`
                return statuses
            while True:  # the review service reads the draft from the reports store
                worklist = client.get("/api/worklist", headers={"Authorization": f"Bearer {token}"} if token else {})
                item = next((i for i in worklist.json() if i["study_key"] == study_key), None) if worklist.status_code == 200 else None
                if item is not None or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            if item is None:
                return statuses
            draft = httpx.get(f"http://127.0.0.1:{settings.web_port('drafting')}/v1/studies/{study_key}/report",
                              headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=30).json()
            findings, impression = draft.get("findings", ""), draft.get("impression", "")
            page = client.get(f"/studies/{study_key}", headers={"Accept": "text/html"}).text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)  # every state-changing route needs the session's CSRF token
            signed = client.post(f"/studies/{study_key}/sign", headers={"Accept": "application/json"},
                                 data={"findings": findings, "impression": impression, "report_id": item["report_id"],
                                       "csrf": csrf.group(1) if csrf else ""})
            if signed.status_code != 201:
                return statuses
            statuses.append(str(signed.json()["status"]))
    return statuses


def wait_for_ris(ris: MllpListener | None, messages: int, timeout_s: float = 60.0) -> list[str]:
    """OBR-25 of each ORU^R01 the RIS stand-in received, once `messages` arrived (or the timeout)."""
    if ris is None:
        return []
    deadline = time.monotonic() + timeout_s
    while len(ris.messages()) < messages and time.monotonic() < deadline:
        time.sleep(0.5)
    return [str(m.segment("OBR")(25)) for m in ris.messages()]


def route_from_orthanc(settings: Settings, dicom: bytes) -> str:
    """Upload one DICOM object to Orthanc and have Orthanc C-STORE that instance to the gateway, as
    a routing rule on stored instances does; returns Orthanc's study id."""
    base = orthanc.http_url(settings)
    uploaded = httpx.post(f"{base}/instances", content=dicom, timeout=60)
    uploaded.raise_for_status()
    stored = uploaded.json()
    sent = httpx.post(f"{base}/modalities/{orthanc.GATEWAY_MODALITY}/store", json={"Resources": [stored["ID"]], "Synchronous": True}, timeout=120)
    sent.raise_for_status()
    return str(stored["ParentStudy"])


def route_study_from_orthanc(settings: Settings, orthanc_study: str) -> None:
    """Have Orthanc C-STORE a whole study to the gateway, as a routing rule on stable studies does.
    Once a draft is back the study also holds our SR: the gateway accepts and ignores it, so the
    store job succeeds (Orthanc fails the whole job when any one object is refused)."""
    sent = httpx.post(
        f"{orthanc.http_url(settings)}/modalities/{orthanc.GATEWAY_MODALITY}/store",
        json={"Resources": [orthanc_study], "Synchronous": True}, timeout=120,
    )
    sent.raise_for_status()


async def _delivery_rows(settings: Settings) -> list[tuple[str, str, int]]:
    from radalign.db import open_pool

    pool = await open_pool(settings, name="demo-delivery")
    try:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2 ORDER BY 1, 2")
            return [(d, s, int(n)) for d, s, n in await cur.fetchall()]
    finally:
        await pool.close()


def wait_for_deliveries(settings: Settings, reports: int, timeout_s: float = 90.0) -> list[tuple[str, str, int]]:
    """Poll the delivery records until every destination has settled `reports` reports (the RIS
    takes signed versions only: it is not waited for here)."""
    destinations = len([d for d in load_config(settings.delivery_destinations).destinations if d.kind != "hl7"])
    deadline = time.monotonic() + timeout_s
    rows: list[tuple[str, str, int]] = []
    while time.monotonic() < deadline:
        rows = asyncio.run(_delivery_rows(settings))
        settled = sum(n for _, status, n in rows if status in ("delivered", "failed"))
        if settled >= reports * destinations:
            break
        time.sleep(1.0)
    return rows


def summary(
    settings: Settings, rows: list[tuple[str, str, int]], fhir: LoopbackFhirServer | None, orthanc_study: str | None,
    ris_statuses: list[str] | None = None,
) -> Table:
    table = Table(title="Delivery: results back where radiologists work")
    table.add_column("where")
    table.add_column("what arrived", overflow="fold")
    for destination, status, n in rows:
        table.add_row(f"delivery records: {destination}", f"{n} {status}")
    if orthanc.installed() and orthanc.orthanc_healthy(settings):
        base = orthanc.http_url(settings)
        srs = httpx.post(f"{base}/tools/find", json={"Level": "Series", "Query": {"Modality": "SR"}}, timeout=10).json()
        table.add_row("Orthanc (PACS)", f"{len(srs)} SR series (Basic Text SR, UNVERIFIED drafts), Explorer: {base}/app/explorer.html")
        if orthanc_study:
            series = httpx.get(f"{base}/studies/{orthanc_study}/series", timeout=10).json()
            modalities = sorted(s["MainDicomTags"].get("Modality", "?") for s in series)
            table.add_row("  the routed CR study", f"series: {', '.join(modalities)} (the SR sits beside the images)")
    if fhir is not None:
        counts = {t: len(fhir.all(t)) for t in ("DiagnosticReport", "Observation", "Device", "Provenance")}
        table.add_row(
            "FHIR server (loopback, validates with fhir.resources)",
            ", ".join(f"{n} {t}" for t, n in counts.items()) + f"; {fhir.transactions} transactions, {len(fhir.rejected)} rejected",
        )
    if ris_statuses is not None:
        table.add_row("RIS (MLLP listener, HL7 v2.5.1 ORU^R01)", f"{len(ris_statuses)} messages, OBR-25: {', '.join(ris_statuses) or '-'}"
                      " (P: a resident signed; F: the attending co-signed)")
    return table
