"""Bounded retries with exponential backoff and jitter for every outside call (tenacity)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from radalign.config import Settings
from radalign.framework import metrics

T = TypeVar("T")


class PermanentError(Exception):
    """An error that retrying cannot fix (bad input); goes straight to the dead-letter topic."""

    def __init__(self, reason: str, error_type: str = "processing") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


class DependencyUnavailable(Exception):
    """An outside dependency (Triton, PostgreSQL, LLM, blob store) failed after every retry."""


async def call_with_retry(
    what: str,
    call: Callable[[], Awaitable[T]],
    settings: Settings,
    *,
    stage: str,
    timeout_s: float,
    attempts: int | None = None,
) -> T:
    """Run `call` with a per-attempt timeout; retry transient failures, never PermanentError."""

    def _log_retry(state) -> None:  # noqa: ANN001 - tenacity's RetryCallState
        metrics.RETRIES.labels(stage=stage, dependency=what).inc()

    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts or settings.retry_attempts),
            wait=wait_random_exponential(multiplier=settings.retry_base_delay_s, max=settings.retry_max_delay_s),
            retry=retry_if_exception(lambda e: not isinstance(e, PermanentError)),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                return await asyncio.wait_for(call(), timeout=timeout_s)
    except PermanentError:
        raise
    except Exception as exc:  # every retry spent: the caller dead-letters the record
        raise DependencyUnavailable(f"{what} failed after retries: {type(exc).__name__}: {exc}"[:1000]) from exc
    raise AssertionError("unreachable")  # pragma: no cover
