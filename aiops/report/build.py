"""From a history or a trace to the report's figures: workload, replay, comparison.

Per target:

1. **Workload.** From Prometheus: the arrival-rate history becomes Poisson arrivals (one
   rate per step), with token lengths drawn from a ``TokenDistribution`` whose medians are
   set so the means match the observed prompt/output token rates (the request mix decides
   how many requests a replica serves). From a trace: the requests themselves.
2. **Replay.** Every policy runs on the same workload, profile, SLO, bounds and decision
   interval: the HPA, KEDA (and, for a trace, ``static`` sized for the peak) through
   ``aiops.sim.runner.compare_policies``; aiops — the configured policy followed by the
   guardrails, with a forecaster refitted online on the past only — and what ran (the
   recorded replicas) through ``run_policy`` with the same starting point.
3. **Figures.** GPU-hours, SLO attainment, TTFT/TPOT, scale actions per policy; the verdict
   against what ran (else the better of HPA and KEDA); every change aiops would have made
   with its reason and guardrail clamps; the batch size the profile recommends; the
   forecast's accuracy; anomalies in the load.

Failures stay inside their target (DESIGN principle 5): a missing forecaster, detector or
series becomes a note ("forecast unavailable: ..."), a target that cannot be read or replayed
becomes a section that says why, and the other targets are still computed.
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
from aiops.report.history import HistoryError, HistorySource, read_history
from aiops.report.model import (
    ROLE_AIOPS,
    ROLE_HPA,
    ROLE_KEDA,
    ROLE_RAN,
    ROLE_STATIC,
    ROLES,
    STATUS_ERROR,
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
    finite_or_none,
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
    ForecastFn,
    OnlineForecast,
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
MIN_FORECAST_POINTS = 40
"""Decisions of history before the first fit (``OnlineForecast``'s own default): 10 minutes
at 15-s decisions, enough for the naive models' residual quantiles and a short backtest."""

BATCH_GAIN = 0.05
"""Capacity a batch-size change must add (per replica) to be recommended: the change rolls
every pod, and below ~5% the gain is within the capacity model's own error."""

DEFAULT_MAX_REFITS = 6
"""Refits of the forecaster over the whole replay, at most. The daemon refits every hour;
over a 7-day replay that is 168 fits of ``auto`` (each a backtest of several models, 20 s to
minutes on two cores), which would make the report take hours. Between refits the models
still follow the data through ``update``, so six evenly spaced refits lose little."""


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
    refit_s: float = 3600.0
    max_refits: int = DEFAULT_MAX_REFITS
    detector: str = "default"
    threshold: float = 0.9
    detect_step_s: float = 60.0

    def as_json(self) -> dict[str, object]:
        return {"profile": self.profile.name, "policy": self.policy,
                "slo": {"ttft_s": self.slo.ttft_s, "tpot_s": self.slo.tpot_s},
                "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "interval_s": self.interval_s, "forecast_model": self.forecast_model,
                "detector": self.detector, "threshold": self.threshold,
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


def _forecast_info(rec: ForecastRecorder | None, online: OnlineForecast | None,
                   aiops_out: RunOutput, unavailable: str | None, span_s: float,
                   interval_s: float, model: str) -> ForecastInfo:
    if rec is None or online is None:
        return ForecastInfo(False, unavailable or "no forecaster")
    failures = tuple(online.failures[:5])
    if not rec.points:
        decisions = math.ceil(span_s / interval_s)
        if decisions < online.min_points:
            why = (f"too little history to forecast: {decisions} decisions "
                   f"({span_s / 60:.0f} min at {interval_s:g} s), the forecaster needs "
                   f"{online.min_points}")
        elif failures:
            why = f"the forecaster {model!r} failed: {failures[0]}"
        else:
            why = f"the forecaster {model!r} produced no forecast"
        return ForecastInfo(False, why, model=model, failures=failures)
    tl = aiops_out.timeline
    bt = np.array([p.time for p in rec.points])
    idx = np.clip(np.searchsorted(tl.time, bt - 1e-6), 0, len(tl.time) - 1)
    hit = np.abs(tl.time[idx] - bt) < 1e-3
    actual = tl.arrival_rate[idx[hit]]
    p10 = np.array([p.p10 for p in rec.points])[hit]
    p50 = np.array([p.p50 for p in rec.points])[hit]
    p90 = np.array([p.p90 for p in rec.points])[hit]
    cov = float(np.mean((actual >= p10) & (actual <= p90))) if len(actual) else None
    mae = float(np.mean(np.abs(actual - p50))) if len(actual) else None
    return ForecastInfo(True, model=rec.model or model, lead_s=rec.lead_s,
                        points=len(rec.points), coverage_80=cov, mae_rps=mae,
                        failures=failures)


# --------------------------------------------------------------------------- one target
def evaluate(name: str, key: str, workload: Workload, settings: Settings, *,
             start_unix: float | None = None, recorded: Recorded | None = None,
             current_batch: int | None = None, observed: dict[str, float | None] | None = None,
             observed_ttft: tuple[FloatArray, FloatArray] | None = None,
             notes: tuple[str, ...] = (), progress: ProgressFn | None = None,
             policy: Policy[Any] | None = None) -> TargetReport:
    """Replay one workload under every policy and collect the target's figures.

    ``recorded`` (what ran) adds the "what ran" row and makes it the verdict's baseline;
    without it a ``static`` row sized for the peak is shown and the verdict compares with
    the better of HPA and KEDA. ``policy`` is the configured policy already built (the
    caller validates user input before the long work); built from ``settings`` otherwise.
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

    # aiops: the configured policy, then the guardrails, with an online forecast.
    inner = policy if policy is not None else build_policy(settings.policy, ctx, workload,
                                                           prof, settings.slo)
    limits = GuardLimits(target=name, min_replicas=settings.min_replicas,
                         max_replicas=settings.max_replicas,
                         batch_sizes=settings.batch_sizes or tuple(prof.batch_sizes),
                         tune_batch_size=settings.tune_batch_size,
                         gpus_per_replica=prof.gpus_per_replica,
                         sim_batch_sizes=tuple(prof.batch_sizes))
    guarded: GuardedPolicy[Any] = GuardedPolicy(inner, limits, settings.guardrails, lookup)
    unavailable = forecast_available()
    recorder: ForecastRecorder | None = None
    online: OnlineForecast | None = None
    forecast_fn: ForecastFn | None = None
    if unavailable is None:
        refit = max(settings.refit_s, total / max(settings.max_refits, 1))
        online = OnlineForecast(settings.forecast_model, settings.interval_s, prof.cold_start_s,
                                refit_s=refit, min_points=MIN_FORECAST_POINTS)
        recorder = ForecastRecorder(online, prof.cold_start_s)
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
        fc_info = _forecast_info(recorder, online, aiops_out, unavailable, total,
                                 settings.interval_s, settings.forecast_model)
    if not fc_info.available and settings.policy.split(":")[0] in ("predictive", "ppo"):
        notes_l.append(f"{fc_info.text()}; the {settings.policy.split(':')[0]} policy acted "
                       "as the HPA where it had no forecast")

    # Baselines, through the simulator's own comparison.
    specs = list(BASELINE_SPECS) + ([] if recorded is not None else ["static"])

    def on_step(spec: str, t: float) -> None:
        tick(spec)(t)

    comparison = compare_policies(workload, prof, specs, interval_s=settings.interval_s,
                                  min_replicas=settings.min_replicas,
                                  max_replicas=settings.max_replicas, slo=settings.slo,
                                  on_step=on_step, forecast_model=settings.forecast_model)
    outputs: dict[str, RunOutput] = {} if aiops_out is None else {ROLE_AIOPS: aiops_out}
    outputs.update({ROLE_HPA: comparison.outputs["hpa"], ROLE_KEDA: comparison.outputs["keda"]})
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
    else:
        n = peak_replicas(workload, ctx)
        outputs[ROLE_STATIC] = comparison.outputs["static"]
        labels[ROLE_STATIC] = f"static ({n} replicas, sized for the peak)"
        spec_of[ROLE_STATIC] = f"static:replicas={n}"
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
    return TargetReport(
        name=name, status=STATUS_OK, message=problem, key=key, policy=settings.policy,
        profile=prof.name,
        span_s=total, start_unix=start_unix, requests=len(workload),
        workload=workload.summary(), policies=figures, verdict=verdict_for(figures, total),
        batch=advice, forecast=fc_info, anomalies=anomalies, changes=changes,
        guardrail_firings=firings, observed=dict(observed or {}), notes=tuple(notes_l),
        series=series)


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
                      max_refits: int = DEFAULT_MAX_REFITS,
                      progress: ProgressFn | None = None) -> Report:
    """The report for a trace or rate-series file, with no Prometheus.

    Bad input — the file, the profile, the policy spec — raises InputError before the long
    replay starts; what ran is unknown, so the verdict compares with the better of HPA/KEDA.
    """
    prof = load_profile(profile)
    workload = resolve_workload(path, rate_scale=rate_scale, seed=seed)
    if len(workload) == 0:
        raise InputError("the workload has no requests", path=path)
    settings = Settings(profile=prof, policy=policy, min_replicas=min_replicas,
                        max_replicas=max_replicas, guardrails=guardrails or GuardrailsConfig(),
                        interval_s=interval_s, forecast_model=forecast_model,
                        max_refits=max_refits)
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


def target_settings(config: Config, target: TargetConfig, *, policy: str | None,
                    forecast_model: str | None, interval_s: float | None,
                    max_refits: int) -> Settings:
    """A target's replay settings from the config (command-line overrides first)."""
    prof = load_profile(target.profile)
    return Settings(
        profile=prof, policy=policy or target.policy,
        slo=SloSpec(ttft_s=target.slo.ttft_s, tpot_s=target.slo.tpot_s),
        min_replicas=target.min_replicas, max_replicas=target.max_replicas,
        batch_sizes=target.batch_sizes, tune_batch_size=target.tune_batch_size,
        guardrails=config.guardrails,
        interval_s=interval_s or config.daemon.interval_s,
        forecast_model=forecast_model or config.forecast.model,
        refit_s=config.forecast.refit_interval_s, max_refits=max_refits,
        detector=config.detect.detector, threshold=config.detect.threshold,
        detect_step_s=config.forecast.step_s)


def report_from_prometheus(config: Config, source: HistorySource, *, since_s: float,
                           now: float, rate_scale: float = 1.0, policy: str | None = None,
                           forecast_model: str | None = None, interval_s: float | None = None,
                           seed: int = 0, max_refits: int = DEFAULT_MAX_REFITS,
                           progress: ProgressFn | None = None,
                           on_target: Callable[[TargetReport], None] | None = None) -> Report:
    """The report for every target of ``config`` over ``[now - since_s, now]``.

    Each target is read and replayed on its own: whatever goes wrong with one (Prometheus
    unreachable, no series, an unknown profile or policy in its config, a bug) becomes
    that target's section, and the next target is still done.
    """
    step = config.forecast.step_s
    start, end = now - since_s, now
    targets = []
    for target in config.targets:
        try:
            rep = _prometheus_target(config, source, target, start, end, step,
                                     rate_scale=rate_scale, policy=policy,
                                     forecast_model=forecast_model, interval_s=interval_s,
                                     seed=seed, max_refits=max_refits, progress=progress)
        except HistoryError as exc:
            rep = _failed(target.name, target.key, exc.status, str(exc))
        except Exception as exc:  # one target's failure never stops another's
            rep = _failed(target.name, target.key, STATUS_ERROR, f"{type(exc).__name__}: {exc}")
        targets.append(rep)
        if on_target is not None:
            on_target(rep)
    settings: dict[str, object] = {
        "rate_scale": rate_scale, "seed": seed, "step_s": step, "policy": policy,
        "forecast_model": forecast_model or config.forecast.model,
        "interval_s": interval_s or config.daemon.interval_s,
        "guardrails": config.guardrails.model_dump(mode="json")}
    return Report(generated_unix=time.time(), mode="prometheus", source=config.prometheus.url,
                  targets=tuple(targets), since_s=since_s, settings=settings)


def _prometheus_target(config: Config, source: HistorySource, target: TargetConfig,
                       start: float, end: float, step: float, *, rate_scale: float,
                       policy: str | None, forecast_model: str | None,
                       interval_s: float | None, seed: int, max_refits: int,
                       progress: ProgressFn | None) -> TargetReport:
    settings = target_settings(config, target, policy=policy, forecast_model=forecast_model,
                               interval_s=interval_s, max_refits=max_refits)
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
