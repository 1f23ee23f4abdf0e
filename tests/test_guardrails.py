"""Guardrails: property tests for every invariant, and a table of examples for every rule.

The properties come from issue 6 and the invariants listed in ``aiops/guardrails.py``; the
sequence properties run many ticks with the Deployment following each decision (enforce)
and check windows and cooldowns against an independent model kept by the test.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiops.config import GuardrailsConfig, TargetConfig
from aiops.guardrails import (
    BATCH_RULES,
    HOLD_RULES,
    REPLICA_RULES,
    GuardInput,
    GuardrailState,
    Rule,
    apply_guardrails,
    gpus_available_for,
)
from aiops.types import AnomalyReport, Decision, MetricAnomaly, Recommendation

NOW = 10_000.0
PROPS = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])
SEQ_PROPS = settings(max_examples=100, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
PHASE1 = {Rule.DATA_HOLD.value, Rule.FALLBACK.value, Rule.RL_FLOOR.value,
          Rule.ANOMALY_FREEZE.value}

# A config where only the rule under test acts: no window, no cooldown.
QUIET = GuardrailsConfig(scale_down_stabilization_s=0, cooldown_s=0, max_step_up=4,
                         max_step_down=1, batch_change_interval_s=1800,
                         min_ready_for_batch_change=2, max_failures=3)

LOAD_ANOMALY = AnomalyReport(time=NOW, anomalies=(
    MetricAnomaly("vllm:num_requests_waiting", 0.95, "load_change"),))
BAD_TELEMETRY = AnomalyReport(time=NOW, anomalies=(
    MetricAnomaly("vllm:kv_cache_usage_perc", 0.99, "bad_telemetry"),))
HEALTH_ANOMALY = AnomalyReport(time=NOW, anomalies=(
    MetricAnomaly("ttft_p99", 0.95, "health"),))
WEAK_ANOMALY = AnomalyReport(time=NOW, anomalies=(
    MetricAnomaly("vllm:num_requests_waiting", 0.5, "load_change"),))
UNVERIFIED = AnomalyReport(time=NOW, unverified=("arrival_rate repeated 1 tick(s)",))


def make(rec: int | None = 4, batch: int | None = None, **kw: Any) -> GuardInput:
    """A target at 4 replicas, batch 64, bounds [1, 8], batch tuning on, good data."""
    base: dict[str, Any] = dict(
        time=NOW, target="chat", replicas=4, ready_replicas=4, batch_size=64,
        recommendation=None if rec is None else Recommendation(rec, batch, "test"),
        data_ok=True, anomalies=None, paused=False, min_replicas=1, max_replicas=8,
        batch_sizes=(32, 64, 128), tune_batch_size=True)
    base.update(kw)
    if "ready_replicas" not in kw:
        base["ready_replicas"] = base["replicas"]
    return GuardInput(**base)


def cfg(**kw: Any) -> GuardrailsConfig:
    return QUIET.model_copy(update=kw)


# --------------------------------------------------------------------------- examples
# (id, input, config, state, expected replicas, expected batch, expected rules)
S = GuardrailState
EXAMPLES: list[tuple[str, GuardInput, GuardrailsConfig, GuardrailState, int, int,
                     tuple[str, ...]]] = [
    ("no clamp", make(6), QUIET, S(), 6, 64, ()),
    ("paused", make(6, paused=True), QUIET, S(), 4, 64, ("paused",)),
    ("paused shows what would happen", make(12, paused=True), QUIET, S(), 4, 64,
     ("max_replicas", "paused")),
    ("data_hold blocks scale-down", make(2, data_ok=False), QUIET, S(), 4, 64,
     ("data_hold",)),
    ("data_hold blocks scale-up", make(7, data_ok=False), QUIET, S(), 4, 64,
     ("data_hold",)),
    ("data_hold without recommendation is still named", make(None, data_ok=False), QUIET,
     S(), 4, 64, ("data_hold",)),
    ("no recommendation counts as a failure", make(None), QUIET, S(), 4, 64,
     ("data_hold",)),
    ("third failure still data_hold", make(2, data_ok=False), QUIET,
     S(consecutive_failures=2), 4, 64, ("data_hold",)),
    ("fallback hold after max_failures", make(2, data_ok=False), QUIET,
     S(consecutive_failures=3), 4, 64, ("fallback",)),
    ("fallback fixed raises", make(None, data_ok=False),
     cfg(fallback="fixed", fallback_replicas=6), S(consecutive_failures=3), 6, 64,
     ("fallback",)),
    ("fallback fixed never lowers", make(None, data_ok=False),
     cfg(fallback="fixed", fallback_replicas=2), S(consecutive_failures=3), 4, 64,
     ("fallback",)),
    ("fallback fixed climbs by max_step_up", make(None, replicas=2, data_ok=False),
     cfg(fallback="fixed", fallback_replicas=8), S(consecutive_failures=9), 6, 64,
     ("fallback", "max_step_up")),
    ("fallback fixed capped by max_replicas", make(None, data_ok=False),
     cfg(fallback="fixed", fallback_replicas=20, max_step_up=20), S(consecutive_failures=3),
     8, 64, ("fallback", "max_replicas")),
    ("min_replicas raises even on a held tick", make(None, replicas=1, min_replicas=3,
                                                     data_ok=False),
     QUIET, S(), 3, 64, ("data_hold", "min_replicas")),
    ("rl_floor", make(2, rl_floor=5), QUIET, S(), 5, 64, ("rl_floor",)),
    ("rl_floor is no ceiling", make(6, rl_floor=5), QUIET, S(), 6, 64, ()),
    ("rl_floor under max_replicas", make(2, rl_floor=11), cfg(max_step_up=10), S(), 8, 64,
     ("rl_floor", "max_replicas")),
    ("rl_floor ignored on a failed tick", make(2, rl_floor=6, data_ok=False), QUIET, S(),
     4, 64, ("data_hold",)),
    ("health anomaly blocks scale-down", make(2, anomalies=HEALTH_ANOMALY), QUIET, S(), 4,
     64, ("anomaly_freeze",)),
    ("health anomaly allows scale-up", make(6, anomalies=HEALTH_ANOMALY), QUIET, S(), 6, 64,
     ()),
    ("bad telemetry blocks scale-down", make(2, anomalies=BAD_TELEMETRY), QUIET, S(), 4, 64,
     ("anomaly_freeze",)),
    ("bad telemetry allows scale-up", make(7, anomalies=BAD_TELEMETRY), QUIET, S(), 7, 64,
     ()),
    ("bad telemetry keeps rl_floor", make(2, rl_floor=7, anomalies=BAD_TELEMETRY),
     QUIET, S(), 7, 64, ("rl_floor",)),
    ("a load change does not freeze", make(2, anomalies=LOAD_ANOMALY), QUIET, S(), 3, 64,
     ("max_step_down",)),
    ("score below threshold is no anomaly", make(3, anomalies=WEAK_ANOMALY), QUIET, S(), 3,
     64, ()),
    ("anomaly_freeze off", make(3, anomalies=BAD_TELEMETRY), cfg(anomaly_freeze=False), S(),
     3, 64, ()),
    ("unverified telemetry holds a scale-down", make(3, anomalies=UNVERIFIED), QUIET, S(), 4,
     64, ("unverified_telemetry",)),
    ("unverified telemetry allows scale-up", make(6, anomalies=UNVERIFIED), QUIET, S(), 6,
     64, ()),
    ("unverified telemetry, anomaly_freeze off", make(3, anomalies=UNVERIFIED),
     cfg(anomaly_freeze=False), S(), 3, 64, ()),
    ("misses hold a scale-down", make(3, slo_attainment=0.95), QUIET, S(), 4, 64,
     ("slo_misses",)),
    ("misses allow a scale-up", make(6, slo_attainment=0.5), QUIET, S(), 6, 64, ()),
    ("attainment at the minimum lets a scale-down go", make(3, slo_attainment=0.99), QUIET,
     S(), 3, 64, ()),
    ("nothing finished lets a scale-down go", make(3, slo_attainment=math.nan), QUIET, S(),
     3, 64, ()),
    ("misses, check off", make(3, slo_attainment=0.5), cfg(scale_down_min_attainment=None),
     S(), 3, 64, ()),
    ("misses do not hold a failed tick's hold", make(2, data_ok=False, slo_attainment=0.5),
     QUIET, S(), 4, 64, ("data_hold",)),
    ("misses do not hold above a lowered ceiling", make(2, replicas=10, slo_attainment=0.5),
     cfg(max_step_down=10), S(), 8, 64, ("slo_misses",)),
    ("min_replicas", make(0, replicas=2, min_replicas=2), QUIET, S(), 2, 64,
     ("min_replicas",)),
    ("min_replicas beats max_step_up", make(1, replicas=1, min_replicas=7), QUIET, S(), 7,
     64, ("min_replicas",)),
    ("max_replicas", make(12), QUIET, S(), 8, 64, ("max_replicas",)),
    ("max_replicas names the binding limit", make(12, replicas=6), QUIET, S(), 8, 64,
     ("max_replicas",)),
    ("max_replicas beats max_step_down", make(12, replicas=12), QUIET, S(), 8, 64,
     ("max_replicas",)),
    ("max_replicas waits for good data", make(12, replicas=12, data_ok=False), QUIET, S(),
     12, 64, ("data_hold",)),
    ("max_replicas waits out an anomaly", make(12, replicas=12, anomalies=HEALTH_ANOMALY),
     QUIET, S(), 12, 64, ()),
    ("max_step_up", make(8, replicas=2), QUIET, S(), 6, 64, ("max_step_up",)),
    ("max_step_down", make(1), QUIET, S(), 3, 64, ("max_step_down",)),
    ("gpu_budget caps a scale-up", make(8, replicas=2, gpus_per_replica=2,
                                        gpu_budget_available=10), QUIET, S(), 5, 64,
     ("gpu_budget",)),
    ("gpu_budget never forces a scale-down", make(4, gpus_per_replica=2,
                                                  gpu_budget_available=4), QUIET, S(), 4,
     64, ()),
    ("gpu_budget lets a scale-down through", make(3, gpus_per_replica=2,
                                                  gpu_budget_available=2), QUIET, S(), 3,
     64, ()),
    ("gpu_budget beats min_replicas", make(1, replicas=1, min_replicas=4,
                                           gpu_budget_available=2), QUIET, S(), 2, 64,
     ("min_replicas", "gpu_budget")),
    ("gpu_budget already overdrawn", make(6, replicas=3, gpu_budget_available=-2), QUIET,
     S(), 3, 64, ("gpu_budget",)),
    # batch size
    ("batch change", make(4, 128), QUIET, S(), 4, 128, ()),
    ("batch None keeps", make(4, None), QUIET, S(), 4, 64, ()),
    ("batch_tuning_disabled", make(4, 128, tune_batch_size=False), QUIET, S(), 4, 64,
     ("batch_tuning_disabled",)),
    ("batch_not_allowed", make(4, 96), QUIET, S(), 4, 64, ("batch_not_allowed",)),
    ("batch_data_hold", make(4, 128, data_ok=False), QUIET, S(), 4, 64,
     ("data_hold", "batch_data_hold")),
    ("batch_anomaly", make(4, 128, anomalies=LOAD_ANOMALY), QUIET, S(), 4, 64,
     ("batch_anomaly",)),
    ("batch_anomaly even with anomaly_freeze off", make(4, 128, anomalies=LOAD_ANOMALY),
     cfg(anomaly_freeze=False), S(), 4, 64, ("batch_anomaly",)),
    ("batch_min_ready", make(4, 128, ready_replicas=1), QUIET, S(), 4, 64,
     ("batch_min_ready",)),
    ("batch_min_ready counts this tick's scale-down", make(1, 128, replicas=2), QUIET, S(),
     1, 64, ("batch_min_ready",)),
    ("batch_interval", make(4, 128), QUIET, S(last_batch_change_time=NOW - 1799), 4, 64,
     ("batch_interval",)),
    ("batch_interval over", make(4, 128), QUIET, S(last_batch_change_time=NOW - 1800), 4,
     128, ()),
    ("batch_paused", make(4, 128, paused=True), QUIET, S(), 4, 64, ("batch_paused",)),
    ("first blocking batch rule is the one named", make(4, 96, paused=True,
                                                        tune_batch_size=False),
     QUIET, S(), 4, 64, ("batch_tuning_disabled",)),
    # windows and timers on one tick
    ("scale_down_stabilization", make(1), cfg(scale_down_stabilization_s=300),
     S(recommendations=((NOW - 100, 3),)), 3, 64, ("scale_down_stabilization",)),
    ("stabilization window is exclusive at its age", make(2),
     cfg(scale_down_stabilization_s=300, max_step_down=5),
     S(recommendations=((NOW - 300, 8),)), 2, 64, ()),
    ("fresh state seeds the window with the current count", make(1),
     cfg(scale_down_stabilization_s=300), S(), 4, 64, ("scale_down_stabilization",)),
    ("cooldown blocks a reversal", make(2), cfg(cooldown_s=60),
     S(last_scale_time=NOW - 59, last_scale_direction=1), 4, 64, ("cooldown",)),
    ("cooldown allows the same direction", make(2), cfg(cooldown_s=60),
     S(last_scale_time=NOW - 1, last_scale_direction=-1), 3, 64, ("max_step_down",)),
    ("cooldown over", make(2), cfg(cooldown_s=60),
     S(last_scale_time=NOW - 60, last_scale_direction=1), 3, 64, ("max_step_down",)),
    ("cooldown never beats min_replicas", make(1, replicas=1, min_replicas=3),
     cfg(cooldown_s=60), S(last_scale_time=NOW - 1, last_scale_direction=-1), 3, 64,
     ("min_replicas",)),
    ("clock stepped back: a future change counts as now", make(2), cfg(cooldown_s=60),
     S(last_scale_time=NOW + 5000, last_scale_direction=1), 4, 64, ("cooldown",)),
]


@pytest.mark.parametrize(("inp", "config", "state", "replicas", "batch", "rules"),
                         [e[1:] for e in EXAMPLES], ids=[e[0] for e in EXAMPLES])
def test_rule_examples(inp: GuardInput, config: GuardrailsConfig, state: GuardrailState,
                       replicas: int, batch: int, rules: tuple[str, ...]) -> None:
    decision, _ = apply_guardrails(inp, config, state)
    assert (decision.replicas, decision.batch_size, decision.rules) == (replicas, batch, rules)
    check_explained(decision)


def test_every_rule_has_an_example() -> None:
    fired = {r for e in EXAMPLES for r in e[6]}
    assert fired == {r.value for r in Rule}


def test_decision_carries_everything_the_annotators_need() -> None:
    rec = Recommendation(12, 128, "queue is long")
    d, _ = apply_guardrails(dataclasses.replace(make(), recommendation=rec, dry_run=False),
                            QUIET, S())
    assert (d.time, d.target, d.previous_replicas, d.previous_batch_size) == (NOW, "chat", 4, 64)
    assert d.recommendation is rec and d.dry_run is False
    assert (d.replicas, d.batch_size) == (8, 128)
    clamp = d.clamps[0]
    assert (clamp.rule, clamp.before, clamp.after) == ("max_replicas", 12, 8)
    assert "8" in clamp.detail


def test_failed_tick_synthesizes_a_hold_recommendation_naming_the_problem() -> None:
    d, state = apply_guardrails(make(None, data_ok=False, data_problem="stale: 300 s"),
                                QUIET, S())
    assert d.recommendation.replicas == 4
    assert "stale: 300 s" in d.recommendation.reason
    assert "stale: 300 s" in d.clamps[0].detail
    assert state.consecutive_failures == 1


def test_fallback_counter_runs_and_resets() -> None:
    state = S()
    rules = []
    for ok in (False, False, False, False, False, True, False):
        d, state = apply_guardrails(make(2, data_ok=ok), QUIET, state)
        rules.append(d.rules[:1])
    assert rules == [("data_hold",)] * 3 + [("fallback",)] * 2 + [("max_step_down",),
                                                                 ("data_hold",)]
    assert state.consecutive_failures == 1


# --------------------------------------------------------------------------- sequences
def run(ticks: Sequence[tuple[float, int | None]], config: GuardrailsConfig, *,
        start: int, dry_run: bool = False, **kw: Any) -> list[Decision]:
    """(time, recommended replicas) per tick; in enforce the Deployment follows at once."""
    state, cur, out = S(), start, []
    for t, rec in ticks:
        d, state = apply_guardrails(
            make(rec, time=t, replicas=cur, data_ok=rec is not None, dry_run=dry_run, **kw),
            config, state)
        out.append(d)
        if not dry_run:
            cur = d.replicas
    return out


STAB = cfg(scale_down_stabilization_s=300, max_step_down=10, max_step_up=10)


@pytest.mark.parametrize(("recs", "start", "expected"), [
    # the 8 recorded at t=0 holds the count until it is 300 s old
    ([8, 3, 3, 3, 3, 3, 3], 8, [8, 8, 8, 8, 8, 3, 3]),
    # a peak in the middle holds for a window after the peak
    ([5, 7, 4, 4, 4, 4, 4, 4], 5, [5, 7, 7, 7, 7, 7, 4, 4]),
    # a declining series steps down with the window's maximum
    ([8, 7, 6, 5, 4, 3, 2, 1], 8, [8, 8, 8, 8, 8, 7, 6, 5]),
    # fresh state: the current count is the window's first entry
    ([2, 2, 2, 2, 2, 2], 6, [6, 6, 6, 6, 6, 2]),
    # failed ticks record the held count, so a scale-down waits a window after recovery
    ([3, None, None, 3, 3, 3, 3, 3, 3], 6, [6, 6, 6, 6, 6, 6, 6, 3, 3]),
], ids=["expiry", "peak", "decline", "seed", "after-outage"])
def test_stabilization_window_over_ticks(recs: list[int | None], start: int,
                                         expected: list[int]) -> None:
    ticks = [(NOW + 60.0 * i, r) for i, r in enumerate(recs)]
    assert [d.replicas for d in run(ticks, STAB, start=start)] == expected


COOL = cfg(cooldown_s=60, max_step_down=10, max_step_up=10)


def test_cooldown_over_ticks() -> None:
    ticks = [(NOW, 6), (NOW + 30, 3), (NOW + 59, 3), (NOW + 60, 3), (NOW + 61, 5),
             (NOW + 90, 2), (NOW + 150, 2), (NOW + 151, 5)]
    decisions = run(ticks, COOL, start=4)
    assert [d.replicas for d in decisions] == [6, 6, 6, 3, 3, 2, 2, 5]
    assert [d.rules for d in decisions] == [(), ("cooldown",), ("cooldown",), (),
                                            ("cooldown",), (), (), ()]


def test_dry_run_keeps_the_timers_enforce_would_keep() -> None:
    # the count never moves in dry-run, yet the reversal is blocked as it would be in enforce
    ticks = [(NOW, 6), (NOW + 30, 3), (NOW + 60, 3)]
    dry = run(ticks, COOL, start=4, dry_run=True)
    assert [(d.replicas, d.rules, d.dry_run) for d in dry] == [
        (6, (), True), (4, ("cooldown",), True), (3, (), True)]


def test_batch_interval_over_ticks() -> None:
    config = cfg(batch_change_interval_s=600)
    state, batch, got = S(), 64, []
    for t, want in [(NOW, 128), (NOW + 300, 32), (NOW + 599, 32), (NOW + 600, 32)]:
        d, state = apply_guardrails(make(4, want, time=t, batch_size=batch),
                                    config, state)
        batch = d.batch_size
        got.append((batch, d.rules))
    assert got == [(128, ()), (128, ("batch_interval",)), (128, ("batch_interval",)),
                   (32, ())]


# --------------------------------------------------------------------------- strategies
# Prebuilt values drawn with sampled_from keep generation cheap (2 shared cores): the
# threshold arithmetic of AnomalyReport is types.py's, here only "active or not, which kind".
REPORTS: tuple[AnomalyReport | None, ...] = (
    None, None, AnomalyReport(time=NOW), WEAK_ANOMALY, LOAD_ANOMALY, BAD_TELEMETRY,
    HEALTH_ANOMALY, UNVERIFIED,
    AnomalyReport(time=NOW, anomalies=(MetricAnomaly("ttft", 0.97, "health"),
                                       MetricAnomaly("kv", 0.2, "bad_telemetry"))))
batch_values = st.sampled_from([16, 32, 64, 96, 128, 256])
often = st.sampled_from([True, True, True, False])
times_around_now = st.sampled_from([NOW - 1000.0, NOW - 400.0, NOW - 300.0, NOW - 200.0,
                                    NOW - 60.0, NOW - 59.5, NOW - 30.0, NOW - 1.0, NOW,
                                    NOW + 50.0])


@st.composite
def configs(draw: st.DrawFn) -> GuardrailsConfig:
    fallback = draw(st.sampled_from(["hold", "fixed"]))
    return GuardrailsConfig(
        max_step_up=draw(st.integers(1, 6)),
        max_step_down=draw(st.integers(1, 4)),
        scale_down_stabilization_s=draw(st.sampled_from([0.0, 30.0, 120.0, 300.0])),
        cooldown_s=draw(st.sampled_from([0.0, 30.0, 60.0, 200.0])),
        batch_change_interval_s=draw(st.sampled_from([0.0, 60.0, 600.0])),
        min_ready_for_batch_change=draw(st.integers(1, 4)),
        max_failures=draw(st.integers(1, 4)),
        fallback=fallback,
        fallback_replicas=draw(st.integers(0, 20)) if fallback == "fixed" else None,
        anomaly_freeze=draw(st.booleans()),
        scale_down_min_attainment=draw(st.none() | st.sampled_from([0.9, 0.99, 1.0])),
    )


@st.composite
def states(draw: st.DrawFn) -> GuardrailState:
    direction = draw(st.sampled_from([-1, 0, 1]))
    recs = draw(st.lists(st.tuples(times_around_now, st.integers(0, 25)), max_size=5))
    return GuardrailState(
        last_scale_time=None if direction == 0 else draw(times_around_now),
        last_scale_direction=direction,
        last_batch_change_time=draw(st.none() | times_around_now),
        recommendations=tuple(sorted(recs)),
        consecutive_failures=draw(st.integers(0, 6)),
    )


@st.composite
def inputs(draw: st.DrawFn) -> GuardInput:
    # Biased toward "every rule passes" (good data, not paused, tuning on, an allowed batch
    # size), so that the rarer paths — a scale-down, a batch change — are common enough for
    # a broken rule to show within a few hundred examples.
    lo = draw(st.integers(0, 10))
    hi = max(1, lo + draw(st.integers(0, 12)))
    sizes = tuple(draw(st.lists(batch_values, min_size=1, max_size=4, unique=True)))
    cur = draw(st.integers(0, 25))
    rec = None
    if draw(often):
        rec = Recommendation(draw(st.integers(-2, 30)),
                             draw(st.none() | st.sampled_from(sizes) | batch_values))
    return GuardInput(
        time=NOW, target="t", replicas=cur, ready_replicas=draw(st.integers(0, cur + 2)),
        batch_size=draw(batch_values), recommendation=rec, data_ok=draw(often),
        anomalies=draw(st.sampled_from(REPORTS)), paused=not draw(often),
        min_replicas=lo, max_replicas=hi, batch_sizes=sizes,
        tune_batch_size=draw(often), rl_floor=draw(st.none() | st.integers(0, 25)),
        gpus_per_replica=draw(st.integers(1, 4)),
        gpu_budget_available=draw(st.none() | st.integers(-4, 60)),
        dry_run=draw(st.booleans()),
        slo_attainment=draw(st.sampled_from([math.nan, 1.0, 0.995, 0.99, 0.95, 0.0])))


def failing(inp: GuardInput) -> bool:
    return not inp.data_ok or inp.recommendation is None


def freezing(inp: GuardInput, config: GuardrailsConfig) -> bool:
    """A report that forbids a scale-down: bad telemetry or health above threshold, or
    telemetry it cannot vouch for."""
    r = inp.anomalies
    return config.anomaly_freeze and r is not None and (bool(r.unverified) or any(
        a.score >= r.threshold and a.kind in ("bad_telemetry", "health") for a in r.anomalies))


def check_explained(d: Decision) -> None:
    """Clamps chain from the recommendation to the decision, in pipeline order."""
    value, last = d.recommendation.replicas, -1
    for c in (c for c in d.clamps if c.rule in REPLICA_RULES):
        assert c.before == value, d.clamps
        assert c.after != c.before or c.rule in HOLD_RULES, c
        order = REPLICA_RULES.index(c.rule)
        assert order > last, f"{c.rule} out of order or repeated in {d.rules}"
        value, last = c.after, order
    assert value == d.replicas, d.clamps
    batch_clamps = [c for c in d.clamps if c.rule in BATCH_RULES]
    assert len(batch_clamps) + len([c for c in d.clamps if c.rule in REPLICA_RULES]) == len(
        d.clamps), f"unknown rule in {d.rules}"
    want = d.recommendation.batch_size
    want = d.previous_batch_size if want is None else want
    if batch_clamps:
        (c,) = batch_clamps  # the first blocking rule; nothing is left to change after it
        assert (c.before, c.after) == (want, d.previous_batch_size)
        assert want != d.previous_batch_size
    assert d.batch_size == (d.previous_batch_size if batch_clamps else want)


# --------------------------------------------------------------------------- properties
# One generated scenario is checked against every single-tick invariant (generation, not
# the guardrails, is what costs time). Each check_* names its invariant and fails alone.


def check_every_change_is_explained(inp: GuardInput, config: GuardrailsConfig,
                                    state: GuardrailState) -> None:
    d, _ = apply_guardrails(inp, config, state)
    check_explained(d)
    if failing(inp):  # the hold is named on every failed tick
        fallback = state.consecutive_failures + 1 > config.max_failures
        assert d.rules[0] == ("fallback" if fallback else "data_hold")


def check_paused_changes_nothing(inp: GuardInput, config: GuardrailsConfig,
                                 state: GuardrailState) -> None:
    d, _ = apply_guardrails(dataclasses.replace(inp, paused=True), config, state)
    assert (d.replicas, d.batch_size) == (inp.replicas, inp.batch_size)


def check_bounds(inp: GuardInput, config: GuardrailsConfig, state: GuardrailState) -> None:
    """Within [min, max], but for a held count above max or a budget-stopped climb."""
    d, _ = apply_guardrails(inp, config, state)
    new, cur = d.replicas, inp.replicas
    if new > inp.max_replicas:
        assert new == cur
        assert inp.paused or failing(inp) or freezing(inp, config)
    if new < inp.min_replicas:
        assert new >= cur
        budget = inp.gpu_budget_available
        assert inp.paused or (budget is not None and (new + 1) * inp.gpus_per_replica > budget)


def check_failed_data_never_scales_down(inp: GuardInput, config: GuardrailsConfig,
                                        state: GuardrailState) -> None:
    inp = dataclasses.replace(inp, data_ok=False)
    d, _ = apply_guardrails(inp, config, state)
    assert d.replicas >= inp.replicas
    # and above it only for the operator's floor or an explicit fixed fallback
    raise_to = [inp.replicas, inp.min_replicas]
    if config.fallback == "fixed" and state.consecutive_failures + 1 > config.max_failures:
        assert config.fallback_replicas is not None
        raise_to.append(config.fallback_replicas)
    assert d.replicas <= max(raise_to)


def check_slo_misses_never_scale_down(inp: GuardInput, config: GuardrailsConfig,
                                     state: GuardrailState) -> None:
    """Under the minimum attainment no scale-down; the way up is what it would be anyway."""
    config = config.model_copy(update={"scale_down_min_attainment": 0.99})
    rec = inp.recommendation or Recommendation(inp.replicas + 3)
    good = dataclasses.replace(inp, data_ok=True, recommendation=rec)
    calm, _ = apply_guardrails(dataclasses.replace(good, slo_attainment=1.0), config, state)
    for missing in (0.0, 0.95, 0.989):
        d, _ = apply_guardrails(dataclasses.replace(good, slo_attainment=missing), config,
                                state)
        assert d.replicas >= min(inp.replicas, inp.max_replicas) or inp.paused
        if calm.replicas >= inp.replicas:
            assert d.replicas == calm.replicas


def check_anomaly_never_scales_down(inp: GuardInput, config: GuardrailsConfig,
                                    state: GuardrailState) -> None:
    config = config.model_copy(update={"anomaly_freeze": True})
    rec = inp.recommendation or Recommendation(inp.replicas + 3)
    good = dataclasses.replace(inp, data_ok=True, recommendation=rec)
    for report in (HEALTH_ANOMALY, REPORTS[-1], BAD_TELEMETRY, UNVERIFIED):
        d, _ = apply_guardrails(dataclasses.replace(good, anomalies=report), config, state)
        assert d.replicas >= inp.replicas
        # a freeze only stops the way down: the way up is what it would be without it
        calm, _ = apply_guardrails(dataclasses.replace(good, anomalies=None), config, state)
        if calm.replicas >= inp.replicas:
            assert d.replicas == calm.replicas
    # a real load change is followed, down too: it decides as if nothing were anomalous
    d, _ = apply_guardrails(dataclasses.replace(good, anomalies=LOAD_ANOMALY), config, state)
    assert d.replicas == calm.replicas
    # a doubt holds this tick alone: the stabilization window it leaves is the one without
    # it, so the next tick decides as if the doubt had not been
    d, after = apply_guardrails(dataclasses.replace(good, anomalies=UNVERIFIED), config, state)
    calm, calm_after = apply_guardrails(dataclasses.replace(good, anomalies=None), config,
                                        state)
    assert after.recommendations == calm_after.recommendations
    assert d.replicas == max(calm.replicas, inp.replicas)


def check_max_step(inp: GuardInput, config: GuardrailsConfig, state: GuardrailState) -> None:
    """|change| within the step limits unless a hard bound (min above, max below) moved."""
    # also with nothing else in the way (no window, cooldown, freeze, hold or pause), where
    # the step limit is the only rule between a big recommendation and the decision
    free = config.model_copy(update={"scale_down_stabilization_s": 0.0, "cooldown_s": 0.0,
                                     "anomaly_freeze": False})
    rec = inp.recommendation or Recommendation(0)
    for i, c in ((inp, config), (dataclasses.replace(inp, data_ok=True, paused=False,
                                                    recommendation=rec), free)):
        d, _ = apply_guardrails(i, c, state)
        new, cur = d.replicas, i.replicas
        if new - cur > c.max_step_up:  # min_replicas raised it (the budget may stop short)
            assert new <= i.min_replicas
        if cur - new > c.max_step_down:
            assert new == i.max_replicas


def check_gpu_budget(inp: GuardInput, config: GuardrailsConfig, state: GuardrailState) -> None:
    d, _ = apply_guardrails(inp, config, state)
    if inp.gpu_budget_available is not None and d.replicas > inp.replicas:
        assert d.replicas * inp.gpus_per_replica <= inp.gpu_budget_available
    # the budget never changes a decision that is not a scale-up: it forces no scale-down
    unbudgeted, _ = apply_guardrails(
        dataclasses.replace(inp, gpu_budget_available=None), config, state)
    if unbudgeted.replicas <= inp.replicas:
        assert d.replicas == unbudgeted.replicas
    else:
        assert inp.replicas <= d.replicas <= unbudgeted.replicas


def check_batch_needs_every_rule(inp: GuardInput, config: GuardrailsConfig,
                                 state: GuardrailState) -> None:
    d, _ = apply_guardrails(inp, config, state)
    if d.batch_size != inp.batch_size:
        rec = inp.recommendation
        assert rec is not None and d.batch_size == rec.batch_size
        assert inp.tune_batch_size and d.batch_size in inp.batch_sizes
        assert inp.data_ok and not inp.paused
        assert inp.anomalies is None or not inp.anomalies.active
        assert min(inp.ready_replicas, d.replicas) >= config.min_ready_for_batch_change
        last = state.last_batch_change_time
        assert last is None or NOW - min(last, NOW) >= config.batch_change_interval_s
    # From an input where every batch rule passes, breaking any one rule keeps the size.
    want = next(b for b in (*inp.batch_sizes, 999) if b != inp.batch_size)
    ok = dataclasses.replace(
        inp, tune_batch_size=True, data_ok=True, paused=False, anomalies=None,
        ready_replicas=99, batch_sizes=(*inp.batch_sizes, 999),
        recommendation=Recommendation(inp.replicas, want))
    fresh = dataclasses.replace(state, last_batch_change_time=None)
    d, _ = apply_guardrails(ok, config, fresh)
    if d.replicas < config.min_ready_for_batch_change:  # scaled below what a roll needs
        assert d.rules == ("batch_min_ready",) or d.batch_size == ok.batch_size
        return
    assert d.batch_size == want, d.rules
    broken = [
        (dataclasses.replace(ok, tune_batch_size=False), fresh),
        (dataclasses.replace(ok, batch_sizes=tuple(b for b in ok.batch_sizes if b != want)
                             or (ok.batch_size,)), fresh),
        (dataclasses.replace(ok, data_ok=False), fresh),
        (dataclasses.replace(ok, anomalies=inp.anomalies or LOAD_ANOMALY), fresh),
        (dataclasses.replace(ok, ready_replicas=config.min_ready_for_batch_change - 1), fresh),
        (dataclasses.replace(ok, paused=True), fresh),
    ]
    if config.batch_change_interval_s > 0:
        broken.append((ok, dataclasses.replace(
            state, last_batch_change_time=NOW - config.batch_change_interval_s / 2)))
    for i, s in broken:
        if i.anomalies is not None and not i.anomalies.active:
            continue  # an inactive report breaks nothing
        d, _ = apply_guardrails(i, config, s)
        assert d.batch_size == ok.batch_size, d.rules


def check_dry_run_decides_as_enforce(inp: GuardInput, config: GuardrailsConfig,
                                     state: GuardrailState) -> None:
    dry, dry_state = apply_guardrails(dataclasses.replace(inp, dry_run=True), config, state)
    real, real_state = apply_guardrails(dataclasses.replace(inp, dry_run=False), config, state)
    assert dataclasses.replace(dry, dry_run=False) == real
    assert dry.dry_run and dry_state == real_state


def check_state_update(inp: GuardInput, config: GuardrailsConfig,
                       state: GuardrailState) -> None:
    d, new = apply_guardrails(inp, config, state)
    assert new.consecutive_failures == (state.consecutive_failures + 1 if failing(inp) else 0)
    def settled(t: float | None) -> float | None:
        return None if t is None else min(t, NOW)

    if d.replicas != inp.replicas:
        assert new.last_scale_time == NOW
        assert new.last_scale_direction == (1 if d.replicas > inp.replicas else -1)
    else:
        assert new.last_scale_time == settled(state.last_scale_time)
        assert new.last_scale_direction == state.last_scale_direction
    if d.batch_size != inp.batch_size:
        assert new.last_batch_change_time == NOW
    else:
        assert new.last_batch_change_time == settled(state.last_batch_change_time)
    window = config.scale_down_stabilization_s
    assert all(NOW - t < window for t, _ in new.recommendations)
    values = [r for _, r in new.recommendations]
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)
    assert GuardrailState.from_json(new.to_json()) == (new, None)


SINGLE_TICK_CHECKS = (
    check_every_change_is_explained, check_paused_changes_nothing, check_bounds,
    check_failed_data_never_scales_down, check_anomaly_never_scales_down,
    check_slo_misses_never_scale_down, check_max_step,
    check_gpu_budget, check_batch_needs_every_rule, check_dry_run_decides_as_enforce,
    check_state_update)


@PROPS
@given(inputs(), configs(), states())
def test_single_tick_invariants_hold_for_any_input(inp: GuardInput, config: GuardrailsConfig,
                                                   state: GuardrailState) -> None:
    for check in SINGLE_TICK_CHECKS:
        check(inp, config, state)


@settings(max_examples=150, deadline=None)
@given(states())
def test_state_json_round_trip(state: GuardrailState) -> None:
    text = state.to_json()
    assert GuardrailState.from_json(text) == (state, None)
    assert GuardrailState.from_json(text.encode()) == (state, None)


@settings(max_examples=150, deadline=None)
@given(st.text() | st.binary())
def test_state_from_any_text_never_raises(text: str | bytes) -> None:
    state, problem = GuardrailState.from_json(text)
    assert isinstance(state, GuardrailState)
    if problem is not None:
        assert state == GuardrailState()


GOOD = json.loads(GuardrailState(last_scale_time=5.0, last_scale_direction=1,
                                 recommendations=((4.0, 3),)).to_json())


@pytest.mark.parametrize("text", [
    "not json", "[]", "null", "{", json.dumps({**GOOD, "v": 2}),
    json.dumps({k: v for k, v in GOOD.items() if k != "recommendations"}),
    json.dumps({**GOOD, "extra": 1}),
    json.dumps({**GOOD, "last_scale_direction": 2}),
    json.dumps({**GOOD, "last_scale_direction": True}),
    json.dumps({**GOOD, "last_scale_time": None}),  # direction without a time
    json.dumps({**GOOD, "consecutive_failures": -1}),
    json.dumps({**GOOD, "consecutive_failures": 1.5}),
    json.dumps({**GOOD, "recommendations": [[1.0, -3]]}),
    json.dumps({**GOOD, "recommendations": [[1.0]]}),
    json.dumps({**GOOD, "recommendations": {"a": 1}}),
    json.dumps({**GOOD, "recommendations": [["x", 1]]}),
    '{"v":1,"last_scale_time":NaN}',
    json.dumps(GOOD).replace("5.0", "1" + "0" * 400),
    json.dumps(GOOD).replace("5.0", "Infinity"),
], ids=lambda s: s[:40])
def test_bad_state_json_gives_a_fresh_state_and_a_problem(text: str) -> None:
    state, problem = GuardrailState.from_json(text)
    assert state == GuardrailState()
    assert problem is not None and "unreadable guardrail state" in problem


@pytest.mark.parametrize("text", [None, "", "  "])
def test_missing_state_is_a_normal_first_run(text: str | None) -> None:
    assert GuardrailState.from_json(text) == (GuardrailState(), None)


def test_good_state_json_is_read() -> None:
    assert GuardrailState.from_json(json.dumps(GOOD)) == (
        GuardrailState(last_scale_time=5.0, last_scale_direction=1,
                       recommendations=((4.0, 3),)), None)


# --------------------------------------------------------------------------- sequences
tick = st.tuples(
    st.sampled_from([1.0, 15.0, 15.0, 30.0, 59.0, 60.0, 120.0, 301.0]),  # seconds since last
    st.none() | st.integers(0, 15),  # recommended replicas; None: the tick failed
    st.sampled_from([None, None, 32, 64, 128]),  # recommended batch size
    st.sampled_from([True, True, True, False]),  # data_ok
    st.sampled_from([False] * 9 + [True]),  # paused
    st.sampled_from(REPORTS),
    st.sampled_from([None, None, 2, 6, 10]),  # rl_floor
)


@SEQ_PROPS
@given(configs(), st.lists(tick, min_size=2, max_size=20), st.integers(1, 3),
       st.integers(4, 12), st.integers(0, 12))
def test_any_sequence_respects_bounds_windows_and_cooldowns(
        config: GuardrailsConfig, ticks: list[tuple[Any, ...]], lo: int, hi: int,
        start: int) -> None:
    """Enforce mode, restarting from the JSON state before every tick (no flap on restart)."""
    cur, batch, state, now = min(max(start, lo), hi), 64, GuardrailState(), NOW
    window = config.scale_down_stabilization_s
    remembered: list[tuple[float, int]] = [(NOW + ticks[0][0], cur)]  # the seed
    last_change: tuple[float, int] | None = None
    last_batch: float | None = None
    failures = 0
    for dt, rec_n, rec_batch, data_ok, paused, report, floor in ticks:
        now += dt
        rec = None if rec_n is None else Recommendation(rec_n, rec_batch)
        inp = GuardInput(
            time=now, target="t", replicas=cur, ready_replicas=cur, batch_size=batch,
            recommendation=rec, data_ok=data_ok, anomalies=report, paused=paused,
            min_replicas=lo, max_replicas=hi, batch_sizes=(32, 64, 128),
            tune_batch_size=True, rl_floor=floor, dry_run=False)
        d, state = apply_guardrails(inp, config, GuardrailState.from_json(state.to_json())[0])
        new = d.replicas
        check_explained(d)
        assert lo <= new <= hi  # the count started inside the bounds and never leaves them
        assert -config.max_step_down <= new - cur <= config.max_step_up
        failures = failures + 1 if failing(inp) else 0
        assert state.consecutive_failures == failures
        if failing(inp) or freezing(inp, config):
            assert new >= cur
        # the stabilization window, against the test's own record of what entered it
        phase1 = [c.after for c in d.clamps if c.rule in PHASE1]
        remembered.append((now, max(0, phase1[-1] if phase1 else d.recommendation.replicas)))
        if window > 0:
            recent = [r for s_, r in remembered if now - s_ < window]
            assert max(r for _, r in state.recommendations) == max(recent)
            if new < cur:
                assert new >= min(cur, max(recent))
        # the cooldown
        if new != cur:
            direction = 1 if new > cur else -1
            if last_change is not None and now - last_change[0] < config.cooldown_s:
                assert direction == last_change[1], "reversal inside the cooldown"
            last_change = (now, direction)
        # the batch interval
        if d.batch_size != batch:
            assert last_batch is None or now - last_batch >= config.batch_change_interval_s
            last_batch = now
        cur, batch = new, d.batch_size


# --------------------------------------------------------------------------- wiring
def test_from_target_takes_the_bounds_from_the_config() -> None:
    target = TargetConfig(name="chat", deployment="vllm-chat", min_replicas=2, max_replicas=5,
                          batch_sizes=(64, 128), tune_batch_size=True)
    inp = GuardInput.from_target(target, time=NOW, replicas=3, ready_replicas=3,
                                 batch_size=64, recommendation=Recommendation(9, 96),
                                 data_ok=True, anomalies=None, paused=False)
    d, _ = apply_guardrails(inp, QUIET, S())
    assert (inp.target, inp.min_replicas, inp.max_replicas) == ("chat", 2, 5)
    assert (d.replicas, d.batch_size, d.rules) == (5, 64, ("max_replicas", "batch_not_allowed"))


def test_gpus_available_for_subtracts_the_other_targets() -> None:
    assert gpus_available_for(GuardrailsConfig(), 12) is None
    assert gpus_available_for(GuardrailsConfig(gpu_budget=16), 12) == 4
    assert gpus_available_for(GuardrailsConfig(gpu_budget=16), 20) == -4


@pytest.mark.parametrize("bad", [
    dict(min_replicas=5, max_replicas=4), dict(replicas=-1), dict(gpus_per_replica=0),
    dict(batch_sizes=()), dict(batch_size=0), dict(time=float("nan")), dict(rl_floor=-1),
])
def test_impossible_input_is_a_caller_bug(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="GuardInput"):
        make(**bad)


@pytest.mark.parametrize("bad", [
    dict(last_scale_direction=2, last_scale_time=1.0), dict(last_scale_time=1.0),
    dict(consecutive_failures=-1), dict(recommendations=((1.0, -1),)),
    dict(last_batch_change_time=float("inf")),
])
def test_impossible_state_is_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GuardrailState(**bad)


def test_a_tick_with_misses_holds_a_scale_down_for_itself_alone() -> None:
    # The stabilization window remembers the policy's value, not the hold: the next clean
    # tick scales down, however long the window.
    config = cfg(scale_down_stabilization_s=300)
    state = S(recommendations=((NOW - 400, 4),))
    d1, state = apply_guardrails(make(3, slo_attainment=0.9), config, state)
    assert d1.replicas == 4 and d1.rules == ("slo_misses",)
    d2, _ = apply_guardrails(dataclasses.replace(make(3, slo_attainment=1.0), time=NOW + 15),
                             config, state)
    assert d2.replicas == 3


def test_rule_names_are_stable() -> None:
    # they are Prometheus label values and Event text: renaming one breaks dashboards
    assert REPLICA_RULES == (
        "data_hold", "fallback", "rl_floor", "anomaly_freeze", "min_replicas",
        "max_replicas", "gpu_budget", "scale_down_stabilization", "cooldown", "max_step_up",
        "max_step_down", "unverified_telemetry", "slo_misses", "paused")
    assert BATCH_RULES == (
        "batch_tuning_disabled", "batch_not_allowed", "batch_data_hold", "batch_anomaly",
        "batch_min_ready", "batch_interval", "batch_paused")
