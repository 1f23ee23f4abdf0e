"""One tick per target: snapshot, detect, forecast, policy, guardrails, actuate, annotate.

The controller owns every side effect and the error policy (DESIGN principles 1 and 5):

* Nothing that goes wrong in one target's tick stops another target's tick, and nothing
  escapes ``tick``: every failure is counted under a kind, logged, and turned into a hold.
* Missing or untrusted metrics never lead to a scale-down: the tick still runs the
  guardrails with ``data_ok=False``, which hold (and, after N failures, apply the fallback).
* Dry-run computes exactly what enforce would do, then only reports it.

Guardrail state (stabilization window, cooldown, failure count) is saved in an annotation on
the target in enforce mode, so a restarted daemon — or the standby that takes over — neither
flaps nor forgets a cooldown. Policy state is rebuilt in memory after a restart (the HPA and
KEDA windows it holds are re-learned within one stabilization window, during which the
guardrails' own window still applies).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from aiops.actuate.base import (
    LAST_DECISION_ANNOTATION,
    LAST_SCALE_TIME_ANNOTATION,
    STATE_ANNOTATION,
    Actuator,
    TargetState,
)
from aiops.annotate.base import Annotator, safe_annotate
from aiops.clock import Clock
from aiops.config import Config, TargetConfig
from aiops.errors import (
    ActuationError,
    AiopsError,
    DataQualityError,
    PermanentError,
    TransientError,
)
from aiops.forecast.steps import StepAverager
from aiops.guardrails import GuardInput, GuardrailState, apply_guardrails
from aiops.ingest.base import MetricSource
from aiops.policy.base import Policy, PolicyContext, PolicyInput, PolicySpec
from aiops.sim.profiles import Profile, load_profile
from aiops.telemetry import Telemetry
from aiops.types import AnomalyReport, Decision, Forecast, Snapshot

log = logging.getLogger("aiops.controller")


class AnomalyMonitor(Protocol):
    """Scores one target's metrics tick by tick (aiops.detect builds the real one)."""

    def observe(self, snap: Snapshot) -> AnomalyReport: ...


class LoadForecaster(Protocol):
    def fit(self, timestamps: Any, values: Any) -> Any: ...

    def update(self, timestamps: Any, values: Any) -> Any: ...

    def predict(self, horizon: int) -> Forecast: ...


def _untrusted(report: AnomalyReport | None, metric: str) -> bool:
    """Whether ``report`` calls ``metric`` bad telemetry this tick."""
    return report is not None and any(
        a.metric == metric and a.kind == "bad_telemetry" and a.score >= report.threshold
        for a in report.anomalies)


def error_kind(exc: BaseException) -> str:
    """The label an error is counted under."""
    if isinstance(exc, DataQualityError):
        return "data_quality"
    if isinstance(exc, ActuationError):
        return "actuation"
    if isinstance(exc, TransientError):
        return "transient"
    if isinstance(exc, PermanentError):
        return "permanent"
    return "internal"


@dataclass
class TargetRuntime:
    """What the controller keeps in memory about one target."""

    cfg: TargetConfig
    profile: Profile
    context: PolicyContext
    policy: Policy[Any]
    policy_name: str
    policy_state: Any
    history: StepAverager  # load at the forecaster's resolution, completed steps only
    fallback_reason: str | None = None
    guard_state: GuardrailState = field(default_factory=GuardrailState)
    state_loaded: bool = False
    monitor: AnomalyMonitor | None = None
    forecaster: LoadForecaster | None = None
    forecaster_fitted: bool = False
    history_loaded: bool = False
    pending_forecasts: list[tuple[float, float]] = field(default_factory=list)
    last_state: TargetState | None = None
    last_decision: Decision | None = None


def build_policy(cfg: TargetConfig, context: PolicyContext,
                 extras: Mapping[str, Any] | None = None) -> tuple[Policy[Any], str, str | None]:
    """The target's configured policy, or ``predictive`` (then ``hpa``) with the reason.

    A missing, corrupt or mismatched PPO model must not stop the daemon nor leave the
    target unmanaged: it falls back and says why (metric ``aiops_policy_fallback``).
    """
    from aiops.policy import make_policy

    spec = PolicySpec.parse(cfg.policy)
    try:
        return make_policy(spec, context, **(extras or {})), spec.text, None
    except AiopsError as exc:
        reason = f"{spec.text}: {exc}"
    for fallback in ("predictive", "hpa"):
        try:
            return make_policy(PolicySpec.parse(fallback), context), fallback, reason
        except AiopsError:
            continue
    raise PermanentError(f"target {cfg.name!r}: no usable policy ({reason})")


class Controller:
    """Runs ticks for every configured target against a source and an actuator."""

    def __init__(
        self,
        config: Config,
        source: MetricSource,
        actuator: Actuator,
        clock: Clock,
        telemetry: Telemetry,
        *,
        annotators: Sequence[Annotator] = (),
        monitor_factory: Callable[[TargetConfig], AnomalyMonitor | None] | None = None,
        forecaster_factory: Callable[[TargetConfig], LoadForecaster | None] | None = None,
        policy_extras: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.actuator = actuator
        self.clock = clock
        self.telemetry = telemetry
        self.annotators = list(annotators)
        self.forecaster_factory = forecaster_factory
        self.runtimes: dict[str, TargetRuntime] = {}
        for t in config.targets:
            profile = load_profile(t.profile)
            context = PolicyContext(
                min_replicas=t.min_replicas, max_replicas=t.max_replicas,
                batch_sizes=t.batch_sizes, interval_s=config.daemon.interval_s,
                cold_start_s=profile.cold_start_s,
                replica_capacity_rps=profile.replica_capacity_rps(
                    profile.default_batch_size, 600.0, 150.0, ttft_slo=t.slo.ttft_s,
                    tpot_slo=t.slo.tpot_s),
                ttft_slo_s=t.slo.ttft_s, tpot_slo_s=t.slo.tpot_s,
                max_batch_for_tpot=profile.max_batch_for_tpot(t.slo.tpot_s, 675.0),
                # The fixed capacity above assumes a mix; the planner corrects it with the
                # mix vLLM's token counters show.
                capacity_for=profile.capacity_fn(profile.default_batch_size,
                                                 ttft_slo=t.slo.ttft_s, tpot_slo=t.slo.tpot_s),
            )
            policy, name, reason = build_policy(t, context, policy_extras)
            if reason:
                log.warning("target %s: policy fallback to %s: %s", t.name, name, reason)
                telemetry.fallback.labels(target=t.name, reason=reason[:120]).set(1)
            self.runtimes[t.name] = TargetRuntime(
                cfg=t, profile=profile, context=context, policy=policy, policy_name=name,
                policy_state=policy.initial_state(), fallback_reason=reason,
                monitor=monitor_factory(t) if monitor_factory else None,
                forecaster=forecaster_factory(t) if forecaster_factory else None,
                history=StepAverager(config.forecast.step_s, int(
                    config.forecast.history_s / config.forecast.step_s)),
            )

    # ------------------------------------------------------------------ ticks
    def tick_all(self) -> dict[str, Decision | None]:
        """One tick of every target; a failure in one never stops the others."""
        out: dict[str, Decision | None] = {}
        for name, rt in self.runtimes.items():
            started = time.perf_counter()
            try:
                out[name] = self.tick(rt)
            except Exception as exc:  # the loop must survive anything a tick does
                self.telemetry.errors.labels(target=name, kind="internal").inc()
                self.telemetry.ticks.labels(target=name, outcome="failed").inc()
                log.exception("target %s: tick failed: %s", name, exc)
                out[name] = None
            finally:
                self.telemetry.tick_seconds.labels(target=name).observe(
                    time.perf_counter() - started)
        return out

    def _count(self, rt: TargetRuntime, exc: BaseException, what: str) -> None:
        kind = error_kind(exc)
        self.telemetry.errors.labels(target=rt.cfg.name, kind=kind).inc()
        log.warning("target %s: %s failed (%s): %s", rt.cfg.name, what, kind, exc)

    def tick(self, rt: TargetRuntime) -> Decision | None:
        cfg = rt.cfg
        now = self.clock.now()
        try:
            ts = self.actuator.read(cfg)
        except AiopsError as exc:
            # Without the target's own state nothing can be decided safely: skip the tick.
            self._count(rt, exc, "reading the target")
            self.telemetry.ticks.labels(target=cfg.name, outcome="failed").inc()
            return None
        rt.last_state = ts
        self._load_state(rt, ts)
        self.telemetry.paused.labels(target=cfg.name).set(1 if ts.paused else 0)
        self.telemetry.ready.labels(target=cfg.name).set(ts.ready_replicas)
        batch = ts.batch_size or rt.profile.default_batch_size

        snap: Snapshot | None = None
        problem = ""
        try:
            snap = self.source.snapshot(cfg, now)
            snap = replace(snap, replicas=ts.replicas, ready_replicas=ts.ready_replicas,
                           batch_size=batch)
        except AiopsError as exc:
            self._count(rt, exc, "reading metrics")
            problem = str(exc)
        anomalies: AnomalyReport | None = None
        forecast: Forecast | None = None
        rec = None
        if snap is not None:
            self.telemetry.last_success.labels(target=cfg.name).set(now)
            self.telemetry.load.labels(target=cfg.name).set(snap.arrival_rate)
            anomalies = self._detect(rt, snap)
            forecast = self._forecast(rt, snap, anomalies)
            try:
                rec, rt.policy_state = rt.policy.decide(
                    PolicyInput(snap, rt.context, forecast=forecast, anomalies=anomalies),
                    rt.policy_state)
            except Exception as exc:
                self._count(rt, exc, f"policy {rt.policy_name}")
                problem = f"policy {rt.policy_name} failed: {exc}"
        floor = None  # the PPO shield's replica floor, enforced again as a named guardrail
        if rec is not None and "floor_replicas" in rec.details:
            floor = int(rec.details["floor_replicas"])
        gin = GuardInput(
            time=now, target=cfg.name, replicas=ts.replicas, ready_replicas=ts.ready_replicas,
            batch_size=batch, recommendation=rec, data_ok=rec is not None,
            data_problem=problem, anomalies=anomalies, paused=ts.paused,
            min_replicas=cfg.min_replicas, max_replicas=cfg.max_replicas,
            batch_sizes=cfg.batch_sizes,
            # Without a batch size readable from the pod template there is nothing to edit.
            tune_batch_size=cfg.tune_batch_size and ts.batch_size is not None,
            rl_floor=floor, gpus_per_replica=rt.profile.gpus_per_replica,
            gpu_budget_available=self._gpu_budget_for(rt), dry_run=self.config.dry_run,
            slo_attainment=snap.slo_attainment if snap is not None else math.nan,
        )
        decision, rt.guard_state = apply_guardrails(gin, self.config.guardrails, rt.guard_state)
        rt.last_decision = decision
        self.telemetry.failures.labels(target=cfg.name).set(
            rt.guard_state.consecutive_failures)
        self.telemetry.record_decision(cfg.name, rt.policy_name, decision)
        outcome = "ok" if rec is not None else "held"
        if ts.paused:
            outcome = "paused"
        self.telemetry.ticks.labels(target=cfg.name, outcome=outcome).inc()

        applied = True
        if decision.changed:
            try:
                result = self.actuator.apply(cfg, decision, dry_run=self.config.dry_run)
                log.debug("target %s: %s", cfg.name, result.message)
            except AiopsError as exc:
                # Counted as "actuation" whatever the cause (409, 403, timeout): the alert is
                # on failing to act; the log line keeps the cause and what to do about it.
                applied = False
                self.telemetry.errors.labels(target=cfg.name, kind="actuation").inc()
                log.warning("target %s: applying %d→%d failed (%s): %s", cfg.name,
                            decision.previous_replicas, decision.replicas,
                            error_kind(exc), exc)
        if applied:
            # An Event must never say a change was made when it was not.
            self._annotate(rt, decision)
        if not self.config.dry_run:
            state = {STATE_ANNOTATION: json.dumps(
                {"guardrails": json.loads(rt.guard_state.to_json())})}
            if decision.changed and applied:
                state[LAST_SCALE_TIME_ANNOTATION] = datetime.fromtimestamp(
                    now, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
                state[LAST_DECISION_ANNOTATION] = json.dumps({
                    "replicas": [decision.previous_replicas, decision.replicas],
                    "batch_size": [decision.previous_batch_size, decision.batch_size],
                    "policy": rt.policy_name, "reason": decision.recommendation.reason[:300],
                    "rules": list(decision.rules)})
            try:
                self.actuator.save_state(cfg, state)
            except AiopsError as exc:
                self._count(rt, exc, "saving state")
        return decision

    # ------------------------------------------------------------ sub-steps
    def _load_state(self, rt: TargetRuntime, ts: TargetState) -> None:
        """Restore guardrail state from the target's annotation once, after a (re)start."""
        if rt.state_loaded:
            return
        rt.state_loaded = True
        raw = ts.annotations.get(STATE_ANNOTATION)
        if not raw:
            return
        problem: str | None
        try:
            saved = json.loads(raw).get("guardrails")
            rt.guard_state, problem = GuardrailState.from_json(json.dumps(saved))
        except (ValueError, AttributeError, TypeError) as exc:
            problem = str(exc)
        if problem:
            log.warning("target %s: ignoring unreadable %s annotation: %s",
                        rt.cfg.name, STATE_ANNOTATION, problem)

    def _detect(self, rt: TargetRuntime, snap: Snapshot) -> AnomalyReport | None:
        if rt.monitor is None:
            return None
        try:
            report = rt.monitor.observe(snap)
        except Exception as exc:
            self._count(rt, exc, "anomaly detection")
            # no check ran: nothing vouches for the numbers, so no scale-down on them
            return AnomalyReport(snap.time, unverified=(f"anomaly detection failed: {exc}",))
        self.telemetry.record_anomalies(rt.cfg.name, report)
        return report

    def _forecast(self, rt: TargetRuntime, snap: Snapshot,
                  anomalies: AnomalyReport | None = None) -> Forecast | None:
        """Feed the observed load to the forecaster and predict one cold start ahead.

        An arrival rate the detector calls bad telemetry is not fed (a unit change or a
        counter-reset spike in the history would be forecast for days); the forecast is
        still made from the history so far.
        """
        rate = snap.arrival_rate
        if not math.isfinite(rate):
            return None
        closed = None
        if not _untrusted(anomalies, "arrival_rate"):
            closed = rt.history.add(snap.time, rate)
            self._score_past_forecast(rt, snap.time, rate)
        fc = rt.forecaster
        if fc is None or not rt.forecaster_fitted:
            return None
        step = self.config.forecast.step_s
        try:
            if closed is not None:
                fc.update(np.array([closed[0]]), np.array([closed[1]]))
            horizon = max(2, math.ceil((rt.context.cold_start_s + rt.context.interval_s)
                                       / step) + 1)
            forecast = fc.predict(horizon)
        except Exception as exc:
            self._count(rt, exc, "forecast")
            return None
        k = min(forecast.horizon - 1,
                max(0, math.ceil(rt.context.cold_start_s / forecast.step) - 1))
        for q in (0.5, 0.9):
            if q in forecast.quantiles:
                self.telemetry.forecast.labels(target=rt.cfg.name, quantile=str(q)).set(
                    float(forecast.quantiles[q][k]))
                # Every horizon too: an HPA or KEDA can scale on aiops' prediction (advisor).
                for i, value in enumerate(forecast.quantiles[q]):
                    self.telemetry.forecast_by_horizon.labels(
                        target=rt.cfg.name, quantile=str(q),
                        horizon_s=str(round((i + 1) * forecast.step))).set(float(value))
        rt.pending_forecasts.append((snap.time + (k + 1) * forecast.step,
                                     float(forecast.mean[k])))
        return forecast

    def _score_past_forecast(self, rt: TargetRuntime, now: float, rate: float) -> None:
        due = [p for p in rt.pending_forecasts if p[0] <= now]
        if not due:
            return
        rt.pending_forecasts = [p for p in rt.pending_forecasts if p[0] > now]
        predicted = due[-1][1]
        err = abs(predicted - rate) / max(rate, 1.0)
        self.telemetry.forecast_error.labels(target=rt.cfg.name).set(err)

    def refit(self) -> None:
        """(Re)fit every target's forecaster on its history; failures leave the old fit.

        The first refit after a start reads the history from the metric source (a week of
        Prometheus data), so a restarted daemon forecasts at once instead of after a week.
        """
        step = self.config.forecast.step_s
        for rt in self.runtimes.values():
            if rt.forecaster is None:
                continue
            if not rt.history_loaded:
                rt.history_loaded = True
                now = self.clock.now()
                try:
                    t, v = self.source.load_history(rt.cfg, now - self.config.forecast.history_s,
                                                    now, step)
                    # Gaps stay NaN: the forecaster fills short ones and refuses long ones.
                    if int(np.isfinite(v).sum()) > len(rt.history.times):
                        rt.history.replace([float(x) for x in t], [float(x) for x in v])
                except Exception as exc:
                    self._count(rt, exc, "loading load history")
            try:
                if len(rt.history.times) < 8:
                    continue
                rt.forecaster.fit(np.array(rt.history.times), np.array(rt.history.values))
                rt.forecaster_fitted = True
            except Exception as exc:
                self._count(rt, exc, "forecaster fit")

    def _gpu_budget_for(self, rt: TargetRuntime) -> int | None:
        budget = self.config.guardrails.gpu_budget
        if budget is None:
            return None
        used = 0
        for other in self.runtimes.values():
            if other is rt or other.last_state is None:
                continue
            # A target already decided this round counts at its new size, so two targets
            # scaling up in one round cannot together overrun the budget.
            replicas = other.last_state.replicas
            if other.last_decision is not None:
                replicas = max(replicas, other.last_decision.replicas)
            used += replicas * other.profile.gpus_per_replica
        return max(0, budget - used)

    def _annotate(self, rt: TargetRuntime, decision: Decision) -> None:
        """Hand the decision to every annotator; each decides what is news (``explain``).

        Annotators aggregate repeats themselves (a guardrail holding for an hour is one
        Event with a count, not 240), and never raise; a False is counted.
        """
        log.debug("target %s: %d→%d (%s; rules: %s)", rt.cfg.name, decision.previous_replicas,
                  decision.replicas, decision.recommendation.reason,
                  ",".join(decision.rules) or "none")
        for annotator in self.annotators:
            if not safe_annotate(annotator, rt.cfg, decision):
                self.telemetry.errors.labels(target=rt.cfg.name, kind="annotation").inc()
