"""Time from a radiologist's sign-off to the final event on `radalign.report.final.v1`.

    .venv/bin/python benchmarks/review_signoff.py [--studies 30]

A private embedded broker + PostgreSQL (free ports, temp state folder); N drafted reports are
stored as the drafting stage stores them; the review app runs in this process on a real port and
each study is signed over HTTP (the form a browser posts), half accepted as drafted and half
edited. For each: POST -> 303 answer, POST -> final event read back by a consumer, and the
server's signed_at -> broker timestamp. Prints p50 / p95 / max of each, and, as the baseline in
the same run, a bare publish of the same event with the same producer (what the broker alone
costs). The browser test (tests/integration/test_review_browser.py) measures the same path with
Chromium's click on the Sign button.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import statistics
import time

import aiohttp
from aiohttp import web

from radalign.stack import down, up
from radalign.testing.stack import short_state_dir, stack_settings


def _pcts(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):7.1f} ms   p95 {p95:7.1f} ms   max {ordered[-1]:7.1f} ms"


async def run(settings, studies: int) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from radalign.blobstore import open_blob_store
    from radalign.db import open_pool
    from radalign.framework import codec
    from radalign.framework.producer import KafkaEventPublisher
    from radalign.reports.store import ReportStore
    from radalign.review.core import ReviewCore
    from radalign.review.store import ReviewStore
    from schemas.events import ReportDrafted, ReportFinal
    from schemas.examples import EXAMPLES
    from schemas.topics import REPORT_FINAL
    from services.review.app import SESSION_COOKIE, build_review_app

    pool = await open_pool(settings, name="bench")
    drafts = []
    for i in range(studies):
        payload = json.loads(json.dumps(EXAMPLES["report_drafted"][0]))
        payload["study"]["study_key"] = f"st-bench{i:012d}"
        payload["report_id"] = f"bench-report-{i}"
        drafts.append(ReportDrafted.model_validate(payload))
        await ReportStore(pool).upsert(drafts[-1])
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    parts = [TopicPartition(REPORT_FINAL.name, p) for p in (consumer.partitions_for_topic(REPORT_FINAL.name) or {0})]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    async with KafkaEventPublisher(settings, stage="review") as publisher:
        core = ReviewCore(settings, ReviewStore(pool), open_blob_store(settings.blob_root), publisher)
        runner = web.AppRunner(build_review_app(core, settings), access_log=None)
        await runner.setup()
        port = settings.web_port("review")
        await web.TCPSite(runner, "127.0.0.1", port).start()
        cookie = base64.urlsafe_b64encode(json.dumps({"name": "Bench Reader", "role": "radiologist", "token": ""}).encode()).decode()
        answer_ms, event_ms, broker_ms, bare_ms = [], [], [], []
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", cookies={SESSION_COOKIE: cookie}) as http:
            for i, draft in enumerate(drafts):
                findings = draft.findings + (" Small left pleural effusion." if i % 2 else "")
                form = {"findings": findings, "impression": draft.impression, "report_id": draft.report_id}
                begin = time.perf_counter()
                async with http.post(f"/studies/{draft.study.study_key}/sign", data=form, allow_redirects=False,
                                     headers={"Accept": "text/html"}) as r:
                    assert r.status == 303, await r.text()
                answer_ms.append(1000 * (time.perf_counter() - begin))
                while True:
                    batches = await consumer.getmany(timeout_ms=50)
                    found = [m for ms in batches.values() for m in ms if codec.decode(ReportFinal, m.value).report_id == draft.report_id]
                    if found:
                        event_ms.append(1000 * (time.perf_counter() - begin))
                        final = codec.decode(ReportFinal, found[0].value)
                        broker_ms.append(found[0].timestamp - final.signed_at.timestamp() * 1000)
                        break
                # Baseline: the same event published again by the same producer, read back the same way.
                begin = time.perf_counter()
                await publisher.publish(REPORT_FINAL, final, ev_id=f"bench-bare-{i}")
                while not any((await consumer.getmany(timeout_ms=50)).values()):
                    pass
                bare_ms.append(1000 * (time.perf_counter() - begin))
        await runner.cleanup()
    await consumer.stop()
    await pool.close()
    print(f"{studies} sign-offs (half edited), review app in-process, embedded tansu + PostgreSQL, 2 shared cores")
    print(f"  POST sign -> 303 answer           {_pcts(answer_ms)}")
    print(f"  POST sign -> final event read     {_pcts(event_ms)}")
    print(f"  signed_at -> broker timestamp     {_pcts(broker_ms)}")
    print(f"  baseline: bare publish -> read    {_pcts(bare_ms)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=30)
    args = parser.parse_args()
    state = short_state_dir("radalign-bench-")
    settings = stack_settings(state)
    try:
        up(settings, ["broker", "postgres"])
        asyncio.run(run(settings, args.studies))
    finally:
        down(settings)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
