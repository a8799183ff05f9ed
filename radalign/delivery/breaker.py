"""A circuit breaker per destination: stop hammering a destination that keeps failing.

closed    every send goes out; `failures_to_open` consecutive failures open the circuit.
open      nothing is sent for `cooldown_s` (the destination's queue waits, or expires into the
          dead-letter topic); then one probe is let through (half-open).
half-open the probe's success closes the circuit (and the lane catches up on what it parked);
          its failure opens it again for another cool-down.

A refusal of the content (a 4xx, a C-STORE refusal) is the destination answering, so it counts as
a success here: only "no answer" failures (timeouts, connection errors, 5xx) open the circuit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, failures_to_open: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if failures_to_open < 1 or cooldown_s <= 0:
            raise ValueError("a breaker needs at least one failure to open and a positive cool-down")
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        """May a send go out now? In half-open, only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def release(self) -> None:
        """The probe found nothing to send: let the next one try."""
        self._probing = False

    def retry_in(self) -> float:
        """Seconds until the next probe may go out (0 when closed)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def success(self) -> bool:
        """Record an answer; True when this closed an open circuit (time to catch up)."""
        reopened = self._opened_at is not None
        self._failures, self._opened_at, self._probing = 0, None, False
        return reopened

    def failure(self) -> bool:
        """Record a failed send; True when this opened the circuit."""
        self._failures += 1
        if self._opened_at is not None:  # the half-open probe failed: another cool-down
            self._opened_at, self._probing = self._clock(), False
            return False
        if self._failures >= self.failures_to_open:
            self._opened_at = self._clock()
            return True
        return False
