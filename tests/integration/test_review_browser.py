"""The radiologist's side in a real browser (headless Chromium from Debian, driven by Selenium),
against the real embedded stack: tansu, PostgreSQL + pgvector, Triton, the five workers and the
review service as its own process.

Studies enter through the gateway as the demo sends them; the reviewer logs in, opens the
worklist and a study, sees the film and the per-concept heatmaps, edits the draft and signs. The
final report is then found on `radalign.report.final.v1` and in the store, the signed case in the
case store, and the next similar study is grounded in it. Prints the time from the click on
"Sign" to the final event read back from the broker.

The signed report as a legal record (issue 24): with delivery to Orthanc (where installed), the
loopback FHIR server and an MLLP listener standing in for the RIS, a resident signs a study in the
browser (preliminary), an attending co-signs it (final) and amends it (amended); every version
reaches each destination exactly once, with the named signer and the coded results of the
signed text; an edited or forged session cookie, a request without the CSRF token and a resident
changing the released report are refused.

Screenshots: set RADALIGN_UPDATE_SCREENSHOTS=1 to write docs/review_worklist.png and
docs/review_study.png (otherwise they go to the test's temp folder).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pydicom
import pytest

from radalign.config import Settings
from radalign.framework import codec
from radalign.loopback.fhir_server import LoopbackFhirServer
from radalign.loopback.mllp import MllpListener
from radalign.samples import chest_jpeg_files
from radalign.testing.stack import IU_CASES_FOR_TESTS, running_workers, until, write_audit_profile
from schemas.events import Certainty, Observation, ReportFinal
from schemas.topics import REPORT_FINAL

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TOKEN = "review-test-token"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _install_chromium() -> str:
    """Best effort, as scripts/bootstrap.sh does: Debian's chromium + chromium-driver as root."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root or no apt-get"
    for argv in (["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]):
        done = subprocess.run(argv, capture_output=True, timeout=600, check=False)
        if done.returncode == 0 and argv[1] == "install":
            return ""
    return "apt-get install chromium chromium-driver failed"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    found = _chromium()
    if found is None:
        reason = _install_chromium()
        found = _chromium()
        if found is None:
            pytest.skip(f"headless Chromium unavailable: chromium/chromedriver not on PATH ({reason})")
    binary, driver_path = found
    profile = Path(__import__("tempfile").mkdtemp(prefix="radalign-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1360,1000"):
        options.add_argument(flag)
    # The Debian driver, never Selenium Manager (it would download one).
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass(frozen=True)
class Peers:
    """Where the delivery stage sends every report version: the loopback FHIR server, an MLLP
    listener standing in for the RIS and, where installed, Orthanc."""

    fhir: LoopbackFhirServer
    ris: MllpListener
    orthanc: bool

    def destinations(self, settings: Settings) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = [
            {"name": "ehr", "kind": "fhir", "base_url": self.fhir.base_url, "version": "R4", "patient": "create", "order": "identifier"},
            {"name": "ris", "kind": "hl7", "host": "127.0.0.1", "port": self.ris.port, "receiving_application": "RIS", "receiving_facility": "TEST"},
        ]
        if self.orthanc:
            found.insert(0, {"name": "pacs", "kind": "dicom", "ae_title": settings.orthanc_ae_title, "host": "127.0.0.1", "port": settings.orthanc_dicom_port})
        return found


@pytest.fixture(scope="module")
def peers(embedded_triton: Settings) -> Iterator[Peers]:
    from radalign.stack import orthanc, stop
    from radalign.stack.manager import up

    fhir, ris = LoopbackFhirServer("R4"), MllpListener()
    fhir.start()
    ris.start()
    pacs = orthanc.installed()
    try:
        if pacs:
            up(embedded_triton, ["orthanc"])
        yield Peers(fhir, ris, pacs)
    finally:
        if pacs:
            stop("orthanc", embedded_triton)
        ris.stop()
        fhir.stop()


@pytest.fixture(scope="module")
def review_stack(embedded_triton: Settings, peers: Peers) -> Iterator[Settings]:
    """Every worker up (the review service among them, with the test token), the IU reports in the
    case store, the delivery stage sending to the peers."""
    from radalign.kb.ingest import ensure_iu_cases

    # HTTP uploads come from a site whose audit profile assesses edema and effusion: the shipped
    # generic model claims nothing, and the page's heatmaps and cases need a model that does.
    settings = embedded_triton.model_copy(update={
        "gateway_tokens": TOKEN, "patient_issuers": f"http={REVIEW_SITE}", "concepts_site_profiles_dir": embedded_triton.state_dir / "site_profiles",
        "delivery_destinations": json.dumps({"destinations": peers.destinations(embedded_triton)}),
    })
    write_audit_profile(settings, REVIEW_SITE)
    asyncio.run(ensure_iu_cases(settings, limit=IU_CASES_FOR_TESTS))
    # Every worker of the stage graph, the review service among them.
    with running_workers(settings):
        yield settings


REVIEW_SITE = "IT-REVIEW-SITE"


def _post(settings: Settings, path: Path, study_id: str, patient_id: str, priority: str) -> str:
    r = httpx.post(
        f"http://127.0.0.1:{settings.gateway_port}/v1/studies",
        data={"study_id": study_id, "patient_id": patient_id, "view_position": "AP", "priority": priority},
        files={"file": (path.name, path.read_bytes(), "image/jpeg")}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
    )
    assert r.status_code == 202, r.text
    return r.json()["study_key"]


def _wait_worklist(base: str, keys: set[str], timeout_s: float = 240) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        items = httpx.get(f"{base}/api/worklist", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
        if keys <= {i["study_key"] for i in items}:
            return items
        time.sleep(1)
    raise AssertionError(f"studies {keys} never reached the worklist")


async def _final_reader(settings: Settings):
    """A consumer positioned at the end of the final topic (before signing)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    # A short fetch wait: the measured time is then the service's, not the long poll's.
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    partitions = [TopicPartition(REPORT_FINAL.name, p) for p in (consumer.partitions_for_topic(REPORT_FINAL.name) or {0})]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    return consumer


async def _read_final(consumer, report_id: str, timeout_s: float = 60) -> tuple[ReportFinal, float, int, list]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for messages in (await consumer.getmany(timeout_ms=100)).values():
            for msg in messages:
                final = codec.decode(ReportFinal, msg.value)
                if final.report_id == report_id:
                    return final, time.perf_counter(), msg.timestamp, [*msg.headers, ("read_at_ms", str(time.time() * 1000).encode())]
    raise AssertionError("no final event for the signed report")


class FinalWatcher:
    """Reads the final topic in its own thread (Selenium's click blocks until the next page has
    loaded, so the event's arrival must be timed independently of it)."""

    def __init__(self, settings: Settings, report_id: str) -> None:
        import threading

        self.settings, self.report_id = settings, report_id
        self.ready = threading.Event()
        self.result: tuple[ReportFinal, float, int, list] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the final-topic reader did not start"

    def _run(self) -> None:
        async def main() -> None:
            consumer = await _final_reader(self.settings)
            self.ready.set()
            try:
                self.result = await _read_final(consumer, self.report_id)
            finally:
                await consumer.stop()

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            self.error = exc
            self.ready.set()

    def wait(self, timeout_s: float = 60) -> tuple[ReportFinal, float, int, list]:
        self.thread.join(timeout_s)
        if self.error is not None:
            raise self.error
        assert self.result is not None, "no final event for the signed report"
        return self.result


def _wait_images_loaded(driver, css: str, timeout_s: float = 120) -> int:
    from selenium.webdriver.support.ui import WebDriverWait

    def loaded(d) -> bool:
        return d.execute_script(
            "const imgs = [...document.querySelectorAll(arguments[0])];"
            "imgs.forEach(i => i.scrollIntoView({block: 'nearest'}));"
            "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);", css)

    WebDriverWait(driver, timeout_s, poll_frequency=0.25).until(loaded)
    return driver.execute_script("return document.querySelectorAll(arguments[0]).length", css)


def _screenshot(driver, name: str, tmp_path: Path) -> Path:
    from PIL import Image

    target_dir = DOCS if os.environ.get("RADALIGN_UPDATE_SCREENSHOTS") == "1" else tmp_path
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / name
    driver.save_screenshot(str(path))
    with Image.open(path) as img:  # small PNGs for the README: a 256-colour palette
        img.convert("RGB").quantize(colors=256).save(path, optimize=True)
    return path


def test_review_sign_off_in_a_real_browser(review_stack: Settings, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    settings, driver = review_stack, browser
    base = f"http://127.0.0.1:{settings.web_port('review')}"
    films = chest_jpeg_files()
    routine_key = _post(settings, films[3], "IT-REVIEW-R", "IT-PAT-R", "routine")
    stat_key = _post(settings, films[4], "IT-REVIEW-S", "IT-PAT-S", "stat")
    items = _wait_worklist(base, {routine_key, stat_key})
    order = [i["study_key"] for i in items]
    assert order.index(stat_key) < order.index(routine_key), "STAT first"

    # Unauthenticated requests are refused; the browser is sent to /login.
    assert httpx.get(f"{base}/api/worklist", timeout=10).status_code == 401
    driver.get(f"{base}/")
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "name")))
    driver.find_element(By.ID, "name").send_keys("Dr Test Reviewer")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()

    # Worklist: both studies, STAT first.
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.worklist")))
    links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "a.study-link")]
    assert links.index(stat_key) < links.index(routine_key)
    worklist_png = _screenshot(driver, "review_worklist.png", tmp_path)

    # Study page: film, heatmaps, concept bars, retrieved cases.
    driver.find_element(By.LINK_TEXT, routine_key).click()
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "film")))
    assert _wait_images_loaded(driver, "#film") == 1
    begin = time.monotonic()
    heatmaps = _wait_images_loaded(driver, "img.heatmap")
    heatmaps_s = time.monotonic() - begin
    assert heatmaps >= 1
    assert len(driver.find_elements(By.CSS_SELECTOR, "table.concepts tbody tr")) == 14
    assert driver.find_elements(By.CSS_SELECTOR, "ol.cases li"), "the retrieved cases are shown with their reports"
    pick = driver.find_element(By.CSS_SELECTOR, ".heatmap-pick")
    pick.click()
    assert "/heatmaps/" in driver.find_element(By.ID, "film").get_attribute("src")
    assert pick.get_attribute("aria-pressed") == "true"
    driver.execute_script("window.scrollTo(0, 0)")
    driver.set_window_size(1360, 1500)  # film, concepts and the editor in one picture
    study_png = _screenshot(driver, "review_study.png", tmp_path)
    driver.set_window_size(1360, 1000)

    # Edit: add a finding the draft did not make, then sign.
    findings = driver.find_element(By.ID, "findings")
    findings.send_keys(" Small left pleural effusion.")
    assert "Edited" in driver.find_element(By.ID, "edit-state").text
    report_id = driver.find_element(By.NAME, "report_id").get_attribute("value")
    # The browser's own clock at the form's submit event (epoch ms; same machine as the broker).
    driver.execute_script(
        "document.getElementById('sign-form').addEventListener('submit',"
        " () => sessionStorage.setItem('submitAt', String(performance.timeOrigin + performance.now())));")
    watcher = FinalWatcher(settings, report_id)
    clicked = time.perf_counter()
    driver.find_element(By.ID, "sign-button").click()
    page_s = time.perf_counter() - clicked  # Selenium returns once the answer page has loaded
    final, seen_at, broker_ts_ms, headers = watcher.wait()
    sign_to_final_s = seen_at - clicked
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "signed-banner")))
    assert "published" in driver.find_element(By.ID, "signed-banner").text
    signed_to_ack_ms = broker_ts_ms - final.signed_at.timestamp() * 1000
    submit_at_ms = float(driver.execute_script("return sessionStorage.getItem('submitAt')"))
    submit_to_broker_ms = broker_ts_ms - submit_at_ms
    submit_to_read_ms = float(codec.header(headers, "read_at_ms")) - submit_at_ms
    print(f"\nbrowser submit -> final event on the broker {submit_to_broker_ms:.0f} ms, -> read back by a consumer {submit_to_read_ms:.0f} ms")
    print(f"\nsign -> final event read back: {sign_to_final_s * 1000:.0f} ms (click to consumer); "
          f"signed_at -> broker timestamp {signed_to_ack_ms:.0f} ms; click -> answer page loaded {page_s * 1000:.0f} ms; "
          f"{heatmaps} heatmaps loaded in {heatmaps_s:.2f} s; screenshots {worklist_png}, {study_png}")
    assert final.study.study_key == routine_key and final.version == 1 and final.status == "final"
    assert "Small left pleural effusion." in final.findings and not final.accepted_unchanged and final.edit_distance == 5
    assert final.signer_role.value == "radiologist" and final.signer_key.startswith("rd-")
    assert "Dr Test" not in final.model_dump_json(), "the event names the signer by pseudonym only"
    assert final.labels.get(Observation.PLEURAL_EFFUSION) == Certainty.PRESENT
    assert codec.header(headers, "ce_type") == "org.radalign.report.final.v1"
    assert sign_to_final_s < 10 and 0 < submit_to_broker_ms < 10_000

    # The store holds the final version with who and when, and the study left the worklist.
    with psycopg.connect(settings.dsn) as conn:
        row = conn.execute(
            "SELECT version, signer_name, signer_role, signed_at, edit_distance, published_at FROM report_finals WHERE study_key = %s",
            (routine_key,)).fetchall()
    assert len(row) == 1 and row[0][0] == 1 and row[0][1] == "Dr Test Reviewer" and row[0][2] == "radiologist"
    assert row[0][4] == 5 and row[0][5] is not None
    assert routine_key not in {i["study_key"] for i in _wait_worklist(base, {stat_key})}

    # The STAT study, accepted as drafted with Ctrl+Enter: a second sign -> final measurement.
    driver.get(f"{base}/studies/{stat_key}")
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "impression")))
    stat_report_id = driver.find_element(By.NAME, "report_id").get_attribute("value")
    from selenium.webdriver.common.keys import Keys

    watcher = FinalWatcher(settings, stat_report_id)
    clicked = time.perf_counter()
    driver.find_element(By.ID, "impression").send_keys(Keys.CONTROL, Keys.ENTER)
    stat_final, seen_at, _, _ = watcher.wait()
    print(f"STAT study accepted as drafted: sign -> final event read back {1000 * (seen_at - clicked):.0f} ms")
    assert stat_final.accepted_unchanged and stat_final.edit_distance == 0 and stat_final.study.priority.value == "stat"

    # Learning loop: the signed report enters the case store (labelled, same patient pseudonym).
    deadline = time.monotonic() + 180
    case = None
    while time.monotonic() < deadline and case is None:
        with psycopg.connect(settings.dsn) as conn:
            case = conn.execute(
                "SELECT c.case_key, c.patient_key, c.source, c.labels, c.image_embedding IS NOT NULL FROM report_finals f "
                "JOIN cases c ON c.case_key = f.kb_case_key WHERE f.study_key = %s", (routine_key,)).fetchone()
        time.sleep(1)
    assert case is not None, "the signed report never reached the case store"
    case_key, patient_key, source, labels, has_image = case
    assert patient_key == final.study.patient_key and source == "review-signed" and has_image
    assert labels.get("Pleural Effusion") == "present"

    # The signed case is retrievable for the next similar study: a study whose concept profile
    # matches the signed labels finds it among its best-agreeing cases (retrieval by concept
    # profile, as the retrieval stage searches; ties among equally agreeing cases are broken by a
    # per-study hash, so the check takes every case of the top agreement).
    async def profile_search() -> list[tuple[str, float]]:
        from radalign.db import open_pool
        from radalign.kb.store import CaseStore
        from radalign.retrieval.core import ConceptProfile
        from schemas.events import ConceptScore

        signed = [ConceptScore(observation=Observation(o), probability=0.99 if v == "present" else 0.01,
                               state=Certainty.PRESENT if v == "present" else Certainty.ABSENT)
                  for o, v in labels.items() if v in ("present", "absent")]
        profile = ConceptProfile.of(signed)
        pool = await open_pool(settings, name="review-test-retrieval")
        try:
            found = await CaseStore(pool).search_by_profile(profile.probabilities, profile.weights, k_candidates=1000)
        finally:
            await pool.close()
        return [(c.case_key, agreement) for c, agreement in found]

    ranked = asyncio.run(profile_search())
    best = ranked[0][1]
    assert case_key in [k for k, a in ranked if a >= best - 1e-9], "the signed case is not among the best matches of its own profile"

    # Agreement page and metrics.
    driver.get(f"{base}/agreement")
    assert "Pleural Effusion" in driver.find_element(By.CSS_SELECTOR, "table.agreement").text
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert "radalign_review_edit_distance_words_count 2.0" in metrics
    assert "radalign_review_queue_depth" in metrics and 'radalign_review_agreement_compared{observation="Pleural Effusion"}' in metrics

    # The training manifest of corrections is readable by `radalign train`.
    from radalign.blobstore import open_blob_store
    from radalign.concepts_training.data import read_manifest
    from radalign.review.manifest import write_manifest
    from radalign.review.store import read_signed_rows

    summary = write_manifest(asyncio.run(read_signed_rows(settings, "review-test")), tmp_path / "corrections.csv", open_blob_store(settings.blob_root).get)
    assert summary.written >= 1
    records = [r for r in read_manifest(tmp_path / "corrections.csv") if r.patient_id == final.study.patient_key]
    assert len(records) == 1 and records[0].image.is_file()
    assert records[0].labels[list(Observation).index(Observation.PLEURAL_EFFUSION)] == 1.0


# -- the signed report as a legal record (issue 24) ----------------------------------------------

#: Who signs (typed into the dev login form) and what each version says (typed into the editor).
RESIDENT = ("Rex Resident", "res-101")
ATTENDING = ("Ann Attending", "att-202")
SIGNED_TEXT = {
    1: ("The heart is enlarged. No pleural effusion. No pneumothorax.", "Cardiomegaly."),
    2: ("The heart is enlarged. Small left pleural effusion. No pneumothorax.", "Cardiomegaly. Small left pleural effusion."),
    3: ("The heart is enlarged. Small left pleural effusion. Mild pulmonary edema. No pneumothorax.",
        "Cardiomegaly. Small left pleural effusion. Mild pulmonary edema."),
}
#: What each version's text states, finding by finding (read by a person, not by the labeler).
STATED = {
    1: {"Cardiomegaly": "Present", "Pleural Effusion": "Absent", "Pneumothorax": "Absent"},
    2: {"Cardiomegaly": "Present", "Pleural Effusion": "Present", "Pneumothorax": "Absent"},
    3: {"Cardiomegaly": "Present", "Pleural Effusion": "Present", "Edema": "Present", "Pneumothorax": "Absent"},
}
PSEUDONYM = re.compile(r"rd-[0-9a-f]{16}")
VERSION_EXT = "urn:radalign:fhir:StructureDefinition:report-version"
REPLACES_EXT = "urn:radalign:fhir:StructureDefinition:replaces-report-version"


def _deliveries(settings: Settings, study_key: str) -> dict[str, tuple[str, str]]:
    """destination -> (status, report_version) of the study's delivery records (waiting only)."""
    with psycopg.connect(settings.dsn) as conn:
        rows = conn.execute("SELECT destination, status, report_version FROM deliveries WHERE study_key = %s", (study_key,)).fetchall()
    return {d: (s, v) for d, s, v in rows}


def _wait_delivered(settings: Settings, study_key: str, destinations: set[str], version: int | None) -> float:
    """Until every destination holds `version` (None: the AI's draft) as delivered; returns the seconds waited."""
    begin = time.monotonic()

    def done() -> bool:
        rows = _deliveries(settings, study_key)
        return all(d in rows and rows[d][0] == "delivered" and (rows[d][1].startswith(f"v{version}-") if version else not rows[d][1].startswith("v"))
                   for d in destinations)

    until(f"version {version or 'draft'} delivered to {sorted(destinations)}", done, detail=lambda: _deliveries(settings, study_key))
    return time.monotonic() - begin


def _log_in(driver, base: str, name: str, identifier: str, role: str, next_path: str) -> None:
    """The dev login form, as a person fills it in."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(f"{base}/login?next={next_path}")
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "name")))
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "identifier").send_keys(identifier)
    Select(driver.find_element(By.ID, "role")).select_by_value(role)
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    WebDriverWait(driver, 120).until(ec.presence_of_element_located((By.ID, "findings")))


def _log_out(driver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from services.review.app import SESSION_COOKIE

    driver.find_element(By.CSS_SELECTOR, "form.who button[type=submit]").click()
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.login")))
    assert driver.get_cookie(SESSION_COOKIE) is None


def _sign_in_editor(driver, version: int) -> str:
    """Replace the editor's text with version `version`'s and sign; returns the sign button's label."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    findings, impression = SIGNED_TEXT[version]
    for field, text in (("findings", findings), ("impression", impression)):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(text)
        assert box.get_attribute("value") == text
    button = driver.find_element(By.ID, "sign-button")
    label = button.text
    button.click()
    # the page before the click may still show the previous version's banner: wait for this one's text
    # (the wait ignores a missing element while the answer page loads, and re-finds a stale one)
    WebDriverWait(driver, 60).until(ec.text_to_be_present_in_element((By.ID, "signed-banner"), f"Signed as version {version}."))
    return label


def _cookie(value: str, *, as_json: bool = False) -> dict[str, str]:
    """Request headers carrying `value` as the review session cookie (and asking for JSON answers)."""
    from services.review.app import SESSION_COOKIE

    return {"Cookie": f"{SESSION_COOKIE}={value}", **({"Accept": "application/json"} if as_json else {})}


def _signers(refs: list[dict]) -> list[tuple[str, str]]:
    return [(r["identifier"]["value"], r["display"]) for r in refs]


def _sr_people(ds) -> list[str]:
    return [str(i.PersonName) for i in ds.ContentSequence if i.ValueType == "PNAME"]


def _sr_predecessor(ds) -> str | None:
    if "PredecessorDocumentsSequence" not in ds:
        return None
    return str(ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def test_resident_signs_attending_cosigns_and_amends_each_version_delivered_once(review_stack: Settings, peers: Peers, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from radalign.reports.sr import read_sr_text
    from radalign.review.session import SessionCodec
    from services.review.app import SESSION_COOKIE

    settings, driver = review_stack, browser
    base = f"http://127.0.0.1:{settings.web_port('review')}"
    study_uid, patient_id = f"2.25.{uuid.uuid4().int}", f"IT-PAT-{uuid.uuid4().hex[:8].upper()}"
    key = _post(settings, chest_jpeg_files()[5], study_uid, patient_id, "routine")
    _wait_worklist(base, {key})
    destinations = {d["name"] for d in peers.destinations(settings)}
    # The AI's draft goes to the PACS and the EHR first (the RIS takes signed versions only).
    _wait_delivered(settings, key, destinations - {"ris"}, None)
    study_path = f"/studies/{key}"

    # 1. The resident signs: preliminary, and the study stays on the worklist for the co-signature.
    _log_in(driver, base, *RESIDENT, "resident", study_path)
    report_id = driver.find_element(By.NAME, "report_id").get_attribute("value")
    assert _sign_in_editor(driver, 1) == "Sign as Rex Resident (resident)"
    assert driver.find_element(By.ID, "final-v1").text.startswith("v1 (preliminary) signed by Rex Resident (resident)")
    assert key in {i["study_key"] for i in _wait_worklist(base, {key})}
    took = {1: _wait_delivered(settings, key, destinations, 1)}
    _log_out(driver)

    # 2. The attending co-signs, from the resident's text, adding the effusion: final.
    _log_in(driver, base, *ATTENDING, "radiologist", study_path)
    assert driver.find_element(By.ID, "findings").get_attribute("value") == SIGNED_TEXT[1][0]
    assert _sign_in_editor(driver, 2) == "Co-sign as Ann Attending (radiologist)"
    assert driver.find_element(By.ID, "final-v2").text.startswith("v2 (final) signed by Ann Attending (radiologist)")
    took[2] = _wait_delivered(settings, key, destinations, 2)
    worklist = httpx.get(f"{base}/api/worklist", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    assert key not in {i["study_key"] for i in worklist}

    # 3. The attending amends the released report (the form's default change): amended.
    assert Select(driver.find_element(By.ID, "change")).first_selected_option.get_attribute("value") == "amended"
    assert driver.find_element(By.ID, "findings").get_attribute("value") == SIGNED_TEXT[2][0]
    assert _sign_in_editor(driver, 3) == "Sign as Ann Attending (radiologist)"
    assert driver.find_element(By.ID, "final-v3").text.startswith("v3 (amended) signed by Ann Attending (radiologist)")
    took[3] = _wait_delivered(settings, key, destinations, 3)
    print(f"\nsigned version -> delivered to {sorted(destinations)}: " + ", ".join(f"v{v} {s:.1f} s" for v, s in took.items()))

    # Refusals, with the attending's own session at hand: nothing of these is signed or delivered.
    cookie = driver.get_cookie(SESSION_COOKIE)["value"]
    page = httpx.get(f"{base}{study_path}", headers={"Accept": "text/html", **_cookie(cookie)}, timeout=60).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = {"findings": "Edited outside the editor.", "impression": "Forged.", "report_id": report_id, "csrf": csrf}
    segments = cookie.split(".")
    middle = len(segments[3]) // 2
    segments[3] = segments[3][:middle] + ("A" if segments[3][middle] != "A" else "B") + segments[3][middle + 1:]
    edited = ".".join(segments)  # one character of the sealed cookie's ciphertext changed
    assert httpx.get(f"{base}/api/worklist", headers=_cookie(edited), timeout=10).status_code == 401
    assert httpx.post(f"{base}{study_path}/sign", data=form, headers=_cookie(edited, as_json=True), timeout=30).status_code == 401
    forged = SessionCodec("not-the-review-key").seal({"name": ATTENDING[0], "identifier": ATTENDING[1], "role": "radiologist", "csrf": csrf})
    assert httpx.post(f"{base}{study_path}/sign", data=form, headers=_cookie(forged, as_json=True), timeout=30).status_code == 401
    no_csrf = httpx.post(f"{base}{study_path}/sign", data={k: v for k, v in form.items() if k != "csrf"}, headers=_cookie(cookie, as_json=True), timeout=30)
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["detail"]
    with httpx.Client(base_url=base, timeout=60) as resident:  # the resident may not change the released report
        login = {"name": RESIDENT[0], "identifier": RESIDENT[1], "role": "resident", "token": TOKEN, "next": "/"}
        assert resident.post("/login", data=login).status_code == 303
        own = re.search(r'name="csrf" value="([^"]+)"', resident.get(study_path, headers={"Accept": "text/html"}).text).group(1)
        refused = resident.post(f"{study_path}/sign", data=form | {"csrf": own}, headers={"Accept": "application/json"})
        assert refused.status_code == 422 and "only an attending" in refused.json()["detail"]
    trail = httpx.get(f"{base}/api/studies/{key}/audit", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()["audit"]
    assert [(a["role"], a["detail"].get("status")) for a in trail if a["action"] == "signed"] == [
        ("resident", "preliminary"), ("radiologist", "final"), ("radiologist", "amended")]
    assert [a["role"] for a in trail if a["action"] == "refused"] == ["resident"]

    time.sleep(5)  # anything sent twice, or sent for a refused request, would have arrived by now

    # The RIS: three ORU^R01 for this patient, P, F, C in order, each naming its signer.
    messages = [m for m in peers.ris.messages() if str(m.segment("PID")(3)).split("^")[0] == patient_id]
    assert [str(m.segment("MSH")(9)) for m in messages] == ["ORU^R01^ORU_R01"] * 3
    assert [str(m.segment("OBR")(25)) for m in messages] == ["P", "F", "C"]
    assert [str(m.segment("OBR")(32)).split("&")[:3] for m in messages] == [
        ["res-101", "Resident", "Rex"], ["att-202", "Attending", "Ann"], ["att-202", "Attending", "Ann"]]
    assert str(messages[1].segment("OBR")(33)).split("&")[:3] == ["res-101", "Resident", "Rex"]  # the co-signed resident
    assert len({str(m.segment("MSH")(10)) for m in messages}) == 3
    for version, message in enumerate(messages, start=1):
        findings = [str(o(5)) for o in message.segments("OBX") if str(o(3)).startswith("59776-5")]
        impression = [str(o(5)) for o in message.segments("OBX") if str(o(3)).startswith("19005-8")]
        assert (findings, impression) == ([SIGNED_TEXT[version][0]], [SIGNED_TEXT[version][1]])
        assert {str(o(11)) for o in message.segments("OBX")} == {"PFC"[version - 1]}
    assert not PSEUDONYM.search("".join(str(m) for m in messages))

    # The EHR: one DiagnosticReport whose history holds the draft and each signed version once.
    fhir = peers.fhir
    (dr,) = [r for r in fhir.all("DiagnosticReport") if r.get("subject", {}).get("identifier", {}).get("value") == patient_id]
    history = httpx.get(f"{fhir.base_url}/DiagnosticReport/{dr['id']}/_history", timeout=10).json()
    draft, *signed = [e["resource"] for e in reversed(history["entry"])]
    assert [draft["status"], *(v["status"] for v in signed)] == ["preliminary", "preliminary", "final", "amended"]
    assert "performer" not in draft  # the AI's draft: no signer; its version id is the draft's own
    assert {e["url"]: e["valueIdentifier"]["value"] for e in draft["extension"]} == {VERSION_EXT: f"{report_id}-d1"}
    interpreters = {1: [("res-101", "Rex Resident")], 2: [("att-202", "Ann Attending"), ("res-101", "Rex Resident")], 3: [("att-202", "Ann Attending")]}
    for version, dr_version in enumerate(signed, start=1):
        signer = interpreters[version][0]
        extensions = {e["url"]: e["valueIdentifier"]["value"] for e in dr_version["extension"]}
        # each signed version replaces the one before it; the first, the draft it was signed from
        assert extensions == {VERSION_EXT: f"{report_id}-v{version}", REPLACES_EXT: f"{report_id}-v{version - 1}" if version > 1 else f"{report_id}-d1"}
        assert _signers(dr_version["performer"]) == [signer] and _signers(dr_version["resultsInterpreter"]) == interpreters[version]
        assert dr_version["conclusion"] == SIGNED_TEXT[version][1]
        assert sorted(c["text"] for c in dr_version["conclusionCode"]) == sorted(f for f, v in STATED[version].items() if v == "Present")
        # the coded results of this version: the Observations it references, as stored with it
        coded = {}
        for ref in dr_version["result"]:
            obs_id = ref["reference"].split("/")[1]
            (obs,) = [o for o in fhir.versions("Observation", obs_id) if o["issued"] == dr_version["issued"]]
            assert obs["status"] == dr_version["status"] and _signers(obs["performer"]) == [signer]
            coded[obs["code"]["text"]] = obs["valueCodeableConcept"]["text"]
        assert coded == STATED[version], f"version {version}: the coded results differ from the signed text"
    assert not PSEUDONYM.search(json.dumps(history)) and not fhir.rejected

    # The PACS: one SR per version in the study (the draft's and one per signed version), linked.
    if not peers.orthanc:
        import warnings

        warnings.warn("Orthanc is not installed (apt-get install orthanc): the PACS part of the signed-record test was skipped", stacklevel=1)
        return
    from radalign.stack import orthanc

    pacs = orthanc.http_url(settings)
    (orthanc_study,) = httpx.post(f"{pacs}/tools/find", json={"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}, timeout=10).json()
    series = [s for s in httpx.get(f"{pacs}/studies/{orthanc_study}/series", timeout=10).json() if s["MainDicomTags"].get("Modality") == "SR"]
    raws = [httpx.get(f"{pacs}/instances/{i}/file", timeout=10).content for s in series for i in s["Instances"]]
    # the report's text SRs; the AI results SR (TID 1500, Comprehensive 3D SR) sits beside the draft's
    comprehensive_3d = "1.2.840.10008.5.1.4.1.1.88.34"
    texts = [raw for raw in raws if pydicom.dcmread(BytesIO(raw), stop_before_pixels=True).SOPClassUID != comprehensive_3d]
    assert len(raws) - len(texts) <= 1, "at most one AI results SR, the draft's"
    raws = texts
    srs = {read_sr_text(raw)["findings"]: pydicom.dcmread(BytesIO(raw)) for raw in raws}
    assert len(raws) == 4 and len({ds.SOPInstanceUID for ds in srs.values()}) == 4, sorted(srs)
    sr1, sr2, sr3 = (srs.pop(SIGNED_TEXT[v][0]) for v in (1, 2, 3))
    (sr_draft,) = srs.values()
    assert (sr_draft.VerificationFlag, sr_draft.CompletionFlag, _sr_predecessor(sr_draft), _sr_people(sr_draft)) == ("UNVERIFIED", "PARTIAL", None, [])
    assert (sr1.VerificationFlag, sr1.PreliminaryFlag, sr1.CompletionFlag) == ("UNVERIFIED", "PRELIMINARY", "COMPLETE")
    # the first signed version replaces the AI's draft SR the PACS holds; each later one the version before
    assert _sr_predecessor(sr1) == sr_draft.SOPInstanceUID and _sr_people(sr1) == ["Resident^Rex"]
    for sr, earlier, people in ((sr2, sr1, ["Attending^Ann", "Resident^Rex"]), (sr3, sr2, ["Attending^Ann"])):
        assert (sr.VerificationFlag, sr.PreliminaryFlag, sr.CompletionFlag) == ("VERIFIED", "FINAL", "COMPLETE")
        verifier = sr.VerifyingObserverSequence[0]
        assert str(verifier.VerifyingObserverName) == "Attending^Ann" and verifier.VerifyingObserverIdentificationCodeSequence[0].CodeValue == "att-202"
        assert _sr_predecessor(sr) == earlier.SOPInstanceUID and _sr_people(sr) == people
    for sr in (sr_draft, sr1, sr2, sr3):
        assert sr.StudyInstanceUID == study_uid and sr.PatientID == patient_id


def test_the_senders_ids_reach_no_log_after_review_and_delivery(review_stack: Settings) -> None:
    """After the studies above were drafted, signed and delivered to the PACS, the FHIR server and
    the RIS, no worker's log holds the ids their sender typed (free-text study ids were once
    written as the SR's StudyInstanceUID and echoed by pydicom's warnings)."""
    secrets = ["IT-REVIEW-R", "IT-REVIEW-S", "IT-PAT-R", "IT-PAT-S"]
    logs = sorted((review_stack.state_dir / "logs").glob("*.log"))
    assert logs, "the workers write their logs under the state folder"
    found = sorted({f"{log.name}: {s}" for log in logs for s in secrets if s in log.read_text(errors="replace")})
    assert not found, f"sender ids in the logs: {found}"
