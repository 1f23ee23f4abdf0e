"""KEDA's ScaledObject with one Prometheus trigger, as a pure aiops policy.

KEDA does not compute replica counts itself above one: it creates an HPA whose metric is
an ``External`` metric served by KEDA's metrics adapter, and only handles the 0 ↔ 1 step
(activation) in its own operator loop. This module mirrors that split:

* the *operator loop* runs every ``pollingInterval`` (30 s by default): it runs the trigger
  query ``sum(vllm:num_requests_waiting)`` (``Snapshot.requests_waiting``), marks the
  ScaledObject active when the value is above ``activationThreshold``, scales 0 → 1 when
  active and, with ``minReplicaCount: 0``, scales to 0 once no trigger has been active for
  ``cooldownPeriod`` seconds;
* the *HPA* it created syncs every 15 s with an ``AverageValue`` target of ``threshold``
  per pod, reading the external metric (``external_average_proposal``: desired is
  ``ceil(total / threshold)`` unless ``total / (threshold × pods)`` is within the tolerance)
  and then applying the same behavior engine as ``hpa`` (:class:`~aiops.policy.hpa.HpaEngine`),
  with ``minReplicas = max(minReplicaCount, 1)``.

As in stock KEDA (``useCachedMetrics: false``, its default) the HPA reads the trigger afresh
at each 15 s sync, and ``pollingInterval`` paces only activation and cooldown; ``cached=1``
makes the HPA see the value of the last poll instead, as with ``useCachedMetrics: true``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from aiops.errors import InputError
from aiops.policy.base import (
    PolicyContext,
    PolicyInput,
    PolicySpec,
    check_known_params,
    param_float,
    param_int,
)
from aiops.policy.hpa import (
    BEHAVIOR_PARAMS,
    CLOCK_SLACK_S,
    DEFAULT_SYNC_PERIOD_S,
    DEFAULT_TOLERANCE,
    HpaEngine,
    HpaState,
    behavior_from_spec,
    between_syncs,
    bounds_from_spec,
    external_average_proposal,
    render_reason,
)
from aiops.types import Recommendation, Snapshot

__all__ = ["KEDA_PARAMS", "KEDA_QUERY", "KedaPolicy", "KedaState"]

KEDA_QUERY = "sum(vllm:num_requests_waiting)"
"""The trigger's PromQL; ``Snapshot.requests_waiting`` is defined as exactly this sum."""

KEDA_PARAMS = frozenset({
    "threshold", "activation_threshold", "polling_interval", "cooldown", "cached",
    "min", "max", "tolerance", "sync_period",
} | BEHAVIOR_PARAMS)


@dataclass(frozen=True)
class KedaState:
    """The operator's memory (last poll, its value, last time a trigger was active) and the
    state of the HPA it created. ``polled_value`` is None when the last query failed
    (NaN, Inf or negative): the HPA then gets an error and holds until the next poll."""

    hpa: HpaState = field(default_factory=HpaState)
    last_poll: float | None = None
    polled_value: float | None = None
    last_active: float | None = None


def _sample(value: float) -> float | None:
    """The trigger value, or None when the query result cannot be used."""
    return value if math.isfinite(value) and value >= 0.0 else None


class KedaPolicy:
    """A ScaledObject with a Prometheus trigger on the vLLM queue.

    Parameters (spec keys in brackets), each with KEDA's default unless said otherwise:

    * ``threshold`` [threshold] = 10 queued requests per pod: the ``AverageValue`` target.
      That is a fraction of one vLLM batch (32–64 sequences), drained as soon as a few
      running sequences finish; a longer queue means requests wait for free slots.
    * ``activation_threshold`` [activation_threshold] = 0: active when the queue is non-empty.
    * ``polling_interval_s`` [polling_interval] = 30 s, ``cooldown_s`` [cooldown] = 300 s.
    * ``min_replica_count``/``max_replica_count`` [min]/[max]: default to the context (our
      targets keep at least one replica; ``min=0`` enables scale to zero).
    * ``use_cached_metrics`` [cached] = 0: the HPA reads the trigger at each sync, as stock
      KEDA does (see module).
    * HPA settings [tolerance], [sync_period] and the behavior keys of ``hpa``.
    """

    name: str = "keda"

    def __init__(
        self,
        *,
        threshold: float = 10.0,
        activation_threshold: float = 0.0,
        polling_interval_s: float = 30.0,
        cooldown_s: float = 300.0,
        min_replica_count: int = 1,
        max_replica_count: int = 64,
        use_cached_metrics: bool = False,
        tolerance: float = DEFAULT_TOLERANCE,
        engine: HpaEngine | None = None,
    ) -> None:
        if not (threshold > 0.0 and math.isfinite(threshold)):
            raise InputError(f"KEDA threshold {threshold} must be a positive number")
        if activation_threshold < 0.0 or polling_interval_s <= 0.0 or cooldown_s < 0.0:
            raise InputError("KEDA activation_threshold and cooldown must be >= 0 and the "
                             "polling interval > 0")
        if not 0 <= min_replica_count <= max_replica_count or max_replica_count < 1:
            raise InputError(f"KEDA min {min_replica_count} / max {max_replica_count}: need "
                             "0 <= min <= max and max >= 1")
        if not 0.0 <= tolerance < 1.0:
            raise InputError(f"KEDA tolerance {tolerance} is outside [0, 1)")
        self.threshold = threshold
        self.activation_threshold = activation_threshold
        self.polling_interval_s = polling_interval_s
        self.cooldown_s = cooldown_s
        self.min_replica_count = min_replica_count
        self.max_replica_count = max_replica_count
        self.use_cached_metrics = use_cached_metrics
        self.tolerance = tolerance
        base = engine if engine is not None else HpaEngine()
        # The HPA KEDA creates cannot go below 1 replica: 0 is KEDA's business.
        self.engine = replace(base, min_replicas=max(min_replica_count, 1),
                              max_replicas=max_replica_count)

    @classmethod
    def from_spec(cls, spec: PolicySpec, context: PolicyContext) -> KedaPolicy:
        """Build from ``keda[:key=value,...]``; bad values raise InputError naming the key."""
        check_known_params(spec, set(KEDA_PARAMS))
        threshold = param_float(spec, "threshold", 10.0, lo=0.0)
        if threshold <= 0.0:
            raise InputError(f"policy {spec.text!r}: threshold={threshold} must be > 0")
        polling = param_float(spec, "polling_interval", 30.0, lo=1.0)
        sync_period = param_float(spec, "sync_period", DEFAULT_SYNC_PERIOD_S, lo=1.0)
        lo, hi = bounds_from_spec(spec, context, min_floor=0)
        engine = HpaEngine(behavior=behavior_from_spec(spec), sync_period_s=sync_period,
                           min_replicas=max(lo, 1), max_replicas=hi)
        return cls(
            threshold=threshold,
            activation_threshold=param_float(spec, "activation_threshold", 0.0, lo=0.0),
            polling_interval_s=polling,
            cooldown_s=param_float(spec, "cooldown", 300.0, lo=0.0),
            min_replica_count=lo,
            max_replica_count=hi,
            use_cached_metrics=bool(param_int(spec, "cached", 0, lo=0, hi=1)),
            tolerance=param_float(spec, "tolerance", DEFAULT_TOLERANCE, lo=0.0, hi=0.99),
            engine=engine,
        )

    def initial_state(self) -> KedaState:
        return KedaState()

    def _poll_due(self, state: KedaState, now: float) -> bool:
        if state.last_poll is None:
            return True
        elapsed = now - state.last_poll
        return elapsed < 0.0 or elapsed >= self.polling_interval_s - CLOCK_SLACK_S

    def decide(self, inp: PolicyInput, state: KedaState) -> tuple[Recommendation, KedaState]:
        snap = inp.snapshot
        now, current = snap.time, snap.replicas
        state = replace(state, hpa=self.engine.observe(state.hpa, current))

        if self._poll_due(state, now):
            value = _sample(snap.requests_waiting)
            active = value is not None and value > self.activation_threshold
            state = replace(state, last_poll=now, polled_value=value,
                            last_active=now if active else state.last_active)
            zero_step = self._activation(state, now, current, value, active)
            if zero_step is not None:
                return zero_step, state

        if not self.engine.is_due(state.hpa, now):
            return between_syncs(self.name, self.engine, state.hpa, now, current), state
        return self._hpa_sync(snap, state)

    def _activation(self, state: KedaState, now: float, current: int, value: float | None,
                    active: bool) -> Recommendation | None:
        """The operator's own 0 ↔ 1 step at a poll, or None to leave it to the HPA."""
        shown = "failed" if value is None else f"{value:g}"
        details = {"current_replicas": float(current),
                   "polled_value": math.nan if value is None else value,
                   "activation_threshold": self.activation_threshold}
        if current == 0:
            # The HPA is off at 0 replicas; only the operator can bring the target back.
            n = max(self.min_replica_count, 1)
            if active:
                return Recommendation(n, None, (
                    f"keda: {KEDA_QUERY} = {shown} > activation threshold "
                    f"{self.activation_threshold:g}: activate, 0 → {n}"), details)
            if value is not None and self.min_replica_count > 0:
                return Recommendation(n, None, (
                    f"keda: inactive but below minReplicaCount {self.min_replica_count}: "
                    f"0 → {n}"), details)
            return Recommendation(0, None, (
                f"keda: {KEDA_QUERY} = {shown}, not above activation threshold "
                f"{self.activation_threshold:g}: stay at 0"), details)
        if self.min_replica_count == 0 and value is not None and not active:
            # KEDA scales to zero right away when no trigger was ever active.
            idle = math.inf if state.last_active is None else now - state.last_active
            if idle >= self.cooldown_s - CLOCK_SLACK_S:
                since = ("never active" if state.last_active is None
                         else f"inactive for {idle:.0f} s")
                return Recommendation(0, None, (
                    f"keda: {KEDA_QUERY} = {shown}, {since} >= cooldown "
                    f"{self.cooldown_s:g} s: scale to zero, {current} → 0"),
                    {**details, "idle_s": idle})
        return None

    def _status_replicas(self, snap: Snapshot) -> int:
        """``scale.status.replicas``: pods that exist, ready or starting."""
        pods = snap.ready_replicas + max(0, snap.starting_replicas)
        return pods if pods > 0 else snap.replicas

    def _hpa_sync(self, snap: Snapshot, state: KedaState) -> tuple[Recommendation, KedaState]:
        """One sync of the HPA that KEDA created."""
        now, current = snap.time, snap.replicas
        value = state.polled_value if self.use_cached_metrics else _sample(
            snap.requests_waiting)
        pods = self._status_replicas(snap)
        proposal = (None if value is None else external_average_proposal(
            value, self.threshold, status_replicas=pods, tolerance=self.tolerance))
        outcome, hpa_state = self.engine.reconcile(
            now, current, None if proposal is None else proposal.replicas, state.hpa)
        state = replace(state, hpa=hpa_state)

        age = now - state.last_poll if state.last_poll is not None else 0.0
        seen = (f"polled {age:.0f} s ago" if self.use_cached_metrics and age > 0.0
                else "fresh")
        details: dict[str, float] = {
            "current_replicas": float(current),
            "status_replicas": float(pods),
            "threshold": self.threshold,
            "desired_replicas": float(outcome.replicas),
            "poll_age_s": age if self.use_cached_metrics else 0.0,
        }
        if proposal is None:
            clause = f"{KEDA_QUERY} failed (NaN/Inf/negative); the HPA holds"
        else:
            details.update(metric_total=value or 0.0, metric_value=proposal.usage,
                           ratio=proposal.ratio, metric_replicas=float(proposal.replicas))
            per_pod = f"{value:g} ({seen}) over {pods} pods = {proposal.usage:.1f}/pod"
            if proposal.within_tolerance:
                clause = (f"{KEDA_QUERY} {per_pod} vs threshold {self.threshold:g} is within "
                          f"tolerance ({self.tolerance:.0%})")
            else:
                sign = ">" if proposal.ratio > 1.0 else "<"
                clause = (f"{KEDA_QUERY} {per_pod} {sign} threshold {self.threshold:g}, "
                          f"wants ceil({value:g}/{self.threshold:g}) = {proposal.replicas}")
        details.update(outcome.details)
        reason = render_reason(self.name, [clause], outcome, current)
        return Recommendation(outcome.replicas, None, reason, details), state
