"""From a history or a trace to the report's figures: workload, replays, the advice.

Per target:

1. **Workload.** From Prometheus: the arrival-rate history becomes Poisson arrivals (one
   rate per step), with token lengths drawn from a ``TokenDistribution`` whose medians are
   set so the means match the observed prompt/output token rates (the request mix decides
   how many requests a replica serves). From a trace: the requests themselves. With
   ``backend: sim``: the simulated cluster's workload, seeded as ``aiops run`` seeds it.
2. **Replays.** Every option runs on the same workload, profile, SLO, bounds and decision
   interval: the HPA and KEDA through ``aiops.sim.runner.compare_policies``; aiops — the
   configured policy followed by the guardrails, with the forecasts the daemon would have
   made (``aiops.report.forecasts``, computed ahead from the arrival rate the baselines saw)
   — and what ran (the recorded replicas) through ``run_policy``; the best fixed fleet
   (:func:`best_fixed_fleet`).
3. **Figures.** GPU-hours, SLO attainment, TTFT/TPOT, scale actions per option; the advice
   (``aiops.report.model.advise``) and the verdict against what ran (else the better of HPA
   and KEDA); every change aiops would have made with its reason and guardrail clamps; the
   batch size the profile recommends; the forecast's accuracy; anomalies in the load; why
   ``aiops simulate`` gives other figures on the same input.

Failures stay inside their target (principle 5 of docs/architecture.md): a missing
forecaster, detector or series becomes a note ("forecast unavailable: ..."), a target that
cannot be read or replayed becomes a section that says why, and the other targets are still
computed.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiops.config import Config, GuardrailsConfig, TargetConfig
from aiops.errors import InputError
from aiops.ingest.traces import RateSeries
from aiops.policy import make_policy
from aiops.policy.base import Policy, PolicyContext, PolicySpec
from aiops.report.forecasts import ForecastLookup, Forecasts, Pending, Schedule
from aiops.report.forecasts import start as start_forecasts
from aiops.report.history import HistoryError, HistorySource, read_history
from aiops.report.model import (
    ROLE_AIOPS,
    ROLE_HPA,
    ROLE_KEDA,
    ROLE_RAN,
    ROLE_STATIC,
    ROLES,
    SLO_MISS_USD,
    STATUS_ERROR,
    STATUS_NO_DATA,
    STATUS_OK,
    AnomalyInfo,
    AnomalyWindow,
    BatchAdvice,
    BatchOption,
    Change,
    ForecastInfo,
    PolicyFigures,
    Report,
    TargetReport,
    advise,
    finite_or_none,
    fmt_span,
    replicas_text,
    verdict_for,
)
from aiops.report.replay import (
    AnomalyLookup,
    ForecastRecorder,
    GuardedPolicy,
    GuardLimits,
    RecordedReplicas,
)
from aiops.sim.cluster import SimResult, SloSpec
from aiops.sim.profiles import Profile, load_profile
from aiops.sim.runner import (
    FORECAST_POLICIES,
    ForecastFn,
    RunOutput,
    compare_policies,
    initial_replicas,
    peak_replicas,
    planning_context,
    run_policy,
)
from aiops.sim.workloads import (
    TokenDistribution,
    Workload,
    resolve_workload,
    workload_from_rate_series,
)
from aiops.types import FloatArray

ProgressFn = Callable[[str, str, float, float], None]
"""``(target, row, simulated seconds done, total seconds)``: called as a replay advances."""

BASELINE_SPECS: tuple[str, ...] = ("hpa", "keda")
MIN_FORECAST_S = 600.0
"""History before the first fit: 10 minutes (10 steps at the default 60-s forecast step), at
least :data:`MIN_FORECAST_STEPS` steps — what the daemon's first refit needs too."""
MIN_FORECAST_STEPS = 8

BATCH_GAIN = 0.05
"""Capacity a batch-size change must add (per replica) to be recommended: the change rolls
every pod, and below ~5% the gain is within the capacity model's own error."""

DEFAULT_MAX_REFITS = 6
"""Refits of the forecaster over the whole replay, at most. The daemon refits every hour;
over a 7-day replay that is 168 fits of ``auto`` (each a backtest of several models, 20 s to
minutes on two cores), which would make the report take hours. Between refits the models
still follow the data through ``update``, so six evenly spaced refits lose little; the
report says when its schedule differs from the daemon's."""


@dataclass(frozen=True)
class Settings:
    """How one target is replayed. Units: seconds, requests/s; SLO per request."""

    profile: Profile
    policy: str
    slo: SloSpec = field(default_factory=SloSpec)
    min_replicas: int = 1
    max_replicas: int = 64
    batch_sizes: tuple[int, ...] = ()
    tune_batch_size: bool = False
    guardrails: GuardrailsConfig = field(default_factory=GuardrailsConfig)
    interval_s: float = 15.0
    forecast_model: str = "auto"
    forecast_step_s: float = 60.0
    forecast_history_s: float = 7 * 86400.0
    refit_s: float = 3600.0
    max_refits: int = DEFAULT_MAX_REFITS
    detector: str = "default"
    threshold: float = 0.9
    detect_step_s: float = 60.0
    jobs: int = 1  # processes for the forecasts (aiops.report.forecasts.precompute)
    slo_miss_usd: float = SLO_MISS_USD  # price of a missed request in the advice
    guardrails_label: str = "the default guardrails"  # where ``guardrails`` came from

    def as_json(self) -> dict[str, object]:
        return {"profile": self.profile.name, "policy": self.policy,
                "slo": {"ttft_s": self.slo.ttft_s, "tpot_s": self.slo.tpot_s},
                "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "interval_s": self.interval_s, "forecast_model": self.forecast_model,
                "forecast_step_s": self.forecast_step_s, "refit_s": self.refit_s,
                "max_refits": self.max_refits, "slo_miss_usd": self.slo_miss_usd,
                "detector": self.detector,
                "threshold": self.threshold,
                "guardrails": self.guardrails.model_dump(mode="json")}


@dataclass(frozen=True, eq=False)
class Line:
    """One curve of a plot: seconds from the start, values; ``role`` picks its colour."""

    label: str
    role: str
    t: FloatArray
    v: FloatArray
    dashed: bool = False


@dataclass(frozen=True, eq=False)
class Series:
    """Everything the plots of one target draw, at full resolution (plots downsample)."""

    start_unix: float | None
    load: Line  # arrival rate per decision interval: what the forecaster saw and predicted
    band_t: FloatArray
    band_p10: FloatArray
    band_p50: FloatArray
    band_p90: FloatArray
    anomaly_t: FloatArray  # the detector's grid (``Settings.detect_step_s``)
    anomaly_v: FloatArray  # the load it scored there
    anomaly_score: FloatArray
    threshold: float
    replicas: tuple[Line, ...]
    ttft: tuple[Line, ...]
    ttft_slo_s: float


@dataclass(frozen=True)
class Recorded:
    """What ran, from the history: replica counts at seconds from the start."""

    times: FloatArray
    replicas: FloatArray


# --------------------------------------------------------------------------- pieces
def token_distribution(mean_context: float | None, mean_generated: float | None
                       ) -> tuple[TokenDistribution, str]:
    """Lognormal token lengths whose means match the observed ones (defaults otherwise).

    The sigmas stay the defaults (the history has rates, not per-request lengths), and the
    median is ``mean / exp(sigma^2 / 2)``, the lognormal's own relation.
    """
    base = TokenDistribution()
    if mean_context is None or mean_generated is None or not (
            math.isfinite(mean_context) and math.isfinite(mean_generated)
            and mean_context >= 1 and mean_generated >= 1):
        return base, ("token lengths: the default chat mix (median 600 prompt / 150 output "
                      "tokens); the token-rate history was not available")
    ctx_med = min(mean_context, base.max_context) / math.exp(base.context_sigma ** 2 / 2)
    gen_med = min(mean_generated, base.max_generated) / math.exp(base.generated_sigma ** 2 / 2)
    dist = TokenDistribution(context_median=max(ctx_med, 1.0), generated_median=max(gen_med, 1.0))
    return dist, (f"token lengths: lognormal with the observed means ({mean_context:.0f} "
                  f"prompt / {mean_generated:.0f} output tokens per request)")


def batch_advice(profile: Profile, workload: Workload, slo: SloSpec,
                 batch_sizes: tuple[int, ...], current: int, *,
                 current_known: bool = False) -> BatchAdvice:
    """The batch size that serves this traffic mix with the fewest replicas within the SLO.

    For each allowed size: one replica's decode throughput and TPOT at a full batch of this
    mix's sequences (``Profile.decode_tokens_per_s``, ``Profile.step_time``) and the requests/s
    it sustains
    within the SLO for this mix (``Profile.replica_capacity_rps``, the model the policies
    plan with). A change rolls every pod of the Deployment, so it has to buy something: the
    current size is kept unless another one sustains :data:`BATCH_GAIN` more requests/s per
    replica, or the current one misses the TPOT SLO at a full batch. When changing, the
    highest capacity within the SLO wins, and among sizes within 1% of it the smallest
    (same throughput, shorter TPOT, less KV-cache pressure).
    """
    allowed = tuple(sorted(b for b in batch_sizes if b in profile.batch_sizes)) or tuple(
        sorted(profile.batch_sizes))
    n = len(workload)
    ctx = float(np.mean(workload.context_tokens)) if n else 600.0
    gen = float(np.mean(workload.generated_tokens)) if n else 150.0
    peak_raw = workload.summary().get("peak_rate")
    peak = float(peak_raw) if isinstance(peak_raw, int | float) else 0.0
    options = []
    held = ctx + 0.5 * gen  # KV tokens a sequence holds on average while it decodes
    for b in allowed:
        cap = profile.replica_capacity_rps(b, ctx, gen, ttft_slo=slo.ttft_s, tpot_slo=slo.tpot_s)
        options.append(BatchOption(b, profile.decode_tokens_per_s(b, held),
                                   profile.step_time(b, held), cap,
                                   max(1, math.ceil(peak / cap - 1e-9)) if cap > 0 else 0))
    within = [o for o in options if o.tpot_s <= slo.tpot_s] or [
        min(options, key=lambda o: o.tpot_s)]
    best_cap = max(o.capacity_rps for o in within)
    cur = next((o for o in options if o.batch_size == current), None)
    if cur is not None and cur in within and cur.capacity_rps * (1 + BATCH_GAIN) >= best_cap:
        rec = cur
    else:
        rec = min((o for o in within if o.capacity_rps >= 0.99 * best_cap),
                  key=lambda o: o.batch_size)
    facts = (f"{rec.decode_tokens_per_s:,.0f} output tokens/s per replica at a full batch, "
             f"TPOT {1000 * rec.tpot_s:.1f} ms (SLO {1000 * slo.tpot_s:.0f} ms); "
             f"{rec.capacity_rps:.2f} req/s per replica for this mix ({ctx:.0f} prompt / "
             f"{gen:.0f} output tokens)")
    if peak > 0:
        facts += f", so the peak of {peak:.1f} req/s needs {rec.replicas_at_peak} replicas"
    if rec is cur:
        why = (f"keep {rec.batch_size}: {facts}; no other size sustains "
               f"{100 * BATCH_GAIN:.0f}% more requests per replica within the SLO, which a "
               "rolling restart of every pod would have to buy")
    else:
        why = f"{rec.batch_size}: {facts}"
        if cur is not None and cur not in within:
            why += (f"; the current {cur.batch_size} has a full-batch TPOT of "
                    f"{1000 * cur.tpot_s:.1f} ms, above the SLO")
        elif cur is not None:
            why += (f"; the current {cur.batch_size} sustains {cur.capacity_rps:.2f} req/s "
                    f"and needs {cur.replicas_at_peak} replicas at the peak")
    return BatchAdvice(current=current, recommended=rec.batch_size, reason=why,
                       tpot_slo_s=slo.tpot_s, peak_rps=peak, options=tuple(options),
                       current_known=current_known)


def detect_anomalies(times: FloatArray, values: FloatArray, detector: str, threshold: float,
                     step: float) -> tuple[AnomalyInfo, FloatArray]:
    """Score the load with a streaming detector (past only) and group alarms into windows."""
    empty = np.zeros(0)
    try:
        from aiops.detect.detectors import make_detector
    except ImportError as exc:
        return AnomalyInfo(False, f"aiops.detect is not importable ({exc})"), empty
    try:
        det = make_detector(detector)
        scores = np.asarray(det.update(times, values), dtype=np.float64)
    except Exception as exc:  # a detector bug must not cost the report
        return AnomalyInfo(False, f"detector {detector!r} failed: {exc}"), empty
    name = str(getattr(det, "name", detector))
    hot = scores >= threshold
    windows = []
    if hot.any():
        padded = np.concatenate(([False], hot, [False])).astype(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            windows.append(AnomalyWindow(float(times[a]), float(times[b - 1]) + step,
                                         float(scores[a:b].max())))
    warmup = getattr(det, "warmup", 0)
    return AnomalyInfo(True, detector=name, threshold=threshold, points=len(scores),
                       windows=tuple(windows),
                       warmup=warmup if isinstance(warmup, int) else 0), scores


def check_forecast_model(spec: str, option: str = "--forecast-model") -> None:
    """InputError for a forecaster spec that does not name one (checked before any replay:
    a typo must not quietly leave a forecast-driven policy without forecasts)."""
    if forecast_available() is not None:
        return  # the report says forecasting is unavailable, whatever the model
    from aiops.forecast.base import make_from_spec

    try:
        make_from_spec(spec)
    except InputError as err:
        raise InputError(f"{option} {spec!r}: {err.problem}") from None


def forecast_available() -> str | None:
    """None when ``aiops.forecast`` can be used, else why not."""
    try:
        import aiops.forecast.base  # noqa: F401
    except ImportError as exc:
        return f"aiops.forecast is not importable ({exc})"
    return None


def _figures(role: str, label: str, spec: str, r: SimResult) -> PolicyFigures:
    return PolicyFigures(
        role=role, label=label, spec=spec, gpu_hours=r.gpu_hours, cost_usd=r.cost_usd,
        slo_attainment=r.slo_attainment, ttft_p50_s=finite_or_none(r.ttft_p50_s),
        ttft_p99_s=finite_or_none(r.ttft_p99_s), tpot_p99_s=finite_or_none(r.tpot_p99_s),
        scale_ups=r.scale_ups, scale_downs=r.scale_downs, max_replicas=r.max_replicas,
        requests=r.requests, unfinished=r.unfinished)


def _changes(out: RunOutput, guarded: GuardedPolicy[Any], start: int, batch0: int
             ) -> tuple[tuple[Change, ...], dict[str, int]]:
    """Every tick where aiops changed replicas or batch size, with reasons and clamps."""
    tl = out.timeline
    decisions = guarded.decisions
    aligned = len(decisions) == len(tl.time)
    changes = []
    prev_r, prev_b = start, batch0
    for i in range(len(tl.time)):
        r, b = int(tl.desired[i]), int(tl.batch[i])
        if r != prev_r or b != prev_b:
            clamps = tuple(decisions[i].clamps) if aligned else ()
            # The policy's own reason; the clamps are listed apart (the timeline's reason
            # has them appended, for logs).
            why = decisions[i].recommendation.reason if aligned else tl.reasons[i]
            changes.append(Change(float(tl.time[i]), prev_r, r, prev_b, b, why, clamps))
        prev_r, prev_b = r, b
    firings = Counter(c.rule for d in decisions for c in d.clamps)
    return tuple(changes), dict(sorted(firings.items(), key=lambda kv: (-kv[1], kv[0])))


def _forecast_info(rec: ForecastRecorder | None, pre: Forecasts | None,
                   aiops_out: RunOutput, unavailable: str | None, span_s: float,
                   model: str) -> ForecastInfo:
    if rec is None or pre is None:
        return ForecastInfo(False, unavailable or "no forecaster")
    sched = pre.schedule
    failures = tuple(pre.failures[:5])
    if not rec.points:
        steps = math.floor(span_s / sched.step_s)
        if steps < sched.min_points:
            why = (f"too little history to forecast: {steps} steps of {sched.step_s:g} s "
                   f"({span_s / 60:.0f} min), the forecaster needs {sched.min_points}")
        elif failures:
            why = f"the forecaster {model!r} failed: {failures[0]}"
        else:
            why = f"the forecaster {model!r} produced no forecast"
        return ForecastInfo(False, why, model=model, failures=failures, fits=pre.fits,
                            refit_s=sched.refit_s, step_s=sched.step_s,
                            failed=pre.failure_count)
    tl = aiops_out.timeline
    bt = np.array([p.time for p in rec.points])
    # Each band point forecasts the mean load of the step ending at its time; the decisions
    # inside that step saw the load it forecast.
    step = sched.step_s
    ends = np.searchsorted(tl.time, bt + 1e-6, side="right")
    starts = np.searchsorted(tl.time, bt - step + 1e-6, side="right")
    have = ends > starts
    csum = np.concatenate(([0.0], np.cumsum(tl.arrival_rate)))
    actual = (csum[ends[have]] - csum[starts[have]]) / (ends[have] - starts[have])
    p10 = np.array([p.p10 for p in rec.points])[have]
    p50 = np.array([p.p50 for p in rec.points])[have]
    p90 = np.array([p.p90 for p in rec.points])[have]
    cov = float(np.mean((actual >= p10) & (actual <= p90))) if len(actual) else None
    mae = float(np.mean(np.abs(actual - p50))) if len(actual) else None
    return ForecastInfo(True, model=rec.model or model, lead_s=rec.lead_s,
                        points=len(rec.points), coverage_80=cov, mae_rps=mae,
                        failures=failures, fits=pre.fits, refit_s=sched.refit_s,
                        step_s=sched.step_s, failed=pre.failure_count)


def _uses_forecast(spec: str) -> bool:
    return spec.split(":", 1)[0].strip() in FORECAST_POLICIES


def replay_refit_s(settings: Settings, span_s: float) -> float:
    """Seconds between refits in a replay of ``span_s``: the daemon's interval, stretched so
    that at most ``max_refits`` fits happen (:data:`DEFAULT_MAX_REFITS` says why)."""
    return max(settings.refit_s, span_s / max(settings.max_refits, 1))


def min_forecast_points(step_s: float) -> int:
    """Forecast steps of history before the first fit (:data:`MIN_FORECAST_S`)."""
    return max(MIN_FORECAST_STEPS, math.ceil(MIN_FORECAST_S / step_s))


@dataclass(frozen=True)
class FixedFleet:
    """The best fixed fleet: the size with the lowest score (GPU cost plus the price of the
    requests it fails), ``tried`` the attainment of each size replayed."""

    replicas: int
    output: RunOutput
    tried: dict[int, float]

    def label(self) -> str:
        return f"fixed fleet ({replicas_text(self.replicas)}, the best size)"


def best_fixed_fleet(workload: Workload, profile: Profile, ctx: PolicyContext, slo: SloSpec,
                     slo_miss_usd: float, *, on_step: Callable[[float], None] | None = None
                     ) -> FixedFleet:
    """The fleet size in ``[ctx.min_replicas or 1, ctx.max_replicas]`` with the lowest GPU
    cost plus ``slo_miss_usd`` per request missing its SLO.

    Cost grows with the fleet and misses fall, so the score has one valley: a walk from the
    size that covers the busiest minute (usually close) towards lower scores needs a few
    replays. Each fleet is up and ready from the start: a fixed fleet never waits for a
    cold start.
    """
    from aiops.policy.static import StaticPolicy

    runs: dict[int, RunOutput] = {}

    def score(n: int) -> float:
        if n not in runs:
            runs[n] = run_policy(StaticPolicy(n), workload, profile, ctx, start_replicas=n,
                                 slo=slo, on_step=on_step)
        r = runs[n].result
        return r.cost_usd + slo_miss_usd * (1.0 - r.slo_attainment) * r.requests

    lo, top = max(ctx.min_replicas, 1), max(ctx.max_replicas, 1)
    n = min(max(peak_replicas(workload, ctx), lo), top)
    for step in (-1, 1):  # downhill, whichever way that is
        while lo <= n + step <= top and score(n + step) < score(n):
            n += step
    return FixedFleet(n, runs[n], {k: r.result.slo_attainment for k, r in sorted(runs.items())})


# --------------------------------------------------------------------------- one target
def evaluate(name: str, key: str, workload: Workload, settings: Settings, *,
             start_unix: float | None = None, recorded: Recorded | None = None,
             current_batch: int | None = None, observed: dict[str, float | None] | None = None,
             observed_ttft: tuple[FloatArray, FloatArray] | None = None,
             notes: tuple[str, ...] = (), progress: ProgressFn | None = None,
             policy: Policy[Any] | None = None) -> TargetReport:
    """Replay one workload under every policy and collect the target's figures.

    ``recorded`` (what ran) adds the "what ran" row and makes it the verdict's baseline;
    without it the verdict compares with the better of HPA and KEDA. The best fixed fleet
    is always a row. ``policy`` is the configured policy already built (the caller
    validates user input before the long work); built from ``settings`` otherwise.
    """
    prof = settings.profile
    notes_l = list(notes)
    ctx = planning_context(prof, workload, min_replicas=settings.min_replicas,
                           max_replicas=settings.max_replicas, interval_s=settings.interval_s,
                           slo=settings.slo)
    start = initial_replicas(workload, ctx)
    total = workload.duration

    def tick(row: str) -> Callable[[float], None]:
        def cb(t: float) -> None:
            if progress is not None:
                progress(name, row, min(t, total), total)
        return cb

    # Anomalies first: the guardrails of the aiops replay freeze scale-downs on them.
    step = settings.detect_step_s
    load = workload.rate(step)
    load_t = np.arange(len(load), dtype=np.float64) * step
    anomalies, scores = detect_anomalies(load_t, load, settings.detector, settings.threshold,
                                         step)
    lookup = (AnomalyLookup(load_t, scores, step, settings.threshold)
              if anomalies.available and len(scores) else None)

    inner = policy if policy is not None else build_policy(settings.policy, ctx, workload,
                                                           prof, settings.slo)

    # Baselines first, through the simulator's own comparison: their timelines carry the
    # arrival rate every replay sees (it does not depend on the policy), from which the
    # forecasts are computed ahead of the aiops replay.
    comparison = compare_policies(workload, prof, list(BASELINE_SPECS),
                                  interval_s=settings.interval_s,
                                  min_replicas=settings.min_replicas,
                                  max_replicas=settings.max_replicas, slo=settings.slo,
                                  on_step=lambda spec, t: tick(spec)(t),
                                  forecast_model=settings.forecast_model)
    observed_rates = comparison.outputs["hpa"].timeline
    unavailable = forecast_available()
    pending: Pending | None = None
    if unavailable is None and _uses_forecast(settings.policy):
        schedule = Schedule(settings.forecast_model, settings.forecast_step_s, prof.cold_start_s,
                            refit_s=replay_refit_s(settings, total),
                            history_s=settings.forecast_history_s,
                            min_points=min_forecast_points(settings.forecast_step_s),
                            interval_s=settings.interval_s)
        # Started now: on a pool, the forecasts are computed while this process replays
        # what ran and the fixed fleets.
        pending = start_forecasts(schedule, observed_rates.time, observed_rates.arrival_rate,
                                  jobs=settings.jobs,
                                  on_job=lambda k, n: tick("forecast")(total * k / max(n, 1)))
    elif unavailable is None:
        unavailable = f"the {settings.policy.split(':')[0]} policy does not use a forecast"

    try:
        outputs: dict[str, RunOutput] = {ROLE_HPA: comparison.outputs["hpa"],
                                         ROLE_KEDA: comparison.outputs["keda"]}
        labels = {ROLE_AIOPS: f"aiops ({settings.policy})", ROLE_HPA: "HPA", ROLE_KEDA: "KEDA"}
        spec_of = {ROLE_AIOPS: settings.policy, ROLE_HPA: "hpa", ROLE_KEDA: "keda"}
        if recorded is not None:
            ran = RecordedReplicas(recorded.times, recorded.replicas)
            outputs[ROLE_RAN] = run_policy(ran, workload, prof, ctx, start_replicas=ran.at(0.0),
                                           slo=settings.slo, on_step=tick("what ran"))
            lo, hi = int(np.nanmin(recorded.replicas)), int(np.nanmax(recorded.replicas))
            labels[ROLE_RAN] = ("what ran" + (f" ({lo} replicas)" if lo == hi
                                              else f" ({lo}–{hi} replicas)"))
            spec_of[ROLE_RAN] = "recorded"

        # The best fixed fleet, the other answer to "should I autoscale at all?".
        fixed = best_fixed_fleet(workload, prof, ctx, settings.slo, settings.slo_miss_usd,
                                 on_step=tick("fixed fleets"))
        outputs[ROLE_STATIC] = fixed.output
        labels[ROLE_STATIC] = fixed.label()
        spec_of[ROLE_STATIC] = f"static:replicas={fixed.replicas}"

    except BaseException:  # a failure here must not leave the forecasting pool running
        if pending is not None:
            pending.cancel()
        raise

    # aiops: the configured policy, then the guardrails, with the daemon's forecasts.
    limits = GuardLimits(target=name, min_replicas=settings.min_replicas,
                         max_replicas=settings.max_replicas,
                         batch_sizes=settings.batch_sizes or tuple(prof.batch_sizes),
                         tune_batch_size=settings.tune_batch_size,
                         gpus_per_replica=prof.gpus_per_replica,
                         sim_batch_sizes=tuple(prof.batch_sizes))
    guarded: GuardedPolicy[Any] = GuardedPolicy(inner, limits, settings.guardrails, lookup)
    recorder: ForecastRecorder | None = None
    pre: Forecasts | None = None
    forecast_fn: ForecastFn | None = None
    if pending is not None:
        pre = pending.result()
        recorder = ForecastRecorder(ForecastLookup(pre, observed_rates.arrival_rate),
                                    prof.cold_start_s)
        forecast_fn = recorder
    first = int(getattr(inner, "start_replicas", start))
    aiops_out: RunOutput | None = None
    problem = ""
    try:
        aiops_out = run_policy(guarded, workload, prof, ctx, start_replicas=first,
                               slo=settings.slo, forecast_fn=forecast_fn,
                               on_step=tick("aiops"))
    except Exception as exc:  # the baselines are still worth showing
        problem = (f"the aiops policy {settings.policy!r} failed during the replay: "
                   f"{type(exc).__name__}: {exc}")
    if aiops_out is None:
        fc_info = ForecastInfo(False, "the aiops replay failed")
    else:
        outputs[ROLE_AIOPS] = aiops_out
        fc_info = _forecast_info(recorder, pre, aiops_out, unavailable, total,
                                 settings.forecast_model)
    if not fc_info.available and _uses_forecast(settings.policy):
        notes_l.append(f"{fc_info.text()}; the {settings.policy.split(':')[0]} policy acted "
                       "as the HPA where it had no forecast")
    figures = tuple(_figures(role, labels[role], spec_of[role], outputs[role].result)
                    for role in ROLES if role in outputs)

    batch0 = current_batch if current_batch in prof.batch_sizes else prof.default_batch_size
    assert batch0 is not None
    changes, firings = ((), {}) if aiops_out is None else _changes(aiops_out, guarded, first,
                                                                    batch0)
    advice = batch_advice(prof, workload, settings.slo, limits.batch_sizes, batch0,
                          current_known=current_batch is not None)
    if settings.guardrails.anomaly_freeze and lookup is not None:
        notes_l.append("anomaly_freeze was simulated from arrival-rate anomalies only "
                       "(the daemon also scores TTFT, KV usage and queue length)")

    band = recorder.points if recorder is not None else []
    replicas_lines = []
    ttft_lines = []
    for role in ROLES:
        if role not in outputs:
            continue
        tl = outputs[role].timeline
        if role == ROLE_RAN and recorded is not None:
            # The recorded steps, held to the end of the replay (the last sample's count ran on).
            rt = np.append(recorded.times, max(total, float(recorded.times[-1])))
            rv = np.append(recorded.replicas, recorded.replicas[-1])
            replicas_lines.append(Line(labels[role], role, rt, rv))
        else:
            replicas_lines.append(Line(labels[role], role, tl.time, tl.desired))
        ttft_lines.append(Line(labels[role], role, tl.time, tl.ttft_p99))
    if observed_ttft is not None:
        ttft_lines.append(Line("observed in Prometheus", ROLE_RAN, observed_ttft[0],
                               observed_ttft[1], dashed=True))
    series = Series(
        start_unix=start_unix,
        # Every run saw the same arrivals; any timeline has them.
        load=Line("arrival rate", "load", outputs[ROLE_HPA].timeline.time,
                  outputs[ROLE_HPA].timeline.arrival_rate),
        band_t=np.array([p.time for p in band]), band_p10=np.array([p.p10 for p in band]),
        band_p50=np.array([p.p50 for p in band]), band_p90=np.array([p.p90 for p in band]),
        anomaly_t=load_t + step, anomaly_v=load, anomaly_score=scores,
        threshold=settings.threshold,
        replicas=tuple(replicas_lines), ttft=tuple(ttft_lines), ttft_slo_s=settings.slo.ttft_s)
    recommendation = advise(figures, total, policy_text=describe_policy(settings),
                            fixed_replicas=fixed.replicas, slo_miss_usd=settings.slo_miss_usd)
    sim_note = simulate_note(settings, guarded, pre, fixed) if aiops_out is not None else ""
    return TargetReport(
        advice=recommendation, simulate_note=sim_note,
        name=name, status=STATUS_OK, message=problem, key=key, policy=settings.policy,
        profile=prof.name,
        span_s=total, start_unix=start_unix, requests=len(workload),
        workload=workload.summary(), policies=figures, verdict=verdict_for(figures, total),
        batch=advice, forecast=fc_info, anomalies=anomalies, changes=changes,
        guardrail_firings=firings, observed=dict(observed or {}), notes=tuple(notes_l),
        series=series)


def describe_policy(settings: Settings) -> str:
    """The policy and the settings to run it with, as the recommendation names them."""
    spec = PolicySpec.parse(settings.policy)
    params = ", ".join(f"{k}={v}" for k, v in spec.params.items()) or "its default settings"
    return (f"{spec.name} ({params}; {settings.min_replicas}–{settings.max_replicas} "
            f"replicas, {settings.guardrails_label})")


def _simulate_defaults() -> tuple[float | None, int | None]:
    """``aiops simulate``'s online forecaster: seconds between refits, decisions before the
    first fit (read from its signature, so this text follows the simulator's defaults)."""
    import inspect

    from aiops.sim.runner import OnlineForecast

    try:
        params = inspect.signature(OnlineForecast).parameters
        refit, first = params["refit_s"].default, params["min_points"].default
        return float(refit), int(first)
    except (KeyError, TypeError, ValueError):
        return None, None


def simulate_note(settings: Settings, guarded: GuardedPolicy[Any], pre: Forecasts | None,
                  fixed: FixedFleet) -> str:
    """Why ``aiops simulate`` gives other figures for the same policy on the same input.

    ``simulate`` replays the bare policy, the way a benchmark compares policies; this report
    replays what the daemon would have done. The differences, with this replay's numbers.
    """
    spec = PolicySpec.parse(settings.policy)
    n = len(guarded.decisions)
    clamped = Counter(c.rule for d in guarded.decisions for c in d.clamps)
    changed = sum(1 for d in guarded.decisions if d.clamps)
    parts = []
    if changed:
        top = ", ".join(f"{rule} {k}" for rule, k in clamped.most_common(3))
        parts.append(f"the guardrails changed {changed:,} of aiops' {n:,} decisions ({top}); "
                     "simulate applies none")
    else:
        parts.append("the guardrails changed none of aiops' decisions here (simulate applies "
                     "none either)")
    if pre is not None:
        refit, first = _simulate_defaults()
        sched = pre.schedule
        if pre.fits:
            times = "once" if pre.fits == 1 else f"{pre.fits} times"
            ours = (f"the forecaster was fitted {times}, every {fmt_span(sched.refit_s)}, on "
                    f"{sched.step_s:g}-s steps, as the daemon forecasts")
        else:
            ours = (f"the forecaster was never fitted (it needs {sched.min_points} steps of "
                    f"{sched.step_s:g} s, as the daemon does)")
        if refit is not None and first is not None:
            ours += (f"; simulate refits it every {fmt_span(refit)} on "
                     f"{settings.interval_s:g}-s decisions, the first time after {first} "
                     "decisions")
        parts.append(ours)
    parts.append(f"the target's bounds are {settings.min_replicas}–{settings.max_replicas} "
                 "replicas (simulate: --max-replicas, 64 by default)")
    parts.append(f"the fixed fleet here is the best size ({fixed.replicas}), simulate's "
                 "static is sized for the busiest minute")
    return (f"Why `aiops simulate --policy {spec.text or spec.name}` on the same input gives "
            f"other figures: this report replays what the daemon would have done — "
            + "; ".join(parts) + ".")


def build_policy(spec_text: str, ctx: PolicyContext, workload: Workload, profile: Profile,
                 slo: SloSpec) -> Policy[Any]:
    """The configured policy from its spec; InputError names a bad one.

    The future workload is deliberately not offered: ``oracle`` (hindsight) is refused,
    since a report of what aiops *would* have done must not know the future.
    """
    return make_policy(PolicySpec.parse(spec_text), ctx,
                       peak_replicas=peak_replicas(workload, ctx), profile=profile, slo=slo)


def _failed(name: str, key: str, status: str, message: str,
            notes: tuple[str, ...] = ()) -> TargetReport:
    return TargetReport(name=name, status=status, message=message, key=key, notes=notes)


# --------------------------------------------------------------------------- whole reports
def report_from_trace(path: str, *, rate_scale: float = 1.0, profile: str = "llama3-8b-a100",
                      policy: str = "predictive", forecast_model: str = "auto",
                      interval_s: float = 15.0, min_replicas: int = 1, max_replicas: int = 64,
                      seed: int = 0, guardrails: GuardrailsConfig | None = None,
                      max_refits: int = DEFAULT_MAX_REFITS, jobs: int = 1,
                      slo_miss_usd: float = SLO_MISS_USD,
                      progress: ProgressFn | None = None) -> Report:
    """The report for a trace or rate-series file, with no Prometheus.

    Bad input — the file, the profile, the policy spec — raises InputError before the long
    replay starts; what ran is unknown, so the verdict compares with the better of HPA/KEDA.
    """
    prof = load_profile(profile)
    check_forecast_model(forecast_model)
    workload = resolve_workload(path, rate_scale=rate_scale, seed=seed)
    if len(workload) == 0:
        raise InputError("the workload has no requests", path=path)
    settings = Settings(profile=prof, policy=policy, min_replicas=min_replicas,
                        max_replicas=max_replicas, guardrails=guardrails or GuardrailsConfig(),
                        interval_s=interval_s, forecast_model=forecast_model,
                        max_refits=max_refits, jobs=jobs, slo_miss_usd=slo_miss_usd)
    ctx = planning_context(prof, workload, min_replicas=min_replicas, max_replicas=max_replicas,
                           interval_s=interval_s, slo=settings.slo)
    built = build_policy(policy, ctx, workload, prof, settings.slo)
    start_raw = workload.meta.get("start_unix")
    start_unix = float(start_raw) if isinstance(start_raw, int | float) else None
    notes = []
    if rate_scale != 1.0:
        notes.append(f"load scaled ×{rate_scale:g} (--rate-scale) before the replay")
    target = evaluate(workload.name, str(path), workload, settings, start_unix=start_unix,
                      notes=tuple(notes), progress=progress, policy=built)
    return Report(generated_unix=time.time(), mode="trace", source=str(Path(path)),
                  targets=(target,),
                  settings={**settings.as_json(), "rate_scale": rate_scale, "seed": seed})


@dataclass(frozen=True)
class Overrides:
    """What the command line changes for every target of a config (None: the config's)."""

    policy: str | None = None
    forecast_model: str | None = None
    interval_s: float | None = None
    rate_scale: float = 1.0
    seed: int | None = None
    max_refits: int = DEFAULT_MAX_REFITS
    jobs: int = 1
    slo_miss_usd: float = SLO_MISS_USD


def target_settings(config: Config, target: TargetConfig, over: Overrides) -> Settings:
    """A target's replay settings from the config (command-line overrides first)."""
    prof = load_profile(target.profile)
    return Settings(
        profile=prof, policy=over.policy or target.policy,
        slo=SloSpec(ttft_s=target.slo.ttft_s, tpot_s=target.slo.tpot_s),
        min_replicas=target.min_replicas, max_replicas=target.max_replicas,
        batch_sizes=target.batch_sizes, tune_batch_size=target.tune_batch_size,
        guardrails=config.guardrails,
        interval_s=over.interval_s or config.daemon.interval_s,
        forecast_model=over.forecast_model or config.forecast.model,
        forecast_step_s=config.forecast.step_s, forecast_history_s=config.forecast.history_s,
        refit_s=config.forecast.refit_interval_s, max_refits=over.max_refits,
        guardrails_label="the config's guardrails", jobs=over.jobs,
        slo_miss_usd=over.slo_miss_usd,
        detector=config.detect.detector, threshold=config.detect.threshold,
        detect_step_s=config.forecast.step_s)


TargetFn = Callable[[TargetConfig, int, Settings], TargetReport]


def _each_target(config: Config, one: TargetFn, over: Overrides,
                 on_target: Callable[[TargetReport], None] | None) -> tuple[TargetReport, ...]:
    """Every target on its own: whatever goes wrong with one (its history unreadable, a bug)
    becomes that target's section, and the next target is still done."""
    targets = []
    for i, target in enumerate(config.targets):
        try:
            rep = one(target, i, target_settings(config, target, over))
        except HistoryError as exc:
            rep = _failed(target.name, target.key, exc.status, str(exc))
        except Exception as exc:  # one target's failure never stops another's
            rep = _failed(target.name, target.key, STATUS_ERROR, f"{type(exc).__name__}: {exc}")
        targets.append(rep)
        if on_target is not None:
            on_target(rep)
    return tuple(targets)


def _config_settings(config: Config, over: Overrides) -> dict[str, object]:
    return {"rate_scale": over.rate_scale, "seed": over.seed, "step_s": config.forecast.step_s,
            "policy": over.policy, "forecast_model": over.forecast_model or config.forecast.model,
            "interval_s": over.interval_s or config.daemon.interval_s,
            "max_refits": over.max_refits, "slo_miss_usd": over.slo_miss_usd,
            "guardrails": config.guardrails.model_dump(mode="json")}


def report_from_prometheus(config: Config, source: HistorySource, *, since_s: float,
                           now: float, over: Overrides | None = None,
                           progress: ProgressFn | None = None,
                           on_target: Callable[[TargetReport], None] | None = None) -> Report:
    """The report for every target of ``config`` over ``[now - since_s, now]``: each
    target's history read from Prometheus, what ran replayed beside aiops."""
    over = over or Overrides()
    step = config.forecast.step_s

    def one(target: TargetConfig, i: int, settings: Settings) -> TargetReport:
        return _prometheus_target(source, target, now - since_s, now, step, settings, over,
                                  progress)

    targets = _each_target(config, one, over, on_target)
    return Report(generated_unix=time.time(), mode="prometheus", source=config.prometheus.url,
                  targets=targets, since_s=since_s, settings=_config_settings(config, over))


def report_from_sim(config: Config, *, since_s: float, over: Overrides | None = None,
                    progress: ProgressFn | None = None,
                    on_target: Callable[[TargetReport], None] | None = None) -> Report:
    """The report for a ``backend: sim`` config: each target's traffic is the simulated
    cluster's (``sim.workload``, seeded per target as ``aiops run`` seeds it), its first
    ``since_s`` seconds. Nothing ran before, so aiops is compared with the HPA, KEDA and the
    best fixed fleet."""
    over = over or Overrides()
    base_seed = config.sim.seed if over.seed is None else over.seed

    def one(target: TargetConfig, i: int, settings: Settings) -> TargetReport:
        workload = resolve_workload(config.sim.workload,
                                    rate_scale=config.sim.rate_scale * over.rate_scale,
                                    seed=base_seed + i, duration=since_s)
        if len(workload) == 0:
            raise HistoryError(STATUS_NO_DATA, f"{config.sim.workload}: no request in the "
                               f"first {fmt_span(since_s)}")
        notes = [f"traffic: the simulated cluster's workload {config.sim.workload} "
                 f"(sim.workload, seed {base_seed + i}), its first {fmt_span(since_s)}"]
        if over.rate_scale != 1.0:
            notes.append(f"load scaled ×{over.rate_scale:g} (--rate-scale) before the replay")
        return evaluate(target.name, target.key, workload, settings, notes=tuple(notes),
                        progress=progress)

    targets = _each_target(config, one, over, on_target)
    return Report(generated_unix=time.time(), mode="sim",
                  source=f"the simulated cluster ({config.sim.workload})", targets=targets,
                  since_s=since_s, settings=_config_settings(config, over))


def _prometheus_target(source: HistorySource, target: TargetConfig, start: float, end: float,
                       step: float, settings: Settings, over: Overrides,
                       progress: ProgressFn | None) -> TargetReport:
    rate_scale, seed = over.rate_scale, over.seed or 0
    hist = read_history(source, target, start, end, step)
    mean_ctx, mean_gen = hist.mean_tokens()
    tokens, token_note = token_distribution(mean_ctx, mean_gen)
    series = RateSeries(path=f"prometheus:{target.key}", timestamps=hist.times,
                        values=hist.rate, interval=step)
    workload = workload_from_rate_series(series, seed=seed, rate_scale=rate_scale,
                                         tokens=tokens, name=target.name)
    t0 = float(hist.times[0])
    rel = hist.times - t0
    notes = [*hist.notes, token_note]
    if rate_scale != 1.0:
        notes.append(f"load scaled ×{rate_scale:g} (--rate-scale) before the replay")
    recorded = None
    observed: dict[str, float | None] = {"mean_context_tokens": mean_ctx,
                                         "mean_generated_tokens": mean_gen}
    reps = hist.replicas
    if reps is not None and np.isfinite(reps).any():
        recorded = Recorded(rel, reps)
        observed["gpu_hours"] = float(np.nansum(reps)) * step * \
            settings.profile.gpus_per_replica / 3600.0
    else:
        notes.append("what ran is unknown (no replica history): aiops is compared with the "
                     "better of HPA and KEDA")
    for name, key in (("ttft_p99", "ttft_p99_s"), ("tpot_p99", "tpot_p99_s"),
                      ("kv_cache_usage", "kv_cache_usage")):
        vals = hist.series.get(name)
        fin = vals[np.isfinite(vals)] if vals is not None else np.zeros(0)
        observed[f"{key}_median"] = float(np.median(fin)) if len(fin) else None
        observed[f"{key}_max"] = float(np.max(fin)) if len(fin) else None
    ttft = hist.series.get("ttft_p99")
    observed_ttft = (rel, ttft) if ttft is not None else None  # gaps stay gaps in the plot
    return evaluate(target.name, target.key, workload, settings, start_unix=t0,
                    recorded=recorded, observed=observed, observed_ttft=observed_ttft,
                    notes=tuple(notes), progress=progress)
