"""The HPA policy against the Kubernetes controller's documented behaviour.

Worked examples come from the "Horizontal Pod Autoscaling" documentation page (algorithm
details and configurable scaling behavior); the rest pin the controller's rules that the
page describes in words (stabilization windows, policy periods, selectPolicy, bounds).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiops.errors import InputError
from aiops.policy import known_policies, make_policy
from aiops.policy.base import PolicyContext, PolicyInput, PolicySpec
from aiops.policy.hpa import (
    CLOCK_SLACK_S,
    HpaEngine,
    HpaPolicy,
    HpaState,
    external_average_proposal,
    pods_metric_proposal,
)
from aiops.policy.keda import KedaPolicy
from aiops.policy.static import StaticPolicy
from aiops.types import Recommendation, Snapshot

CTX = PolicyContext(min_replicas=1, max_replicas=100, interval_s=15.0)
BATCH = 10


def snap(t: float, replicas: int, *, slots: float = 0.0, waiting: float = 0.0,
         ready: int | None = None, starting: int = 0, kv: float = 0.5,
         batch: int = BATCH) -> Snapshot:
    """A snapshot where ``slots`` requests are running (plus ``waiting`` queued)."""
    return Snapshot(
        time=t, replicas=replicas, ready_replicas=replicas if ready is None else ready,
        batch_size=batch, requests_running=slots, requests_waiting=waiting,
        kv_cache_usage=kv, arrival_rate=1.0, prompt_tokens_rate=100.0,
        generation_tokens_rate=100.0, starting_replicas=starting)


def at_usage(t: float, replicas: int, usage: float) -> Snapshot:
    """A snapshot whose ``running`` metric (batch-slot share per ready pod) is ``usage``."""
    return snap(t, replicas, slots=usage * replicas * BATCH)


def hpa(text: str = "hpa", ctx: PolicyContext = CTX) -> HpaPolicy:
    policy = make_policy(PolicySpec.parse(text), ctx)
    assert isinstance(policy, HpaPolicy)
    return policy


def run(policy: HpaPolicy, usages: Sequence[float], *, start: int, step: float = 15.0,
        t0: float = 0.0) -> list[Recommendation]:
    """Drive the policy with one usage per tick; the Deployment follows each recommendation."""
    state = policy.initial_state()
    replicas, out = start, []
    for i, usage in enumerate(usages):
        rec, state = policy.decide(PolicyInput(at_usage(t0 + i * step, replicas, usage), CTX),
                                   state)
        out.append(rec)
        replicas = rec.replicas
    return out


# --- the replica calculator: documentation examples ------------------------------------


@pytest.mark.parametrize(
    ("current_value", "desired_value", "replicas", "expected"),
    [
        (0.200, 0.100, 4, 8),  # 200m vs 100m: ratio 2.0, double
        (0.050, 0.100, 4, 2),  # 50m vs 100m: ratio 0.5, halve
        (0.105, 0.100, 4, 4),  # ratio 1.05: within the 0.1 tolerance, no change
        (0.095, 0.100, 4, 4),  # ratio 0.95: within, no change
        (0.111, 0.100, 4, 5),  # ratio 1.11: ceil(4.44)
        (0.085, 0.100, 10, 9),  # ratio 0.85: ceil(8.5)
    ],
)
def test_documented_ratio_examples(current_value: float, desired_value: float, replicas: int,
                                   expected: int) -> None:
    # metric=waiting is an AverageValue target on a per-pod metric, like "100m" in the docs.
    policy = hpa(f"hpa:metric=waiting,target={desired_value}")
    s = snap(0.0, replicas, waiting=current_value * replicas)
    rec, _ = policy.decide(PolicyInput(s, CTX), policy.initial_state())
    assert rec.replicas == expected
    assert rec.batch_size is None
    if expected == replicas:
        assert "within tolerance" in rec.reason


def test_running_metric_scales_on_batch_slot_share_with_reason() -> None:
    policy = hpa()
    rec, _ = policy.decide(PolicyInput(at_usage(0.0, 4, 0.93), CTX), policy.initial_state())
    # 0.93 / 0.70 = 1.33 -> ceil(4 * 1.33) = 6
    assert rec.replicas == 6
    assert "running 0.93 > target 0.70" in rec.reason
    assert rec.reason.endswith("4 → 6")
    assert rec.details["metric_value"] == pytest.approx(0.93)
    assert rec.details["ratio"] == pytest.approx(0.93 / 0.7)
    assert rec.details["metric_replicas"] == 6
    assert rec.details["desired_replicas"] == 6


def test_running_metric_counts_waiting_requests() -> None:
    policy = hpa()
    # 20 running + 36 waiting on 4 pods of batch 10: 1.4 slots per slot, ratio 2.0 -> 8
    s = snap(0.0, 4, slots=20.0, waiting=36.0)
    rec, _ = policy.decide(PolicyInput(s, CTX), policy.initial_state())
    assert rec.replicas == 8


def test_kv_metric() -> None:
    policy = hpa("hpa:metric=kv")
    rec, _ = policy.decide(PolicyInput(snap(0.0, 3, kv=0.95), CTX), policy.initial_state())
    assert rec.replicas == math.ceil(3 * 0.95 / 0.7)  # 5
    rec, _ = policy.decide(PolicyInput(snap(0.0, 3, kv=0.72), CTX), policy.initial_state())
    assert rec.replicas == 3


@pytest.mark.parametrize(
    "s",
    [
        snap(0.0, 4, slots=math.nan),
        snap(0.0, 4, waiting=math.inf),
        snap(0.0, 4, slots=10.0, batch=0),
    ],
    ids=["nan", "inf", "no-batch-size"],
)
def test_missing_metric_holds_and_records_nothing(s: Snapshot) -> None:
    policy = hpa()
    rec, state = policy.decide(PolicyInput(s, CTX), policy.initial_state())
    assert rec.replicas == 4
    assert "missing" in rec.reason
    assert state.recommendations == ()
    assert state.pending is None


def test_missing_kv_holds() -> None:
    policy = hpa("hpa:metric=kv")
    rec, _ = policy.decide(PolicyInput(snap(0.0, 4, kv=math.nan), CTX), policy.initial_state())
    assert rec.replicas == 4


def test_not_ready_pods_do_not_cause_a_scale_down_during_a_scale_up() -> None:
    # 4 asked for, 2 ready at ratio 1.5 (3 pods' worth of work), 2 still loading weights.
    # Over ready pods only the proposal would be ceil(1.5 * 2) = 3 < 4: the controller
    # counts the starting pods as idle, sees the direction flip and holds.
    policy = hpa()
    s = snap(0.0, 4, slots=1.05 * 2 * BATCH, ready=2, starting=2)
    rec, _ = policy.decide(PolicyInput(s, CTX), policy.initial_state())
    assert rec.replicas == 4
    assert "not-ready" in rec.reason


def test_not_ready_pods_count_as_zero_on_a_scale_up() -> None:
    # 2 ready pods at ratio 4 (8 pods' worth of work), 2 starting: recounted over 4 pods
    # the ratio is 2.0, still a scale-up, to ceil(2.0 * 4) = 8.
    policy = hpa()
    s = snap(0.0, 4, slots=2.8 * 2 * BATCH, ready=2, starting=2)
    rec, _ = policy.decide(PolicyInput(s, CTX), policy.initial_state())
    assert rec.replicas == 8
    assert "2 not-ready pod(s) counted as 0 (ratio 2.00)" in rec.reason


def test_no_ready_pods_average_over_spec_replicas() -> None:
    policy = hpa()
    s = snap(0.0, 2, slots=0.0, waiting=2 * 0.7 * 2 * BATCH, ready=0, starting=2)
    rec, _ = policy.decide(PolicyInput(s, CTX), policy.initial_state())
    assert rec.replicas == 4  # ratio 2 over the 2 asked-for pods


def test_calculator_functions_directly() -> None:
    p = pods_metric_proposal(8.0, 1.0, current_replicas=4, ready_pods=4)
    assert p is not None and p.replicas == 8 and p.ratio == pytest.approx(2.0)
    assert pods_metric_proposal(math.nan, 1.0, current_replicas=4, ready_pods=4) is None
    assert pods_metric_proposal(1.0, 1.0, current_replicas=4, ready_pods=0) is None
    e = external_average_proposal(45.0, 10.0, status_replicas=2)
    assert e is not None and e.replicas == 5
    assert external_average_proposal(-1.0, 10.0, status_replicas=2) is None
    # Float dust: 0.1 * 3 / 3 / 0.1 * 3 is 3.000000000000001; that is 3 pods, not 4.
    p = pods_metric_proposal(0.1 * 3, 0.1, current_replicas=2, ready_pods=3, tolerance=0.0)
    assert p is not None and p.replicas == 3


# --- behavior: scale-up ----------------------------------------------------------------


def test_default_scale_up_is_max_of_4_pods_and_100_percent_per_15_s() -> None:
    recs = run(hpa(), [50.0] * 6, start=1)
    assert [r.replicas for r in recs] == [5, 10, 20, 40, 80, 100]
    assert "scale-up limited to 5 by behavior" in recs[0].reason
    assert recs[0].details["scale_up_limit"] == 5
    assert "capped at maxReplicas 100" in recs[-1].reason


def test_scale_up_limit_counts_the_replicas_added_within_the_period() -> None:
    policy = hpa("hpa:up_pods=2,up_percent=0,up_period=60")
    recs = run(policy, [50.0] * 9, start=1)
    # +2 at t=0; the period still holds that event until t=60; +2 again; and so on.
    assert [r.replicas for r in recs] == [3, 3, 3, 3, 5, 5, 5, 5, 7]


def test_scale_up_percent_rounds_up() -> None:
    policy = hpa("hpa:up_pods=0,up_percent=10")
    recs = run(policy, [50.0] * 3, start=1)
    assert [r.replicas for r in recs] == [2, 3, 4]  # ceil(1.1), ceil(2.2), ceil(3.3)


def test_select_min_takes_the_smaller_limit_and_disabled_forbids_scaling() -> None:
    recs = run(hpa("hpa:up_select=Min"), [50.0] * 3, start=2)
    assert [r.replicas for r in recs] == [4, 8, 12]  # min(2+4, 4), min(8, 8), min(12, 16)
    recs = run(hpa("hpa:up_select=disabled"), [50.0] * 3, start=2)
    assert [r.replicas for r in recs] == [2, 2, 2]
    recs = run(hpa("hpa:down_select=Disabled,down_window=0"), [0.0] * 3, start=5)
    assert [r.replicas for r in recs] == [5, 5, 5]


def test_scale_up_stabilization_window_applies_the_lowest_recent_recommendation() -> None:
    policy = hpa("hpa:up_window=60")
    # A one-tick spike does not scale up; a sustained rise scales up once it filled the window
    # with higher recommendations (the lowest of the window rises).
    usages = [0.7, 2.1, 0.7, 1.4, 1.4, 1.4, 1.4, 1.4]
    recs = run(policy, usages, start=2)
    # t=90 is the first sync whose 60 s window no longer holds a recommendation of 2.
    assert [r.replicas for r in recs] == [2, 2, 2, 2, 2, 2, 4, 4]
    assert "scale-up stabilized" in recs[1].reason


def test_scale_events_record_what_was_applied_not_what_was_asked() -> None:
    policy = hpa("hpa:up_pods=4,up_percent=0,up_period=60")
    state = policy.initial_state()
    rec, state = policy.decide(PolicyInput(at_usage(0.0, 1, 50.0), CTX), state)
    assert rec.replicas == 5
    # A guardrail let only 3 through: the period has seen +2, so 2 more are allowed.
    rec, state = policy.decide(PolicyInput(at_usage(15.0, 3, 50.0), CTX), state)
    assert state.scale_up_events[0].change == 2
    assert rec.replicas == 5
    # Dry run: spec.replicas never moves, so no event is stored and the limit stays +4.
    state = policy.initial_state()
    for t in (0.0, 15.0, 30.0):
        rec, state = policy.decide(PolicyInput(at_usage(t, 1, 50.0), CTX), state)
        assert rec.replicas == 5
    assert state.scale_up_events == ()


def test_scale_down_events_raise_the_period_start_of_a_scale_up() -> None:
    # Down 10 -> 6 at t=0 (window 0), hold at t=15, then load returns at t=30: the 60 s Pods
    # policy measures from the start of its period (10 replicas), so 6 -> 10 + 2 = 12 is
    # allowed at once, although the scale-down policy's own period (15 s) is over.
    policy = hpa("hpa:down_window=0,up_pods=2,up_percent=0,up_period=60")
    recs = run(policy, [0.42, 0.7, 50.0], start=10)
    assert [r.replicas for r in recs] == [6, 6, 12]


# --- behavior: scale-down --------------------------------------------------------------


def test_scale_down_stabilization_keeps_the_max_of_the_last_300_s() -> None:
    # 6 pods at target, then the load drops to a third for good.
    usages = [0.7] * 5 + [0.7 / 3] * 30
    recs = run(hpa(), usages, start=6)
    replicas = [r.replicas for r in recs]
    last_high_t = 4 * 15.0  # the last tick that recommended 6
    for i, r in enumerate(recs):
        t = i * 15.0
        if t < last_high_t + 300.0:
            assert r.replicas == 6, (t, replicas)
        else:
            assert r.replicas == 2, (t, replicas)
    drop = recs[5]
    assert "scale-down stabilized: max recommendation in 300 s is 6" in drop.reason
    assert drop.details["stabilized_replicas"] == 6
    assert recs[24].reason.endswith("6 → 2")  # t = 360 = 60 + 300


def test_scale_down_stabilization_steps_through_the_window_maximum() -> None:
    # Recommendations 6 (t=0), 4 (t=15), then 2: after 300 s the 6 leaves the window and
    # the 4 still holds for one more tick.
    usages = [0.7, 0.7 * 4 / 6] + [0.7 * 2 / 6] * 22
    recs = run(hpa(), usages, start=6)
    by_time = {i * 15: r.replicas for i, r in enumerate(recs)}
    assert by_time[285] == 6
    assert by_time[300] == 4
    assert by_time[315] == 2


def test_default_scale_down_percent_100_goes_all_the_way_at_once() -> None:
    recs = run(hpa("hpa:down_window=0"), [0.0], start=40)
    assert recs[0].replicas == 1
    assert recs[0].details["scale_down_limit"] == 0
    assert "held at minReplicas 1" in recs[0].reason


def test_scale_down_percent_and_pods_policies() -> None:
    recs = run(hpa("hpa:down_window=0,down_percent=50"), [0.0] * 4, start=8)
    assert [r.replicas for r in recs] == [4, 2, 1, 1]
    assert "scale-down limited to 4 by behavior" in recs[0].reason
    recs = run(hpa("hpa:down_window=0,down_percent=0,down_pods=1,down_period=60"), [0.0] * 6,
               start=10)
    assert [r.replicas for r in recs] == [9, 9, 9, 9, 8, 8]
    # Truncation toward zero, as the controller: 7 * 0.7 = 4.9 -> 4
    recs = run(hpa("hpa:down_window=0,down_percent=30"), [0.0], start=7)
    assert recs[0].replicas == 4


# --- bounds, sync period ---------------------------------------------------------------


def test_bounds() -> None:
    ctx = PolicyContext(min_replicas=2, max_replicas=6)
    policy = hpa("hpa", ctx)
    state = policy.initial_state()
    rec, _ = policy.decide(PolicyInput(at_usage(0.0, 5, 5.0), ctx), state)
    assert rec.replicas == 6 and "capped at maxReplicas 6" in rec.reason
    # Outside the bounds the controller corrects without looking at the metric (even NaN).
    rec, _ = policy.decide(PolicyInput(snap(0.0, 9, slots=math.nan), ctx), state)
    assert rec.replicas == 6 and "above maxReplicas" in rec.reason
    rec, _ = policy.decide(PolicyInput(snap(0.0, 1, slots=math.nan), ctx), state)
    assert rec.replicas == 2 and "below minReplicas" in rec.reason
    # Scaled to zero by hand: the HPA leaves it alone.
    rec, _ = policy.decide(PolicyInput(snap(0.0, 0, slots=50.0, ready=0), ctx), state)
    assert rec.replicas == 0 and "autoscaling is off" in rec.reason
    # Spec min/max override the context.
    policy = hpa("hpa:min=3,max=4", ctx)
    rec, _ = policy.decide(PolicyInput(at_usage(0.0, 3, 5.0), ctx), policy.initial_state())
    assert rec.replicas == 4


def test_sync_period_gates_recomputation() -> None:
    policy = hpa()
    state = policy.initial_state()
    replicas, seen = 1, []
    for t in (0.0, 5.0, 10.0, 14.9, 15.0, 20.0, 29.8, 45.0):
        rec, state = policy.decide(PolicyInput(at_usage(t, replicas, 50.0), CTX), state)
        seen.append((t, rec.replicas, "next sync not due" in rec.reason))
        replicas = rec.replicas
    assert seen == [
        (0.0, 5, False), (5.0, 5, True), (10.0, 5, True),
        (14.9, 10, False),  # scheduler jitter: within CLOCK_SLACK_S of the period counts
        (15.0, 10, True), (20.0, 10, True),
        (29.8, 20, False), (45.0, 40, False),
    ]
    assert CLOCK_SLACK_S <= 0.5
    recs = run(hpa("hpa:sync_period=30"), [50.0] * 4, start=1)
    assert [r.replicas for r in recs] == [5, 5, 10, 10]


# --- spec parsing, registry, state -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("hpa:metric=cpu", "metric"),
        ("hpa:target=0", "target"),
        ("hpa:target=abc", "target"),
        ("hpa:tolerance=2", "tolerance"),
        ("hpa:sync_period=-1", "sync_period"),
        ("hpa:min=5,max=2", "min=5"),
        ("hpa:min=0", "min"),
        ("hpa:max=2.5", "max"),
        ("hpa:up_select=Sometimes", "up_select"),
        ("hpa:up_pods=0,up_percent=0", "up_pods"),
        ("hpa:up_period=0", "up_period"),
        ("hpa:down_window=4000", "down_window"),
        ("hpa:metric=waiting", "target"),
        ("hpa:bogus=1", "bogus"),
    ],
)
def test_bad_specs_name_the_key(text: str, named: str) -> None:
    with pytest.raises(InputError) as err:
        make_policy(PolicySpec.parse(text), CTX)
    assert named in str(err.value)
    assert text in str(err.value)


def test_spec_defaults_come_from_the_context() -> None:
    policy = hpa("hpa", PolicyContext(min_replicas=2, max_replicas=7))
    assert (policy.engine.min_replicas, policy.engine.max_replicas) == (2, 7)
    assert (policy.metric, policy.target, policy.tolerance) == ("running", 0.7, 0.1)
    assert policy.engine.sync_period_s == 15.0
    assert policy.engine.behavior.scale_down.stabilization_window_s == 300.0
    policy = hpa("hpa:metric=waiting,target=5,tolerance=0.2,up_window=30,down_select=Min")
    assert (policy.metric, policy.target, policy.tolerance) == ("waiting", 5.0, 0.2)
    assert policy.engine.behavior.scale_up.stabilization_window_s == 30.0
    assert policy.engine.behavior.scale_down.select_policy == "Min"


def test_registry_builds_every_known_policy_and_rejects_others() -> None:
    assert {"hpa", "keda", "static"} <= set(known_policies())
    assert isinstance(make_policy(PolicySpec.parse("keda"), CTX), KedaPolicy)
    with pytest.raises(InputError) as err:
        make_policy(PolicySpec.parse("magic:x=1"), CTX)
    message = str(err.value)
    assert "magic" in message
    for name in known_policies():
        assert name in message


def test_static_policy() -> None:
    s = snap(0.0, 3)
    policy = make_policy(PolicySpec.parse("static"), CTX, peak_replicas=12)
    assert isinstance(policy, StaticPolicy)
    rec, _ = policy.decide(PolicyInput(s, CTX), policy.initial_state())
    assert (rec.replicas, rec.batch_size) == (12, None)
    assert "3 → 12" in rec.reason
    policy = make_policy(PolicySpec.parse("static"), CTX)
    assert policy.decide(PolicyInput(s, CTX), policy.initial_state())[0].replicas == 100
    policy = make_policy(PolicySpec.parse("static:replicas=4"), CTX, peak_replicas=12)
    assert policy.decide(PolicyInput(s, CTX), policy.initial_state())[0].replicas == 4
    for bad in ("static:replicas=-1", "static:replicas=x", "static:size=3"):
        with pytest.raises(InputError):
            make_policy(PolicySpec.parse(bad), CTX)
    with pytest.raises(InputError, match="peak_replicas"):
        make_policy(PolicySpec.parse("static"), CTX, peak_replicas="many")


def test_state_is_immutable_serializable_and_not_mutated() -> None:
    policy = hpa()
    state = policy.initial_state()
    replicas = 1
    for i in range(8):
        before, inp = state, PolicyInput(at_usage(i * 15.0, replicas, 3.0), CTX)
        copies = copy.deepcopy((before, inp))
        rec, state = policy.decide(inp, state)
        assert (before, inp) == copies  # neither the old state nor the input changed
        replicas = rec.replicas
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.last_sync = 1.0  # type: ignore[misc]
    assert isinstance(state.recommendations, tuple)
    assert isinstance(state.scale_up_events, tuple)
    json.dumps(dataclasses.asdict(state))
    # History is bounded by the windows and periods, not by the run length.
    assert len(state.recommendations) <= 300 / 15 + 1
    # Replaying the same inputs from the same state gives the same answer.
    again = policy.decide(PolicyInput(at_usage(8 * 15.0, replicas, 3.0), CTX), state)
    assert again == policy.decide(PolicyInput(at_usage(8 * 15.0, replicas, 3.0), CTX), state)


# --- properties ------------------------------------------------------------------------

usage_values = st.one_of(st.floats(0.0, 20.0), st.just(math.nan))


@settings(max_examples=150, deadline=None)
@given(
    lo=st.integers(1, 10),
    span=st.integers(0, 40),
    start=st.integers(1, 80),
    usages=st.lists(usage_values, min_size=1, max_size=25),
    down_window=st.sampled_from([0, 60, 300]),
)
def test_property_result_within_bounds(lo: int, span: int, start: int, usages: list[float],
                                       down_window: int) -> None:
    hi = lo + span
    ctx = PolicyContext(min_replicas=lo, max_replicas=hi)
    policy = hpa(f"hpa:down_window={down_window}", ctx)
    state, replicas = policy.initial_state(), start
    for i, usage in enumerate(usages):
        rec, state = policy.decide(PolicyInput(at_usage(i * 15.0, replicas, usage), ctx), state)
        assert lo <= rec.replicas <= hi
        replicas = rec.replicas


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(1, 60),
    history=st.lists(st.floats(0.0, 10.0), max_size=25),
    target=st.floats(0.05, 5.0),
    metric=st.sampled_from(["running", "waiting"]),
)
def test_property_metric_at_target_changes_nothing(start: int, history: list[float],
                                                    target: float, metric: str) -> None:
    ctx = PolicyContext(min_replicas=1, max_replicas=200)
    policy = hpa(f"hpa:metric={metric},target={target}", ctx)
    state, replicas = policy.initial_state(), start
    t = 0.0
    for usage in history:  # any past: stabilization must not move an at-target target
        s = (at_usage(t, replicas, usage) if metric == "running"
             else snap(t, replicas, waiting=usage * replicas))
        rec, state = policy.decide(PolicyInput(s, ctx), state)
        replicas, t = rec.replicas, t + 15.0
    s = (at_usage(t, replicas, target) if metric == "running"
         else snap(t, replicas, waiting=target * replicas))
    rec, _ = policy.decide(PolicyInput(s, ctx), state)
    assert rec.replicas == replicas


@settings(max_examples=150, deadline=None)
@given(
    pods=st.integers(1, 6),
    period=st.sampled_from([15, 30, 60, 120]),
    gaps=st.lists(st.floats(5.0, 40.0), min_size=1, max_size=30),
    usages=st.lists(st.floats(0.0, 30.0), min_size=30, max_size=30),
    start=st.integers(1, 20),
)
def test_property_scale_up_never_exceeds_the_pods_limit_per_period(
        pods: int, period: int, gaps: list[float], usages: list[float], start: int) -> None:
    policy = hpa(f"hpa:up_pods={pods},up_percent=0,up_period={period},sync_period=1,"
                 "down_window=0")
    state, replicas, t = policy.initial_state(), start, 0.0
    history: list[tuple[float, int]] = []  # (time, change) of each applied decision
    for gap, usage in zip(gaps, usages, strict=False):
        t += gap
        rec, state = policy.decide(PolicyInput(at_usage(t, replicas, usage), CTX), state)
        history.append((t, rec.replicas - replicas))
        if rec.replicas > replicas:
            # Counted from the replicas at the start of the period: whatever was removed in
            # the period may come back on top of the policy's value.
            recent = [c for (ht, c) in history if t - ht < period - CLOCK_SLACK_S]
            added = sum(c for c in recent if c > 0)
            removed = -sum(c for c in recent if c < 0)
            assert added <= pods + removed
        replicas = rec.replicas


@settings(max_examples=150, deadline=None)
@given(start=st.integers(1, 50), usages=st.lists(st.floats(0.0, 50.0), min_size=1,
                                                   max_size=20))
def test_property_default_scale_up_at_most_doubles_or_adds_4_per_sync(
        start: int, usages: list[float]) -> None:
    policy = hpa("hpa:max=1000", PolicyContext(min_replicas=1, max_replicas=1000))
    state, replicas = policy.initial_state(), start
    for i, usage in enumerate(usages):
        rec, state = policy.decide(PolicyInput(at_usage(i * 15.0, replicas, usage), CTX),
                                   state)
        assert rec.replicas <= max(replicas + 4, 2 * replicas)
        replicas = rec.replicas


def test_engine_is_usable_on_its_own() -> None:
    engine = HpaEngine(min_replicas=1, max_replicas=10)
    outcome, state = engine.reconcile(0.0, 2, 9, HpaState())
    assert outcome.replicas == 6 and outcome.condition == "ScaleUpLimit"
    state = engine.observe(state, 6)
    assert state.scale_up_events[0].change == 4
    outcome, state = engine.reconcile(10.0, 6, None, state)
    assert outcome.replicas == 6 and outcome.condition == "NoMetric"
    # Still inside the 15 s period of the +4: no room for more (max(2 + 4, 2 * 2) = 6).
    assert engine.scale_up_limit(6, state, 10.0) == 6
    assert engine.scale_up_limit(6, state, 15.0) == 12  # period over: from 6
    with pytest.raises(InputError):
        HpaEngine(min_replicas=5, max_replicas=2)
