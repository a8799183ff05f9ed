"""Inside one worker, a routine record does not start while a STAT record is in flight."""

from __future__ import annotations

import asyncio

from radalign.framework.lanes import StatFirst


def test_routine_waits_for_the_stat_record_and_runs_at_once_otherwise() -> None:
    async def scenario() -> list[str]:
        gate = StatFirst()
        order: list[str] = []
        await asyncio.wait_for(gate.routine_turn(), 0.1)  # no STAT in flight: no wait
        release = asyncio.Event()

        async def stat() -> None:
            async with gate.stat():
                order.append("stat started")
                await release.wait()
                order.append("stat done")

        async def routine() -> None:
            await gate.routine_turn()
            order.append("routine started")

        s = asyncio.create_task(stat())
        await asyncio.sleep(0)
        r = asyncio.create_task(routine())
        await asyncio.sleep(0.05)
        assert gate.stat_in_flight == 1 and not r.done()  # held back while STAT runs
        release.set()
        await asyncio.gather(s, r)
        return order

    assert asyncio.run(scenario()) == ["stat started", "stat done", "routine started"]


def test_two_stat_records_hold_routine_until_both_finish() -> None:
    async def scenario() -> bool:
        gate = StatFirst()
        async with gate.stat():
            async with gate.stat():
                pass
            blocked = not await _turn_within(gate, 0.05)
        return blocked and await _turn_within(gate, 0.05)

    assert asyncio.run(scenario()) is True


async def _turn_within(gate: StatFirst, seconds: float) -> bool:
    try:
        await asyncio.wait_for(gate.routine_turn(), seconds)
        return True
    except TimeoutError:
        return False
