"""Run a policy against a workload on the simulated cluster: the loop behind ``aiops simulate``.

The loop is the daemon's tick with the simulator at both edges: snapshot -> policy ->
bounds -> actuate. Every policy sees the same workload, profile, seed, starting replica
count and decision interval, so their figures can be compared side by side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiops.policy.base import Policy, PolicyContext, PolicyInput
from aiops.sim.cluster import ClusterSim, SimResult, SloSpec
from aiops.sim.profiles import Profile
from aiops.sim.stream import RequestStream
from aiops.sim.workloads import Workload
from aiops.types import FloatArray, Forecast, Snapshot

ForecastFn = Callable[[Snapshot, FloatArray], "Forecast | None"]


@dataclass(frozen=True)
class Timeline:
    """One row per decision: what happened, for plots and reports."""

    time: FloatArray
    desired: FloatArray
    ready: FloatArray
    batch: FloatArray
    arrival_rate: FloatArray
    running: FloatArray
    waiting: FloatArray
    ttft_p99: FloatArray
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RunOutput:
    result: SimResult
    timeline: Timeline


def workload_mix(workload: Workload | RequestStream) -> tuple[float, float]:
    """Mean prompt and output tokens of the workload (for capacity planning)."""
    if isinstance(workload, Workload):
        if len(workload) == 0:
            return 600.0, 150.0
        return float(np.mean(workload.context_tokens)), float(np.mean(workload.generated_tokens))
    summary = workload.summary()
    ctx, gen = summary.get("mean_context_tokens"), summary.get("mean_generated_tokens")
    if not isinstance(ctx, int | float) or not isinstance(gen, int | float):
        return 600.0, 150.0
    return float(ctx), float(gen)


def planning_context(
    profile: Profile,
    workload: Workload | RequestStream,
    *,
    min_replicas: int = 1,
    max_replicas: int = 64,
    interval_s: float = 15.0,
    batch_size: int | None = None,
    slo: SloSpec | None = None,
) -> PolicyContext:
    """The PolicyContext for a workload on a profile, with the per-replica capacity filled in."""
    slo = slo or SloSpec()
    ctx, gen = workload_mix(workload)
    batch = batch_size or profile.default_batch_size
    return PolicyContext(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        batch_sizes=tuple(profile.batch_sizes),
        interval_s=interval_s,
        cold_start_s=profile.cold_start_s,
        replica_capacity_rps=profile.replica_capacity_rps(batch, ctx, gen, ttft_slo=slo.ttft_s,
                                                          tpot_slo=slo.tpot_s),
        ttft_slo_s=slo.ttft_s,
        tpot_slo_s=slo.tpot_s,
        max_batch_for_tpot=profile.max_batch_for_tpot(slo.tpot_s, ctx + 0.5 * gen),
        capacity_for=profile.capacity_fn(batch, ttft_slo=slo.ttft_s, tpot_slo=slo.tpot_s),
    )


def initial_replicas(workload: Workload | RequestStream, context: PolicyContext,
                     window_s: float = 300.0) -> int:
    """Replicas to start with: enough for the mean rate of the first ``window_s`` seconds.

    Every policy starts from this same count, ready at time 0, so none is penalised by a
    cold start at the beginning of the run.
    """
    if workload.duration <= 0 or context.replica_capacity_rps <= 0:
        return context.min_replicas
    span = min(window_s, workload.duration)
    head = float(workload.rate(span)[0])
    n = math.ceil(head / context.replica_capacity_rps)
    return int(min(max(n, context.min_replicas), context.max_replicas))


def run_policy(
    policy: Policy[Any],
    workload: Workload | RequestStream,
    profile: Profile,
    context: PolicyContext,
    *,
    start_replicas: int,
    slo: SloSpec | None = None,
    forecast_fn: ForecastFn | None = None,
    on_step: Callable[[float], None] | None = None,
) -> RunOutput:
    """Simulate ``workload`` under ``policy``; decisions every ``context.interval_s`` seconds.

    ``forecast_fn(snapshot, past_rates)`` is called before each decision when given, with the
    arrival rates observed so far (one per interval): it sees only the past.
    """
    sim = ClusterSim(profile, workload, replicas=start_replicas, slo=slo)
    state = policy.initial_state()
    interval = context.interval_s
    steps = max(1, math.ceil(workload.duration / interval))
    rows: list[tuple[float, ...]] = []
    reasons: list[str] = []
    rates = np.zeros(steps)
    for i in range(steps):
        sim.step(interval)
        snap = sim.snapshot()
        rates[i] = snap.arrival_rate
        forecast = forecast_fn(snap, rates[: i + 1]) if forecast_fn is not None else None
        rec, state = policy.decide(PolicyInput(snap, context, forecast=forecast), state)
        replicas = min(max(rec.replicas, context.min_replicas), context.max_replicas)
        sim.scale(replicas)
        if rec.batch_size is not None and rec.batch_size != sim.batch_size:
            sim.set_batch_size(rec.batch_size)
        rows.append((snap.time, replicas, snap.ready_replicas, sim.batch_size,
                     snap.arrival_rate, snap.requests_running, snap.requests_waiting,
                     snap.ttft_p99))
        reasons.append(rec.reason)
        if on_step is not None:
            on_step(sim.time)
    sim.finish()
    arr = np.array(rows, dtype=np.float64).reshape(-1, 8)
    cols = [arr[:, j].copy() for j in range(8)]
    timeline = Timeline(time=cols[0], desired=cols[1], ready=cols[2], batch=cols[3],
                        arrival_rate=cols[4], running=cols[5], waiting=cols[6],
                        ttft_p99=cols[7], reasons=tuple(reasons))
    return RunOutput(sim.result(), timeline)


def peak_replicas(workload: Workload | RequestStream, context: PolicyContext,
                  window_s: float = 60.0) -> int:
    """Replicas the busiest ``window_s`` of the workload needs: the default ``static`` size."""
    if workload.duration <= 0 or context.replica_capacity_rps <= 0:
        return context.min_replicas
    peak = float(workload.rate(window_s).max())
    n = math.ceil(peak / context.replica_capacity_rps)
    return int(min(max(n, context.min_replicas), context.max_replicas))


FORECAST_POLICIES = frozenset({"predictive", "ppo"})


class OnlineForecast:
    """Forecasts for a simulated run, made from the past of the same workload only.

    The model is fitted once ``min_points`` decisions of history exist and refitted every
    ``refit_s`` simulated seconds on everything seen so far; in between it is updated with
    each new observation (cheap). A model that fails to fit leaves the run without forecasts
    for that stretch — the predictive policy then acts as the HPA and says so.
    """

    def __init__(self, model: str, interval_s: float, cold_start_s: float, *,
                 refit_s: float = 1800.0, min_points: int = 40) -> None:
        self.model = model
        self.interval_s = interval_s
        self.horizon = max(2, math.ceil((cold_start_s + interval_s) / interval_s) + 1)
        self.refit_s = refit_s
        self.min_points = min_points
        self._fc: Any = None
        self._last_fit = -math.inf
        self.failures: list[str] = []

    def __call__(self, snap: Snapshot, past: FloatArray) -> Forecast | None:
        from aiops.forecast.base import make_forecaster

        n = len(past)
        t = snap.time
        times = t - self.interval_s * np.arange(n - 1, -1, -1, dtype=np.float64)
        try:
            if n >= self.min_points and (self._fc is None or t - self._last_fit >= self.refit_s):
                self._fc = make_forecaster(self.model).fit(times, past)
                self._last_fit = t
            elif self._fc is not None:
                self._fc.update(times[-1:], past[-1:])
            if self._fc is None:
                return None
            fc: Forecast = self._fc.predict(self.horizon)
            return fc
        except Exception as exc:  # a failing model must not end the run
            self.failures.append(f"t={t:.0f}s: {exc}")
            self._fc = None
            return None


@dataclass(frozen=True)
class Comparison:
    """``aiops simulate``'s answer: every policy on the same workload."""

    workload: dict[str, object]
    profile: str
    interval_s: float
    outputs: dict[str, RunOutput]

    def as_json(self) -> dict[str, object]:
        return {
            "workload": self.workload,
            "profile": self.profile,
            "interval_s": self.interval_s,
            "results": {k: v.result.as_dict() for k, v in self.outputs.items()},
        }


def compare_policies(
    workload: Workload | RequestStream,
    profile: Profile,
    specs: list[str],
    *,
    interval_s: float = 15.0,
    min_replicas: int = 1,
    max_replicas: int = 64,
    slo: SloSpec | None = None,
    on_step: Callable[[str, float], None] | None = None,
    forecast_model: str = "auto",
) -> Comparison:
    """Run each policy spec on the same workload, profile and starting point.

    Policies that plan on a forecast (``predictive``, ``ppo``) get one from
    ``forecast_model``, fitted online on the run's own past (no look-ahead).
    """
    from aiops.policy import make_policy
    from aiops.policy.base import PolicySpec

    slo = slo or SloSpec()
    parsed = [PolicySpec.parse(s) for s in specs]
    context = planning_context(profile, workload, min_replicas=min_replicas,
                               max_replicas=max_replicas, interval_s=interval_s, slo=slo)
    start = initial_replicas(workload, context)
    outputs: dict[str, RunOutput] = {}
    for spec in parsed:
        def step_cb(t: float, _name: str = spec.text) -> None:
            if on_step is not None:
                on_step(_name, t)

        policy = make_policy(spec, context, peak_replicas=peak_replicas(workload, context),
                             workload=workload, profile=profile, slo=slo)
        # A hindsight plan brings its own starting fleet; every other policy starts alike.
        first = int(getattr(policy, "start_replicas", start))
        forecast_fn = None
        if spec.name in FORECAST_POLICIES:
            forecast_fn = OnlineForecast(forecast_model, interval_s, profile.cold_start_s)
        outputs[spec.text] = run_policy(policy, workload, profile, context,
                                        start_replicas=first, slo=slo, on_step=step_cb,
                                        forecast_fn=forecast_fn)
    return Comparison(workload.summary(), profile.name, interval_s, outputs)
