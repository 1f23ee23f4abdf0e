"""The step averager the daemon and the report share."""

from __future__ import annotations

from aiops.forecast.steps import StepAverager


def test_a_step_closes_with_its_mean_when_a_later_step_begins() -> None:
    h = StepAverager(step_s=60.0, keep=100)
    assert [h.add(t, r) for t, r in [(0.0, 1.0), (15.0, 3.0), (45.0, 5.0)]] == [None] * 3
    assert h.add(60.0, 7.0) == (60.0, 3.0)
    # A step with no rate leaves no point: 60-120 closes at 180's first rate.
    assert h.add(180.0, 1.0) == (120.0, 7.0)
    assert (h.times, h.values) == ([60.0, 120.0], [3.0, 7.0])


def test_only_the_last_keep_steps_are_kept() -> None:
    h = StepAverager(step_s=10.0, keep=3)
    for i in range(10):
        h.add(10.0 * i, float(i))
    assert h.times == [70.0, 80.0, 90.0] and h.values == [6.0, 7.0, 8.0]
    h.replace([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0])
    assert h.times == [2.0, 3.0, 4.0]
