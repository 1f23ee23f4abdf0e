"""Side-by-side evaluation of a policy against the baselines on held-out workloads.

Evaluation runs go through :func:`aiops.sim.runner.run_policy` — the loop behind
``aiops simulate`` — not through the gym environment, so the figures are the ones an
operator would see: every policy starts from the same replica count, sees the same
forecast, and is scored over whole workloads (a request never served counts as missed).

The score that picks the best checkpoint is in US dollars, priced like the training reward:
GPU-hours at the profile's price plus ``slo_miss_usd`` per request that missed its SLO.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiops.errors import InputError
from aiops.policy.base import Policy, PolicyContext, PolicySpec
from aiops.sim.cluster import SimResult, SloSpec
from aiops.sim.profiles import Profile
from aiops.sim.runner import ForecastFn, initial_replicas, planning_context, run_policy
from aiops.sim.stream import RequestStream
from aiops.sim.workloads import SYNTHETIC_PREFIX, Workload, resolve_source
from aiops.types import FloatArray, Forecast, Snapshot

EVAL_SEED_BASE = 1_000_003
"""Synthetic evaluation workloads use seeds from here: training never calls the generators
with a seed (it draws fresh curves from the environment's generator), so these
realisations are never trained on."""

BASELINES: tuple[str, ...] = ("hpa", "keda", "predictive", "oracle")


@dataclass(frozen=True)
class EvalWorkload:
    """An evaluation workload and the spec that rebuilds it (``SPEC[@RATE_SCALE]``)."""

    spec: str
    workload: Workload | RequestStream


def parse_eval_spec(text: str) -> tuple[str, float]:
    """``SPEC`` or ``SPEC@K``: a workload and a rate scale for it."""
    spec, at, scale = text.rpartition("@")
    if not at:
        return text, 1.0
    try:
        k = float(scale)
    except ValueError:
        raise InputError(f"evaluation workload {text!r}: {scale!r} after @ is not a "
                         "rate scale") from None
    if not (k > 0 and math.isfinite(k)):
        raise InputError(f"evaluation workload {text!r}: rate scale must be > 0")
    return spec, k


def load_eval_workloads(specs: Sequence[str]) -> list[EvalWorkload]:
    """Build each evaluation workload once, with a fixed seed per position."""
    out: list[EvalWorkload] = []
    for i, text in enumerate(specs):
        spec, k = parse_eval_spec(text)
        seed = EVAL_SEED_BASE + i if spec.startswith(SYNTHETIC_PREFIX) else 0
        out.append(EvalWorkload(text, resolve_source(spec, rate_scale=k, seed=seed)))
    return out


def naive_forecast_fn(context: PolicyContext) -> ForecastFn | None:
    """A last-value forecast with empirical quantiles, refitted on the past each decision.

    It is the forecast every policy in the comparison sees (``predictive`` plans on it, the
    PPO shield's floor reads its median). Naive because it needs no training data and is
    what ``auto`` must beat; None when the forecast package is not installed."""
    try:
        from aiops.forecast.naive import NaiveForecaster
        from aiops.forecast.series import MIN_LENGTH
    except ImportError:
        return None
    interval = context.interval_s
    horizon = max(1, math.ceil(context.cold_start_s / interval) + 1)

    def forecast(snap: Snapshot, rates: FloatArray) -> Forecast | None:
        if len(rates) < MIN_LENGTH:
            return None
        ts = snap.time - interval * np.arange(len(rates) - 1, -1, -1, dtype=np.float64)
        return NaiveForecaster(residual_window=240).fit(ts, rates).predict(horizon)

    return forecast


def score_usd(result: SimResult, profile: Profile, slo_miss_usd: float,
              slo_budget: float = 0.0) -> float:
    """GPU cost plus the price of every request that missed its SLO (or was never served);
    with an error budget, of the feasible requests missing beyond ``slo_budget`` of them
    (as the training reward counts them: infeasible ones miss on any fleet)."""
    gpu = result.gpu_hours * profile.gpu_hour_usd
    if slo_budget <= 0:
        return gpu + slo_miss_usd * (1.0 - result.slo_attainment) * result.requests
    feasible = result.requests - result.infeasible_requests
    missed = (1.0 - result.slo_attainment_feasible) * feasible
    return gpu + slo_miss_usd * max(0.0, missed - slo_budget * feasible)


def result_row(result: SimResult, profile: Profile, slo_miss_usd: float,
               slo_budget: float = 0.0) -> dict[str, float]:
    return {
        "gpu_hours": round(result.gpu_hours, 4),
        "slo_attainment": round(result.slo_attainment, 5),
        "slo_attainment_feasible": round(result.slo_attainment_feasible, 5),
        "infeasible_requests": float(result.infeasible_requests),
        "score_usd": round(score_usd(result, profile, slo_miss_usd, slo_budget), 3),
        "requests": float(result.requests),
        "scale_ups": float(result.scale_ups),
        "scale_downs": float(result.scale_downs),
    }


@dataclass(frozen=True)
class EvalSetup:
    """Everything a run shares, so every policy is compared on equal terms."""

    profile: Profile
    max_replicas: int = 64
    interval_s: float = 15.0
    slo: SloSpec = field(default_factory=SloSpec)
    slo_miss_usd: float = 0.005
    slo_budget: float = 0.0  # see RewardConfig.slo_budget
    with_forecast: bool = True
    min_replicas: int = 1
    """The floor every policy runs above (the daemon's ``min_replicas`` guardrail): a fleet
    kept standing for the surprise no policy sees coming, which benchmarks tune in
    hindsight like an HPA target."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise InputError(f"min_replicas {self.min_replicas} must lie in "
                             f"[0, max_replicas={self.max_replicas}]")

    def context(self, w: Workload | RequestStream) -> PolicyContext:
        return planning_context(self.profile, w, min_replicas=self.min_replicas,
                                max_replicas=self.max_replicas,
                                interval_s=self.interval_s, slo=self.slo)


def run_on(policy: Policy[Any], ew: EvalWorkload, setup: EvalSetup,
           *, start: int | None = None) -> SimResult:
    """One policy over one evaluation workload."""
    ctx = setup.context(ew.workload)
    first = initial_replicas(ew.workload, ctx) if start is None else start
    fn = naive_forecast_fn(ctx) if setup.with_forecast else None
    return run_policy(policy, ew.workload, setup.profile, ctx, start_replicas=first,
                      slo=setup.slo, forecast_fn=fn).result


def baseline_table(
    evals: Sequence[EvalWorkload],
    setup: EvalSetup,
    names: Sequence[str] = BASELINES,
    on_done: Callable[[str, str], None] | None = None,
) -> tuple[dict[str, dict[str, dict[str, float]]], list[str]]:
    """``{workload spec: {policy: row}}`` for the baselines, and notes on the skipped ones."""
    from aiops.policy import make_policy
    from aiops.sim.runner import peak_replicas

    table: dict[str, dict[str, dict[str, float]]] = {ew.spec: {} for ew in evals}
    notes: list[str] = []
    for name in names:
        for ew in evals:
            ctx = setup.context(ew.workload)
            policy: Policy[Any] | None
            try:
                policy = make_policy(PolicySpec.parse(name), ctx,
                                     peak_replicas=peak_replicas(ew.workload, ctx),
                                     workload=ew.workload, profile=setup.profile,
                                     slo=setup.slo)
            except InputError as err:
                policy = _predictive_direct(ctx) if name == "predictive" else None
                if policy is None:
                    notes.append(f"{name} skipped: {err}")
                    break
            # A hindsight plan brings its own starting fleet; every other policy starts alike.
            start = getattr(policy, "start_replicas", None)
            res = run_on(policy, ew, setup, start=start)
            table[ew.spec][name] = result_row(res, setup.profile, setup.slo_miss_usd,
                                              setup.slo_budget)
            if on_done is not None:
                on_done(name, ew.spec)
    return table, notes


def _predictive_direct(ctx: PolicyContext) -> Policy[Any] | None:
    """``predictive`` straight from its module while the registry does not list it yet."""
    try:
        from aiops.policy.predictive import PredictivePolicy
    except ImportError:
        return None
    policy: Policy[Any] = PredictivePolicy.from_spec(PolicySpec.parse("predictive"), ctx)
    return policy
