"""The observation builder's burst statistics and base-plan features (schema 2)."""

from __future__ import annotations

import numpy as np
import pytest

from aiops.features import (
    FEATURE_NAMES,
    HIGH,
    LOW,
    FeatureState,
    build_features,
    burst_stats,
    burst_window,
)
from aiops.policy.base import PolicyContext
from aiops.types import Snapshot

CTX = PolicyContext(replica_capacity_rps=10.0, cold_start_s=90.0, interval_s=15.0)


def snap(t: float, rate: float, replicas: int = 4) -> Snapshot:
    return Snapshot(time=t, replicas=replicas, ready_replicas=replicas, batch_size=64,
                    requests_running=10.0, requests_waiting=0.0, kv_cache_usage=0.2,
                    arrival_rate=rate, prompt_tokens_rate=0.0, generation_tokens_rate=0.0)


def run(rates: list[float], ctx: PolicyContext = CTX, base: int | None = None
        ) -> tuple[np.ndarray, FeatureState]:  # type: ignore[type-arg]
    state = FeatureState()
    obs = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    for i, r in enumerate(rates):
        obs, state = build_features(snap(15.0 * (i + 1), r), ctx, None, state, base)
    return obs, state


def feature(obs: np.ndarray, name: str) -> float:  # type: ignore[type-arg]
    return float(obs[FEATURE_NAMES.index(name)])


def test_windows_follow_the_cold_start() -> None:
    assert burst_window(CTX) == (6, 8)  # 90 s = six 15-s intervals; dispersion over >= 8
    assert burst_window(PolicyContext(cold_start_s=300.0)) == (20, 20)
    _, state = run([10.0] * 30)
    assert len(state.recent_rates) == 8  # the memory is bounded
    _, state = run([10.0] * 30, PolicyContext(cold_start_s=300.0, replica_capacity_rps=1.0))
    assert len(state.recent_rates) == 20


def test_peak_to_mean_sees_a_burst_within_the_last_cold_start_only() -> None:
    calm = [20.0] * 12
    burst = [*calm[:-3], 80.0, 20.0, 20.0]  # one 15-s burst 30 s ago
    assert feature(run(calm)[0], "burst_peak_to_mean") == pytest.approx(1.0)
    # max 80 over a 6-interval mean of (5 x 20 + 80) / 6 = 30
    assert feature(run(burst)[0], "burst_peak_to_mean") == pytest.approx(80.0 / 30.0, rel=1e-5)
    older = [*calm[:4], 80.0, *calm[5:]]  # the burst 7 intervals (105 s) ago
    assert feature(run(older)[0], "burst_peak_to_mean") == pytest.approx(1.0)


def test_dispersion_is_one_for_poisson_and_the_cv_for_clustered_arrivals() -> None:
    """sqrt(var/mean) of the 15-s request counts: ~1 for Poisson arrivals, ~the CV of the
    inter-arrival times for a renewal process (clusters of requests), at any rate."""
    rng = np.random.default_rng(0)
    poisson = [burst_stats(tuple(rng.poisson(15.0 * 20.0, 8) / 15.0), 6, 15.0)[1]
               for _ in range(400)]
    assert np.median(poisson) == pytest.approx(1.0, abs=0.1)
    for cv in (2.0, 4.0):
        shape = 1.0 / cv**2
        times = np.cumsum(rng.gamma(shape, 1.0 / (20.0 * shape), 20 * 15 * 8 * 400))
        counts = np.histogram(times, bins=np.arange(0.0, times[-1], 15.0))[0]
        disp = [burst_stats(tuple(counts[i:i + 8] / 15.0), 6, 15.0)[1]
                for i in range(0, len(counts) - 8, 8)]
        assert np.median(disp) == pytest.approx(cv, rel=0.25)
    assert burst_stats((), 6, 15.0) == (1.0, 0.0)
    assert burst_stats((0.0, 0.0, 0.0), 6, 15.0) == (1.0, 0.0)  # silence is no burst


def test_base_plan_features() -> None:
    obs, _ = run([20.0] * 10, base=6)  # 4 desired replicas, 20 req/s, 10 req/s each
    assert feature(obs, "base_present") == 1.0
    assert feature(obs, "base_per_desired") == pytest.approx(1.5)
    assert feature(obs, "base_capacity_per_load") == pytest.approx(3.0)  # 60 / 20 req/s
    none, _ = run([20.0] * 10)
    for name in ("base_present", "base_per_desired", "base_capacity_per_load"):
        assert feature(none, name) == 0.0
    idle, _ = run([0.0] * 10, base=2)
    assert feature(idle, "base_capacity_per_load") == HIGH[FEATURE_NAMES.index(
        "base_capacity_per_load")]  # no load: all spare


def test_cold_start_and_forecast_spread() -> None:
    from aiops.types import Forecast

    obs, _ = run([10.0] * 3, PolicyContext(cold_start_s=300.0, replica_capacity_rps=5.0))
    assert feature(obs, "cold_start_per_10min") == pytest.approx(0.5)
    flat = np.full(10, 20.0)
    fc = Forecast(start=15.0, step=15.0, mean=flat,
                  quantiles={0.1: flat * 0.5, 0.5: flat, 0.9: flat * 1.6})
    obs, _ = build_features(snap(15.0, 20.0), CTX, fc, FeatureState())
    assert feature(obs, "forecast_spread") == pytest.approx(0.6)


def test_extreme_inputs_stay_in_range() -> None:
    state = FeatureState()
    for rate in (0.0, 1e-300, 1e30, float("inf"), float("nan"), 5.0):
        obs, state = build_features(snap(15.0, rate), CTX, None, state, 10**6)
        assert np.all(obs >= LOW) and np.all(obs <= HIGH) and np.isfinite(obs).all()


def test_token_mix_features() -> None:
    s = Snapshot(time=15.0, replicas=2, ready_replicas=2, batch_size=64,
                 requests_running=5.0, requests_waiting=0.0, kv_cache_usage=0.1,
                 arrival_rate=10.0, prompt_tokens_rate=10.0 * 999.0,
                 generation_tokens_rate=10.0 * 99.0)
    obs, _ = build_features(s, CTX, None, FeatureState())
    assert feature(obs, "log_mean_prompt_tokens") == pytest.approx(3.0 / 4.5, rel=1e-5)
    assert feature(obs, "log_mean_output_tokens") == pytest.approx(2.0 / 4.5, rel=1e-5)
    idle = Snapshot(time=15.0, replicas=2, ready_replicas=2, batch_size=64,
                    requests_running=0.0, requests_waiting=0.0, kv_cache_usage=0.0,
                    arrival_rate=0.0, prompt_tokens_rate=float("nan"),
                    generation_tokens_rate=0.0)
    obs, _ = build_features(idle, CTX, None, FeatureState())
    assert feature(obs, "log_mean_prompt_tokens") == 0.0  # nothing arrived: no mix seen
