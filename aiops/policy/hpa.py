"""The Kubernetes HorizontalPodAutoscaler (autoscaling/v2) as a pure aiops policy.

Benchmarks compare aiops against "the HPA", so this module does what the controller in
``kube-controller-manager`` would do with the same numbers, in two layers that mirror the
two files of the controller:

* the *replica calculator* (``replica_calculator.go``): one metric gives one proposal,
  ``ceil(pods × usage / target)``, or "no change" when ``usage / target`` is within the
  tolerance of 1.0 (:func:`pods_metric_proposal`, :func:`external_average_proposal`);
* the *reconcile step* (``horizontal.go``): the min/max short-cuts, the stabilization
  windows over past recommendations, the ``behavior`` rate limits over the scale events of
  each policy's period, and the sync period (:class:`HpaEngine`). ``keda.py`` reuses this
  engine: KEDA creates an HPA, so the scaling rules after the metric are the same.

Times are seconds (``Snapshot.time`` for "now": the policy never reads the clock). All state
lives in :class:`HpaState`, a frozen dataclass of tuples, so a restart can resume from an
annotation; the controller keeps the same data in memory and loses it on restart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from aiops.errors import InputError
from aiops.policy.base import (
    PolicyContext,
    PolicyInput,
    PolicySpec,
    check_known_params,
    param_float,
    param_int,
)
from aiops.types import Recommendation, Snapshot

__all__ = [
    "BEHAVIOR_PARAMS",
    "CLOCK_SLACK_S",
    "DEFAULT_BEHAVIOR",
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "DEFAULT_SYNC_PERIOD_S",
    "DEFAULT_TOLERANCE",
    "HPA_PARAMS",
    "Behavior",
    "EngineOutcome",
    "HpaEngine",
    "HpaMetric",
    "HpaPolicy",
    "HpaState",
    "MetricProposal",
    "PendingScale",
    "ScaleEvent",
    "ScalingPolicy",
    "ScalingRules",
    "TimedRecommendation",
    "behavior_from_spec",
    "between_syncs",
    "bounds_from_spec",
    "external_average_proposal",
    "pods_metric_proposal",
    "render_reason",
]

DEFAULT_TOLERANCE = 0.1
"""``--horizontal-pod-autoscaler-tolerance``: ratios within 10 % of 1.0 cause no change, so
metric noise does not make the replica count flap."""

DEFAULT_SYNC_PERIOD_S = 15.0
"""``--horizontal-pod-autoscaler-sync-period``: the controller re-evaluates every 15 s."""

CLOCK_SLACK_S = 0.5
"""Ages within this many seconds of a period or window boundary count as "outside" it.

The controller starts its next sync only after the previous one finished, so an event is
always a little *more* than one sync period old at the next sync and no longer counts. Our
ticks come from a scheduler (or a simulator) whose timestamps may land a few milliseconds
early; without this slack an event stored at ``t`` would still count at ``t + 14.99`` and a
default HPA would scale up only every other sync."""

SelectPolicy = Literal["Max", "Min", "Disabled"]
PolicyKind = Literal["Pods", "Percent"]
HpaMetric = Literal["running", "kv", "waiting"]

_SELECTS: tuple[SelectPolicy, ...] = ("Max", "Min", "Disabled")
_METRICS: tuple[HpaMetric, ...] = ("running", "kv", "waiting")


def _ceil(x: float) -> int:
    """``ceil`` that ignores float dust: 0.7 × 4 / 0.7 is 4.000000000000001, not 5 pods.

    The controller works on milli-unit integers, where this cannot happen."""
    return math.ceil(x - 1e-9)


def _age_within(t: float, now: float, span: float) -> bool:
    """Whether something that happened at ``t`` is inside the last ``span`` seconds.

    Mirrors ``timestamp.After(now - span)`` in the controller, with :data:`CLOCK_SLACK_S`.
    Entries from the future (a replay restarted earlier) are never inside."""
    age = now - t
    return 0.0 <= age < span - CLOCK_SLACK_S


# --------------------------------------------------------------------------------------
# behavior: the scaling rules of autoscaling/v2
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingPolicy:
    """One ``HPAScalingPolicy``: change by at most ``value`` pods (``Pods``) or ``value`` %
    of the replicas at the start of the period (``Percent``) per ``period_s`` seconds."""

    kind: PolicyKind
    value: int
    period_s: float

    def __post_init__(self) -> None:
        if self.kind not in ("Pods", "Percent"):
            raise InputError(f"scaling policy type {self.kind!r} is not Pods or Percent")
        if self.value <= 0:
            raise InputError(f"scaling policy {self.kind} value {self.value} must be > 0")
        if not 0.0 < self.period_s <= 1800.0:
            # The API server accepts periodSeconds in (0, 1800].
            raise InputError(f"scaling policy period {self.period_s} s is outside (0, 1800]")

    def describe(self) -> str:
        unit = " pods" if self.kind == "Pods" else " %"
        return f"{self.value}{unit}/{self.period_s:g} s"


@dataclass(frozen=True)
class ScalingRules:
    """``HPAScalingRules`` for one direction.

    ``stabilization_window_s``: for scale-down the controller applies the *highest*
    recommendation of the window, for scale-up the *lowest*; ``select_policy`` picks the
    policy allowing the biggest change (``Max``), the smallest (``Min``), or forbids
    scaling in this direction (``Disabled``)."""

    stabilization_window_s: float
    policies: tuple[ScalingPolicy, ...]
    select_policy: SelectPolicy = "Max"

    def __post_init__(self) -> None:
        if not 0.0 <= self.stabilization_window_s <= 3600.0:
            raise InputError(
                f"stabilization window {self.stabilization_window_s} s is outside [0, 3600]"
            )
        if self.select_policy not in _SELECTS:
            raise InputError(
                f"selectPolicy {self.select_policy!r} is not one of {', '.join(_SELECTS)}"
            )
        if not self.policies and self.select_policy != "Disabled":
            raise InputError("scaling rules need at least one policy unless selectPolicy is "
                             "Disabled")

    @property
    def longest_period_s(self) -> float:
        return max((p.period_s for p in self.policies), default=0.0)

    def describe(self) -> str:
        if self.select_policy == "Disabled":
            return "selectPolicy Disabled"
        joined = " or ".join(p.describe() for p in self.policies)
        return f"{joined}, select {self.select_policy}" if len(self.policies) > 1 else joined


DEFAULT_SCALE_UP = ScalingRules(
    stabilization_window_s=0.0,
    policies=(ScalingPolicy("Pods", 4, 15.0), ScalingPolicy("Percent", 100, 15.0)),
    select_policy="Max",
)
"""The API server's default scale-up: no stabilization (react to load at once), at most
``max(4 pods, +100 %)`` per 15 s so a metric spike cannot explode the replica count."""

DEFAULT_SCALE_DOWN = ScalingRules(
    stabilization_window_s=300.0,
    policies=(ScalingPolicy("Percent", 100, 15.0),),
    select_policy="Max",
)
"""The API server's default scale-down: the highest recommendation of the last 5 minutes
(so a short dip does not remove pods that are needed again soon), then any amount at once."""


@dataclass(frozen=True)
class Behavior:
    """``HorizontalPodAutoscalerBehavior``: the rules for each direction."""

    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN


DEFAULT_BEHAVIOR = Behavior()

BEHAVIOR_PARAMS = frozenset({
    "up_window", "up_pods", "up_percent", "up_period", "up_select",
    "down_window", "down_pods", "down_percent", "down_period", "down_select",
})
"""Spec keys that configure :class:`Behavior` (shared by ``hpa`` and ``keda``).

``<dir>_window`` (s), ``<dir>_pods`` and ``<dir>_percent`` (0 = no such policy),
``<dir>_period`` (s, shared by both policies of a direction) and ``<dir>_select``
(Max/Min/Disabled). Defaults are the Kubernetes defaults. A spec can express at most one
Pods and one Percent policy per direction; build :class:`ScalingRules` in code for more."""


def _param_select(spec: PolicySpec, key: str, default: SelectPolicy) -> SelectPolicy:
    raw = spec.params.get(key)
    if raw is None:
        return default
    for option in _SELECTS:
        if raw.lower() == option.lower():
            return option
    raise InputError(f"policy {spec.text!r}: {key}={raw!r} is not one of {', '.join(_SELECTS)}")


def _rules_from_spec(
    spec: PolicySpec, prefix: str, *, window: float, pods: int, percent: int, period: float
) -> ScalingRules:
    window_s = param_float(spec, f"{prefix}_window", window, lo=0.0, hi=3600.0)
    n_pods = param_int(spec, f"{prefix}_pods", pods, lo=0)
    n_percent = param_int(spec, f"{prefix}_percent", percent, lo=0)
    period_s = param_float(spec, f"{prefix}_period", period, lo=1.0, hi=1800.0)
    select = _param_select(spec, f"{prefix}_select", "Max")
    policies: list[ScalingPolicy] = []
    if n_pods > 0:
        policies.append(ScalingPolicy("Pods", n_pods, period_s))
    if n_percent > 0:
        policies.append(ScalingPolicy("Percent", n_percent, period_s))
    if not policies and select != "Disabled":
        raise InputError(
            f"policy {spec.text!r}: {prefix}_pods and {prefix}_percent are both 0, so "
            f"nothing may ever change; set one > 0 or {prefix}_select=Disabled"
        )
    return ScalingRules(window_s, tuple(policies), select)


def behavior_from_spec(spec: PolicySpec) -> Behavior:
    """Read :data:`BEHAVIOR_PARAMS` from a spec; absent keys keep the Kubernetes defaults."""
    return Behavior(
        scale_up=_rules_from_spec(spec, "up", window=0.0, pods=4, percent=100, period=15.0),
        scale_down=_rules_from_spec(spec, "down", window=300.0, pods=0, percent=100,
                                    period=15.0),
    )


# --------------------------------------------------------------------------------------
# state
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimedRecommendation:
    """An unstabilized recommendation (what the metric asked for) at ``time``."""

    time: float
    replicas: int


@dataclass(frozen=True)
class ScaleEvent:
    """A scale the HPA made at ``time``: ``change`` replicas added (in the scale-up list) or
    removed (in the scale-down list), always > 0."""

    time: float
    change: int


@dataclass(frozen=True)
class PendingScale:
    """A scale this policy recommended and has not yet seen applied."""

    time: float
    from_replicas: int
    to_replicas: int


@dataclass(frozen=True)
class HpaState:
    """Everything the controller keeps per HPA between syncs, as tuples.

    ``recommendations`` feeds the stabilization windows; ``scale_up_events`` and
    ``scale_down_events`` feed the rate limits (``replicas changed in the period``);
    ``pending`` is the last recommended change, turned into a scale event once a snapshot
    shows it applied (see :meth:`HpaEngine.observe`)."""

    last_sync: float | None = None
    recommendations: tuple[TimedRecommendation, ...] = ()
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()
    pending: PendingScale | None = None


# --------------------------------------------------------------------------------------
# the replica calculator
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricProposal:
    """What one metric asks for, and the numbers behind it.

    ``usage`` is the per-pod value the controller compares (the average over the pods it
    counted), ``ratio`` is ``usage / target`` as it tested it against the tolerance."""

    replicas: int
    usage: float
    target: float
    ratio: float
    within_tolerance: bool
    note: str = ""


def _within(ratio: float, tolerance: float) -> bool:
    return abs(1.0 - ratio) <= tolerance


def pods_metric_proposal(
    total: float,
    target_per_pod: float,
    *,
    current_replicas: int,
    ready_pods: int,
    unready_pods: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
) -> MetricProposal | None:
    """A per-pod metric (``Pods`` source, ``AverageValue`` target), as ``calcPlainMetricReplicas``.

    ``total`` is the metric summed over the ready pods. The average is taken over the ready
    pods only: a pod still loading its model reports nothing. The controller then corrects
    for the pods it did not average:

    * without not-ready pods, or when the ready ones are not above target: the proposal is
      ``ceil(ratio × ready_pods)``, or ``current_replicas`` within the tolerance;
    * when the ready pods are above target and some are not ready yet: those count as using
      0, so a scale-up already in flight is not repeated while its pods start. If the
      recomputed ratio is within the tolerance or points the other way, nothing changes.

    Returns None when nothing can be averaged (no ready pods, NaN): the controller reports
    the metric as failed and does not scale.
    """
    if ready_pods <= 0 or not math.isfinite(total) or total < 0.0:
        return None
    usage = total / ready_pods
    ratio = usage / target_per_pod
    if unready_pods <= 0 or ratio <= 1.0:
        if _within(ratio, tolerance):
            return MetricProposal(current_replicas, usage, target_per_pod, ratio, True)
        return MetricProposal(_ceil(ratio * ready_pods), usage, target_per_pod, ratio, False)

    pods = ready_pods + unready_pods
    new_ratio = total / pods / target_per_pod
    note = f"{unready_pods} not-ready pod(s) counted as 0 (ratio {new_ratio:.2f})"
    wait = f"{note}: wait for them"
    if _within(new_ratio, tolerance) or new_ratio < 1.0:
        # Within tolerance, or counting the starting pods flips the direction.
        return MetricProposal(current_replicas, usage, target_per_pod, ratio, True, wait)
    proposal = _ceil(new_ratio * pods)
    if proposal < current_replicas:
        return MetricProposal(current_replicas, usage, target_per_pod, ratio, True, wait)
    return MetricProposal(proposal, usage, target_per_pod, ratio, False, note)


def external_average_proposal(
    total: float,
    target_per_pod: float,
    *,
    status_replicas: int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> MetricProposal | None:
    """An ``External`` metric with an ``AverageValue`` target, as
    ``GetExternalPerPodMetricReplicas`` (how KEDA's HPA reads its trigger).

    The metric is one cluster-wide number, so the controller divides it by
    ``status_replicas`` — the pods that exist now (``scale.status.replicas``), ready or not
    — only to test the tolerance; the proposal itself is ``ceil(total / target)``.
    Returns None for a NaN, infinite or negative total (a failed query).
    """
    if not math.isfinite(total) or total < 0.0:
        return None
    if status_replicas <= 0:
        return MetricProposal(_ceil(total / target_per_pod), math.inf, target_per_pod,
                              math.inf, False)
    usage = total / status_replicas
    ratio = usage / target_per_pod
    if _within(ratio, tolerance):
        return MetricProposal(status_replicas, usage, target_per_pod, ratio, True)
    return MetricProposal(_ceil(total / target_per_pod), usage, target_per_pod, ratio, False)


# --------------------------------------------------------------------------------------
# the reconcile step
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineOutcome:
    """What the reconcile step decided.

    ``condition`` uses the controller's condition reasons (``DesiredWithinRange``,
    ``ScaleUpLimit``, ``TooManyReplicas``, ``ScaleDownLimit``, ``TooFewReplicas``) plus
    ``ScalingDisabled``, ``AboveMaxReplicas``, ``BelowMinReplicas``, ``NoMetric``;
    ``notes`` are the same facts in words, for the recommendation's reason."""

    replicas: int
    condition: str
    notes: tuple[str, ...] = ()
    stabilized: int | None = None
    details: Mapping[str, float] = field(default_factory=dict)


def _period_start(current: int, state: HpaState, now: float, period_s: float) -> int:
    """Replicas at the start of a policy's period: current, minus what was added in it,
    plus what was removed in it (both scaling directions measure from there)."""
    return (current - _changes_in_period(state.scale_up_events, now, period_s)
            + _changes_in_period(state.scale_down_events, now, period_s))


def _changes_in_period(events: Iterable[ScaleEvent], now: float, period_s: float) -> int:
    return sum(e.change for e in events if _age_within(e.time, now, period_s))


def _truncate_div100(x: int) -> int:
    """``int(x / 100)`` rounded toward zero, in integers (Go's int32(float) conversion)."""
    return x // 100 if x >= 0 else -((-x) // 100)


@dataclass(frozen=True)
class HpaEngine:
    """The part of ``horizontal.go`` after the metrics: one HPA's reconcile step.

    ``min_replicas``/``max_replicas`` are the HPA's bounds, ``sync_period_s`` how often it
    recomputes. Pure: every method takes a state and returns a new one.
    """

    min_replicas: int = 1
    max_replicas: int = 64
    behavior: Behavior = DEFAULT_BEHAVIOR
    sync_period_s: float = DEFAULT_SYNC_PERIOD_S

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < 1:
            raise InputError(f"HPA bounds min={self.min_replicas}, max={self.max_replicas}: "
                             "need min >= 0 and max >= 1")
        if self.min_replicas > self.max_replicas:
            raise InputError(f"HPA minReplicas {self.min_replicas} > maxReplicas "
                             f"{self.max_replicas}")
        if self.sync_period_s <= 0.0:
            raise InputError(f"HPA sync period {self.sync_period_s} s must be > 0")

    # -- sync period -------------------------------------------------------------------

    def is_due(self, state: HpaState, now: float) -> bool:
        """Whether ``sync_period_s`` has passed since the last evaluation (or time went
        backwards, e.g. a replay restarted: then evaluate rather than wait forever)."""
        if state.last_sync is None:
            return True
        elapsed = now - state.last_sync
        return elapsed < 0.0 or elapsed >= self.sync_period_s - CLOCK_SLACK_S

    # -- scale events ------------------------------------------------------------------

    def observe(self, state: HpaState, spec_replicas: int) -> HpaState:
        """Turn the pending scale into a scale event, by what the Deployment now asks for.

        The controller stores a scale event right after its own scale call succeeded. Here
        the recommendation still passes guardrails and may be dry-run, so the event is
        stored only once a snapshot shows ``spec.replicas`` moved, with the size it really
        moved by (at most what was asked), and the time of the recommendation — the same
        timestamp the controller would have used."""
        pending = state.pending
        if pending is None:
            return state
        moved = spec_replicas - pending.from_replicas
        asked = pending.to_replicas - pending.from_replicas
        up, down = state.scale_up_events, state.scale_down_events
        if asked > 0 and moved > 0:
            up = (*up, ScaleEvent(pending.time, min(moved, asked)))
        elif asked < 0 and moved < 0:
            down = (*down, ScaleEvent(pending.time, min(-moved, -asked)))
        return replace(state, scale_up_events=up, scale_down_events=down, pending=None)

    def scale_up_limit(self, current: int, state: HpaState, now: float) -> int:
        """The most replicas the scale-up policies allow now
        (``calculateScaleUpLimitWithScalingRules``).

        Each policy measures from the replica count at the start of its period: current,
        minus what was added in the period, plus what was removed in it."""
        rules = self.behavior.scale_up
        if rules.select_policy == "Disabled":
            return current
        proposals: list[int] = []
        for p in rules.policies:
            start = _period_start(current, state, now, p.period_s)
            if p.kind == "Pods":
                proposals.append(start + p.value)
            else:
                # Rounded up: a small Percent on few pods must still allow one more pod.
                proposals.append(-((-start * (100 + p.value)) // 100))
        return max(proposals) if rules.select_policy == "Max" else min(proposals)

    def scale_down_limit(self, current: int, state: HpaState, now: float) -> int:
        """The fewest replicas the scale-down policies allow now
        (``calculateScaleDownLimitWithBehaviors``; Percent rounds toward zero, as there)."""
        rules = self.behavior.scale_down
        if rules.select_policy == "Disabled":
            return current
        proposals: list[int] = []
        for p in rules.policies:
            start = _period_start(current, state, now, p.period_s)
            if p.kind == "Pods":
                proposals.append(start - p.value)
            else:
                proposals.append(_truncate_div100(start * (100 - p.value)))
        # "Max" means the biggest change, which for a scale-down is the lowest count.
        return min(proposals) if rules.select_policy == "Max" else max(proposals)

    # -- stabilization -----------------------------------------------------------------

    def stabilize(self, current: int, desired: int, state: HpaState,
                  now: float) -> tuple[int, str, HpaState]:
        """Clamp ``desired`` by the windows (``stabilizeRecommendationWithBehaviors``).

        Scale-up goes no higher than the lowest recommendation of the up window, scale-down
        no lower than the highest of the down window; then ``desired`` is recorded (the
        raw recommendation, not the stabilized one, as the controller does)."""
        up_window = self.behavior.scale_up.stabilization_window_s
        down_window = self.behavior.scale_down.stabilization_window_s
        up_rec = down_rec = desired
        for rec in state.recommendations:
            if _age_within(rec.time, now, up_window):
                up_rec = min(up_rec, rec.replicas)
            if _age_within(rec.time, now, down_window):
                down_rec = max(down_rec, rec.replicas)
        stabilized = min(max(current, up_rec), down_rec)
        note = ""
        if stabilized != desired:
            if desired < current:
                note = (f"scale-down stabilized: max recommendation in {down_window:g} s "
                        f"is {down_rec}")
            else:
                note = f"scale-up stabilized: min recommendation in {up_window:g} s is {up_rec}"
        horizon = max(up_window, down_window)
        kept = tuple(r for r in state.recommendations if _age_within(r.time, now, horizon))
        new_state = replace(state, recommendations=(*kept, TimedRecommendation(now, desired)))
        return stabilized, note, new_state

    # -- the whole step ----------------------------------------------------------------

    def reconcile(self, now: float, current: int, proposal: int | None,
                  state: HpaState) -> tuple[EngineOutcome, HpaState]:
        """One sync of the HPA (``reconcileAutoscaler``), for a due sync.

        ``current`` is ``spec.replicas``; ``proposal`` is what the metric asks for, or None
        when the metric failed. In the controller's order: a target scaled to 0 by hand
        is left alone; one outside [min, max] is brought inside without looking at the
        metric; otherwise the proposal is stabilized and rate-limited. Call
        :meth:`observe` first so the scale events are current."""
        state = replace(state, last_sync=now)
        lo, hi = self.min_replicas, self.max_replicas
        if current == 0 and lo != 0:
            outcome = EngineOutcome(0, "ScalingDisabled", (
                f"spec.replicas is 0 with minReplicas {lo}: autoscaling is off until the "
                "target is scaled up by hand",))
        elif current > hi:
            outcome = EngineOutcome(hi, "AboveMaxReplicas",
                                    (f"current {current} is above maxReplicas {hi}",))
        elif current < lo:
            outcome = EngineOutcome(lo, "BelowMinReplicas",
                                    (f"current {current} is below minReplicas {lo}",))
        elif proposal is None:
            outcome = EngineOutcome(current, "NoMetric")
        else:
            outcome, state = self._normalize(now, current, proposal, state)
        state = self._prune_events(state, now)
        if outcome.replicas != current:
            state = replace(state, pending=PendingScale(now, current, outcome.replicas))
        return outcome, state

    def _normalize(self, now: float, current: int, desired: int,
                   state: HpaState) -> tuple[EngineOutcome, HpaState]:
        """``normalizeDesiredReplicasWithBehaviors``: windows, then rate limits and bounds."""
        stabilized, note, state = self.stabilize(current, desired, state, now)
        notes = [note] if note else []
        details: dict[str, float] = {"stabilized_replicas": float(stabilized)}
        result, condition = stabilized, "DesiredWithinRange"
        if stabilized > current:
            limit = max(self.scale_up_limit(current, state, now), current)
            details["scale_up_limit"] = float(limit)
            allowed = min(self.max_replicas, limit)
            if stabilized > allowed:
                result = allowed
                if self.max_replicas > limit:
                    condition = "ScaleUpLimit"
                    notes.append(f"scale-up limited to {limit} by behavior "
                                 f"({self.behavior.scale_up.describe()})")
                else:
                    condition = "TooManyReplicas"
                    notes.append(f"capped at maxReplicas {self.max_replicas}")
        elif stabilized < current:
            limit = min(self.scale_down_limit(current, state, now), current)
            details["scale_down_limit"] = float(limit)
            allowed = max(self.min_replicas, limit)
            if stabilized < allowed:
                result = allowed
                if self.min_replicas < limit:
                    condition = "ScaleDownLimit"
                    notes.append(f"scale-down limited to {limit} by behavior "
                                 f"({self.behavior.scale_down.describe()})")
                else:
                    condition = "TooFewReplicas"
                    notes.append(f"held at minReplicas {self.min_replicas}")
        return EngineOutcome(result, condition, tuple(notes), stabilized, details), state

    def _prune_events(self, state: HpaState, now: float) -> HpaState:
        """Forget scale events older than every policy period: nothing reads them.

        Both lists are read by the policies of both directions (a period's start adds back
        what was removed in it), so both are kept for the longest period of either. The
        controller instead marks events older than their own direction's longest period
        "outdated" and overwrites them on the next event of that direction, which can keep
        them (and their effect) for an unbounded time."""
        span = max(self.behavior.scale_up.longest_period_s,
                   self.behavior.scale_down.longest_period_s)
        return replace(
            state,
            scale_up_events=tuple(
                e for e in state.scale_up_events if _age_within(e.time, now, span)),
            scale_down_events=tuple(
                e for e in state.scale_down_events if _age_within(e.time, now, span)),
        )


def render_reason(prefix: str, clauses: Iterable[str], outcome: EngineOutcome,
                  current: int) -> str:
    """``"<prefix>: <clause>; <clause>: 4 → 6"`` (or ``": hold at 4"``)."""
    parts = [c for c in (*clauses, *outcome.notes) if c]
    move = (f"{current} → {outcome.replicas}" if outcome.replicas != current
            else f"hold at {current}")
    return f"{prefix}: {'; '.join(parts)}: {move}" if parts else f"{prefix}: {move}"


# --------------------------------------------------------------------------------------
# the policy
# --------------------------------------------------------------------------------------

_DEFAULT_TARGETS: Mapping[HpaMetric, float] = {"running": 0.7, "kv": 0.7}
HPA_PARAMS = frozenset({"metric", "target", "tolerance", "sync_period", "min", "max"}
                       | BEHAVIOR_PARAMS)


def _param_positive(spec: PolicySpec, key: str, default: float) -> float:
    value = param_float(spec, key, default, lo=0.0)
    if value <= 0.0:
        raise InputError(f"policy {spec.text!r}: {key}={value} must be > 0")
    return value


def bounds_from_spec(spec: PolicySpec, context: PolicyContext, *,
                     min_floor: int) -> tuple[int, int]:
    """``min``/``max`` from the spec, defaulting to the context; ``min >= min_floor``."""
    lo = param_int(spec, "min", max(min_floor, context.min_replicas), lo=min_floor)
    hi = param_int(spec, "max", context.max_replicas, lo=max(1, min_floor))
    if lo > hi:
        raise InputError(f"policy {spec.text!r}: min={lo} is greater than max={hi}")
    return lo, hi


class HpaPolicy:
    """The HPA scaling a vLLM Deployment on one per-pod metric (``Pods`` source,
    ``AverageValue`` target).

    Metrics (``metric=``), each the value one pod reports, averaged over ready pods:

    * ``running`` (default): ``(requests_running + requests_waiting) / batch_size`` — the
      share of a pod's batch slots its requests would fill. Target 0.7: the headroom left
      (30 %) absorbs growth during the ~90 s a new vLLM replica needs to load its weights,
      and vLLM's time per token rises steeply once the batch is full.
    * ``kv``: ``kv_cache_usage`` (0..1), target 0.7 for the same reason — at a full cache
      vLLM preempts and recomputes requests.
    * ``waiting``: queued requests per pod; no sensible default, so ``target`` is required.

    Parameters: ``target``, ``tolerance`` (0.1), ``sync_period`` (15 s), ``min``/``max``
    (default: the context, min at least 1 as the HPA API requires) and
    :data:`BEHAVIOR_PARAMS`. The batch size is never changed: the HPA only scales replicas.
    """

    name: str = "hpa"

    def __init__(self, *, metric: HpaMetric = "running", target: float = 0.7,
                 tolerance: float = DEFAULT_TOLERANCE, engine: HpaEngine | None = None) -> None:
        if metric not in _METRICS:
            raise InputError(f"HPA metric {metric!r} is not one of {', '.join(_METRICS)}")
        if not (target > 0.0 and math.isfinite(target)):
            raise InputError(f"HPA target {target} must be a positive number")
        if not 0.0 <= tolerance < 1.0:
            raise InputError(f"HPA tolerance {tolerance} is outside [0, 1)")
        self.metric: HpaMetric = metric
        self.target = target
        self.tolerance = tolerance
        self.engine = engine if engine is not None else HpaEngine()

    @classmethod
    def from_spec(cls, spec: PolicySpec, context: PolicyContext) -> HpaPolicy:
        """Build from ``hpa[:key=value,...]``; bad values raise InputError naming the key."""
        check_known_params(spec, set(HPA_PARAMS))
        raw_metric = spec.params.get("metric", "running")
        metric = next((m for m in _METRICS if m == raw_metric), None)
        if metric is None:
            raise InputError(f"policy {spec.text!r}: metric={raw_metric!r} is not one of "
                             f"{', '.join(_METRICS)}")
        if metric == "waiting" and "target" not in spec.params:
            raise InputError(f"policy {spec.text!r}: metric=waiting needs target= "
                             "(queued requests per pod)")
        target = _param_positive(spec, "target", _DEFAULT_TARGETS.get(metric, 1.0))
        tolerance = param_float(spec, "tolerance", DEFAULT_TOLERANCE, lo=0.0, hi=0.99)
        sync_period = _param_positive(spec, "sync_period", DEFAULT_SYNC_PERIOD_S)
        lo, hi = bounds_from_spec(spec, context, min_floor=1)
        engine = HpaEngine(min_replicas=lo, max_replicas=hi, behavior=behavior_from_spec(spec),
                           sync_period_s=sync_period)
        return cls(metric=metric, target=target, tolerance=tolerance, engine=engine)

    def initial_state(self) -> HpaState:
        return HpaState()

    def propose(self, snap: Snapshot) -> tuple[MetricProposal | None, str]:
        """The metric's proposal and a clause saying what it saw."""
        ready = snap.ready_replicas
        unready = max(0, snap.starting_replicas)
        if ready <= 0:
            # Nothing reports: average over what the Deployment asks for (the simulator can
            # queue requests in front of zero ready pods).
            ready, unready = snap.replicas, 0
        if self.metric == "running":
            per_pod_total = (snap.requests_in_system / snap.batch_size
                             if snap.batch_size > 0 else math.nan)
        elif self.metric == "kv":
            per_pod_total = snap.kv_cache_usage * ready
        else:
            per_pod_total = snap.requests_waiting
        proposal = pods_metric_proposal(
            per_pod_total, self.target, current_replicas=snap.replicas, ready_pods=ready,
            unready_pods=unready, tolerance=self.tolerance)
        if proposal is None:
            if ready <= 0:
                return None, f"{self.metric}: no pods to average over"
            return None, f"{self.metric} is missing ({per_pod_total}); never scale on no data"
        return proposal, _describe(self.metric, proposal, self.tolerance)

    def decide(self, inp: PolicyInput, state: HpaState) -> tuple[Recommendation, HpaState]:
        snap = inp.snapshot
        now, current = snap.time, snap.replicas
        state = self.engine.observe(state, current)
        if not self.engine.is_due(state, now):
            return between_syncs(self.name, self.engine, state, now, current), state
        proposal, clause = self.propose(snap)
        outcome, state = self.engine.reconcile(
            now, current, None if proposal is None else proposal.replicas, state)
        details: dict[str, float] = {
            "current_replicas": float(current),
            "ready_replicas": float(snap.ready_replicas),
            "starting_replicas": float(snap.starting_replicas),
            "target": self.target,
            "desired_replicas": float(outcome.replicas),
        }
        if proposal is not None:
            details.update(metric_value=proposal.usage, ratio=proposal.ratio,
                           metric_replicas=float(proposal.replicas))
        details.update(outcome.details)
        clauses = [clause]
        if proposal is not None and proposal.note:
            clauses.append(proposal.note)
        reason = render_reason(self.name, clauses, outcome, current)
        return Recommendation(replicas=outcome.replicas, batch_size=None, reason=reason,
                              details=details), state


def _describe(metric: str, p: MetricProposal, tolerance: float) -> str:
    if p.within_tolerance and abs(1.0 - p.ratio) <= tolerance:
        return (f"{metric} {p.usage:.2f} vs target {p.target:.2f} is within tolerance "
                f"({tolerance:.0%})")
    if p.within_tolerance:
        return f"{metric} {p.usage:.2f} vs target {p.target:.2f}"
    sign = ">" if p.ratio > 1.0 else "<"
    return (f"{metric} {p.usage:.2f} {sign} target {p.target:.2f} beyond the {tolerance:.0%} "
            f"tolerance (ratio {p.ratio:.2f}), wants {p.replicas}")


def between_syncs(name: str, engine: HpaEngine, state: HpaState, now: float,
                  current: int) -> Recommendation:
    """The answer between two syncs: the controller does nothing, so hold ``current``."""
    last = state.last_sync if state.last_sync is not None else now
    return Recommendation(
        replicas=current,
        batch_size=None,
        reason=(f"{name}: next sync not due ({now - last:.0f} s of {engine.sync_period_s:g} s "
                f"since the last): hold at {current}"),
        details={"current_replicas": float(current), "since_last_sync_s": now - last},
    )
