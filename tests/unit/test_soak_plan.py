"""The soak's seeded plan: reproducible, prefix-stable (a failure at night K replays with --nights K), every kind."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest

from soak import plan

TODAY = date(2026, 12, 1)


def faults(nights: list[plan.Night]) -> list[plan.Fault | None]:
    return [n.fault for n in nights]


def test_the_same_seed_gives_the_same_plan_and_another_seed_another_one():
    assert plan.plan(41, 30, today=TODAY) == plan.plan(41, 30, today=TODAY)
    assert faults(plan.plan(41, 30, today=TODAY)) != faults(plan.plan(42, 30, today=TODAY))


@pytest.mark.parametrize("seed", [0, 1, 7, 123456])
def test_the_first_k_nights_of_a_long_soak_are_the_soak_of_k_nights(seed):
    long = plan.plan(seed, 30, today=TODAY)
    for k in (1, 2, 9, 17, 29):
        short = plan.plan(seed, k, today=TODAY)
        assert faults(short) == faults(long[:k])
        assert [n.draw for n in short] == [n.draw for n in long[:k]]


@pytest.mark.parametrize("seed", range(20))
def test_thirty_nights_hold_22_faults_and_every_kind_at_least_twice(seed):
    nights = plan.plan(seed, 30, today=TODAY)
    assert [n.number for n in nights if n.fault is None] == [1, 5, 9, 13, 17, 21, 25, 29]
    kinds = Counter(n.fault.kind for n in nights if n.fault)
    assert sum(kinds.values()) == 22 >= 20
    assert set(kinds) == set(plan.KINDS) and min(kinds.values()) >= 2
    # every kind comes once before any comes twice
    first = [n.fault.kind for n in nights if n.fault][:len(plan.KINDS)]
    assert sorted(first) == sorted(plan.KINDS)
    for night in nights:
        if night.fault:
            assert night.fault.variant in plan.VARIANTS[night.fault.kind]
            assert 0 <= night.fault.delay <= 1.5


def test_kinds_can_be_narrowed_and_unknown_ones_are_refused():
    nights = plan.plan(3, 9, kinds=("sigkill", "db-down"), today=TODAY)
    assert {n.fault.kind for n in nights if n.fault} == {"sigkill", "db-down"}
    with pytest.raises(ValueError, match="unknown fault kinds"):
        plan.plan(3, 9, kinds=("sigkill", "meteor"), today=TODAY)


@pytest.mark.parametrize("every", [1, 2, 3])
def test_nights_are_at_three_in_the_past_every_n_days_and_the_recovery_run_fits_before_today(every):
    nights = plan.plan(5, 30, every_days=every, today=TODAY)
    times = [n.when for n in nights]
    assert all(t.tzinfo is UTC and (t.hour, t.minute) == (plan.NIGHT_HOUR, 0) for t in times)
    assert all(b - a == timedelta(days=every) for a, b in zip(times, times[1:], strict=False))
    assert times[-1].date() == TODAY - timedelta(days=2)
    recovery = plan.recovery(5, nights[-1])
    assert recovery.number == 31 and recovery.fault is None
    assert recovery.when == times[-1] + timedelta(days=1)
    assert recovery.when < datetime.combine(TODAY, datetime.min.time(), tzinfo=UTC)


def test_a_fault_has_a_label_naming_kind_and_variant():
    assert plan.Fault("db-down", "postgres").label == "db-down:postgres"
