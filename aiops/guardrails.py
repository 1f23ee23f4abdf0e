"""Guardrails: the one pipeline of ordered, named clamps that every policy's recommendation passes.

Every policy — ``hpa``, ``keda``, ``predictive`` and, above all, ``ppo`` — only *recommends*;
:func:`apply_guardrails` turns the recommendation into the :class:`~aiops.types.Decision` that
the controller applies (or, in dry-run, reports). It is a pure function of
``(GuardInput, GuardrailsConfig, GuardrailState)``: it never reads the clock, never talks to a
server, and returns the new state instead of mutating anything (DESIGN principles 1 and 2).

Every rule that changes the replica count or the batch size appends a
:class:`~aiops.types.Clamp` naming it. Rule names (:class:`Rule`) are stable identifiers: they
become the ``rule`` label of ``aiops_guardrail_firings_total`` and appear in Kubernetes Events
and Grafana annotations, so renaming one breaks dashboards and alerts. Rules whose name starts
with ``batch_`` act on the batch size (``Clamp.before``/``after`` are batch sizes); all others
act on replicas. The clamps of one kind form a chain: the first ``before`` is what the policy
asked for, each ``before`` is the previous ``after``, and the last ``after`` is the decision.
One exception to "only rules that change something": on a tick whose metrics failed,
``data_hold`` or ``fallback`` is recorded even when the hold equals the recommendation,
because the hold *is* the decision and operators must see every blind tick (and, for
``fallback``, the controller needs to know it is active to emit ``AIOpsFallback``).

Replica rules, in order, and why each sits where it does
=========================================================

Phase 1 — can the recommendation be trusted? (it is replaced before anything smooths it)

1. ``data_hold`` — metrics stale, failed or bad this tick (``data_ok`` False), or no
   recommendation at all: hold the current replicas. A scale-down on missing data is blind;
   a scale-up computed from bad data is also held (a NaN turned into a 0 upstream must not
   buy GPUs either). First, because every later rule would otherwise work on a number that
   means nothing.
2. ``fallback`` — replaces ``data_hold`` once more than ``max_failures`` ticks in a row have
   failed (KEDA's ``failureThreshold`` semantics: that many failed reads are tolerated,
   the next one falls back). ``hold`` keeps the current count; ``fixed`` goes to *at least*
   ``fallback_replicas``: it may scale **up** to the fixed count but never down. Reason: a
   fixed count below what runs now would be a scale-down decided without any data, the one
   thing this daemon must never do (issue 6, DESIGN principle 5); an operator who wants a
   blind scale-down can pause the target and scale by hand. The climb to the fixed count
   still obeys cooldown and the step limit (it is a blind action; slow is safe) and the hard
   bounds below.
3. ``rl_floor`` — the PPO shield's floor (replicas, already including the shield's margin):
   the recommendation is raised to it *before* smoothing, so the shielded value is what the
   stabilization window remembers and the step limit paces, exactly as for any other policy.
   Skipped on failed ticks: the floor came from the same bad data.
4. ``anomaly_freeze`` (when ``GuardrailsConfig.anomaly_freeze``) — during an active
   ``bad_telemetry`` or ``health`` anomaly the recommendation may not go below the current
   count. Bad telemetry: the numbers may be lies, and a scale-down decided on lies is blind.
   Health (latency or usage anomalous at steady load): the fleet is doing something
   unexplained, and removing capacity is the risky direction. A ``load_change`` anomaly
   does not freeze: real load going up or down is what the policies are there to follow,
   and freezing a real drop would keep idle GPUs for nothing. A scale-up stays allowed
   in every case: during a telemetry fault real load may still rise (a stuck queue metric
   while TTFT explodes), and a scale-up decided on lies costs GPU-hours, where holding it
   costs users; the cost shows in ``bench/faults.py``. After the floor. Skipped on failed
   ticks, where the hold or the fallback has already decided.

   Not finding a fault is not evidence that the numbers are live: the first tick of a
   stale scrape looks like a quiet one. So a scale-down also needs the report to vouch for
   the telemetry; see ``unverified_telemetry`` below.

Phase 2 — hard bounds. Applied to the trusted recommendation *before* smoothing, so that a
clamp names the constraint that actually binds (as the HPA reports ``TooManyReplicas``
rather than ``ScaleUpLimit`` when both apply), and every smoothing rule is confined to the
interval they define, so the bounds still hold after everything else:

5. ``min_replicas`` — always raises to the operator's floor; raising needs no data, so it
   applies even on a held tick.
6. ``max_replicas`` — caps to the operator's ceiling, except that it never lowers below the
   current count while scale-down is forbidden (failed data, anomaly freeze): a ceiling the
   operator lowered is applied once the data is good again.
7. ``gpu_budget`` — caps a scale-up so ``replicas * gpus_per_replica`` stays within the GPUs
   this target may use; never forces a scale-down (the budget is shared and other targets'
   usage moves; evicting running replicas for it would be an outage). After
   ``min_replicas``: GPUs that do not exist cannot be conjured by a config floor (the pods
   would sit Pending, and they would take the GPUs another target was promised).

Phase 3 — smoothing (each only moves the value toward the current count, clipped to the
phase 2 interval, so no smoothing rule can undo a bound):

8. ``scale_down_stabilization`` — a scale-down goes no lower than the highest value
   recorded in the last ``scale_down_stabilization_s`` (the HPA's scale-down window). The
   window records the phase 1 output of every tick (held ticks record the held count), so
   after an outage or an anomaly a scale-down waits a full window. A fresh state (first
   run, a lost or unreadable annotation) is seeded with the current count, as the
   HPA seeds its window, so a restart never scales down at once.
9. ``cooldown`` — within ``cooldown_s`` after a change, no change in the opposite direction
   (anti-flap; same-direction changes stay allowed, a load spike may need several steps).
   After stabilization: the window says how far down is warranted, the cooldown whether
   any reversal is allowed now.
10. ``max_step_up`` / ``max_step_down`` — the size of whatever change is left is limited per
    tick. Last among the smoothing rules so it limits the final move. Only a hard bound
    (``min_replicas`` above, ``max_replicas`` below the current count) moves further.
11. ``unverified_telemetry`` (with ``anomaly_freeze``) — a scale-down that is still left
    needs the anomaly report to vouch for the telemetry this tick
    (``AnomalyReport.unverified`` empty: no first repeat of a metric that rarely repeats, no
    ratio off once, no check that could not run). Otherwise it is held for this tick alone.
    After the smoothing rules, so it fires only when a scale-down would really happen, and
    the stabilization window keeps the policy's value: a one-tick doubt does not restart the
    window, the next tick decides again.
12. ``slo_misses`` (with ``scale_down_min_attainment``, 0.99 by default) — a scale-down that
    is still left waits while fewer than that share of the tick's finished requests met
    the SLO (``GuardInput.slo_attainment``; a tick with nothing finished passes): the fleet
    is short of what it serves right now, whatever the policy planned. Within the hard
    bounds (a ceiling the operator lowered still applies), and not while paused (the pause
    holds everything and is the rule to name). It is also the last line against a
    telemetry fault whose numbers look calm: a queue metric stuck at zero is no different
    from a quiet queue on its first tick, but the latency of the requests it hides shows
    in that tick's attainment. For this tick alone, after the smoothing rules, for the
    reason ``unverified_telemetry`` is: a policy that held its own recommendation on such
    ticks would have the stabilization window remember it, and a miss every few minutes
    (one request in a hundred late is routine at a 99 % objective) would block every
    scale-down.

Phase 4 — the operator's override:

13. ``paused`` — annotation ``aiops.io/paused: "true"``: nothing changes. Last, so that the
    clamps before it show what aiops *would* do once unpaused.

Batch-size rules
================

A batch-size change rolls every pod of the Deployment: it is the slowest, riskiest action.
It passes only if every rule passes; the first one that blocks keeps the current batch size
and is the one recorded (after it there is nothing left to change). Order: the operator's
configuration first (it blocks forever), then this tick's conditions, then the rate, and
the pause last, as for replicas:

``batch_tuning_disabled`` (``tune_batch_size`` off) → ``batch_not_allowed`` (not one of
``batch_sizes``; we do not guess a nearby value, the policy asked for something untested)
→ ``batch_data_hold`` (failed tick: the throughput figures behind the request are missing)
→ ``batch_anomaly`` (any active anomaly, whatever ``anomaly_freeze`` says: a rolling
restart during an incident muddies both) → ``batch_min_ready`` (fewer than
``min_ready_for_batch_change`` replicas ready *after this tick's scaling*: one must keep
serving while another restarts) → ``batch_interval`` (at most one change per
``batch_change_interval_s``) → ``batch_paused``.

Invariants (``tests/test_guardrails.py`` checks each with hypothesis)
=====================================================================

With ``cur`` the current replicas and ``new`` the decision:

* paused → ``new == cur`` and the batch size is unchanged;
* ``new <= max_replicas``, unless ``new == cur`` held above it by pause, failed data or an
  anomaly freeze; ``new >= min_replicas``, unless paused or the GPU budget stops the climb
  (then ``cur <= new``);
* failed data, or an active bad-telemetry or health anomaly or unverified telemetry with
  ``anomaly_freeze`` → ``new >= cur``; a tick's attainment under
  ``scale_down_min_attainment`` → ``new >= min(cur, max_replicas)``;
* ``new - cur <= max_step_up`` unless ``min_replicas`` raised it (``new <= min_replicas``;
  the GPU budget may stop it short); ``cur - new <= max_step_down`` unless
  ``new == max_replicas``;
* a scale-up never leaves ``new * gpus_per_replica`` above the available GPUs.

State and dry-run
=================

:class:`GuardrailState` is what must survive a restart: the controller stores
:meth:`GuardrailState.to_json` in an annotation on the target and reads it back with
:meth:`GuardrailState.from_json`, which never raises (a mangled annotation gives a fresh
state, conservative thanks to the seeded window, and names the problem). The state records
a scale (or batch) change whenever the *decision* changes something — in dry-run too, so
that a dry-run shows the decisions enforce mode would take: the same cooldowns, batch
intervals and windows. (The replica count itself does not move in dry-run, so after the
first change a dry-run sequence measures steps from the unchanged count; the timers are what
it can reproduce.) In enforce mode, a change that then fails to apply still arms the cooldown:
the conservative side. Timestamps later than ``inp.time`` (the clock stepped back) are taken
as "now", so they delay at most one window or cooldown instead of blocking until the clock
catches up.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from aiops.config import GuardrailsConfig, TargetConfig
from aiops.types import AnomalyReport, Clamp, Decision, Recommendation

__all__ = [
    "BATCH_RULES",
    "FREEZING_KINDS",
    "HOLD_RULES",
    "REPLICA_RULES",
    "STATE_FORMAT_VERSION",
    "GuardInput",
    "GuardrailState",
    "Rule",
    "apply_guardrails",
    "gpus_available_for",
]

STATE_FORMAT_VERSION = 1
"""Version of :meth:`GuardrailState.to_json`; another version reads as a fresh state."""


class Rule(StrEnum):
    """Stable rule identifiers (Prometheus label values, Event text). Never rename one."""

    DATA_HOLD = "data_hold"
    FALLBACK = "fallback"
    RL_FLOOR = "rl_floor"
    ANOMALY_FREEZE = "anomaly_freeze"
    MIN_REPLICAS = "min_replicas"
    MAX_REPLICAS = "max_replicas"
    GPU_BUDGET = "gpu_budget"
    SCALE_DOWN_STABILIZATION = "scale_down_stabilization"
    COOLDOWN = "cooldown"
    MAX_STEP_UP = "max_step_up"
    MAX_STEP_DOWN = "max_step_down"
    UNVERIFIED_TELEMETRY = "unverified_telemetry"
    SLO_MISSES = "slo_misses"
    PAUSED = "paused"
    BATCH_TUNING_DISABLED = "batch_tuning_disabled"
    BATCH_NOT_ALLOWED = "batch_not_allowed"
    BATCH_DATA_HOLD = "batch_data_hold"
    BATCH_ANOMALY = "batch_anomaly"
    BATCH_MIN_READY = "batch_min_ready"
    BATCH_INTERVAL = "batch_interval"
    BATCH_PAUSED = "batch_paused"


REPLICA_RULES: tuple[str, ...] = tuple(r.value for r in Rule if not r.startswith("batch_"))
"""Replica rules in pipeline order (``max_step_up``/``max_step_down`` are alternatives)."""

BATCH_RULES: tuple[str, ...] = tuple(r.value for r in Rule if r.startswith("batch_"))
"""Batch-size rules in the order they are checked; at most one fires per tick."""

HOLD_RULES: frozenset[str] = frozenset({Rule.DATA_HOLD.value, Rule.FALLBACK.value})
"""Recorded on every failed tick, even when the hold equals the recommendation."""


# --------------------------------------------------------------------------- state
def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_time(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class GuardrailState:
    """What the guardrails remember between ticks; survives restarts as JSON in an annotation.

    ``recommendations`` holds ``(time, replicas)`` pairs inside the scale-down stabilization
    window, oldest first. Pairs that can never be the window's maximum again (an older value
    not above a newer one expires first) are dropped, so the values strictly decrease with
    time: the maximum over the window is exact while the annotation stays a few entries long
    even with one-second ticks and a long window.
    """

    last_scale_time: float | None = None  # time of the last decided replica change
    last_scale_direction: int = 0  # +1 up, -1 down, 0 never changed
    last_batch_change_time: float | None = None
    recommendations: tuple[tuple[float, int], ...] = ()
    consecutive_failures: int = 0  # failed ticks in a row, reset by a good one

    def __post_init__(self) -> None:
        if self.last_scale_time is not None and not _is_time(self.last_scale_time):
            raise ValueError(f"last_scale_time {self.last_scale_time!r} is not a finite time")
        if self.last_scale_direction not in (-1, 0, 1) or not _is_int(
                self.last_scale_direction):
            raise ValueError(f"last_scale_direction {self.last_scale_direction!r} "
                             "is not -1, 0 or +1")
        if (self.last_scale_time is None) != (self.last_scale_direction == 0):
            raise ValueError("last_scale_time and last_scale_direction must be set together")
        if self.last_batch_change_time is not None and not _is_time(
                self.last_batch_change_time):
            raise ValueError(f"last_batch_change_time {self.last_batch_change_time!r} "
                             "is not a finite time")
        if not _is_int(self.consecutive_failures) or self.consecutive_failures < 0:
            raise ValueError(f"consecutive_failures {self.consecutive_failures!r} "
                             "is not a count")
        for item in self.recommendations:
            if (not isinstance(item, tuple) or len(item) != 2 or not _is_time(item[0])
                    or not _is_int(item[1]) or item[1] < 0):
                raise ValueError(f"recommendation {item!r} is not (time, replicas >= 0)")

    # ---- persistence
    def to_json(self) -> str:
        """Compact JSON for the ``aiops.io/state`` annotation (exact float round trip)."""
        return json.dumps({
            "v": STATE_FORMAT_VERSION,
            "last_scale_time": self.last_scale_time,
            "last_scale_direction": self.last_scale_direction,
            "last_batch_change_time": self.last_batch_change_time,
            "recommendations": [[t, r] for t, r in self.recommendations],
            "consecutive_failures": self.consecutive_failures,
        }, separators=(",", ":"), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> tuple[GuardrailState, str | None]:
        """Parse :meth:`to_json` output: ``(state, None)``, or ``(fresh state, problem)``.

        Never raises: the annotation can be edited by anyone with ``kubectl annotate``, and a
        daemon that crashes on it would stop scaling every target. ``None`` or an empty
        string (no annotation yet) is a normal first run: a fresh state and no problem. The
        fresh state is the safe default because the stabilization window is seeded with the
        current count on its first tick (no immediate scale-down).
        """
        if text is None or (isinstance(text, str | bytes) and not text.strip()):
            return cls(), None
        try:
            data = json.loads(text, parse_constant=_reject_constant)
            return cls._from_dict(data), None
        except (ValueError, TypeError, KeyError, RecursionError, ArithmeticError) as exc:
            return cls(), f"unreadable guardrail state, starting fresh: {exc}"

    @classmethod
    def _from_dict(cls, data: Any) -> GuardrailState:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("v") != STATE_FORMAT_VERSION:
            raise ValueError(f"format version {data.get('v')!r}, expected "
                             f"{STATE_FORMAT_VERSION}")
        expected = {"v", "last_scale_time", "last_scale_direction", "last_batch_change_time",
                    "recommendations", "consecutive_failures"}
        if set(data) != expected:
            raise ValueError(f"keys {sorted(set(data) ^ expected)} missing or unknown")
        recs = data["recommendations"]
        if not isinstance(recs, list) or not all(
                isinstance(p, list) and len(p) == 2 for p in recs):
            raise ValueError("recommendations is not a list of [time, replicas] pairs")
        last_t = data["last_scale_time"]
        batch_t = data["last_batch_change_time"]
        return cls(
            last_scale_time=float(last_t) if _is_time(last_t) else last_t,
            last_scale_direction=data["last_scale_direction"],
            last_batch_change_time=float(batch_t) if _is_time(batch_t) else batch_t,
            recommendations=tuple(
                (float(t) if _is_time(t) else t, r) for t, r in recs),
            consecutive_failures=data["consecutive_failures"],
        )

    def settled(self, now: float) -> GuardrailState:
        """This state with timestamps later than ``now`` moved to ``now``.

        A later timestamp means the clock stepped back (NTP, another host after a leader
        handover). Taking it as "just now" keeps the caution it stood for, for at most one
        window or cooldown, instead of blocking until the clock catches up.
        """
        def fix(t: float | None) -> float | None:
            return None if t is None else min(t, now)

        recs = tuple((min(t, now), r) for t, r in self.recommendations)
        if (recs == self.recommendations and fix(self.last_scale_time) == self.last_scale_time
                and fix(self.last_batch_change_time) == self.last_batch_change_time):
            return self
        return replace(self, last_scale_time=fix(self.last_scale_time),
                       last_batch_change_time=fix(self.last_batch_change_time),
                       recommendations=_dominance_pruned(recs))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid time or count")


def _dominance_pruned(recs: tuple[tuple[float, int], ...]) -> tuple[tuple[float, int], ...]:
    """Drop every pair whose value is not above a later pair's: it can never be the max."""
    out: list[tuple[float, int]] = []
    for t, r in recs:
        while out and out[-1][1] <= r:
            out.pop()
        out.append((t, r))
    return tuple(out)


# --------------------------------------------------------------------------- input
@dataclass(frozen=True, kw_only=True)
class GuardInput:
    """Everything the guardrails look at for one target at one tick.

    Replicas are counts of pods, times Unix seconds. ``replicas`` is ``spec.replicas`` (what
    the Deployment asks for, the base of every step), ``ready_replicas`` what serves now.
    A tick is *failed* when ``data_ok`` is False or there is no recommendation; the
    controller sets ``data_ok`` False on a ``DataQualityError`` or ``TransientError`` while
    reading metrics, even if a policy still produced something.
    """

    time: float
    target: str
    replicas: int
    ready_replicas: int
    batch_size: int  # current --max-num-seqs of the pod template
    recommendation: Recommendation | None  # None: the tick failed before a policy decided
    data_ok: bool  # False: metrics stale/failed/bad this tick (DataQualityError, TransientError)
    data_problem: str = ""  # what was wrong, for the clamp detail
    anomalies: AnomalyReport | None
    paused: bool  # the aiops.io/paused annotation
    min_replicas: int
    max_replicas: int
    batch_sizes: tuple[int, ...]
    tune_batch_size: bool
    rl_floor: int | None = None  # the PPO shield's replica floor (margin included)
    gpus_per_replica: int = 1
    gpu_budget_available: int | None = None  # GPUs this target may use in total; None: no cap
    dry_run: bool = True
    # The share of this tick's finished requests that met the SLO (Snapshot.slo_attainment);
    # NaN when none finished or it is unknown.
    slo_attainment: float = math.nan

    def __post_init__(self) -> None:
        # A violation here is a bug in the caller (the config is validated at start), not a
        # runtime condition: fail loudly rather than guard with a bound that means nothing.
        problems = []
        if not math.isfinite(self.time):
            problems.append(f"time {self.time} is not finite")
        if self.replicas < 0 or self.ready_replicas < 0:
            problems.append(f"replicas {self.replicas} / ready {self.ready_replicas} < 0")
        if not 0 <= self.min_replicas <= self.max_replicas:
            problems.append(f"need 0 <= min_replicas ({self.min_replicas}) <= max_replicas "
                            f"({self.max_replicas})")
        if self.batch_size < 1:
            problems.append(f"batch_size {self.batch_size} < 1")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            problems.append(f"batch_sizes {self.batch_sizes} must be positive and non-empty")
        if self.gpus_per_replica < 1:
            problems.append(f"gpus_per_replica {self.gpus_per_replica} < 1")
        if self.rl_floor is not None and self.rl_floor < 0:
            problems.append(f"rl_floor {self.rl_floor} < 0")
        if problems:
            raise ValueError(f"GuardInput for {self.target!r}: " + "; ".join(problems))

    @classmethod
    def from_target(cls, target: TargetConfig, *, time: float, replicas: int,
                    ready_replicas: int, batch_size: int,
                    recommendation: Recommendation | None, data_ok: bool,
                    anomalies: AnomalyReport | None, paused: bool, data_problem: str = "",
                    rl_floor: int | None = None, gpus_per_replica: int = 1,
                    gpu_budget_available: int | None = None,
                    dry_run: bool = True, slo_attainment: float = math.nan) -> GuardInput:
        """Fill the target's limits (bounds, allowed batch sizes) from its config."""
        return cls(time=time, target=target.name, replicas=replicas,
                   ready_replicas=ready_replicas, batch_size=batch_size,
                   recommendation=recommendation, data_ok=data_ok, data_problem=data_problem,
                   anomalies=anomalies, paused=paused, min_replicas=target.min_replicas,
                   max_replicas=target.max_replicas, batch_sizes=target.batch_sizes,
                   tune_batch_size=target.tune_batch_size, rl_floor=rl_floor,
                   gpus_per_replica=gpus_per_replica,
                   gpu_budget_available=gpu_budget_available, dry_run=dry_run,
                   slo_attainment=slo_attainment)


def gpus_available_for(cfg: GuardrailsConfig, gpus_used_by_others: int) -> int | None:
    """``GuardInput.gpu_budget_available`` for one target: the budget minus other targets'.

    ``gpus_used_by_others`` should count the other targets' *spec* replicas (what they asked
    for, ready or not) times their GPUs per replica, so that two targets scaling up in the
    same round cannot both claim the same free GPUs. May be negative (others already over
    budget): the target then cannot scale up, and is never scaled down for it.
    """
    return None if cfg.gpu_budget is None else cfg.gpu_budget - gpus_used_by_others


# --------------------------------------------------------------------------- pipeline
class _Trail:
    """The value being clamped and the clamps that moved it (one per rule that fired)."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.clamps: list[Clamp] = []

    def set(self, rule: Rule, value: int, detail: str, *, always: bool = False) -> None:
        if value != self.value or always:
            self.clamps.append(Clamp(rule.value, self.value, value, detail))
            self.value = value


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _window(state: GuardrailState, now: float, window_s: float, current: int,
            value: int) -> tuple[tuple[float, int], ...]:
    """The stabilization history after this tick: recent pairs, seeded if empty, plus now."""
    if window_s <= 0:
        return ()
    if not state.recommendations:  # fresh state: remember what runs, like the HPA's first sync
        return _dominance_pruned(((now, current), (now, value)))
    kept = sorted((t, r) for t, r in state.recommendations if now - t < window_s)
    return _dominance_pruned((*kept, (now, value)))


FREEZING_KINDS: frozenset[str] = frozenset({"bad_telemetry", "health"})
"""Anomaly kinds that forbid a scale-down (``anomaly_freeze``); a load change does not."""


def _freezing(report: AnomalyReport) -> bool:
    return any(a.score >= report.threshold and a.kind in FREEZING_KINDS
               for a in report.anomalies)


def _anomaly_text(report: AnomalyReport, kinds: frozenset[str] | None = None) -> str:
    hits = [f"{a.metric} ({a.kind}, {a.score:.2f})" for a in report.anomalies
            if a.score >= report.threshold and (kinds is None or a.kind in kinds)]
    return ", ".join(hits)


def apply_guardrails(inp: GuardInput, cfg: GuardrailsConfig,
                     state: GuardrailState) -> tuple[Decision, GuardrailState]:
    """Clamp one recommendation (see the module docstring for the order and the reasons)."""
    now, cur = inp.time, inp.replicas
    state = state.settled(now)
    failing = (not inp.data_ok) or inp.recommendation is None
    failures = state.consecutive_failures + 1 if failing else 0
    why = inp.data_problem or ("metrics not usable" if not inp.data_ok else "")
    if inp.recommendation is None:
        why = why or "no recommendation this tick"
        rec = Recommendation(replicas=cur, reason=f"no recommendation: {why}")
    else:
        rec = inp.recommendation
    report = inp.anomalies
    anomaly = report is not None and report.active
    freeze = cfg.anomaly_freeze and report is not None and _freezing(report)
    trail = _Trail(rec.replicas)

    # Phase 1: trust.
    if failing:
        if failures > cfg.max_failures:
            if cfg.fallback == "fixed" and cfg.fallback_replicas is not None:
                fixed = cfg.fallback_replicas
                trail.set(Rule.FALLBACK, max(cur, fixed),
                          f"{failures} failed ticks in a row (> max_failures "
                          f"{cfg.max_failures}; {why}): fixed fallback to at least {fixed}, "
                          "never down", always=True)
            else:
                trail.set(Rule.FALLBACK, cur,
                          f"{failures} failed ticks in a row (> max_failures "
                          f"{cfg.max_failures}; {why}): hold", always=True)
        else:
            trail.set(Rule.DATA_HOLD, cur,
                      f"{why}: hold (failure {failures}, fallback after "
                      f"{cfg.max_failures})", always=True)
    else:
        if inp.rl_floor is not None and trail.value < inp.rl_floor:
            trail.set(Rule.RL_FLOOR, inp.rl_floor, f"PPO shield floor {inp.rl_floor}")
        if freeze and report is not None and trail.value < cur:
            what = "bad telemetry" if report.bad_telemetry else "health anomaly"
            trail.set(Rule.ANOMALY_FREEZE, cur,
                      f"{what}: {_anomaly_text(report, FREEZING_KINDS)}: no scale-down")
    remembered = max(0, trail.value)

    # Phase 2: hard bounds; [lo, hi] confines every later rule.
    no_down = failing or freeze
    max_cap = max(inp.max_replicas, cur) if no_down else inp.max_replicas
    if trail.value < inp.min_replicas:
        trail.set(Rule.MIN_REPLICAS, inp.min_replicas, f"min_replicas {inp.min_replicas}")
    if trail.value > max_cap:
        trail.set(Rule.MAX_REPLICAS, max_cap, f"max_replicas {inp.max_replicas}")
    hi = max_cap
    if inp.gpu_budget_available is not None:
        budget_cap = max(cur, inp.gpu_budget_available // inp.gpus_per_replica)
        if trail.value > budget_cap:
            trail.set(Rule.GPU_BUDGET, budget_cap,
                      f"{inp.gpu_budget_available} GPUs available at "
                      f"{inp.gpus_per_replica} per replica")
        hi = min(hi, budget_cap)
    lo = min(inp.min_replicas, hi)

    def confined(value: int) -> int:
        return min(max(value, lo), hi)

    # Phase 3: smoothing, toward the current count, inside [lo, hi].
    window = _window(state, now, cfg.scale_down_stabilization_s, cur, remembered)
    if window and trail.value < cur:
        highest = max(r for _, r in window)
        stabilized = confined(min(cur, max(trail.value, highest)))
        trail.set(Rule.SCALE_DOWN_STABILIZATION, stabilized,
                  f"highest recommendation in the last {cfg.scale_down_stabilization_s:g} s "
                  f"is {highest}")
    reverses = state.last_scale_direction != 0 and (
        _sign(trail.value - cur) == -state.last_scale_direction)
    if (reverses and state.last_scale_time is not None
            and now - state.last_scale_time < cfg.cooldown_s):
        went = "up" if state.last_scale_direction > 0 else "down"
        trail.set(Rule.COOLDOWN, confined(cur),
                  f"scaled {went} {now - state.last_scale_time:g} s ago "
                  f"(cooldown {cfg.cooldown_s:g} s)")
    if trail.value > cur + cfg.max_step_up:
        trail.set(Rule.MAX_STEP_UP, confined(cur + cfg.max_step_up),
                  f"at most +{cfg.max_step_up} per tick")
    elif trail.value < cur - cfg.max_step_down:
        trail.set(Rule.MAX_STEP_DOWN, confined(cur - cfg.max_step_down),
                  f"at most -{cfg.max_step_down} per tick")

    # A scale-down also needs telemetry shown live and consistent this tick, not only no
    # finding; a doubt holds this tick alone (the window above remembers the policy's value).
    if (cfg.anomaly_freeze and not failing and not freeze and report is not None
            and report.unverified and trail.value < cur):
        trail.set(Rule.UNVERIFIED_TELEMETRY, cur, "telemetry not verified: "
                  f"{'; '.join(report.unverified)}: no scale-down this tick")
    # Nor is a tick whose requests are missing the SLO one to remove capacity on, whatever
    # the policy planned: the fleet is short of what it serves right now. This tick alone,
    # as above, so a miss now and then does not hold the fleet for a whole window; and
    # never above the hard bounds: a ceiling the operator lowered is a bound, not a plan.
    least = cfg.scale_down_min_attainment
    if (least is not None and not failing and not inp.paused
            and math.isfinite(inp.slo_attainment)
            and inp.slo_attainment < least and trail.value < confined(cur)):
        trail.set(Rule.SLO_MISSES, confined(cur), f"{100 * inp.slo_attainment:.1f}% of this "
                  f"tick's requests met the SLO (< {100 * least:g}%): no scale-down this tick")

    # Phase 4: the operator's pause.
    if inp.paused:
        trail.set(Rule.PAUSED, cur, "annotation aiops.io/paused is true")
    new = trail.value

    batch, batch_clamp = _batch(inp, cfg, state, rec, new, failing=failing, anomaly=anomaly)
    clamps = (*trail.clamps, *((batch_clamp,) if batch_clamp is not None else ()))

    changed = new != cur
    new_state = GuardrailState(
        last_scale_time=now if changed else state.last_scale_time,
        last_scale_direction=_sign(new - cur) if changed else state.last_scale_direction,
        last_batch_change_time=(now if batch != inp.batch_size
                                else state.last_batch_change_time),
        recommendations=window,
        consecutive_failures=failures,
    )
    decision = Decision(time=now, target=inp.target, replicas=new, batch_size=batch,
                        previous_replicas=cur, previous_batch_size=inp.batch_size,
                        recommendation=rec, clamps=clamps, dry_run=inp.dry_run)
    return decision, new_state


def _batch(inp: GuardInput, cfg: GuardrailsConfig, state: GuardrailState,
           rec: Recommendation, new_replicas: int, *, failing: bool,
           anomaly: bool) -> tuple[int, Clamp | None]:
    """The batch size decided, and the clamp of the first rule that blocked a change."""
    want = inp.batch_size if rec.batch_size is None else rec.batch_size
    if want == inp.batch_size:
        return want, None
    ready_after = min(inp.ready_replicas, new_replicas)
    since = (None if state.last_batch_change_time is None
             else inp.time - state.last_batch_change_time)
    block: tuple[Rule, str] | None = None
    if not inp.tune_batch_size:
        block = Rule.BATCH_TUNING_DISABLED, "tune_batch_size is off for this target"
    elif want not in inp.batch_sizes:
        block = Rule.BATCH_NOT_ALLOWED, f"{want} is not one of {list(inp.batch_sizes)}"
    elif failing:
        block = Rule.BATCH_DATA_HOLD, inp.data_problem or "metrics not usable"
    elif anomaly and inp.anomalies is not None:
        block = Rule.BATCH_ANOMALY, f"active anomaly: {_anomaly_text(inp.anomalies)}"
    elif ready_after < cfg.min_ready_for_batch_change:
        block = Rule.BATCH_MIN_READY, (
            f"{ready_after} ready after this tick, a rolling restart needs "
            f"{cfg.min_ready_for_batch_change}")
    elif since is not None and since < cfg.batch_change_interval_s:
        block = Rule.BATCH_INTERVAL, (
            f"changed {since:g} s ago (interval {cfg.batch_change_interval_s:g} s)")
    elif inp.paused:
        block = Rule.BATCH_PAUSED, "annotation aiops.io/paused is true"
    if block is None:
        return want, None
    return inp.batch_size, Clamp(block[0].value, want, inp.batch_size, block[1])
