"""The one retry policy: bounded for records, unbounded (with backoff) for a worker's start-up."""

from __future__ import annotations

from radalign.config import Settings
from radalign.framework.retry import retry_until_done


async def test_retry_until_done_keeps_trying_and_reports_each_failure():
    settings = Settings(retry_base_delay_s=0.001, retry_max_delay_s=0.002)
    calls: list[int] = []
    failures: list[str] = []

    async def comes_up_on_the_fifth_try() -> str:
        calls.append(1)
        if len(calls) < 5:
            raise ConnectionError(f"down {len(calls)}")
        return "up"

    result = await retry_until_done("db", comes_up_on_the_fifth_try, settings, on_failure=lambda e: failures.append(str(e)), max_delay_s=0.002)
    assert result == "up"
    assert len(calls) == 5
    assert failures == ["down 1", "down 2", "down 3", "down 4"]


def test_supervised_loops_back_off_by_doubling_within_bounds():
    from radalign.framework.retry import Backoff

    policy = Backoff(start_s=0.5, max_s=3.0)
    delays = [0.1]
    for _ in range(5):
        delays.append(policy.after_failure(delays[-1]))
    assert delays[1:] == [0.5, 1.0, 2.0, 3.0, 3.0]
