"""``aiops train``: a PPO agent for replicas and batch size, trained in the simulator.

The pipeline: a :class:`~aiops.train.mix.WorkloadMix` feeds fresh episodes to ``n_envs``
copies of :class:`~aiops.sim.env.AutoscaleEnv` (``DummyVecEnv``: on 2 cores the simulator
step is cheap and sub-processes only add pickling; one torch thread, since a 64-unit MLP
gains nothing from more). The environments run the deployed decision itself — the base
policy (``predictive``) on the naive forecast, the residual factor over its plan, the
shield's floor and batch rules (:class:`~aiops.sim.env.AutoscaleEnv` with ``agent=``) — so
the agent learns the constraints instead of meeting them first in production. Profiles
(hardware, cold start) are drawn per episode from ``--profile`` (repeatable). Every
``eval_every`` steps the current network, shielded exactly as
:class:`~aiops.policy.ppo.PpoPolicy` runs it, is scored on evaluation workloads kept apart
from the training ones, next to ``hpa``, ``keda``, ``predictive`` and the oracle; the best
checkpoint is the one written. The output directory gets ``model.zip`` and ``meta.json``
(see :func:`write_meta`), which records the exact command that reproduces it.

``--fixed-batch`` trains the same agent without the batch head (the profile's default
batch size throughout): the ablation that says what tuning ``--max-num-seqs`` buys.
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from aiops.errors import InputError
from aiops.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, HIGH, LOW, N_FEATURES
from aiops.policy.ppo import (
    ARTIFACT_FORMAT,
    ARTIFACT_FORMAT_VERSION,
    DEFAULT_FACTORS,
    META_FILE,
    MODEL_FILE,
    PpoMeta,
    PpoPolicy,
    SbActor,
    ShieldConfig,
    build_fallback,
    sha256_file,
)
from aiops.sim.cluster import SloSpec
from aiops.sim.env import AutoscaleEnv
from aiops.sim.profiles import DEFAULT_PROFILE, Profile, load_profile
from aiops.sim.workloads import SYNTHETIC_PREFIX
from aiops.train.digest import training_inputs
from aiops.train.evaluate import (
    BASELINES,
    EvalSetup,
    EvalWorkload,
    load_eval_workloads,
    naive_forecast_fn,
    parse_eval_spec,
    result_row,
    run_on,
)
from aiops.train.mix import MixConfig, WorkloadMix

LOG_RATE_INDEX = FEATURE_NAMES.index("log_arrival_rate")

DEFAULT_TRAIN_WORKLOADS: tuple[str, ...] = (
    "synthetic:diurnal-bursty", "synthetic:flash-crowd", "synthetic:step",
    "synthetic:steady", "synthetic:weekly",
)
DEFAULT_EVAL_WORKLOADS: tuple[str, ...] = (
    "synthetic:diurnal-bursty", "synthetic:flash-crowd@3", "synthetic:step@0.5",
)


@dataclass(frozen=True)
class PpoHyper:
    """PPO hyperparameters (sb3 names). Defaults were chosen on this simulator:

    * ``n_steps`` 256 × 8 envs = 2,048 steps per update, ~8 episodes' worth of
      decisions from different workloads, so one update never sees a single load shape;
    * ``gamma`` 0.99 — a horizon of ~100 decisions (25 min), well beyond a 90 s cold start,
      so paying for a replica now to avoid misses later is visible to the agent;
    * ``n_epochs`` 10 (sb3's default): an update costs ~10 % of collecting its data here,
      so squeezing each rollout is cheaper than simulating more;
    * ``ent_coef`` 0.01 keeps exploring batch sizes, which the reward rarely favours early.
    """

    n_steps: int = 256
    batch_size: int = 256
    n_epochs: int = 10
    learning_rate: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    start_bias: float = 0.0
    """Logit added, before training, to the residual action "factor 1" and to the profile's
    default batch size: the agent starts as the base policy (its deterministic action is
    the base's plan unchanged) and explores around it. With sb3's initialisation every
    action starts equally likely, and since a raised factor holds for a cold start, random
    exploration starts from about 2.5x the base plan: most of a short run is then spent
    unlearning over-provisioning. 3 makes "factor 1" about twice as likely as all other
    factors together."""
    lr_decay: bool = False
    """Let the step size fall linearly to a tenth of ``learning_rate`` over the run: late
    updates then refine the policy instead of moving it between regimes, so neighbouring
    checkpoints differ less (the held-out evaluations swing by tens of percent without)."""


@dataclass(frozen=True)
class RewardConfig:
    """Prices of the environment's reward (US dollars; see :mod:`aiops.sim.env`)."""

    slo_miss_usd: float = 0.005
    churn_usd: float = 0.002
    batch_change_usd: float = 0.05
    reward_scale: float = 0.1
    slo_target: float | None = None
    """With a target (e.g. 0.99), ``slo_miss_usd`` is only the starting price of a miss: it
    becomes a Lagrange multiplier, raised while the training episodes attain less than the
    target and lowered while they attain more (:class:`MissPrice`), and the checkpoint kept
    is the cheapest that reaches the target on every evaluation workload. A fixed price
    states a trade-off; operators state an objective, and this turns one into the other."""
    price_lr: float = 0.05
    price_bounds: tuple[float, float] = (0.0005, 0.1)
    """The price never leaves these bounds: where the target cannot be reached (a flash
    crowd inside one cold start), an unbounded price would teach "buy the maximum fleet"."""
    slo_budget: float = 0.0
    """An error budget: this share of each episode's (feasible) requests may miss for free
    and only the misses beyond it are priced, in training and in the evaluation score. A
    goal of ">= 99 % at the least cost" is a budget of 0.01; a price on every miss instead
    buys attainment beyond 99 % wherever a replica costs less than the misses it saves."""

    def __post_init__(self) -> None:
        if not self.slo_miss_usd >= 0:
            raise InputError(f"--slo-miss-usd {self.slo_miss_usd} must be >= 0")
        if not 0.0 <= self.slo_budget < 0.5:
            raise InputError(f"--slo-budget {self.slo_budget} is outside [0, 0.5)")
        if self.slo_budget > 0 and self.slo_target is not None:
            raise InputError("--slo-budget and --slo-target are two ways to state the same "
                             "goal: give one")
        if self.slo_target is not None and not 0.5 <= self.slo_target < 1.0:
            raise InputError(f"--slo-target {self.slo_target} is outside [0.5, 1)")
        lo, hi = self.price_bounds
        if self.slo_target is not None and not 0 < lo <= self.slo_miss_usd <= hi:
            raise InputError(f"--slo-miss-usd {self.slo_miss_usd} must lie within the price "
                             f"bounds [{lo:g}, {hi:g}] (--slo-miss-usd-max)")


@dataclass
class MissPrice:
    """The price of one SLO miss as a Lagrange multiplier for an attainment target.

    After every rollout: ``price *= exp(lr * (miss_rate - allowed) / allowed)`` where
    ``allowed = 1 - target``, clipped to ``bounds``. Multiplicative, so it moves through
    orders of magnitude in tens of rollouts, and scaled by ``allowed`` so a miss rate of
    twice the allowance pushes as hard at 99 % as at 90 %. A rollout with nothing finished
    leaves the price alone."""

    price: float
    target: float
    lr: float = 0.05
    bounds: tuple[float, float] = (0.0005, 0.1)
    admitted: int = 0
    missed: int = 0

    def observe(self, admitted: int, missed: int) -> None:
        self.admitted += admitted
        self.missed += missed

    def update(self) -> float:
        if self.admitted > 0:
            allowed = 1.0 - self.target
            miss_rate = min(self.missed / self.admitted, 1.0)
            step = min(max(self.lr * (miss_rate - allowed) / allowed, -1.0), 1.0)
            lo, hi = self.bounds
            self.price = min(max(self.price * math.exp(step), lo), hi)
        self.admitted = self.missed = 0
        return self.price


SELECTIONS = ("usd", "relative")


def reference_scores(table: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """Per evaluation workload, the score ``relative`` selection divides by: the oracle's,
    else the best baseline's (a workload with no positive reference is left out)."""
    out: dict[str, float] = {}
    for spec, rows in table.items():
        scores = [r["score_usd"] for name, r in rows.items()
                  if name != "ppo" and r.get("score_usd", 0.0) > 0]
        ref = rows.get("oracle", {}).get("score_usd", 0.0)
        if ref > 0 or scores:
            out[spec] = ref if ref > 0 else min(scores)
    return out


def selection_key(rows: dict[str, dict[str, float]], slo_target: float | None,
                  reference: dict[str, float] | None = None) -> tuple[float, float, float]:
    """Order of checkpoints, lowest best. Without a target: the evaluation score (USD), or
    with ``reference`` (``--select relative``) the mean over workloads of the score over
    that workload's reference score — a sum of dollars is decided by the workload with the
    largest fleet, and a checkpoint that overspends on small or smooth load would win.
    With a target: first every checkpoint that reaches it on all evaluation workloads,
    cheapest GPU-hours first; then the others, smallest total shortfall from the target
    first. Attainment is over the feasible requests (what a scaler can reach) where the row
    has it."""
    if slo_target is None:
        if reference:
            ratios = [r["score_usd"] / reference[k] for k, r in rows.items() if k in reference]
            return (0.0, float(np.mean(ratios)) if ratios else math.inf, 0.0)
        return (0.0, float(sum(r["score_usd"] for r in rows.values())), 0.0)
    gpu = float(sum(r["gpu_hours"] for r in rows.values()))
    short = sum(max(0.0, slo_target - r.get("slo_attainment_feasible", r["slo_attainment"]))
                for r in rows.values())
    return (0.0, gpu, 0.0) if short == 0 else (1.0, short, gpu)


@dataclass(frozen=True)
class TrainConfig:
    """One ``aiops train`` run. ``command`` rebuilds the run (see :meth:`to_command`)."""

    workloads: tuple[str, ...]
    eval_workloads: tuple[str, ...]
    timesteps: int
    output: Path
    seed: int = 0
    profile: str = DEFAULT_PROFILE
    more_profiles: tuple[str, ...] = ()
    """Profiles drawn per training episode besides ``profile`` (which evaluation workloads
    without their own ``profile=`` run on)."""
    mix: MixConfig = field(default_factory=MixConfig)
    n_envs: int = 8
    env_max_replicas: tuple[int, ...] = (48, 64, 96, 128)
    interval_s: float = 15.0
    eval_every: int = 50_000
    eval_max_replicas: int = 64
    net_arch: tuple[int, ...] = (64, 64)
    factors: tuple[float, ...] = DEFAULT_FACTORS
    fixed_batch: bool = False
    """Train without the batch head: the profile's default batch size throughout."""
    hyper: PpoHyper = field(default_factory=PpoHyper)
    reward: RewardConfig = field(default_factory=RewardConfig)
    baselines: tuple[str, ...] = BASELINES
    selection: str = "usd"  # see selection_key

    def __post_init__(self) -> None:
        if self.timesteps < 1:
            raise InputError(f"--timesteps {self.timesteps} must be >= 1")
        if self.n_envs < 1:
            raise InputError(f"--n-envs {self.n_envs} must be >= 1")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed} must be >= 0")
        if not self.eval_workloads:
            raise InputError("give at least one --eval-workload")
        if self.selection not in SELECTIONS:
            raise InputError(f"--select {self.selection!r}: choose one of {SELECTIONS}")
        if not 0.0 <= self.hyper.ent_coef <= 1.0:
            raise InputError(f"--ent-coef {self.hyper.ent_coef} is outside [0, 1]")
        if self.hyper.n_steps < 2:
            raise InputError(f"--n-steps {self.hyper.n_steps} must be >= 2")
        if not 0.0 < self.hyper.learning_rate < 1.0:
            raise InputError(f"--learning-rate {self.hyper.learning_rate} is outside (0, 1)")
        if not 0.0 <= self.hyper.start_bias <= 20.0:
            raise InputError(f"--start-bias {self.hyper.start_bias} is outside [0, 20]")
        if not self.net_arch or min(self.net_arch) < 1:
            raise InputError(f"--net-arch {self.net_arch} needs positive layer widths")
        files = {w for w in self.workloads if not w.startswith(SYNTHETIC_PREFIX)}
        for text in self.eval_workloads:
            spec, _ = parse_eval_spec(text)
            if spec in files:
                raise InputError(f"evaluation workload {spec} is also a training workload; "
                                 "evaluate on workloads kept apart from training")

    @property
    def profiles(self) -> tuple[str, ...]:
        """Every training profile, ``profile`` first."""
        return (self.profile, *(p for p in self.more_profiles if p != self.profile))

    def to_command(self) -> str:
        """The ``aiops train`` command line that reproduces this run exactly."""
        args = ["aiops", "train"]
        for w in self.workloads:
            args += ["--workload", w]
        for w in self.eval_workloads:
            args += ["--eval-workload", w]
        args += ["--timesteps", str(self.timesteps), "--output", str(self.output),
                 "--seed", str(self.seed)]
        for name in self.profiles:
            args += ["--profile", name]
        args += ["--rate-scale", _range_text(self.mix.rate_scale),
                 "--time-stretch", _range_text(self.mix.time_stretch),
                 "--n-envs", str(self.n_envs),
                 "--eval-every", str(self.eval_every),
                 "--net-arch", ",".join(str(n) for n in self.net_arch),
                 "--slo-miss-usd", f"{self.reward.slo_miss_usd:g}",
                 "--ent-coef", f"{self.hyper.ent_coef:g}"]
        defaults = PpoHyper()
        if self.hyper.n_steps != defaults.n_steps:
            args += ["--n-steps", str(self.hyper.n_steps)]
        if self.hyper.learning_rate != defaults.learning_rate:
            args += ["--learning-rate", f"{self.hyper.learning_rate:g}"]
        if self.hyper.lr_decay:
            args.append("--lr-decay")
        if self.hyper.start_bias != defaults.start_bias:
            args += ["--start-bias", f"{self.hyper.start_bias:g}"]
        if self.reward.slo_target is not None:
            args += ["--slo-target", f"{self.reward.slo_target:g}",
                     "--slo-miss-usd-max", f"{self.reward.price_bounds[1]:g}"]
        if self.fixed_batch:
            args.append("--fixed-batch")
        if self.selection != "usd":
            args += ["--select", self.selection]
        if self.reward.slo_budget > 0:
            args += ["--slo-budget", f"{self.reward.slo_budget:g}"]
        return shlex.join(args)


def _lr_schedule(h: PpoHyper) -> float | Callable[[float], float]:
    """sb3's learning rate: a constant, or linear from ``learning_rate`` down to a tenth of
    it (sb3 passes the progress remaining, 1 at the start and 0 at the end)."""
    if not h.lr_decay:
        return h.learning_rate
    lr = h.learning_rate
    return lambda remaining: lr * (0.1 + 0.9 * remaining)


def _range_text(r: tuple[float, float]) -> str:
    return f"{r[0]:g}:{r[1]:g}"


def parse_range(text: str, name: str) -> tuple[float, float]:
    """``LO:HI`` or a single value ``K`` (= ``K:K``)."""
    lo_text, sep, hi_text = text.partition(":")
    try:
        lo = float(lo_text)
        hi = float(hi_text) if sep else lo
    except ValueError:
        raise InputError(f"{name} {text!r} is not LOW:HIGH (e.g. 0.1:4)") from None
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise InputError(f"{name} {text!r} needs 0 < LOW <= HIGH")
    return lo, hi


# --------------------------------------------------------------------------------------
# environments
# --------------------------------------------------------------------------------------


def _episode_scaled_reward(env: AutoscaleEnv, inner: Any) -> Any:
    """Divide each episode's reward by the fleet its mean load needs (at least 1 replica).

    Rate scaling makes one episode's costs 30x another's; unscaled, the heavy episodes
    drown the gradient and the agent learns little about small fleets. A constant factor
    per episode leaves the best policy of every episode unchanged."""
    import gymnasium as gym

    class EpisodeScaledReward(gym.Wrapper):
        def __init__(self, wrapped: Any) -> None:
            super().__init__(wrapped)
            self.scale = 1.0

        def reset(self, **kwargs: Any) -> Any:
            out = self.env.reset(**kwargs)
            sim, cap = env._sim, env._context.replica_capacity_rps
            if sim is not None and cap > 0 and sim.duration > 0:
                rate = sim.requests_total / sim.duration
                self.scale = 1.0 / max(1.0, rate / cap)
            return out

        def step(self, action: npt.NDArray[np.int64]) -> Any:
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, float(reward) * self.scale, terminated, truncated, info

    return EpisodeScaledReward(inner)


def batch_sizes_for(cfg: TrainConfig, profile: Profile) -> tuple[int, ...]:
    """The batch head's choices: the profile's sizes, or its default alone (fixed batch)."""
    return (profile.default_batch_size,) if cfg.fixed_batch else tuple(profile.batch_sizes)


def make_vec_env(cfg: TrainConfig, profiles: Sequence[Profile]) -> Any:
    """``n_envs`` monitored environments over one shared workload mix, each with its own
    ``max_replicas`` (cycling through ``env_max_replicas``): ``replicas_frac_of_max`` then
    means different fleets in different copies, so the agent cannot learn one bound by
    heart and still works under the daemon's configured maximum. Each runs the deployed
    decision (``agent=``) on the naive forecast the evaluation uses."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    mix = WorkloadMix(cfg.workloads, cfg.mix)
    shield = ShieldConfig()
    wide = {"min": [float(x) for x in LOW], "max": [float(x) for x in HIGH],
            "max_arrival_rate": 0.0}
    agent = inference_meta(cfg.factors, batch_sizes_for(cfg, profiles[0]), wide, cfg.net_arch)

    def factory(i: int) -> Callable[[], Any]:
        def make() -> Any:
            max_r = cfg.env_max_replicas[i % len(cfg.env_max_replicas)]
            env = AutoscaleEnv(
                mix, profiles, episode_s=cfg.mix.episode_s, interval_s=cfg.interval_s,
                max_replicas=max_r, slo_miss_usd=cfg.reward.slo_miss_usd,
                slo_budget=cfg.reward.slo_budget, churn_usd=cfg.reward.churn_usd,
                batch_change_usd=cfg.reward.batch_change_usd,
                reward_scale=cfg.reward.reward_scale,
                agent=agent, shield=shield, forecast=naive_forecast_fn,
            )
            return Monitor(_episode_scaled_reward(env, env))
        return make

    return DummyVecEnv([factory(i) for i in range(cfg.n_envs)])


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


@dataclass
class RangeTracker:
    """Per-feature min/max and the heaviest arrival rate over every training observation:
    what the shield's out-of-distribution check compares against."""

    fmin: npt.NDArray[np.float32] = field(
        default_factory=lambda: np.full(N_FEATURES, np.inf, dtype=np.float32))
    fmax: npt.NDArray[np.float32] = field(
        default_factory=lambda: np.full(N_FEATURES, -np.inf, dtype=np.float32))
    steps: int = 0

    def update(self, obs: npt.NDArray[np.float32]) -> None:
        o = np.asarray(obs, dtype=np.float32).reshape(-1, N_FEATURES)
        np.minimum(self.fmin, o.min(axis=0), out=self.fmin)
        np.maximum(self.fmax, o.max(axis=0), out=self.fmax)
        self.steps += len(o)

    @property
    def max_arrival_rate(self) -> float:
        """From the ``log_arrival_rate`` feature (log10(1 + rate)), so it is what the agent
        saw, clip included."""
        top = float(self.fmax[LOG_RATE_INDEX])
        return float(10.0 ** top - 1.0) if math.isfinite(top) else 0.0

    def snapshot(self) -> dict[str, Any]:
        lo = np.where(np.isfinite(self.fmin), self.fmin, LOW)
        hi = np.where(np.isfinite(self.fmax), self.fmax, HIGH)
        return {"min": [round(float(x), 5) for x in lo],
                "max": [round(float(x), 5) for x in hi],
                "max_arrival_rate": round(self.max_arrival_rate, 3),
                "observations": self.steps}


@dataclass
class TrainReport:
    """What :func:`train_ppo` did; ``meta`` is what it wrote to ``meta.json``."""

    output: Path
    meta: dict[str, Any]
    wall_s: float
    steps_per_s: float


ProgressFn = Callable[[int, dict[str, Any]], None]
"""Called with (timesteps done, fields) as training goes: fields hold ``steps_per_s`` and,
after evaluations, ``best_usd`` / ``last_usd``."""


def inference_meta(factors: Sequence[float], batch_sizes: Sequence[int],
                   ranges: dict[str, Any], net_arch: Sequence[int]) -> PpoMeta:
    """The PpoMeta a checkpoint would have if written now (for evaluating during training)."""
    return PpoMeta(
        factors=tuple(factors), batch_sizes=tuple(batch_sizes),
        feature_min=np.asarray(ranges["min"], dtype=np.float32),
        feature_max=np.asarray(ranges["max"], dtype=np.float32),
        max_arrival_rate=float(ranges["max_arrival_rate"]),
        net_arch=tuple(net_arch), source="training",
    )


def evaluate_model(policy: Any, meta: PpoMeta, evals: Sequence[EvalWorkload],
                   setup: EvalSetup) -> dict[str, dict[str, float]]:
    """The shielded agent on each evaluation workload: ``{spec: row}``."""
    rows: dict[str, dict[str, float]] = {}
    for ew in evals:
        ew_setup = setup.for_workload(ew)
        fallback, name = build_fallback(ew_setup.context(ew.workload))
        agent = PpoPolicy(SbActor(policy), meta, fallback=fallback, fallback_name=name)
        res = run_on(agent, ew, setup)
        rows[ew.spec] = result_row(res, ew_setup.profile, setup.slo_miss_usd,
                                   setup.slo_budget)
    return rows


def train_ppo(cfg: TrainConfig, *, progress: ProgressFn | None = None,
              log: Callable[[str], None] | None = None) -> TrainReport:
    """Train, evaluate, keep the best checkpoint, write ``model.zip`` and ``meta.json``.

    Torch runs on one thread while training (the network is small: threads would cost more
    in hand-offs than they save) and gets its previous thread count back afterwards, so a
    caller in the same process is not left running single-threaded."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(cfg, progress, log)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, progress: ProgressFn | None,
           log: Callable[[str], None] | None) -> TrainReport:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger

    say = log or (lambda _msg: None)
    profiles = [load_profile(name) for name in cfg.profiles]
    profile = profiles[0]
    evals = load_eval_workloads(cfg.eval_workloads)
    setup = EvalSetup(profile, max_replicas=cfg.eval_max_replicas, interval_s=cfg.interval_s,
                      slo=SloSpec(), slo_miss_usd=cfg.reward.slo_miss_usd,
                      slo_budget=cfg.reward.slo_budget)
    venv = make_vec_env(cfg, profiles)
    envs = venv.envs
    if cfg.reward.slo_target is not None:
        # The price of a miss moves over orders of magnitude during training; returns
        # normalised by their running spread keep the value function's targets in range.
        from stable_baselines3.common.vec_env import VecNormalize

        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=cfg.hyper.gamma)
    first_env: AutoscaleEnv = envs[0].unwrapped
    factors, batch_sizes = cfg.factors, first_env.batch_sizes

    say("evaluating baselines on " + ", ".join(ew.spec for ew in evals))
    from aiops.train.evaluate import baseline_table
    table, notes = baseline_table(evals, setup, cfg.baselines)
    for note in notes:
        say(note)
    reference = reference_scores(table) if cfg.selection == "relative" else None
    if reference is not None and not reference:
        raise InputError("--select relative divides by a baseline's score, and no baseline "
                         "scored above zero on any evaluation workload")

    h = cfg.hyper
    model = PPO(
        "MlpPolicy", venv, n_steps=h.n_steps, batch_size=h.batch_size, n_epochs=h.n_epochs,
        learning_rate=_lr_schedule(h), gamma=h.gamma, gae_lambda=h.gae_lambda,
        clip_range=h.clip_range, ent_coef=h.ent_coef, vf_coef=h.vf_coef,
        max_grad_norm=h.max_grad_norm, seed=cfg.seed, device="cpu", verbose=0,
        policy_kwargs={"net_arch": {"pi": list(cfg.net_arch), "vf": list(cfg.net_arch)},
                       "activation_fn": torch.nn.Tanh},
    )
    # Without a logger of its own, every learn() makes an empty SB3-<time> directory under
    # the system's temporary directory, never removed; progress is reported by the callback.
    model.set_logger(Logger(folder=None, output_formats=[]))
    if h.start_bias > 0:
        start_as_base(model.policy, factors, batch_sizes, profile.default_batch_size,
                      h.start_bias)
    tracker = RangeTracker()
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": math.inf, "key": (math.inf, math.inf, math.inf)}
    target = cfg.reward.slo_target
    price = MissPrice(cfg.reward.slo_miss_usd, target, cfg.reward.price_lr,
                      cfg.reward.price_bounds) if target is not None else None
    inner_envs: list[AutoscaleEnv] = [e.unwrapped for e in envs]
    clock = {"eval_s": 0.0, "start": time.perf_counter()}

    def evaluate(step: int) -> float:
        t0 = time.perf_counter()
        ranges = tracker.snapshot()
        meta = inference_meta(factors, batch_sizes, ranges, cfg.net_arch)
        rows = evaluate_model(model.policy, meta, evals, setup)
        score = float(sum(r["score_usd"] for r in rows.values()))
        entry: dict[str, Any] = {
            "timesteps": step, "score_usd": round(score, 3),
            "slo_attainment": {k: r["slo_attainment"] for k, r in rows.items()},
            "slo_attainment_feasible": {k: r["slo_attainment_feasible"]
                                        for k, r in rows.items()},
            "gpu_hours": {k: r["gpu_hours"] for k, r in rows.items()}}
        if price is not None:
            entry["slo_miss_usd"] = round(price.price, 5)
        key = selection_key(rows, target, reference)
        if reference is not None and target is None:
            entry["relative_score"] = round(key[1], 4)
        history.append(entry)
        say(f"{step:,} steps: score ${score:.2f}"
            + (f", {key[1]:.3f}x the reference" if reference is not None and target is None
               else "")
            + "; " + ", ".join(f"{spec} {r['gpu_hours']:.1f} GPU-h "
                               f"{100 * r['slo_attainment_feasible']:.1f}%"
                               for spec, r in rows.items()))
        if key < best["key"]:
            model.save(work / "best.zip")
            best.update(score=score, key=key, timesteps=step, rows=rows, ranges=ranges)
        clock["eval_s"] += time.perf_counter() - t0
        return score

    class Callback(BaseCallback):
        """Tracks feature ranges, reports progress, evaluates every ``eval_every`` steps."""

        def __init__(self) -> None:
            super().__init__()
            self.next_eval = cfg.eval_every
            self.last_score: float | None = None

        def _on_rollout_end(self) -> None:
            if price is not None:
                value = price.update()
                for env in inner_envs:
                    env.slo_miss_usd = value

        def _on_step(self) -> bool:
            tracker.update(self.locals["new_obs"])
            if price is not None:
                for info in self.locals["infos"]:
                    price.observe(int(info.get("finished", 0)), int(info.get("missed", 0)))
            n = self.num_timesteps
            if n >= self.next_eval:
                self.last_score = evaluate(n)
                self.next_eval += cfg.eval_every
            if progress is not None and (n % (cfg.n_envs * 64) == 0 or n >= cfg.timesteps):
                train_s = time.perf_counter() - clock["start"] - clock["eval_s"]
                progress(n, {"steps_per_s": n / max(train_s, 1e-9),
                             "best_usd": best["score"] if best["score"] < math.inf else None,
                             "last_usd": self.last_score,
                             "slo_miss_usd": price.price if price is not None else None})
            return True

    callback = Callback()
    # The best checkpoint so far waits here; removed however training ends (an interrupt too).
    work = Path(tempfile.mkdtemp(prefix="aiops-train-"))
    try:
        model.learn(total_timesteps=cfg.timesteps, callback=callback, progress_bar=False)
        done = model.num_timesteps
        if not history or history[-1]["timesteps"] != done:
            evaluate(done)
        wall = time.perf_counter() - clock["start"]
        cfg.output.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "best.zip", cfg.output / MODEL_FILE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    train_s = wall - clock["eval_s"]
    steps_per_s = done / max(train_s, 1e-9)
    for spec, row in best["rows"].items():
        table[spec] = {"ppo": row, **table[spec]}
    meta = write_meta(cfg, profiles, evals, table=table, notes=notes, history=history,
                      best_timesteps=int(best["timesteps"]), ranges=best["ranges"],
                      factors=factors, batch_sizes=batch_sizes, done=done, wall_s=wall,
                      steps_per_s=steps_per_s,
                      final_miss_usd=price.price if price is not None else None)
    return TrainReport(cfg.output, meta, wall, steps_per_s)


def start_as_base(policy: Any, factors: Sequence[float], batch_sizes: Sequence[int],
                  default_batch: int, bias: float) -> None:
    """Raise the initial logits of "factor 1" (the base plan unchanged) and of the default
    batch size by ``bias`` (see :attr:`PpoHyper.start_bias`). sb3 initialises the action
    layer with tiny weights, so its logits are about its bias: these actions start as the
    most likely ones and the agent's deterministic action is the base policy's."""
    import torch

    with torch.no_grad():
        b = policy.action_net.bias
        if 1.0 in factors:
            b[list(factors).index(1.0)] += bias
        if default_batch in batch_sizes:
            b[len(factors) + list(batch_sizes).index(default_batch)] += bias


def weights_sha256(model_path: Path) -> str:
    """sha256 over the policy network's parameters (names, dtypes, shapes, values).

    ``model.zip``'s own sha256 guards the file, but differs between two runs of the same
    command: stable-baselines3 stores the wall-clock start time and the episodes' timing
    beside the weights. This digest is what a rerun of the recorded command reproduces."""
    import hashlib

    from stable_baselines3.common.save_util import load_from_zip_file

    _, params, _ = load_from_zip_file(str(model_path), load_data=False, device="cpu")
    # sb3 annotates the value as a Tensor; it is the policy's state_dict
    state = cast(dict[str, Any], params["policy"])
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions that decide whether a rerun reproduces the weights bit for bit — including
    torch's CPU kernel level (e.g. AVX512): float sums differ between kernel variants, and
    over a training run the difference grows into another policy."""
    out = {"python": platform.python_version()}
    for dist in ("aiops-autoscaler", "torch", "stable-baselines3", "gymnasium", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    try:
        import torch

        out["torch_cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError):
        out["torch_cpu_capability"] = "unknown"
    return out


def write_meta(cfg: TrainConfig, profiles: Sequence[Profile], evals: Sequence[EvalWorkload], *,
               table: dict[str, dict[str, dict[str, float]]], notes: list[str],
               history: list[dict[str, Any]], best_timesteps: int, ranges: dict[str, Any],
               factors: Sequence[float], batch_sizes: Sequence[int], done: int,
               wall_s: float, steps_per_s: float,
               final_miss_usd: float | None = None) -> dict[str, Any]:
    """Write ``meta.json`` beside ``model.zip`` and return it.

    Fields: format and versions; the observation schema (version, names, bounds, whether a
    forecast is part of it); the training range of every feature; the action space; the
    network; the profile; training workloads, mix, reward and hyperparameters; evaluation
    workloads, the table and its history; library versions; the sha256 of ``model.zip``
    and of the weights inside it (:func:`weights_sha256`, what a rerun reproduces); and
    the command that reproduces the file; the digest of the code and data training
    depends on (:mod:`aiops.train.digest`)."""
    model_path = cfg.output / MODEL_FILE
    meta: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": cfg.to_command(),
        "model_file": MODEL_FILE,
        "sha256": sha256_file(model_path),
        "weights_sha256": weights_sha256(model_path),
        "model_bytes": model_path.stat().st_size,
        "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "observation": {"low": [float(x) for x in LOW], "high": [float(x) for x in HIGH],
                        "forecast_in_observation": True,
                        "forecast": "naive (last value, empirical quantiles of the last "
                                    "240 h-step errors)"},
        "training_range": ranges,
        "action_space": {"type": "MultiDiscrete", "replica_action": "residual",
                         "factors": list(factors), "batch_sizes": list(batch_sizes),
                         "fixed_batch": cfg.fixed_batch,
                         "base_policy": "predictive",
                         "meaning": "(index into factors: replicas = ceil(factor x the base "
                                    "policy's replicas); index into batch_sizes)",
                         "factor_stabilization": "a lowered factor takes effect once the "
                                                 "higher ones are a cold start old"},
        "network": {"algorithm": "PPO", "policy": "MlpPolicy",
                    "net_arch": list(cfg.net_arch), "activation": "tanh"},
        "profile": _profile_record(profiles[0]),
        "profiles": [_profile_record(p) for p in profiles],
        "training": {
            "workloads": list(cfg.workloads),
            "mix": asdict(cfg.mix),
            "timesteps": done,
            "timesteps_requested": cfg.timesteps,
            "best_checkpoint_timesteps": best_timesteps,
            "seed": cfg.seed,
            "n_envs": cfg.n_envs,
            "env_max_replicas": list(cfg.env_max_replicas),
            "interval_s": cfg.interval_s,
            "train_shield": "the deployed shield, run by the environment",
            "reward": {**asdict(cfg.reward),
                       "final_slo_miss_usd": (None if final_miss_usd is None
                                              else round(final_miss_usd, 5))},
            "hyperparameters": asdict(cfg.hyper),
            "wall_s": round(wall_s, 1),
            "steps_per_s": round(steps_per_s, 1),
        },
        "evaluation": {
            "workloads": [{"spec": ew.spec, **ew.workload.summary()} for ew in evals],
            "max_replicas": cfg.eval_max_replicas,
            "forecast": "naive (last value, empirical quantiles), refitted each decision",
            "score": ("USD: GPU-hours x price + slo_miss_usd x requests missing the SLO"
                      if cfg.reward.slo_budget == 0 else
                      f"USD: GPU-hours x price + slo_miss_usd x feasible requests missing "
                      f"the SLO beyond {cfg.reward.slo_budget:g} of them"),
            "selection": cfg.selection,
            "selection_meaning": (
                "the checkpoint with the lowest mean over workloads of score / the "
                "oracle's score (else the best baseline's)" if cfg.selection == "relative"
                else "the checkpoint with the lowest total score"),
            "table": table,
            "notes": notes,
            "history": history,
        },
        "libraries": library_versions(),
        # What a test compares with the checkout: a retrain is due when these changed.
        "training_inputs": training_inputs(),
    }
    (cfg.output / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default)
                                        + "\n")
    return meta


def _profile_record(profile: Profile) -> dict[str, Any]:
    return {"name": profile.name, "model": profile.model, "gpu": profile.gpu,
            "gpu_hour_usd": profile.gpu_hour_usd, "cold_start_s": profile.cold_start_s}


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
