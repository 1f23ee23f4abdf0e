"""The gymnasium environment: API conformance, reward semantics, feature parity."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from aiops.features import FEATURE_NAMES, HIGH, LOW, FeatureState, build_features
from aiops.policy.base import PolicyContext
from aiops.sim.env import AutoscaleEnv
from aiops.sim.profiles import load_profile
from aiops.sim.workloads import synthetic
from aiops.types import Forecast, Snapshot

PROFILE = load_profile()


@pytest.fixture(scope="module")
def workload():  # type: ignore[no-untyped-def]
    return synthetic("steady", seed=0, duration=1800.0)


def test_env_passes_the_gymnasium_checker(workload) -> None:  # type: ignore[no-untyped-def]
    env = AutoscaleEnv([workload], PROFILE, episode_s=600.0)
    check_env(env, skip_render_check=True)


def test_episode_length_and_truncation(workload) -> None:  # type: ignore[no-untyped-def]
    env = AutoscaleEnv([workload], PROFILE, episode_s=600.0, interval_s=15.0)
    env.reset(seed=1)
    hold = np.array([env.deltas.index(0), env.batch_sizes.index(64)])
    steps = 0
    truncated = False
    while not truncated:
        obs, reward, terminated, truncated, _info = env.step(hold)
        assert env.observation_space.contains(obs)
        assert np.isfinite(reward) and reward < 0  # every step costs something
        assert not terminated
        steps += 1
    assert steps == 40


def test_reward_prices_gpu_time_and_slo_misses(workload) -> None:  # type: ignore[no-untyped-def]
    def episode(delta: int) -> tuple[float, int, float]:
        env = AutoscaleEnv([workload], PROFILE, episode_s=900.0, deltas=(-8, 0, 8),
                           churn_usd=0.0, batch_change_usd=0.0)
        env.reset(seed=3)
        total, missed, gpu_usd = 0.0, 0, 0.0
        a = np.array([env.deltas.index(delta), env.batch_sizes.index(64)])
        for i in range(60):
            _, r, _, trunc, info = env.step(a if i == 0 else np.array([1, a[1]]))
            total += r
            missed += info["missed"]
            gpu_usd += info["gpu_hours"] * PROFILE.gpu_hour_usd
            if trunc:
                break
        # The reward is exactly what an operator pays, in dollars, scaled.
        assert total == pytest.approx(-(gpu_usd + env.slo_miss_usd * missed) / env.reward_scale)
        return total, missed, gpu_usd

    _, missed_over, gpu_over = episode(8)
    held, missed_held, gpu_held = episode(0)
    under, missed_under, gpu_under = episode(-8)
    assert missed_under > missed_held  # too few replicas misses the SLO...
    assert under < held  # ...and that is priced above the GPU time it saves
    assert gpu_under < gpu_held < gpu_over  # idle replicas are paid for
    assert missed_over <= missed_held


def test_same_seed_same_episode(workload) -> None:  # type: ignore[no-untyped-def]
    rewards = []
    for _ in range(2):
        env = AutoscaleEnv([workload], PROFILE, episode_s=600.0)
        env.reset(seed=7)
        env.action_space.seed(7)
        rewards.append([env.step(env.action_space.sample())[1] for _ in range(20)])
    assert rewards[0] == rewards[1]


def test_features_are_bounded_named_and_ignore_nan() -> None:
    ctx = PolicyContext(replica_capacity_rps=10.0, max_replicas=20)
    snap = Snapshot(time=100.0, replicas=4, ready_replicas=3, batch_size=64,
                    requests_running=1e9, requests_waiting=float("nan"), kv_cache_usage=2.0,
                    arrival_rate=float("inf"), prompt_tokens_rate=0.0,
                    generation_tokens_rate=0.0, starting_replicas=1)
    obs, state = build_features(snap, ctx, None, FeatureState())
    assert obs.shape == (len(FEATURE_NAMES),)
    assert np.all(obs >= LOW) and np.all(obs <= HIGH)
    assert np.isfinite(obs).all()
    assert state.last_replicas == 4


def test_forecast_enters_the_observation() -> None:
    ctx = PolicyContext(replica_capacity_rps=10.0, cold_start_s=90.0)
    snap = Snapshot(time=0.0, replicas=2, ready_replicas=2, batch_size=64,
                    requests_running=10, requests_waiting=0, kv_cache_usage=0.1,
                    arrival_rate=15.0, prompt_tokens_rate=0.0, generation_tokens_rate=0.0)
    ramp = np.linspace(15.0, 60.0, 12)
    fc = Forecast(start=0.0, step=15.0, mean=ramp, quantiles={0.1: ramp, 0.5: ramp, 0.9: ramp})
    without, _ = build_features(snap, ctx, None, FeatureState())
    with_fc, _ = build_features(snap, ctx, fc, FeatureState())
    i50 = FEATURE_NAMES.index("forecast_p50_per_capacity")
    assert without[i50] == 0.0
    # 90 s ahead is step 6 of the ramp: 15 + 5 * (45/11) req/s over 2 replicas x 10 req/s.
    assert with_fc[i50] == pytest.approx(ramp[5] / 20.0, rel=1e-5)


def test_an_error_budget_prices_only_the_misses_beyond_it(workload) -> None:  # type: ignore[no-untyped-def]
    """Over an episode the miss charges add up to the misses beyond slo_budget of its
    requests: all of them without a budget, none under a budget larger than the misses."""
    def episode(budget: float) -> tuple[float, int, int]:
        env = AutoscaleEnv([workload], PROFILE, episode_s=1800.0, deltas=(-1, 0, 1),
                           slo_budget=budget, churn_usd=0.0, batch_change_usd=0.0,
                           min_replicas=6)
        env.reset(seed=3)
        hold = np.array([env.deltas.index(0), env.batch_sizes.index(64)])
        charged, missed, requests = 0.0, 0, 0
        truncated = False
        while not truncated:
            _, r, _, truncated, info = env.step(hold)
            gpu_usd = info["gpu_hours"] * PROFILE.gpu_hour_usd
            charged += (-r * env.reward_scale - gpu_usd) / env.slo_miss_usd
            missed += info["missed"]
            requests += info["finished"] + info["unserved"]
        return charged, missed, requests

    all_misses, missed, requests = episode(0.0)
    assert all_misses == pytest.approx(missed, abs=1e-6)
    assert 0.005 * requests < missed < 0.05 * requests  # a fleet that misses a little
    part, _, _ = episode(0.005)
    assert part == pytest.approx(missed - 0.005 * requests, abs=1e-6)
    free, _, _ = episode(0.05)
    assert free == pytest.approx(0.0, abs=1e-6)
