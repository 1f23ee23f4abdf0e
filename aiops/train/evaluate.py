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
from dataclasses import dataclass, field, replace
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
    """An evaluation workload and the spec that rebuilds it
    (``SPEC[@RATE_SCALE][,cv=C][,profile=NAME]``), with the profile it runs on when the spec
    names one (else the set-up's)."""

    spec: str
    workload: Workload | RequestStream
    profile: Profile | None = None


@dataclass(frozen=True)
class EvalSpec:
    """The parts of an evaluation spec (:func:`parse_eval_options`)."""

    source: str
    rate_scale: float = 1.0
    cv: float | None = None
    profile: str | None = None


def parse_eval_spec(text: str) -> tuple[str, float]:
    """``SPEC`` or ``SPEC@K`` (options after a comma aside): a workload and a rate scale."""
    parts = parse_eval_options(text)
    return parts.source, parts.rate_scale


def parse_eval_options(text: str) -> EvalSpec:
    """``SPEC[@K][,cv=C][,profile=NAME]``: a workload, a rate scale for it, arrivals redrawn
    with inter-arrival CV ``C`` (:func:`aiops.train.mix.cluster_arrivals`: a held-out
    workload as bursty as real LLM traffic) and the profile it runs on (a held-out
    evaluation of the other cold start)."""
    head, *opts = text.split(",")
    spec, at, scale = head.rpartition("@")
    k = 1.0
    if not at:
        spec = head
    else:
        try:
            k = float(scale)
        except ValueError:
            raise InputError(f"evaluation workload {text!r}: {scale!r} after @ is not a "
                             "rate scale") from None
        if not (k > 0 and math.isfinite(k)):
            raise InputError(f"evaluation workload {text!r}: rate scale must be > 0")
    cv: float | None = None
    profile: str | None = None
    for opt in opts:
        key, eq, value = opt.partition("=")
        if key == "cv" and eq:
            try:
                cv = float(value)
            except ValueError:
                cv = math.nan
            if not (cv > 0 and math.isfinite(cv)):
                raise InputError(f"evaluation workload {text!r}: cv={value!r} must be a "
                                 "number > 0")
        elif key == "profile" and eq and value:
            profile = value
        else:
            raise InputError(f"evaluation workload {text!r}: unknown option {opt!r} "
                             "(cv=C, profile=NAME)")
    return EvalSpec(spec, k, cv, profile)


def load_eval_workloads(specs: Sequence[str]) -> list[EvalWorkload]:
    """Build each evaluation workload once, with a fixed seed per position."""
    from aiops.sim.profiles import load_profile

    out: list[EvalWorkload] = []
    for i, text in enumerate(specs):
        parts = parse_eval_options(text)
        spec = parts.source
        seed = EVAL_SEED_BASE + i if spec.startswith(SYNTHETIC_PREFIX) else 0
        w = resolve_source(spec, rate_scale=parts.rate_scale, seed=seed)
        if parts.cv is not None:
            from aiops.train.mix import cluster_arrivals

            if not isinstance(w, Workload):
                raise InputError(f"evaluation workload {text!r}: cv= redraws the arrivals "
                                 "of a workload held in memory, not of a ServeGen stream")
            w = cluster_arrivals(w, parts.cv, np.random.default_rng(seed))
        profile = load_profile(parts.profile) if parts.profile is not None else None
        out.append(EvalWorkload(text, w, profile))
    return out


NAIVE_RESIDUAL_WINDOW = 240
"""Recent h-step errors the naive forecast's quantiles come from: an hour of 15-s rates."""


def naive_forecast_fn(context: PolicyContext) -> ForecastFn:
    """A last-value forecast with empirical quantiles, refitted on the past each decision.

    It is the forecast every policy in the comparison sees (``predictive`` plans on it, the
    PPO agent observes it and its shield's floor reads its median), and the one the
    training environment gives the agent. Naive because it needs no training data and is
    what ``auto`` must beat. The numbers are those of
    ``NaiveForecaster(residual_window=240).fit(times, rates).predict(horizon)`` (a test
    holds them equal), computed without the fitting machinery: the environment asks for
    one every step, and that path cost as much as the simulator step itself."""
    interval = context.interval_s
    horizon = max(1, math.ceil(context.cold_start_s / interval) + 1)

    def forecast(snap: Snapshot, rates: FloatArray) -> Forecast | None:
        return naive_forecast(snap.time, interval, rates, horizon)

    return forecast


def naive_forecast(end: float, interval: float, rates: FloatArray, horizon: int,
                   window: int = NAIVE_RESIDUAL_WINDOW) -> Forecast | None:
    """The naive forecast of ``rates`` (one per ``interval``, the last at time ``end``)
    for ``horizon`` steps, or None with fewer than ``MIN_LENGTH`` points."""
    from aiops.forecast.base import QUANTILES
    from aiops.forecast.series import MIN_LENGTH

    y = np.asarray(rates, dtype=np.float64)
    n = len(y)
    if n < MIN_LENGTH:
        return None
    # The fitted interval and start exactly as the forecaster's fit computes them.
    ts = end - interval * np.arange(n - 1, -1, -1, dtype=np.float64)
    step = float(np.median(np.diff(ts)))
    resid = _error_quantiles(y, horizon, window, np.array(QUANTILES, dtype=np.float64))
    last = y[-1]
    q = np.sort(last + resid, axis=0)
    mean = np.full(horizon, last)
    if y.min() >= 0:
        q = np.maximum(q, 0.0)
        mean = np.maximum(mean, 0.0)
    return Forecast(start=end + step, step=step, mean=mean,
                    quantiles={lv: q[i].copy() for i, lv in enumerate(QUANTILES)},
                    model="naive")


def _error_quantiles(y: FloatArray, horizon: int, window: int,
                     levels: FloatArray) -> FloatArray:
    """``(levels, horizon)``: per k, ``np.quantile`` (linear) of the last ``window`` k-step
    differences of ``y`` — zeros where fewer than two exist — computed for every k at once
    with numpy's own arithmetic (virtual index ``(m - 1) q``, its lerp), so the values are
    the ones ``np.quantile`` gives, bit for bit (a test holds it)."""
    n = len(y)
    k = np.arange(1, horizon + 1)
    m = np.clip(n - k, 0, window)  # differences per k
    j = np.arange(window)
    first = n - m  # index in y of the first difference's minuend
    idx = np.minimum(first[:, None] + j[None, :], n - 1)
    sub = np.clip(idx - k[:, None], 0, n - 1)
    valid = j[None, :] < m[:, None]
    diffs = np.sort(np.where(valid, y[idx] - y[sub], np.inf), axis=1)
    virtual = (m[:, None] - 1).astype(np.float64) * levels[None, :]
    prev = np.floor(virtual)
    gamma = virtual - prev
    lo = np.clip(prev.astype(np.intp), 0, window - 1)
    hi = np.clip(lo + 1, 0, window - 1)
    rows = np.arange(horizon)[:, None]
    a, b = diffs[rows, lo], diffs[rows, hi]
    with np.errstate(invalid="ignore"):
        diff_b_a = b - a
        out = np.where(gamma >= 0.5, b - diff_b_a * (1 - gamma), a + diff_b_a * gamma)
    out[m < 2] = 0.0
    result: FloatArray = out.T
    return result


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

    def for_workload(self, ew: EvalWorkload) -> EvalSetup:
        """This set-up on the profile ``ew`` names, if it names one."""
        return self if ew.profile is None else replace(self, profile=ew.profile)


def run_on(policy: Policy[Any], ew: EvalWorkload, setup: EvalSetup,
           *, start: int | None = None) -> SimResult:
    """One policy over one evaluation workload (on its own profile, if it names one)."""
    setup = setup.for_workload(ew)
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
            ew_setup = setup.for_workload(ew)
            ctx = ew_setup.context(ew.workload)
            policy: Policy[Any] | None
            try:
                policy = make_policy(PolicySpec.parse(name), ctx,
                                     peak_replicas=peak_replicas(ew.workload, ctx),
                                     workload=ew.workload, profile=ew_setup.profile,
                                     slo=setup.slo)
            except InputError as err:
                policy = _predictive_direct(ctx) if name == "predictive" else None
                if policy is None:
                    notes.append(f"{name} skipped: {err}")
                    break
            # A hindsight plan brings its own starting fleet; every other policy starts alike.
            start = getattr(policy, "start_replicas", None)
            res = run_on(policy, ew, setup, start=start)
            table[ew.spec][name] = result_row(res, ew_setup.profile, setup.slo_miss_usd,
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
