"""STAT first inside one worker: while a STAT record is in flight, no new routine record starts.

Separate lanes (topics and agents) keep STAT records from queueing behind routine ones in Kafka,
but inside one worker both lanes share the same cores: with a routine backlog, every routine
record the worker starts while a STAT record is in flight competes with it for the CPU (and for
Triton). `radalign bench` measured STAT at 2-4x its idle turnaround under a 1,000-study routine
backlog on 2 cores. Routine records already started finish; new ones wait for the STAT lane to be
idle. STAT studies are a few per cent of the volume, so routine work is not starved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class StatFirst:
    def __init__(self) -> None:
        self._stat_in_flight = 0
        self._no_stat = asyncio.Event()
        self._no_stat.set()

    @property
    def stat_in_flight(self) -> int:
        return self._stat_in_flight

    @asynccontextmanager
    async def stat(self) -> AsyncIterator[None]:
        """Hold while processing a STAT record: routine records wait meanwhile."""
        self._stat_in_flight += 1
        self._no_stat.clear()
        try:
            yield
        finally:
            self._stat_in_flight -= 1
            if self._stat_in_flight == 0:
                self._no_stat.set()

    async def routine_turn(self) -> None:
        """Return when no STAT record is in flight (at once when none is)."""
        await self._no_stat.wait()
