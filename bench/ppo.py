"""The shipped PPO policy against hpa, keda, predictive and the oracle, on held-out workloads.

``--policy DIR`` (repeatable) compares several trained policies side by side (e.g. the
batch-size ablation: ``--policy policies/default --policy /tmp/fixed-batch``); their rows
are ``ppo`` for one policy, ``ppo[DIRNAME]`` for several. ``--static-batch 32,128`` adds
``predictive`` run at each of those batch sizes (``predictive[batch=B]``: the server's
``--max-num-seqs`` fixed at B, the per-replica capacity predictive plans with measured at
B): what choosing a batch size once, in hindsight, buys over the profile's default.

Every policy runs the same workload from the same starting fleet through the simulator loop
of ``aiops simulate`` and sees the same forecast (a naive last-value forecast with empirical
quantiles, refitted each decision; ``--no-forecast`` to run without one, in which case
``predictive`` behaves as the HPA and the PPO shield's floor is the HPA answer). Prints JSON:
GPU-hours, SLO attainment and cost per policy and workload, the PPO policy's saving against
each baseline, and training throughput (steps/s) measured here on a short run with the
training configuration, next to what ``meta.json`` recorded for the shipped policy.

Workloads are ``SPEC[,rate=K][,time=T][,duration=S]``: a CSV path or ``synthetic:NAME``,
rate-scaled by K, time-scaled by T, cut to S seconds. The issue's figures:

    A=../shared/data/azure-llm-2023/AzureLLMInferenceTrace_code.csv
    N=../shared/data/nab/data/realAWSCloudwatch/elb_request_count_8c0756.csv
    python bench/ppo.py --workload $A --workload $A,rate=5 \\
      --workload $N,rate=0.2,time=0.1,duration=21600
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

from aiops.errors import InputError
from aiops.policy import make_policy
from aiops.policy.base import Policy, PolicyContext, PolicySpec
from aiops.policy.ppo import DEFAULT_POLICY_DIR, PpoPolicy, read_meta
from aiops.sim.profiles import load_profile
from aiops.sim.workloads import SYNTHETIC_PREFIX
from aiops.sweep import WorkloadRef
from aiops.train.evaluate import (
    EVAL_SEED_BASE,
    EvalSetup,
    EvalWorkload,
    baseline_table,
    result_row,
    run_on,
)

DEFAULT_WORKLOADS = ("synthetic:diurnal-bursty,rate=2", "synthetic:flash-crowd",
                     "synthetic:weekly")
BASELINES = ("hpa", "keda", "predictive", "oracle")


def parse_workload(text: str, index: int) -> EvalWorkload:
    """The workload :func:`workload_ref` names, built (once per process)."""
    return EvalWorkload(text, workload_ref(text, index).load())


def workload_ref(text: str, index: int) -> WorkloadRef:
    """``SPEC[,rate=K][,time=T][,duration=S][,seed=N]``. A synthetic workload's realisation
    is seeded by its position ``index`` in the list unless ``seed=N`` names the position to
    take it from: ``synthetic:diurnal-bursty,seed=3`` alone is the fourth workload of a
    default ``bench/autoscale.py`` run, so one row of a table can be rerun by itself."""
    spec, *opts = text.split(",")
    kw: dict[str, float] = {}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key not in ("rate", "time", "duration", "seed"):
            raise InputError(f"workload {text!r}: unknown option {key!r} "
                             "(rate, time, duration, seed)")
        try:
            kw[key] = float(value)
        except ValueError:
            raise InputError(f"workload {text!r}: {key}={value!r} is not a number") from None
    position = kw.get("seed", float(index))
    if position < 0 or position != int(position):
        raise InputError(f"workload {text!r}: seed={position:g} must be a whole number >= 0")
    seed = EVAL_SEED_BASE + 100 + int(position) if spec.startswith(SYNTHETIC_PREFIX) else 0
    return WorkloadRef(spec, rate_scale=kw.get("rate", 1.0), time_scale=kw.get("time", 1.0),
                       duration=kw.get("duration"), seed=seed)


def measure_training(steps: int, seed: int) -> float:
    """Steps/s of the training loop (PPO updates included) on a short run, no evaluation."""
    import tempfile

    import torch
    from stable_baselines3 import PPO

    from aiops.train.ppo import TrainConfig, make_vec_env

    torch.set_num_threads(1)
    cfg = TrainConfig(workloads=("synthetic:diurnal-bursty", "synthetic:flash-crowd"),
                      eval_workloads=("synthetic:steady",), timesteps=steps,
                      output=Path(tempfile.gettempdir()) / "unused", seed=seed)
    venv = make_vec_env(cfg, [load_profile(cfg.profile)])
    h = cfg.hyper
    model = PPO("MlpPolicy", venv, n_steps=h.n_steps, batch_size=h.batch_size,
                n_epochs=h.n_epochs, seed=seed, device="cpu", verbose=0,
                policy_kwargs={"net_arch": {"pi": list(cfg.net_arch),
                                            "vf": list(cfg.net_arch)}})
    model.learn(h.n_steps * cfg.n_envs)  # warm-up: compiled kernels, first allocations
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - t0)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of batch sizes") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: batch sizes must be >= 1")
    return sizes


def _predictive(ctx: PolicyContext) -> Policy[Any]:
    return make_policy(PolicySpec.parse("predictive"), ctx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", type=Path, action="append",
                    help="a trained policy directory (repeatable; default policies/default)")
    ap.add_argument("--workload", action="append")
    ap.add_argument("--baseline", action="append")
    ap.add_argument("--profile", default="llama3-8b-a100")
    ap.add_argument("--max-replicas", type=int, default=64)
    ap.add_argument("--no-forecast", action="store_true")
    ap.add_argument("--static-batch", type=_sizes, default=(),
                    help="batch sizes to run predictive at, e.g. 32,128 (rows "
                         "predictive[batch=B])")
    ap.add_argument("--train-steps", type=int, default=8192,
                    help="steps of the throughput measurement (0: skip)")
    args = ap.parse_args()

    profile = load_profile(args.profile)
    setup = EvalSetup(profile, max_replicas=args.max_replicas,
                      with_forecast=not args.no_forecast)
    evals = [parse_workload(t, i) for i, t in enumerate(args.workload or DEFAULT_WORKLOADS)]
    policies: list[Path] = args.policy or [DEFAULT_POLICY_DIR]
    names = (["ppo"] if len(policies) == 1 else [f"ppo[{p.name}]" for p in policies])
    meta = read_meta(policies[0])
    table, notes = baseline_table(evals, setup, tuple(args.baseline or BASELINES))
    out: dict[str, Any] = {}
    for ew in evals:
        ctx = setup.context(ew.workload)
        agents = {}
        for name, directory in zip(names, policies, strict=True):
            agent = PpoPolicy.from_spec(PolicySpec.parse(f"ppo:path={directory}"), ctx)
            agents[name] = result_row(run_on(agent, ew, setup), profile, setup.slo_miss_usd)
        for b in args.static_batch:
            at_b = replace(setup, profile=replace(profile, default_batch_size=b))
            agents[f"predictive[batch={b}]"] = result_row(
                run_on(_predictive(at_b.context(ew.workload)), ew, at_b), profile,
                setup.slo_miss_usd)
        rows = {**agents, **table[ew.spec]}
        ppo = rows[names[0]]
        versus = {
            name: {"gpu_hours_saved_pct": round(100 * (1 - ppo["gpu_hours"] / r["gpu_hours"]), 1)
                   if r["gpu_hours"] > 0 else None,
                   "slo_attainment_diff_pts": round(100 * (ppo["slo_attainment"]
                                                           - r["slo_attainment"]), 2)}
            for name, r in rows.items() if name != names[0]}
        out[ew.spec] = {"workload": ew.workload.summary(), "results": rows, "ppo_vs": versus}
    trained = meta.get("training", {})
    print(json.dumps({
        "benchmark": "ppo",
        "policy": [str(p) for p in policies],
        "sha256": meta.get("sha256"),
        "command": meta.get("command"),
        "forecast": None if args.no_forecast else "naive",
        "trained": {k: trained.get(k) for k in ("timesteps", "best_checkpoint_timesteps",
                                                 "wall_s", "steps_per_s")},
        "measured_training_steps_per_s": round(measure_training(args.train_steps, 0), 1)
        if args.train_steps > 0 else None,
        "workloads": out,
        "notes": notes,
    }, indent=2, default=str))


if __name__ == "__main__":
    main()
