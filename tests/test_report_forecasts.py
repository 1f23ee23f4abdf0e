"""The report's forecasts: made on the daemon's schedule, computed ahead, equal to in-order.

A week of 15-s decisions is 40,000 decisions; a report that refits (or even predicts) at
every one of them takes half an hour. These tests pin the schedule — fits only when due,
one prediction per completed forecast step — and that computing the stretches between
refits apart (in this process or on a pool) gives exactly the forecasts of the in-order run,
a failed refit included.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pytest

from aiops.forecast import base as forecast_base
from aiops.report.forecasts import (
    ForecastLookup,
    Schedule,
    ScheduledForecast,
    precompute,
    refit_decisions,
)
from aiops.types import Forecast, Snapshot

INTERVAL = 15.0
STEP = 60.0


def rates(hours: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decision times (every 15 s from 15 s) and a noisy daily-ish arrival rate."""
    n = int(hours * 3600 / INTERVAL)
    t = INTERVAL * np.arange(1, n + 1)
    rng = np.random.default_rng(seed)
    r = 5 + 3 * np.sin(2 * math.pi * t / 7200) + rng.normal(0, 0.5, n)
    return t, np.maximum(r, 0)


class Counting:
    """A forecaster that counts its calls and forecasts the last value it saw; its forecasts
    name the fit that made them (``fit@<seconds>``, the fit's last step). Fits whose last
    step is in ``fail_at`` raise: the same fits fail however the work is split."""

    calls: ClassVar[dict[str, int]] = {"fit": 0, "update": 0, "predict": 0}
    fail_at: ClassVar[set[float]] = set()

    def fit(self, t: Any, v: Any) -> Counting:
        Counting.calls["fit"] += 1
        if float(t[-1]) in Counting.fail_at:
            raise ValueError("cannot fit this one")
        self.end, self.last, self.name = float(t[-1]), float(v[-1]), f"fit@{t[-1]:.0f}"
        return self

    def update(self, t: Any, v: Any) -> Counting:
        Counting.calls["update"] += 1
        self.end, self.last = float(t[-1]), float(v[-1])
        return self

    def predict(self, horizon: int) -> Forecast:
        Counting.calls["predict"] += 1
        mean = np.full(horizon, self.last)
        return Forecast(start=self.end + STEP, step=STEP, mean=mean,
                        quantiles={0.1: mean - 1, 0.5: mean.copy(), 0.9: mean + 1},
                        model=self.name)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[Counting]:
    Counting.calls = {"fit": 0, "update": 0, "predict": 0}
    Counting.fail_at = set()
    monkeypatch.setattr(forecast_base, "make_from_spec", lambda spec: Counting())
    return Counting


def schedule(refit_s: float = 1800.0, model: str = "counting") -> Schedule:
    return Schedule(model, STEP, lead_s=90.0, refit_s=refit_s, min_points=10,
                    interval_s=INTERVAL)


def in_order(sched: Schedule, t: np.ndarray, r: np.ndarray) -> list[Forecast | None]:
    sf = ScheduledForecast(sched)
    return [sf.step(float(ti), float(ri)) for ti, ri in zip(t, r, strict=True)]


def at(t: float) -> int:
    """The index of the decision at ``t`` seconds (decisions every 15 s from 15 s)."""
    return round(t / INTERVAL) - 1


def test_fits_on_the_schedule_and_predicts_once_per_step(counting: type[Counting]) -> None:
    t, r = rates(2.0)  # 480 decisions, 120 steps of a minute
    out = in_order(schedule(refit_s=1800.0), t, r)
    # The 10th step closes at 600 s: the first fit; then every 30 minutes: 4 fits in 2 h.
    assert counting.calls["fit"] == 4
    # Steps close at 660, 720, ..., 7200 s after the first fit: 110, three of them refits.
    assert counting.calls["update"] == 107
    # One prediction per fit and per update: per completed step, never per decision.
    assert counting.calls["predict"] == 4 + 107
    assert out[:at(600)] == [None] * at(600)  # nothing before the first fit
    assert out[at(600)] is not None
    # Between two steps the same forecast object is handed out again.
    assert out[at(7185)] is out[at(7170)] is out[at(7155)]


def test_a_failed_refit_keeps_the_previous_model(counting: type[Counting]) -> None:
    counting.fail_at = {2400.0}
    t, r = rates(2.0)
    out = in_order(schedule(), t, r)
    made_by = {fc.model for fc in out if fc is not None}
    assert made_by == {"fit@600", "fit@4200", "fit@6000"}
    # The fit at 2400 s failed: the first model carried on (updated) until the next fit.
    assert {fc.model for fc in out[at(2400):at(4200)] if fc is not None} == {"fit@600"}
    last = [fc for fc in out[at(2400):at(4200)] if fc is not None][-1]
    assert last.start == 4200.0  # updated up to the step before the next fit


@pytest.mark.parametrize("fail", [set(), {2400.0}, {600.0, 2400.0}])
def test_computed_apart_equals_in_order(counting: type[Counting], fail: set[float]) -> None:
    t, r = rates(3.0)
    sched = schedule(refit_s=1800.0)
    counting.fail_at = fail
    want = in_order(sched, t, r)
    got = precompute(sched, t, r, jobs=1)
    assert len(refit_decisions(sched, t, r)) == 6  # 10 min, then every 30 min over 3 h
    assert got.fits == 6 - len(fail)
    assert len(got.forecasts) == len(want)
    for a, b in zip(got.forecasts, want, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a.model == b.model and a.start == b.start
            assert np.array_equal(a.mean, b.mean)


def test_a_process_pool_gives_the_same_forecasts() -> None:
    """A real forecaster in spawned processes: identical to this process's in-order run."""
    t, r = rates(3.0, seed=3)
    sched = schedule(refit_s=2700.0, model="naive")
    want = in_order(sched, t, r)
    got = precompute(sched, t, r, jobs=2)
    assert got.fits == 4
    for a, b in zip(got.forecasts, want, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a.start == b.start
            for q in (0.1, 0.5, 0.9):
                assert np.array_equal(a.quantile(q), b.quantile(q))


def test_the_lookup_refuses_a_replay_of_other_traffic() -> None:
    t, r = rates(0.5)
    pre = precompute(schedule(model="naive"), t, r, jobs=1)
    lookup = ForecastLookup(pre, r)

    def snap(i: int, rate: float) -> Snapshot:
        return Snapshot(time=float(t[i]), replicas=1, ready_replicas=1, batch_size=64,
                        requests_running=0.0, requests_waiting=0.0, kv_cache_usage=0.0,
                        arrival_rate=rate, prompt_tokens_rate=0.0,
                        generation_tokens_rate=0.0)

    for i in range(3):
        lookup(snap(i, float(r[i])), np.zeros(0))
    with pytest.raises(RuntimeError, match="arrival rate"):
        lookup(snap(3, float(r[3]) + 1.0), np.zeros(0))


def test_default_jobs_respect_the_containers_cpu_and_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In aiops' own pod (2 CPUs, 1.5 GiB, the daemon holding 0.85) a second forecasting
    process would not fit: the forecasts are computed in process. Given room, the CPUs."""
    from aiops.report import forecasts

    gib = 2**30
    files = {"/sys/fs/cgroup/cpu.max": "200000 100000",
             "/sys/fs/cgroup/memory.max": str(int(1.5 * gib)),
             "/sys/fs/cgroup/memory.current": str(int(0.85 * gib)),
             "/proc/meminfo": "MemTotal: 67108864 kB\nMemAvailable: 33554432 kB"}
    monkeypatch.setattr(forecasts, "_read", files.get)
    monkeypatch.setattr(forecasts.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert forecasts.default_jobs() == 1
    files["/sys/fs/cgroup/memory.max"] = "max"
    assert forecasts.default_jobs() == 2  # the CPU quota
    files["/sys/fs/cgroup/cpu.max"] = "max 100000"
    assert forecasts.default_jobs() == 16
    files["/proc/meminfo"] = "MemAvailable: 2097152 kB"  # 2 GiB free on the machine
    assert forecasts.default_jobs() == 2
