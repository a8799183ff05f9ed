"""The benchmark's pure figures: expectations worked out by hand (or by numpy's definition),
never by calling the code under test."""

from __future__ import annotations

import math

import pytest

from radalign.bench.stats import (
    busy_cpu_s,
    by_lane,
    component_of,
    cpu_bound,
    latency_summary,
    percentile,
    process_cpu_s,
    rate,
    ratios,
    shared_core_bound,
    stat_vs_idle,
    steady_rate,
    time_series,
)


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # sorted 1 2 3 4; position (n-1)*q
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile(values, 95) == pytest.approx(3.85)  # 3 + 0.85 * (4 - 3)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_percentile_matches_numpy() -> None:
    np = pytest.importorskip("numpy")
    values = [0.31, 2.7, 0.05, 9.9, 1.1, 1.1, 4.2]
    for q in (1, 50, 95, 99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_latency_summary_and_lanes() -> None:
    summary = latency_summary([1.0, 2.0, 3.0])
    assert summary["n"] == 3 and summary["p50"] == 2.0 and summary["max"] == 3.0
    lanes = by_lane([("stat", 1.0), ("routine", 5.0), ("stat", 3.0)])
    assert list(lanes) == ["routine", "stat"]
    assert lanes["stat"]["p50"] == 2.0 and lanes["routine"]["n"] == 1


def test_shared_core_bound_is_the_reciprocal_of_summed_costs() -> None:
    # 10/s costs 0.1 s a study, 40/s 0.025 s: together 0.125 s, i.e. 8 studies/s
    assert shared_core_bound({"a": 10.0, "b": 40.0}) == pytest.approx(8.0)
    with pytest.raises(ValueError):
        shared_core_bound({"a": 0.0})


def test_ratios_name_the_slowest_stage() -> None:
    r = ratios(6.0, {"gateway": 200.0, "concepts": 10.0, "delivery": 40.0})
    assert r.slowest_stage == "concepts" and r.vs_slowest == pytest.approx(0.6)
    # bound: 1 / (1/200 + 1/10 + 1/40) = 1 / 0.13 = 7.6923
    assert r.shared_bound == pytest.approx(7.6923, rel=1e-4)
    assert r.vs_shared_bound == pytest.approx(6.0 / 7.6923, rel=1e-4)


def test_time_series_keeps_empty_bins() -> None:
    series = time_series([(100.2, 1.0), (100.7, 3.0), (102.5, 2.0)], start=100.0, bin_s=1.0)
    assert [b["completed"] for b in series] == [2, 0, 1]
    assert series[0]["latency_p50"] == 2.0 and math.isnan(series[1]["latency_p50"])
    assert series[2]["t"] == 2.5


def test_stat_vs_idle_target() -> None:
    ok = stat_vs_idle({"p50": 2.0, "p99": 4.0}, {"p50": 3.0, "p99": 8.0})
    assert ok["p50_ratio"] == 1.5 and ok["p99_ratio"] == 2.0 and ok["within_target"] is True
    assert stat_vs_idle({"p50": 2.0, "p99": 4.0}, {"p50": 5.0, "p99": 4.0})["within_target"] is False


def test_stage_waits_split_queueing_from_work() -> None:
    from radalign.bench.stats import mean_by_key, stage_waits

    # received at 100; preprocess 100.5-100.7; its sub-part ignored; concepts 101.7-102.0; delivered 103
    waits = stage_waits(100.0, [("preprocess", 100.5, 0.2), ("preprocess.decode", 100.5, 0.1), ("concepts", 101.7, 0.3)], 103.0)
    assert waits == pytest.approx({"wait.preprocess": 0.5, "run.preprocess": 0.2, "wait.concepts": 1.0, "run.concepts": 0.3,
                                   "after.concepts": 1.0})
    assert mean_by_key([{"a": 1.0}, {"a": 3.0, "b": 2.0}]) == {"a": 2.0, "b": 2.0}



def test_steady_rate_leaves_out_the_fill_and_the_drain() -> None:
    # 11 completions: one at 0 s, one a second from 10 s to 18 s, a straggler at 100 s.
    # Window: ranks round(0.1 * 10) = 1 and round(0.9 * 10) = 9, i.e. 10 s and 18 s: 8 in 8 s.
    times = [100.0, 0.0, *(10.0 + i for i in range(9))]
    assert steady_rate(times) == pytest.approx(1.0)
    assert rate(len(times), 0.0, 100.0) == pytest.approx(0.11)  # the whole run's, fill and drain in
    assert math.isnan(steady_rate([1.0]))
    with pytest.raises(ValueError):
        steady_rate(times, 0.9, 0.1)


def test_busy_cpu_counts_every_state_but_idle_and_iowait() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice, in ticks of 1/100 s
    line = "cpu  1000 20 300 5000 400 5 15 10 7 0"
    assert busy_cpu_s(line, 100) == pytest.approx((1000 + 20 + 300 + 5 + 15 + 10) / 100)
    with pytest.raises(ValueError):
        busy_cpu_s("cpu0 1 2 3 4 5 6 7 8", 100)


def test_cpu_bound_is_the_cores_over_the_summed_cost() -> None:
    # 2 cores; 10 ms + 30 ms + 60 ms of CPU per study: 2 / 0.1 = 20 studies/s
    assert cpu_bound({"a": 0.01, "b": 0.03, "c": 0.06}, 2) == pytest.approx(20.0)
    assert cpu_bound({"a": 0.0, "b": 0.1}, 2) == pytest.approx(20.0)  # a stage under the clock's resolution
    with pytest.raises(ValueError):
        cpu_bound({"a": 0.0}, 2)
    with pytest.raises(ValueError):
        cpu_bound({"a": -0.01, "b": 0.1}, 2)


def test_components_are_named_from_the_command_line() -> None:
    assert component_of("/work/.venv/bin/python -m radalign.cli worker delivery") == "worker delivery"
    assert component_of("postgres: postgres postgres [local] idle") == "PostgreSQL"
    assert component_of("/usr/sbin/Orthanc /tmp/x/orthanc.json") == "Orthanc"
    assert component_of("/usr/bin/bash -c sleep 1") is None


def test_process_cpu_reads_utime_and_stime_after_the_command_name() -> None:
    # pid (comm with a ") " inside) state ppid ...; utime and stime are fields 14 and 15
    line = "42 (a) b) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0 99"
    assert process_cpu_s(line, 100) == pytest.approx(4.0)
