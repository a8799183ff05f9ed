"""The review service is a `Stage` like the others: the shared runner feeds it preprocessed
records (it records which model input each study was read from), dead-letters what it cannot
take with the shared builder, and serves the review app's routes and probes."""

from __future__ import annotations

import json

from aiohttp.test_utils import TestClient, TestServer
from test_review_app import MemoryStore, Publisher

from radalign.config import Settings
from radalign.framework import codec
from radalign.framework.faust_app import create_app
from radalign.framework.stage import Record, StageRunner
from radalign.review.core import ReviewCore
from schemas.events import DeadLetter, StudyPreprocessed
from schemas.examples import EXAMPLES
from services.review.agent import ReviewStage


class RecordingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__([], None)
        self.images: list[StudyPreprocessed] = []

    async def record_image(self, event: StudyPreprocessed) -> None:
        self.images.append(event)


def _stage(tmp_path) -> tuple[ReviewStage, RecordingStore, Settings]:
    settings = Settings(state_dir=tmp_path, read_tokens="read-1", deid_secret="unit-secret", retry_attempts=1, retry_base_delay_s=0.01)
    stage = ReviewStage(settings, learn=False)
    store = RecordingStore()
    stage.core = ReviewCore(settings, store, None, Publisher())  # type: ignore[arg-type]  # what setup() opens
    return stage, store, settings


async def test_the_runner_feeds_preprocessed_records_and_dead_letters_bad_ones(tmp_path):
    stage, store, settings = _stage(tmp_path)
    runner = StageRunner(stage, settings)
    good = json.dumps(EXAMPLES["study_preprocessed"][0]).encode()
    assert await runner.process(Record("radalign.study.preprocessed.v1", 0, 5, b"k", good, [])) == []
    assert [e.study.study_key for e in store.images] == [EXAMPLES["study_preprocessed"][0]["study"]["study_key"]]
    [letter] = await runner.process(Record("radalign.study.preprocessed.v1.stat", 1, 6, b"k", b"{not json", []))
    assert letter.topic == "radalign.dlq.review.v1"
    assert codec.decode(DeadLetter, letter.value).stage == "review"


async def test_the_runner_serves_the_review_app_behind_its_sign_in(tmp_path):
    stage, _, settings = _stage(tmp_path)
    app = create_app(stage, settings)
    app.web.init_server()
    web_app = app.web.web_app  # type: ignore[attr-defined]  # the aiohttp driver of faust's Web
    async with TestClient(TestServer(web_app)) as client:
        assert (await client.get("/health/live")).status == 200
        assert (await client.get("/api/worklist")).status == 401, "no session, no token"
        page = await client.get("/", headers={"Accept": "text/html"}, allow_redirects=False)
        assert page.status == 303 and page.headers["Location"].startswith("/login"), "the worklist, not Faust's index"
        listed = await client.get("/api/worklist", headers={"Authorization": "Bearer read-1"})
        assert listed.status == 200 and await listed.json() == []
    assert {task.name for task in stage.background_tasks()} == {"outbox", "case store", "gauges", "agreement"}
