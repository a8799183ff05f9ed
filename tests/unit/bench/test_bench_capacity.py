"""Capacity arithmetic: expectations worked out by hand."""

from __future__ import annotations

import pytest

from radalign.bench.capacity import StageCapacity, cost_per_1000, keda_lag_threshold, partitions, per_second, plan, replicas


def test_a_million_a_day_is_about_11_6_per_second() -> None:
    assert per_second(1_000_000) == pytest.approx(11.574, rel=1e-3)


def test_replicas_keep_headroom() -> None:
    assert replicas(11.6, 10.0, utilisation=0.7) == 2  # 11.6 / 7 = 1.66 -> 2
    assert replicas(116.0, 10.0, utilisation=0.7) == 17  # 116 / 7 = 16.6 -> 17
    assert replicas(0.1, 100.0) == 1
    with pytest.raises(ValueError):
        replicas(1.0, 0.0)


def test_partitions_cover_the_burst_replicas() -> None:
    assert partitions(17) == 20 and partitions(4) == 4 and partitions(1) == 4
    assert partitions(17, step=6) == 18


def test_keda_lag_threshold() -> None:
    assert keda_lag_threshold(10.0, 30.0) == 300
    assert keda_lag_threshold(0.01, 30.0) == 1


def test_plan_and_cost() -> None:
    # one stage: 10 studies/s a replica, a quarter of a $1/h instance
    stage = StageCapacity("s", 10.0, 0.25, "x", 1.0)
    (p,) = plan([stage], 864_000, burst=10, utilisation=0.5, drain_target_s=30)  # 10/s sustained
    assert (p.sustained_replicas, p.burst_replicas, p.partitions, p.lag_threshold) == (2, 20, 20, 300)
    # 2 replicas x $0.25/h = $0.50/h for 36,000 studies/h: $0.50 / 36 = $0.01389 per 1,000
    assert cost_per_1000([p], 864_000) == pytest.approx(0.5 / 36)


def test_min_replicas_for_availability() -> None:
    stage = StageCapacity("s", 1000.0, 0.25, "x", 1.0)
    (p,) = plan([stage], 86_400, min_replicas=2)  # 1 study/s: one replica would do
    assert (p.sustained_replicas, p.burst_replicas) == (2, 2)  # never fewer at the burst than sustained
