"""OpenAICompatibleBackend against a scripted OpenAI-compatible server on loopback (aiohttp)."""

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from drafting_helpers import make_event
from prometheus_client import REGISTRY

from radalign.config import Settings
from radalign.drafting.backends import DraftBackendError, OpenAICompatibleBackend
from radalign.drafting.context import DraftContext
from radalign.drafting.core import DraftingCore
from radalign.drafting.prompt import build_prompt
from schemas.events import Certainty, GuardVerdict, Observation

LABELS = {Observation.CARDIOMEGALY: Certainty.PRESENT, Observation.PLEURAL_EFFUSION: Certainty.ABSENT}
CASES = [("iu-1", "The heart is enlarged. No pleural effusion.", "Cardiomegaly.")]
GOOD_TEXT = "FINDINGS: The heart is enlarged. No pleural effusion.\nIMPRESSION: Cardiomegaly."
GOOD_JSON = json.dumps({"findings": "The heart is enlarged. No pleural effusion.", "impression": "Cardiomegaly."})


def chat_answer(content: str) -> dict:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 25},
    }


class ScriptedServer:
    """Each request takes the next step: ("json", body), ("status", code), ("sleep", s), ("raw", text)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, object]] = []
        self.requests: list[tuple[str, dict]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, await request.json()))
        kind, value = self.steps.pop(0) if self.steps else ("status", 500)
        if kind == "sleep":
            await asyncio.sleep(float(value))  # type: ignore[arg-type]
            return web.json_response(chat_answer(GOOD_TEXT))
        if kind == "status":
            return web.json_response({"error": {"message": "scripted"}}, status=int(value))
        if kind == "raw":
            return web.Response(text=str(value), content_type="application/json")
        return web.json_response(value)


@pytest.fixture
async def server() -> AsyncIterator[tuple[ScriptedServer, str]]:
    scripted = ScriptedServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", scripted.handle)
    app.router.add_post("/v1/completions", scripted.handle)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    yield scripted, str(test_server.make_url("/v1"))
    await test_server.close()


def backend_for(url: str, **kwargs) -> OpenAICompatibleBackend:
    options = {"timeout_s": 0.5, "max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.02} | kwargs
    return OpenAICompatibleBackend(url, "scripted-model", **options)


def prompt(form="chat"):
    return build_prompt(DraftContext.from_event(make_event(LABELS, CASES)), form=form)


def counter(name: str, labels: dict) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_structured_chat_answer(server):
    scripted, url = server
    scripted.steps = [("json", chat_answer(GOOD_JSON))]
    async with backend_for(url) as backend:
        draft = await backend.generate(prompt())
    assert (draft.findings, draft.impression) == ("The heart is enlarged. No pleural effusion.", "Cardiomegaly.")
    assert draft.completion_tokens == 25 and draft.drafter == "openai:scripted-model"
    path, body = scripted.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "scripted-model"
    assert body["response_format"]["type"] == "json_schema" and body["messages"][0]["role"] == "system"


async def test_refused_response_format_is_dropped_and_text_sections_parsed(server):
    scripted, url = server
    scripted.steps = [("status", 400), ("json", chat_answer(GOOD_TEXT)), ("json", chat_answer(GOOD_TEXT))]
    async with backend_for(url) as backend:
        first = await backend.generate(prompt())
        await backend.generate(prompt())
    assert first.impression == "Cardiomegaly."
    assert "response_format" in scripted.requests[0][1]
    assert "response_format" not in scripted.requests[1][1] and "response_format" not in scripted.requests[2][1]


async def test_completion_form_uses_completions_endpoint_with_stops(server):
    scripted, url = server
    scripted.steps = [("json", {"choices": [{"text": " The heart is enlarged.\nIMPRESSION: Cardiomegaly."}], "usage": {"completion_tokens": 9}})]
    async with backend_for(url) as backend:
        draft = await backend.generate(prompt("completion"))
    path, body = scripted.requests[0]
    assert path == "/v1/completions" and body["prompt"].endswith("FINDINGS: ") and "\n\n" in body["stop"]
    assert draft.findings == "The heart is enlarged." and draft.completion_tokens == 9


async def test_completion_that_stops_before_impression_gets_a_second_phase(server):
    scripted, url = server
    scripted.steps = [
        ("json", {"choices": [{"text": " The heart is enlarged."}], "usage": {"prompt_tokens": 100, "completion_tokens": 6}}),
        ("json", {"choices": [{"text": "Cardiomegaly."}], "usage": {"prompt_tokens": 107, "completion_tokens": 3}}),
    ]
    async with backend_for(url) as backend:
        draft = await backend.generate(prompt("completion"))
    assert (draft.findings, draft.impression) == ("The heart is enlarged.", "Cardiomegaly.")
    assert draft.completion_tokens == 9 and draft.prompt_tokens == 207
    assert scripted.requests[1][1]["prompt"].endswith("FINDINGS: The heart is enlarged.\nIMPRESSION: ")


async def test_5xx_is_retried_with_backoff(server):
    scripted, url = server
    scripted.steps = [("status", 503), ("status", 502), ("json", chat_answer(GOOD_TEXT))]
    before = counter("radalign_drafting_llm_retries_total", {"backend": "openai:scripted-model", "reason": "http_5xx"})
    async with backend_for(url) as backend:
        draft = await backend.generate(prompt())
    assert draft.impression == "Cardiomegaly." and len(scripted.requests) == 3
    assert counter("radalign_drafting_llm_retries_total", {"backend": "openai:scripted-model", "reason": "http_5xx"}) == before + 2


@pytest.mark.parametrize(
    ("steps", "reason", "requests"),
    [
        ([("status", 503)] * 3, "http_5xx", 3),
        ([("sleep", 1.0)] * 3, "timeout", 3),
        ([("json", chat_answer("The heart is big."))], "malformed", 1),
        ([("json", {"choices": []})], "malformed", 1),
        ([("raw", "not json at all")], "malformed", 1),
        ([("json", chat_answer('{"findings": "x"}'))], "malformed", 1),
        ([("status", 401)], "http_4xx", 1),
    ],
)
async def test_failures_fall_back_to_the_deterministic_drafter_and_are_counted(server, steps, reason, requests):
    scripted, url = server
    scripted.steps = list(steps)
    labels = {"backend": "openai:scripted-model", "reason": reason}
    before = counter("radalign_drafting_fallbacks_total", labels)
    backend = backend_for(url, structured_output=False)
    with pytest.raises(DraftBackendError) as raised:
        await backend.generate(prompt())
    assert raised.value.reason == reason and len(scripted.requests) == requests

    scripted.steps = list(steps)
    report = await DraftingCore(Settings(), backend).draft(make_event(LABELS, CASES))
    await backend.aclose()
    assert report.drafter == "deterministic" and report.guard.verdict is GuardVerdict.FELL_BACK
    assert reason in report.guard.changes[0]
    assert counter("radalign_drafting_fallbacks_total", labels) == before + 1


async def test_connection_refused_falls_back(unused_tcp_port):
    backend = backend_for(f"http://127.0.0.1:{unused_tcp_port}", max_retries=1)
    report = await DraftingCore(Settings(), backend).draft(make_event(LABELS, CASES))
    await backend.aclose()
    assert report.drafter == "deterministic" and "connect" in report.guard.changes[0]


async def test_concurrency_is_bounded(server):
    scripted, url = server
    in_flight, peak = 0, 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.json_response(chat_answer(GOOD_TEXT))

    scripted.handle = handle
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    async with backend_for(str(test_server.make_url("/v1")), concurrency=2) as backend:
        await asyncio.gather(*(backend.generate(prompt()) for _ in range(6)))
    await test_server.close()
    assert peak == 2
