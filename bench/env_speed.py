"""Decision steps per second of ``AutoscaleEnv`` on one core.

The PPO agent trains on millions of steps, so the environment's speed bounds what training
can explore on a 2-core machine. The issue's scenario: 15 s decisions, about 10 replicas,
about 50 requests/s. Prints JSON; compares the environment against a baseline of the raw
cluster step (no features, no reward) in the same run, so the overhead of the gym layer is
visible.

    python bench/env_speed.py [--steps 20000] [--rate 50]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from aiops.sim.cluster import ClusterSim
from aiops.sim.env import AutoscaleEnv
from aiops.sim.profiles import load_profile
from aiops.sim.workloads import TokenDistribution, Workload


def steady(rate: float, duration: float, seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate * duration))
    arrivals = np.sort(rng.uniform(0.0, duration, n))
    ctx, gen = TokenDistribution(context_median=400, generated_median=100).sample(rng, n)
    return Workload("steady-bench", arrivals, ctx, gen, duration, {"rate": rate})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=50.0)
    args = ap.parse_args()
    profile = load_profile("llama3-8b-a100")
    w = steady(args.rate, 4 * 3600.0, 0)
    env = AutoscaleEnv([w], profile, episode_s=3600.0, max_replicas=32)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    hold = np.array([env.deltas.index(0), env.batch_sizes.index(profile.default_batch_size)])
    # Warm up the compiled kernel before timing.
    for _ in range(50):
        env.step(hold)
    replicas = []
    t0 = time.perf_counter()
    for _i in range(args.steps):
        # Mostly hold, sometimes a random replica change: like an exploring policy.
        action = hold.copy()
        if rng.random() < 0.1:
            action[0] = rng.integers(len(env.deltas))
        _obs, _, term, trunc, info = env.step(action)
        replicas.append(info["replicas"])
        if term or trunc:
            env.reset()
    env_sps = args.steps / (time.perf_counter() - t0)

    sim = ClusterSim(profile, w, replicas=10)
    t0 = time.perf_counter()
    for _ in range(args.steps // 4):
        sim.step(15.0)
        if sim.time >= w.duration:
            break
    raw_steps = int(sim.time / 15.0)
    raw_sps = raw_steps / (time.perf_counter() - t0)
    print(json.dumps({
        "benchmark": "env_speed",
        "rate_rps": args.rate,
        "interval_s": 15.0,
        "mean_replicas": round(float(np.mean(replicas)), 1),
        "env_steps_per_s": round(env_sps),
        "baseline_raw_cluster_steps_per_s": round(raw_sps),
        "requests_per_step": round(args.rate * 15.0),
        "target_steps_per_s": 2000,
    }, indent=2))


if __name__ == "__main__":
    main()
