"""The review web app over an in-memory store: auth, pages, sign-off, the outbox. (The real
database, broker and browser: tests/integration/test_review_browser.py.)"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from review_helpers import drafted

from radalign.blobstore import LocalBlobStore
from radalign.config import Settings
from radalign.ingest.images import encode_npy
from radalign.review.core import ReviewCore
from radalign.review.store import VersionConflict
from schemas.events import BlobRef, ReportDrafted, ReportFinal
from services.review.app import SESSION_COOKIE, build_review_app, session_codec

TOKEN = "tok-review"


class MemoryStore:
    """The ReviewStore methods the core uses, in memory."""

    def __init__(self, drafts: list[ReportDrafted], image: BlobRef | None) -> None:
        self.drafts = {d.study.study_key: d for d in drafts}
        self.image = image
        self.signed: dict[tuple[str, int], tuple[ReportFinal, str, bool]] = {}
        self.audits: list[tuple] = []

    async def unsigned_drafts(self, limit: int = 500) -> list[ReportDrafted]:
        signed = {k for (k, _), (f, _, _) in self.signed.items() if f.status != "preliminary"}
        return [d for k, d in self.drafts.items() if k not in signed]

    async def latest_draft(self, study_key: str) -> ReportDrafted | None:
        return self.drafts.get(study_key)

    async def model_input(self, study_key: str, pipeline_version: str) -> BlobRef | None:
        return self.image

    async def cases(self, case_keys: list[str]) -> dict:
        return {k: {"source": "iu-openi", "findings": "Heart size normal.", "impression": "No acute disease."} for k in case_keys}

    async def finals(self, study_key: str) -> list:
        return [(f, who) for (k, _), (f, who, _) in sorted(self.signed.items()) if k == study_key]

    async def history(self, study_key: str) -> list[tuple[int, str]]:
        return [(v, f.status) for (k, v), (f, _, _) in sorted(self.signed.items()) if k == study_key]

    async def next_version(self, study_key: str) -> int:
        return 1 + sum(1 for k, _ in self.signed if k == study_key)

    async def insert_final(self, final: ReportFinal, *, signer_name: str, opened_at, draft_concepts) -> None:
        key = (final.study.study_key, final.version)
        if key in self.signed:
            raise VersionConflict("taken")
        self.signed[key] = (final, signer_name, False)

    async def mark_published(self, final_id: str) -> None:
        for key, (f, who, _) in self.signed.items():
            if f.final_id == final_id:
                self.signed[key] = (f, who, True)

    async def unpublished(self, limit: int = 100) -> list[ReportFinal]:
        return [f for f, _, published in self.signed.values() if not published]

    async def audit(self, action, study_key, reviewer_key, role, via, detail) -> None:
        self.audits.append((action, study_key, reviewer_key, role, via, detail))

    async def audit_trail(self, study_key: str) -> list[dict]:
        return [{"action": a, "reviewer_key": k, "role": r, "via": v, "detail": d} for a, s, k, r, v, d in self.audits if s == study_key]

    async def queue(self) -> tuple[int, float]:
        return len(await self.unsigned_drafts()), 0.0


class Publisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, ReportFinal, str | None]] = []
        self.down = False

    async def publish(self, spec, event, *, traceparent=None, ev_id=None) -> None:
        if self.down:
            raise ConnectionError("broker down (simulated)")
        self.events.append((spec.name, event, ev_id))


@pytest.fixture
async def env(tmp_path: Path):
    settings = Settings(state_dir=tmp_path, gateway_tokens=TOKEN, deid_secret="unit-secret", retry_attempts=1, retry_base_delay_s=0.01)
    blobs = LocalBlobStore(tmp_path / "blobs")
    ref = blobs.put(encode_npy(np.full((1, 224, 224), 0.5, dtype=np.float32)), "application/x-npy")
    store = MemoryStore([drafted("st-routine0000001"), drafted("st-stat000000001", priority="stat")], ref)
    publisher = Publisher()
    core = ReviewCore(settings, store, blobs, publisher)  # type: ignore[arg-type]
    client = TestClient(TestServer(build_review_app(core, settings)))
    await client.start_server()
    try:
        yield client, store, publisher, core
    finally:
        await client.close()


CSRF = "csrf-unit"


def _session(name: str = "Dr Unit", role: str = "radiologist", identifier: str = "", secret: str = "unit-secret") -> dict[str, str]:
    """A session cookie as the review app seals it (the env fixture's deid_secret derives the key)."""
    data = {"name": name, "role": role, "identifier": identifier, "identifier_system": "urn:radalign:reviewer", "csrf": CSRF, "via": "token"}
    return {SESSION_COOKIE: session_codec(Settings(deid_secret=secret)).seal(data)}


async def test_pages_need_the_read_token(env):
    client, *_ = env
    r = await client.get("/api/worklist")
    assert r.status == 401 and r.content_type == "application/problem+json"
    r = await client.get("/", headers={"Accept": "text/html"}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/login")
    r = await client.get("/api/worklist", headers={"Authorization": "Bearer nope"})
    assert r.status == 401
    r = await client.get("/api/worklist", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200 and [i["study_key"] for i in await r.json()] == ["st-stat000000001", "st-routine0000001"]
    r = await client.get("/api/worklist", cookies=_session(secret="another-key"))  # forged: sealed with another key
    assert r.status == 401
    r = await client.get("/api/worklist", cookies={SESSION_COOKIE: "eyJuYW1lIjoiRHIgVW5pdCJ9"})  # the old unsealed JSON cookie
    assert r.status == 401


async def test_login_refuses_a_bad_token_and_sets_a_strict_cookie(env):
    client, *_ = env
    r = await client.post("/login", data={"name": "Dr Unit", "role": "radiologist", "token": "bad", "next": "/"}, allow_redirects=False)
    assert r.status == 401 and "not valid" in await r.text()
    r = await client.post("/login", data={"name": "Dr Unit", "role": "radiologist", "token": TOKEN, "next": "//evil.example"},
                          allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


async def test_worklist_and_study_pages_render(env):
    client, *_ = env
    html = await (await client.get("/", cookies=_session())).text()
    assert html.index("st-stat000000001") < html.index("st-routine0000001") and "STAT" in html
    html = await (await client.get("/studies/st-routine0000001", cookies=_session())).text()
    assert 'id="film"' in html and "Cardiomegaly" in html and "not assessed" in html and 'name="report_id"' in html
    assert "Heart size normal." in html  # the retrieved case's report
    assert "at least 84% of 32 films" in html  # the claim's measured precision, beside the claim
    r = await client.get("/studies/st-routine0000001/image.png", cookies=_session())
    assert r.status == 200 and r.content_type == "image/png"
    assert (await client.get("/studies/st-unknown00000001", cookies=_session())).status == 404
    assert (await client.get("/studies/st-routine0000001/heatmaps/14.png", cookies=_session())).status == 404


async def test_sign_publishes_the_final_report_and_the_outbox_retries_a_failed_publish(env):
    client, store, publisher, core = env
    draft = store.drafts["st-routine0000001"]
    form = {"findings": draft.findings, "impression": draft.impression, "report_id": draft.report_id, "csrf": CSRF,
            "opened_at": datetime(2026, 11, 30, 12, 1, tzinfo=UTC).isoformat()}
    assert (await client.post("/studies/st-routine0000001/sign", data=form, headers={"Authorization": f"Bearer {TOKEN}"})).status == 401
    r = await client.post("/studies/st-routine0000001/sign", data=form, cookies=_session())
    assert r.status == 201 and (await r.json())["published"] is True
    topic, final, ev_id = publisher.events[0]
    assert topic == "radalign.report.final.v1" and final.accepted_unchanged and final.version == 1 and ev_id
    assert "Dr Unit" not in final.model_dump_json()
    # The study left the worklist; a stale form (another draft id) is refused.
    assert [i["study_key"] for i in await (await client.get("/api/worklist", cookies=_session())).json()] == ["st-stat000000001"]
    stale = form | {"report_id": "other"}
    assert (await client.post("/studies/st-routine0000001/sign", data=stale, cookies=_session())).status == 409
    # An amendment while the broker is down: stored, reported pending, published by the outbox.
    publisher.down = True
    r = await client.post("/studies/st-routine0000001/sign", data=form | {"impression": "Amended impression."}, cookies=_session())
    assert r.status == 201 and (await r.json())["published"] is False
    publisher.down = False
    assert await core.flush_outbox() == 1
    amended = publisher.events[-1][1]
    assert amended.version == 2 and amended.status == "amended" and publisher.events[-1][2] != ev_id
    r = await client.post("/studies/st-stat000000001/sign", data={"findings": " ", "impression": "x", "report_id": "x", "csrf": CSRF}, cookies=_session())
    assert r.status in (409, 422)


async def test_resident_preliminary_waits_for_the_attendings_cosignature_then_amendments(env):
    from radalign.review.signers import StaticSigners

    client, store, publisher, core = env
    core.signers = StaticSigners()
    draft = store.drafts["st-routine0000001"]
    form = {"findings": draft.findings, "impression": draft.impression, "report_id": draft.report_id, "csrf": CSRF}
    r = await client.post("/studies/st-routine0000001/sign", data=form, cookies=_session("Rex Resident", role="resident", identifier="res-7"))
    body = await r.json()
    assert r.status == 201 and body["status"] == "preliminary" and body["replaces_version"] is None
    # still on the worklist: an attending's co-signature is due; the editor starts from the signed text
    keys = [i["study_key"] for i in await (await client.get("/api/worklist", cookies=_session())).json()]
    assert "st-routine0000001" in keys
    page = await (await client.get("/studies/st-routine0000001", cookies=_session())).text()
    assert "Co-sign as Dr Unit" in page
    r = await client.post("/studies/st-routine0000001/sign", data=form | {"impression": "Cosigned."}, cookies=_session("Ann Attending", identifier="att-1"))
    body = await r.json()
    assert body["status"] == "final" and body["version"] == 2 and body["replaces_version"] == 1
    keys = [i["study_key"] for i in await (await client.get("/api/worklist", cookies=_session())).json()]
    assert "st-routine0000001" not in keys
    # a resident may not change the released report; an attending's change is a correction when asked
    r = await client.post("/studies/st-routine0000001/sign", data=form, cookies=_session("Rex Resident", role="resident", identifier="res-7"))
    assert r.status == 422 and "only an attending" in (await r.json())["detail"]
    r = await client.post("/studies/st-routine0000001/sign", data=form | {"change": "corrected"}, cookies=_session("Ann Attending", identifier="att-1"))
    assert (await r.json())["status"] == "corrected"
    statuses = [(e.version, e.status, e.replaces_version, e.signer_role.value) for _, e, _ in publisher.events]
    assert statuses == [(1, "preliminary", None, "resident"), (2, "final", 1, "radiologist"), (3, "corrected", 2, "radiologist")]
    # the pseudonym -> signer mapping was recorded; the events carry pseudonyms only
    resident = await core.signers.lookup(publisher.events[0][1].signer_key)
    assert resident.display_name == "Rex Resident" and resident.identifier == "res-7" and resident.role == "resident"
    assert all("Attending" not in e.model_dump_json() and "res-7" not in e.model_dump_json() for _, e, _ in publisher.events)


async def test_the_session_cookie_is_sealed_holds_no_token_expires_and_guards_every_post(env):
    import time

    client, store, publisher, core = env
    r = await client.post("/login", data={"name": "Dr Unit", "identifier": "du-1", "role": "radiologist", "token": TOKEN},
                          allow_redirects=False)
    cookie = r.cookies[SESSION_COOKIE].value
    session = session_codec(Settings(deid_secret="unit-secret")).open(cookie)
    assert session["name"] == "Dr Unit" and session["csrf"] and TOKEN not in cookie and TOKEN not in json.dumps(session)
    with pytest.raises(ValueError):
        base64.urlsafe_b64decode(cookie.encode()).decode("utf-8")  # not readable without the key
    draft = store.drafts["st-routine0000001"]
    form = {"findings": draft.findings, "impression": draft.impression, "report_id": draft.report_id}
    jar = {SESSION_COOKIE: cookie}
    # every state-changing route needs the session's CSRF token (and a same-site Origin)
    assert (await client.post("/studies/st-routine0000001/sign", data=form, cookies=jar)).status == 403
    assert (await client.post("/studies/st-routine0000001/sign", data=form | {"csrf": "guess"}, cookies=jar)).status == 403
    cross = await client.post("/studies/st-routine0000001/sign", data=form | {"csrf": session["csrf"]}, cookies=jar,
                              headers={"Origin": "https://evil.example"})
    assert cross.status == 403 and publisher.events == []
    assert (await client.post("/logout", cookies=jar, allow_redirects=False)).status == 403
    r = await client.post("/studies/st-routine0000001/sign", data=form | {"csrf": session["csrf"]}, cookies=jar)
    assert r.status == 201
    # idle and absolute timeouts
    codec = session_codec(Settings(deid_secret="unit-secret"))
    idle = codec.seal({"name": "Dr Unit", "role": "radiologist", "csrf": CSRF, "iat": time.time() - 3600}, now=time.time() - 3600)
    assert (await client.get("/api/worklist", cookies={SESSION_COOKIE: idle})).status == 401
    stale = codec.seal({"name": "Dr Unit", "role": "radiologist", "csrf": CSRF, "iat": time.time() - 13 * 3600})
    assert (await client.get("/api/worklist", cookies={SESSION_COOKIE: stale})).status == 401
    out = await client.post("/logout", data={"csrf": session["csrf"]}, cookies=jar, allow_redirects=False)
    assert out.status == 303 and out.cookies[SESSION_COOKIE].value == ""


async def test_the_audit_trail_records_who_opened_and_who_signed(env):
    client, store, publisher, core = env
    await client.get("/studies/st-routine0000001", cookies=_session("Rex Resident", role="resident", identifier="res-7"))
    draft = store.drafts["st-routine0000001"]
    form = {"findings": draft.findings, "impression": draft.impression, "report_id": draft.report_id, "csrf": CSRF}
    await client.post("/studies/st-routine0000001/sign", data=form, cookies=_session("Rex Resident", role="resident", identifier="res-7"))
    trail = (await (await client.get("/api/studies/st-routine0000001/audit", cookies=_session())).json())["audit"]
    assert [(a["action"], a["role"]) for a in trail] == [("opened", "resident"), ("signed", "resident")]
    assert trail[1]["reviewer_key"] == publisher.events[0][1].signer_key and trail[1]["detail"]["status"] == "preliminary"


async def test_outside_dev_the_form_login_is_off_without_an_identity_provider(tmp_path):
    settings = Settings(env="production", state_dir=tmp_path, gateway_tokens="ingest-" + "x" * 8, read_tokens="read-" + "y" * 8,
                        dicom_allowed_aes="PACS", deid_secret="z" * 40)
    core = ReviewCore(settings, MemoryStore([], None), None, Publisher())  # type: ignore[arg-type]
    async with TestClient(TestServer(build_review_app(core, settings))) as client:
        assert (await client.get("/login")).status == 503
        r = await client.post("/login", data={"name": "Mallory", "role": "radiologist", "token": "read-" + "y" * 8})
        assert r.status == 404


def _edited(cookie: str, part: int) -> str:
    """The sealed cookie with one character of its `part`-th JWE segment changed (3: ciphertext, 4: tag)."""
    segments = cookie.split(".")
    text = segments[part]
    i = len(text) // 2
    segments[part] = text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1:]
    return ".".join(segments)


async def test_an_edited_or_forged_cookie_a_missing_csrf_token_and_a_role_that_may_not_sign_are_refused(env):
    """The legal record's guards, each on its own: nothing is signed by any refused request."""
    client, store, publisher, core = env
    draft = store.drafts["st-routine0000001"]
    form = {"findings": draft.findings, "impression": draft.impression, "report_id": draft.report_id, "csrf": CSRF}
    sign = "/studies/st-routine0000001/sign"
    attending = _session("Ann Attending", identifier="att-1")[SESSION_COOKIE]
    assert (await client.get("/api/worklist", cookies={SESSION_COOKIE: attending})).status == 200
    # an edited cookie (one character of the ciphertext or of the authentication tag) is no session
    for part in (3, 4):
        edited = {SESSION_COOKIE: _edited(attending, part)}
        assert (await client.get("/api/worklist", cookies=edited)).status == 401
        assert (await client.post(sign, data=form, cookies=edited)).status == 401
    # a forged one: a well-formed session claiming an attending, sealed with another key
    forged = _session("Mallory", identifier="att-1", secret="not-the-review-key")
    assert (await client.post(sign, data=form, cookies=forged)).status == 401
    # a valid session without the form's CSRF token
    r = await client.post(sign, data={k: v for k, v in form.items() if k != "csrf"}, cookies={SESSION_COOKIE: attending})
    assert r.status == 403 and "CSRF" in (await r.json())["detail"]
    # roles: the form login knows only reviewer roles; a session without one (sealed with the key
    # but holding another role, or none) signs nothing, and never defaults to an attending
    r = await client.post("/login", data={"name": "Carl Clerk", "role": "clerk", "token": TOKEN}, allow_redirects=False)
    assert r.status == 400 and SESSION_COOKIE not in r.cookies
    for role in ("clerk", ""):
        r = await client.post(sign, data=form, cookies=_session("Carl Clerk", role=role, identifier="clerk-1"))
        assert r.status == 403 and "no reviewer role" in (await r.json())["detail"]
    assert publisher.events == [] and store.signed == {}
    assert [(a[0], a[3], a[5].get("reason")) for a in store.audits] == [("refused", "clerk", "no reviewer role"), ("refused", "", "no reviewer role")]
    # the same attending's session, intact and with the token, signs
    r = await client.post(sign, data=form, cookies={SESSION_COOKIE: attending})
    assert r.status == 201 and (await r.json())["status"] == "final"
