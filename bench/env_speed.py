"""Decision steps per second of ``AutoscaleEnv`` on one core, against a baseline in one run.

The PPO agent trains on millions of steps, so the environment's speed bounds what training
can explore on a 2-core machine. The scenario: 15 s decisions, about 10 replicas, about 50
requests/s (750 requests per decision). Besides the environment it times the raw cluster
step (no features, no reward), so the gym layer's overhead is visible.

Speeds are CPU seconds of this process (``time.process_time``), not wall time: "on one core"
is what is asked, and other work on a shared machine does not move the figure much.

``--baseline DIR`` runs the same measurement on another checkout of aiops (e.g. a
``git worktree`` of an older commit) in a subprocess, and prints both side by side:

    git worktree add /tmp/aiops-before <commit>
    python bench/env_speed.py --baseline /tmp/aiops-before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def measure(steps: int, rate: float) -> dict[str, float]:
    """Run in the process whose ``aiops`` is being measured (only long-stable APIs)."""
    import numpy as np

    from aiops.sim.cluster import ClusterSim
    from aiops.sim.env import AutoscaleEnv
    from aiops.sim.profiles import load_profile
    from aiops.sim.workloads import TokenDistribution, Workload

    rng = np.random.default_rng(0)
    duration = 4 * 3600.0
    n = int(rng.poisson(rate * duration))
    arrivals = np.sort(rng.uniform(0.0, duration, n))
    ctx, gen = TokenDistribution(context_median=400, generated_median=100).sample(rng, n)
    w = Workload("steady-bench", arrivals, ctx, gen, duration, {"rate": rate})
    profile = load_profile("llama3-8b-a100")
    env = AutoscaleEnv([w], profile, episode_s=3600.0, max_replicas=32)
    env.reset(seed=0)
    hold = np.array([env.deltas.index(0), env.batch_sizes.index(profile.default_batch_size)])
    for _ in range(50):  # compile the kernel before timing
        env.step(hold)
    replicas = []
    t0 = time.process_time()
    for _ in range(steps):
        # Mostly hold, sometimes a random replica change: like an exploring policy.
        action = hold.copy()
        if rng.random() < 0.1:
            action[0] = rng.integers(len(env.deltas))
        _obs, _, term, trunc, info = env.step(action)
        replicas.append(info["replicas"])
        if term or trunc:
            env.reset()
    env_sps = steps / (time.process_time() - t0)

    sim = ClusterSim(profile, w, replicas=10)
    sim.step(15.0)
    t0 = time.process_time()
    raw = 0
    while raw < steps // 4 and sim.time < w.duration - 15.0:
        sim.step(15.0)
        raw += 1
    raw_sps = raw / (time.process_time() - t0)
    return {"env_steps_per_s": round(env_sps), "raw_cluster_steps_per_s": round(raw_sps),
            "mean_replicas": round(float(np.mean(replicas)), 1)}


def run_on(checkout: Path, steps: int, rate: float) -> dict[str, float]:
    """The measurement on another checkout, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps),
                          "--rate", str(rate)], env=env, cwd=checkout, check=True,
                         capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--baseline", type=Path, help="another aiops checkout to compare against")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(measure(args.steps, args.rate)))
        return
    if args.baseline is not None and not (args.baseline / "aiops").is_dir():
        ap.error(f"--baseline {args.baseline}: not an aiops checkout (no aiops/ folder)")
    report: dict[str, object] = {
        "benchmark": "env_speed", "rate_rps": args.rate, "interval_s": 15.0,
        "requests_per_step": round(args.rate * 15.0), "target_steps_per_s": 2000,
        "cpu_time": True,
        "this": run_on(Path(__file__).resolve().parent.parent, args.steps, args.rate),
    }
    if args.baseline is not None:
        report["baseline"] = {"checkout": str(args.baseline),
                              **run_on(args.baseline.resolve(), args.steps, args.rate)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
