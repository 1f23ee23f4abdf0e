"""Policy wrappers the report's replay needs, on top of ``aiops.sim.runner.run_policy``.

* :class:`GuardedPolicy` — the configured policy followed by the guardrail pipeline, as the
  daemon's tick runs them. The report is "what aiops would have done", and aiops never
  applies a bare recommendation: stabilization, cooldown and step limits change both the
  cost and the SLO, and the reader must see which rule shaped each change.
* :class:`RecordedReplicas` — replays the replica count that actually ran (from
  kube-state-metrics), so "what ran" is scored by the same simulator as every other row
  instead of comparing simulated figures with measured ones.
* :class:`ForecastRecorder` — wraps the forecast and keeps, for each decision, the band it
  predicted one cold start ahead: the forecast the policy acted on.
* :class:`AnomalyLookup` — streaming anomaly scores as the guardrails would have seen them
  at each decision (only bins already complete), so ``anomaly_freeze`` acts in the replay.

Policies stay pure in the sense that matters (``decide`` depends only on its input and
state); the wrappers also append to a log, which the report reads after the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from aiops.config import GuardrailsConfig
from aiops.guardrails import GuardInput, GuardrailState, apply_guardrails, gpus_available_for
from aiops.policy.base import Policy, PolicyInput
from aiops.sim.runner import ForecastFn
from aiops.types import (
    AnomalyReport,
    Decision,
    FloatArray,
    Forecast,
    MetricAnomaly,
    Recommendation,
    Snapshot,
)

S = TypeVar("S")


@dataclass(frozen=True)
class GuardedState(Generic[S]):
    inner: S
    guard: GuardrailState


@dataclass(frozen=True)
class GuardLimits:
    """The target's limits the guardrails read (``GuardInput.from_target``'s fields)."""

    target: str
    min_replicas: int
    max_replicas: int
    batch_sizes: tuple[int, ...]
    tune_batch_size: bool
    gpus_per_replica: int
    sim_batch_sizes: tuple[int, ...]  # what the profile can simulate


class GuardedPolicy(Generic[S]):
    """``inner`` then :func:`aiops.guardrails.apply_guardrails`, one decision per call.

    ``decisions`` holds every tick's :class:`~aiops.types.Decision` in order, one per
    ``decide`` call, so a run's timeline row ``i`` and ``decisions[i]`` are the same tick.
    The replay is not a dry-run: the simulated Deployment does move, so the guardrails see
    the replicas the previous decisions produced.
    """

    def __init__(self, inner: Policy[S], limits: GuardLimits, cfg: GuardrailsConfig,
                 anomalies: AnomalyLookup | None = None) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "policy")
        self.limits = limits
        self.cfg = cfg
        self.anomalies = anomalies
        self.decisions: list[Decision] = []

    def initial_state(self) -> GuardedState[S]:
        return GuardedState(self.inner.initial_state(), GuardrailState())

    def decide(self, inp: PolicyInput, state: GuardedState[S]
               ) -> tuple[Recommendation, GuardedState[S]]:
        snap = inp.snapshot
        report = self.anomalies.at(snap.time) if self.anomalies is not None else None
        rec, inner_state = self.inner.decide(
            PolicyInput(snap, inp.context, forecast=inp.forecast, anomalies=report),
            state.inner)
        floor = int(rec.details["shield_floor"]) if "shield_floor" in rec.details else None
        lim = self.limits
        gin = GuardInput(
            time=snap.time, target=lim.target, replicas=snap.replicas,
            ready_replicas=snap.ready_replicas, batch_size=snap.batch_size,
            recommendation=rec, data_ok=True, anomalies=report, paused=False,
            min_replicas=lim.min_replicas, max_replicas=lim.max_replicas,
            batch_sizes=lim.batch_sizes, tune_batch_size=lim.tune_batch_size,
            rl_floor=floor, gpus_per_replica=lim.gpus_per_replica,
            gpu_budget_available=gpus_available_for(self.cfg, 0), dry_run=False,
            slo_attainment=snap.slo_attainment,
        )
        decision, guard = apply_guardrails(gin, self.cfg, state.guard)
        self.decisions.append(decision)
        batch: int | None = None
        if decision.batch_size != snap.batch_size and decision.batch_size in lim.sim_batch_sizes:
            batch = decision.batch_size
        reason = rec.reason
        if decision.clamps:
            reason += "; guardrails: " + ", ".join(c.text() for c in decision.clamps)
        out = Recommendation(replicas=decision.replicas, batch_size=batch, reason=reason,
                             details=rec.details)
        return out, GuardedState(inner_state, guard)


@dataclass(frozen=True)
class RecordedState:
    """Nothing to remember: the recorded series is the whole plan."""


class RecordedReplicas:
    """The replica count that ran at each moment (a step function of the recorded samples).

    ``times`` are seconds from the replay start, ascending; ``replicas`` the recorded
    ``spec.replicas`` there (no NaN: the builder fills gaps with the last known count).
    Before the first sample the first count holds.
    """

    name = "ran"

    def __init__(self, times: FloatArray, replicas: FloatArray) -> None:
        if len(times) == 0 or len(times) != len(replicas):
            raise ValueError("recorded replicas need one count per time, at least one")
        self.times = np.asarray(times, dtype=np.float64)
        self.replicas = np.asarray(replicas, dtype=np.float64)

    def at(self, t: float) -> int:
        i = max(0, int(np.searchsorted(self.times, t, side="right")) - 1)
        return max(0, round(float(self.replicas[i])))

    def initial_state(self) -> RecordedState:
        return RecordedState()

    def decide(self, inp: PolicyInput, state: RecordedState
               ) -> tuple[Recommendation, RecordedState]:
        n = self.at(inp.snapshot.time)
        return Recommendation(replicas=n, reason=f"recorded: {n} replicas ran"), state


@dataclass(frozen=True)
class BandPoint:
    """The band forecast for ``time`` (replay seconds), made ``lead_s`` earlier."""

    time: float
    p10: float
    p50: float
    p90: float


class ForecastRecorder:
    """Passes the inner forecast through and keeps the step one cold start ahead.

    The step kept is the one whose timestamp is closest to ``now + lead_s``: the load the
    replicas being started now will meet. Its timestamp follows the snapshot convention
    (the rate over the interval ending there), so it plots against the observed load as is.
    """

    def __init__(self, inner: ForecastFn, lead_s: float) -> None:
        self.inner = inner
        self.lead_s = lead_s
        self.points: list[BandPoint] = []
        self.model = ""
        self._last: Forecast | None = None

    def __call__(self, snap: Snapshot, past: FloatArray) -> Forecast | None:
        fc = self.inner(snap, past)
        if fc is None or fc.horizon == 0 or fc is self._last:
            return fc  # a forecast reused between steps is recorded once
        self._last = fc
        k = round((snap.time + self.lead_s - fc.start) / fc.step) if fc.step > 0 else 0
        k = min(max(k, 0), fc.horizon - 1)
        try:
            p10, p50, p90 = (float(fc.quantile(q)[k]) for q in (0.1, 0.5, 0.9))
        except KeyError:
            return fc
        if all(math.isfinite(v) for v in (p10, p50, p90)):
            self.points.append(BandPoint(fc.start + k * fc.step, p10, p50, p90))
            self.model = fc.model or self.model
        return fc


class AnomalyLookup:
    """Arrival-rate anomaly scores on a grid, as known at a decision time.

    Point ``k`` describes ``[times[k], times[k] + step)`` and is known once that interval
    has ended; a decision at ``t`` sees the last point known by then, so the replay's
    guardrails never act on a score from the future.
    """

    def __init__(self, times: FloatArray, scores: FloatArray, step: float,
                 threshold: float) -> None:
        self.known_at = np.asarray(times, dtype=np.float64) + step
        self.scores = np.asarray(scores, dtype=np.float64)
        self.threshold = threshold

    def at(self, t: float) -> AnomalyReport | None:
        i = int(np.searchsorted(self.known_at, t, side="right")) - 1
        if i < 0:
            return None
        score = float(self.scores[i])
        return AnomalyReport(time=t, threshold=self.threshold, anomalies=(
            MetricAnomaly("arrival_rate", score, "load_change" if score > 0 else "none"),))
