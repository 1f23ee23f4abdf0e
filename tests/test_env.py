"""The gymnasium environment: API conformance, reward semantics, train/serve parity."""

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


# --------------------------------------------------------------------------- agent mode
def agent_meta(batch_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)):  # type: ignore[no-untyped-def]
    from aiops.policy.ppo import DEFAULT_FACTORS
    from aiops.train.ppo import inference_meta

    wide = {"min": [float(x) for x in LOW], "max": [float(x) for x in HIGH],
            "max_arrival_rate": 0.0}
    return inference_meta(DEFAULT_FACTORS, batch_sizes, wide, (8, 8))


class ObsModel:
    """A deterministic 'network' whose action depends on the observation (so a difference
    in what the environment and the daemon see shows up as a different action)."""

    def __init__(self, n_factors: int, n_batches: int) -> None:
        self.n_factors, self.n_batches = n_factors, n_batches

    def act(self, obs: np.ndarray) -> tuple[int, int]:  # type: ignore[type-arg]
        h = int(abs(float(obs.sum())) * 1000)
        return h % self.n_factors, (h // 7) % self.n_batches


def test_the_environment_decides_as_the_deployed_policy() -> None:
    """Train/serve parity of the whole decision: an episode of the agent-mode environment,
    driven by a model, and ``aiops simulate``'s loop running ``PpoPolicy`` with the same
    model on the same workload and profile take the same replicas and batch size at every
    step (features, forecast, base plan, residual, floor and batch shield included)."""
    from aiops.policy.ppo import PpoPolicy, build_fallback
    from aiops.sim.runner import initial_replicas, planning_context, run_policy
    from aiops.train.evaluate import naive_forecast_fn

    profile = load_profile("llama3-8b-a100-pull")
    w = synthetic("flash-crowd", seed=2, duration=1800.0)
    meta = agent_meta()
    model = ObsModel(len(meta.factors), len(meta.batch_sizes))
    env = AutoscaleEnv([w], [profile], episode_s=1800.0, max_replicas=64, agent=meta,
                       forecast=naive_forecast_fn, churn_usd=0.0)
    obs, _ = env.reset(seed=0)
    env_rows = []
    truncated = False
    while not truncated:
        obs, _, _, truncated, info = env.step(np.array(model.act(obs)))
        env_rows.append((info["replicas"], info["batch_size"]))

    ctx = planning_context(profile, w, max_replicas=64)
    base, name = build_fallback(ctx)
    policy = PpoPolicy(model, meta, fallback=base, fallback_name=name)
    out = run_policy(policy, w, profile, ctx, start_replicas=initial_replicas(w, ctx),
                     forecast_fn=naive_forecast_fn(ctx))
    sim_rows = [(int(r), int(b)) for r, b in zip(out.timeline.desired, out.timeline.batch,
                                                   strict=True)]
    assert env_rows == sim_rows
    assert len({r for r, _ in env_rows}) > 3 and len({b for _, b in env_rows}) > 1
    assert any("shield" in r for r in out.timeline.reasons)  # the shield acted too


def test_agent_mode_draws_profiles_and_keeps_a_fixed_batch() -> None:
    """Several profiles: each episode runs on one of them (the cold start in the
    observation says which); a one-size batch head never changes the batch."""
    from aiops.features import FEATURE_NAMES as NAMES
    from aiops.train.evaluate import naive_forecast_fn

    profiles = [load_profile("llama3-8b-a100"), load_profile("llama3-8b-a100-pull")]
    w = synthetic("step", seed=1, duration=1200.0)
    env = AutoscaleEnv([w], profiles, episode_s=600.0, agent=agent_meta((64,)),
                       forecast=naive_forecast_fn)
    assert env.action_space.nvec.tolist() == [11, 1]
    seen = set()
    i = NAMES.index("cold_start_per_10min")
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        seen.add((env.profile.name, round(float(obs[i]), 3)))
        for _ in range(10):
            obs, _, _, _, info = env.step(env.action_space.sample())
            assert info["batch_size"] == 64
    assert seen == {("llama3-8b-a100", 0.15), ("llama3-8b-a100-pull", 0.5)}


def test_agent_mode_passes_the_gymnasium_checker(workload) -> None:  # type: ignore[no-untyped-def]
    from aiops.train.evaluate import naive_forecast_fn

    env = AutoscaleEnv([workload], PROFILE, episode_s=600.0, agent=agent_meta(),
                       forecast=naive_forecast_fn)
    check_env(env, skip_render_check=True)
