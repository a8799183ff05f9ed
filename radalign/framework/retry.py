"""The one retry policy: exponential backoff with jitter (tenacity) for every outside call.

`call_with_retry` bounds the attempts (a record's processing: then it is dead-lettered);
`retry_until_done` never gives up (a worker's start-up, waiting for a dependency to come up).
Both back off the same way, from the settings' `retry_base_delay_s` / `retry_max_delay_s`.
`Backoff` is the delay of a supervised loop that never ends (the study assembler, its restarts,
the stack supervisor): doubled after each failure, back to the start after a success.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_never, wait_random_exponential

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


@dataclass(frozen=True)
class Backoff:
    """Doubling delays between `start_s` and `max_s` for a supervised loop (no jitter: one loop
    per process, nothing to spread out)."""

    start_s: float
    max_s: float

    def after_failure(self, delay_s: float) -> float:
        """The next delay after a failure, when the last one was `delay_s`."""
        return min(self.max_s, max(self.start_s, delay_s * 2))


def backoff(settings: Settings, max_delay_s: float | None = None) -> wait_random_exponential:
    return wait_random_exponential(multiplier=settings.retry_base_delay_s, max=max_delay_s or settings.retry_max_delay_s)


def bounded_retrying(
    *,
    attempts: int,
    base_delay_s: float,
    max_delay_s: float,
    retry_on: Callable[[BaseException], bool],
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """The policy itself, for callers that keep their own error types (the LLM backends): at most
    `attempts` tries, full-jitter exponential backoff, the last error re-raised."""
    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=base_delay_s, max=max_delay_s),
        retry=retry_if_exception(retry_on),
        before_sleep=before_sleep,
        reraise=True,
    )


async def retry_until_done(
    what: str,
    call: Callable[[], Awaitable[T]],
    settings: Settings,
    *,
    on_failure: Callable[[BaseException], None],
    max_delay_s: float = 30.0,
) -> T:
    """Run `call` until it succeeds, backing off up to `max_delay_s` between attempts; each
    failure is reported to `on_failure` (readiness shows it meanwhile)."""

    def _report(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            on_failure(exc)

    async for attempt in AsyncRetrying(stop=stop_never, wait=backoff(settings, max_delay_s), before_sleep=_report, reraise=True):
        with attempt:
            return await call()
    raise AssertionError(f"{what}: unreachable")  # pragma: no cover


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

    def _log_retry(state: RetryCallState) -> None:
        metrics.RETRIES.labels(stage=stage, dependency=what).inc()

    try:
        async for attempt in bounded_retrying(
            attempts=attempts or settings.retry_attempts,
            base_delay_s=settings.retry_base_delay_s,
            max_delay_s=settings.retry_max_delay_s,
            retry_on=lambda e: not isinstance(e, PermanentError),
            before_sleep=_log_retry,
        ):
            with attempt:
                return await asyncio.wait_for(call(), timeout=timeout_s)
    except PermanentError:
        raise
    except Exception as exc:  # every retry spent: the caller dead-letters the record
        raise DependencyUnavailable(f"{what} failed after retries: {type(exc).__name__}: {exc}"[:1000]) from exc
    raise AssertionError("unreachable")  # pragma: no cover
