"""KEDA's ScaledObject (Prometheus trigger on the vLLM queue) on top of the HPA engine."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiops.errors import InputError
from aiops.policy import make_policy
from aiops.policy.base import PolicyContext, PolicyInput, PolicySpec
from aiops.policy.hpa import HpaEngine
from aiops.policy.keda import KEDA_QUERY, KedaPolicy, KedaState
from aiops.types import Recommendation, Snapshot

CTX = PolicyContext(min_replicas=1, max_replicas=50, interval_s=15.0)


def snap(t: float, replicas: int, waiting: float, *, ready: int | None = None,
         starting: int = 0) -> Snapshot:
    return Snapshot(
        time=t, replicas=replicas, ready_replicas=replicas if ready is None else ready,
        batch_size=32, requests_running=8.0 * replicas, requests_waiting=waiting,
        kv_cache_usage=0.5, arrival_rate=1.0, prompt_tokens_rate=100.0,
        generation_tokens_rate=100.0, starting_replicas=starting)


def keda(text: str = "keda", ctx: PolicyContext = CTX) -> KedaPolicy:
    policy = make_policy(PolicySpec.parse(text), ctx)
    assert isinstance(policy, KedaPolicy)
    return policy


def run(policy: KedaPolicy, waiting: Sequence[float], *, start: int,
        step: float = 15.0) -> list[Recommendation]:
    """One queue length per tick; the Deployment follows each recommendation at once."""
    state = policy.initial_state()
    replicas, out = start, []
    for i, w in enumerate(waiting):
        rec, state = policy.decide(PolicyInput(snap(i * step, replicas, w), CTX), state)
        out.append(rec)
        replicas = rec.replicas
    return out


def test_average_value_target_is_ceil_of_total_over_threshold() -> None:
    policy = keda()
    rec, _ = policy.decide(PolicyInput(snap(0.0, 2, 45.0), CTX), policy.initial_state())
    assert rec.replicas == 5  # ceil(45 / 10); 45 / (10 * 2) = 2.25 is beyond the tolerance
    assert KEDA_QUERY in rec.reason
    assert rec.reason.endswith("2 → 5")
    assert rec.details["metric_total"] == 45.0
    assert rec.details["ratio"] == pytest.approx(2.25)


def test_tolerance_is_judged_per_existing_pod() -> None:
    policy = keda()
    # 21 over 2 pods: ratio 1.05, within tolerance -> no change (ceil(2.1) would be 3).
    rec, _ = policy.decide(PolicyInput(snap(0.0, 2, 21.0), CTX), policy.initial_state())
    assert rec.replicas == 2
    assert "within tolerance" in rec.reason
    # The divisor is every pod that exists (status.replicas), starting ones included:
    # 52 over 5 pods (2 ready + 3 starting) is ratio 1.04 -> hold; over the 2 ready pods it
    # would have been ratio 2.6 -> ceil(5.2) = 6.
    s = snap(0.0, 5, 52.0, ready=2, starting=3)
    rec, _ = policy.decide(PolicyInput(s, CTX), policy.initial_state())
    assert rec.replicas == 5
    assert rec.details["status_replicas"] == 5


def test_threshold_parameter() -> None:
    policy = keda("keda:threshold=4")
    rec, _ = policy.decide(PolicyInput(snap(0.0, 2, 20.0), CTX), policy.initial_state())
    assert rec.replicas == 5


def test_polling_interval_holds_the_last_polled_value_between_polls() -> None:
    policy = keda("keda:cached=1")
    recs = run(policy, [45.0, 100.0, 100.0, 100.0], start=2)
    # t=0 poll 45 -> 5. t=15: the queue is 100 but the HPA still sees 45 (45 / 50 = 0.9,
    # within tolerance). t=30 polls 100 -> 10.
    assert [r.replicas for r in recs] == [5, 5, 10, 10]
    assert "polled 15 s ago" in recs[1].reason
    assert recs[1].details["metric_total"] == 45.0
    assert recs[1].details["poll_age_s"] == 15.0
    # Without cached metrics the HPA reads the trigger at every sync (KEDA's default).
    recs = run(keda("keda:cached=0"), [45.0, 100.0, 100.0, 100.0], start=2)
    assert [r.replicas for r in recs] == [5, 10, 10, 10]
    # A longer polling interval holds longer.
    recs = run(keda("keda:polling_interval=60,cached=1"), [45.0, 100.0, 100.0, 100.0, 100.0],
               start=2)
    assert [r.replicas for r in recs] == [5, 5, 5, 5, 10]


def test_hpa_sync_period_still_applies() -> None:
    policy = keda()
    state = policy.initial_state()
    rec, state = policy.decide(PolicyInput(snap(0.0, 2, 45.0), CTX), state)
    assert rec.replicas == 5
    rec, state = policy.decide(PolicyInput(snap(5.0, 5, 400.0), CTX), state)
    assert rec.replicas == 5 and "next sync not due" in rec.reason


def test_missing_metric_holds_until_the_next_poll() -> None:
    policy = keda("keda:cached=1")
    recs = run(policy, [math.nan, 45.0, 45.0], start=2)
    # t=0 NaN: hold. t=15 the queue is back but the last poll failed: still hold. t=30 polls.
    assert [r.replicas for r in recs] == [2, 2, 5]
    assert "failed" in recs[0].reason
    recs = run(keda(), [-1.0, math.inf], start=3)
    assert [r.replicas for r in recs] == [3, 3]


def test_scale_down_goes_through_the_hpa_stabilization_window() -> None:
    # 60 queued on 6 pods is on target; then the queue empties. The KEDA-made HPA keeps the
    # highest recommendation of the last 300 s, then drops to minReplicas at once.
    waiting = [60.0] * 3 + [0.0] * 24
    recs = run(keda("keda:cached=1"), waiting, start=6)
    by_time = {i * 15: r for i, r in enumerate(recs)}
    # The last poll of 60 is at t=30; the HPA saw it at t=30 and t=45 (cached).
    assert all(by_time[t].replicas == 6 for t in range(0, 345, 15))
    assert "scale-down stabilized" in by_time[60].reason
    assert by_time[345].replicas == 1
    assert by_time[345].reason.endswith("6 → 1")


def test_behavior_parameters_reach_the_hpa() -> None:
    recs = run(keda("keda:up_pods=1,up_percent=0"), [45.0, 45.0], start=2)
    assert [r.replicas for r in recs] == [3, 4]
    assert "scale-up limited to 3 by behavior" in recs[0].reason
    assert isinstance(keda().engine, HpaEngine)


# --- activation and cooldown -----------------------------------------------------------


def test_min_zero_scales_to_zero_after_the_cooldown() -> None:
    # Active until the poll at t=0 (20 queued on 2 pods = on target), idle from t=30 on.
    waiting = [20.0, 20.0] + [0.0] * 30
    recs = run(keda("keda:min=0"), waiting, start=2)
    by_time = {i * 15: r for i, r in enumerate(recs)}
    # Last active poll at t=0; the first poll with 300 s of inactivity is t=300.
    assert all(by_time[t].replicas == 2 for t in range(0, 300, 15))
    assert by_time[300].replicas == 0
    assert "cooldown 300 s" in by_time[300].reason
    assert by_time[300].reason.endswith("2 → 0")
    # At zero it stays at zero while nothing is queued.
    assert all(r.replicas == 0 for r in recs[20:])


def test_cooldown_parameter() -> None:
    recs = run(keda("keda:min=0,cooldown=60"), [20.0, 0.0, 0.0, 0.0, 0.0, 0.0], start=2)
    assert [r.replicas for r in recs] == [2, 2, 2, 2, 0, 0]


def test_min_one_never_scales_to_zero() -> None:
    recs = run(keda(), [20.0] + [0.0] * 40, start=2)
    assert min(r.replicas for r in recs) == 1


def test_activation_from_zero() -> None:
    policy = keda("keda:min=0")
    rec, _ = policy.decide(PolicyInput(snap(0.0, 0, 3.0, ready=0), CTX), policy.initial_state())
    assert rec.replicas == 1
    assert "activate" in rec.reason
    rec, _ = policy.decide(PolicyInput(snap(0.0, 0, 0.0, ready=0), CTX), policy.initial_state())
    assert rec.replicas == 0
    # Below the activation threshold the target stays at zero, and one that is running is
    # scaled to zero at once when no trigger was ever active (no LastActiveTime yet).
    policy = keda("keda:min=0,activation_threshold=5")
    rec, _ = policy.decide(PolicyInput(snap(0.0, 0, 3.0, ready=0), CTX), policy.initial_state())
    assert rec.replicas == 0
    rec, _ = policy.decide(PolicyInput(snap(0.0, 2, 3.0), CTX), policy.initial_state())
    assert rec.replicas == 0 and "never active" in rec.reason
    # A failed query never scales anything to or from zero.
    policy = keda("keda:min=0")
    rec, _ = policy.decide(PolicyInput(snap(0.0, 2, math.nan), CTX), policy.initial_state())
    assert rec.replicas == 2


def test_activation_only_at_polls() -> None:
    policy = keda("keda:min=0")
    state = policy.initial_state()
    rec, state = policy.decide(PolicyInput(snap(0.0, 0, 0.0, ready=0), CTX), state)
    assert rec.replicas == 0
    rec, state = policy.decide(PolicyInput(snap(15.0, 0, 50.0, ready=0), CTX), state)
    assert rec.replicas == 0  # the queue filled between polls
    rec, state = policy.decide(PolicyInput(snap(30.0, 0, 50.0, ready=0), CTX), state)
    assert rec.replicas == 1


# --- spec, state, properties -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("keda:threshold=0", "threshold"),
        ("keda:threshold=ten", "threshold"),
        ("keda:polling_interval=0", "polling_interval"),
        ("keda:cooldown=-5", "cooldown"),
        ("keda:activation_threshold=-1", "activation_threshold"),
        ("keda:cached=2", "cached"),
        ("keda:min=3,max=2", "min=3"),
        ("keda:min=-1", "min"),
        ("keda:down_select=Never", "down_select"),
        ("keda:query=foo", "query"),
    ],
)
def test_bad_specs_name_the_key(text: str, named: str) -> None:
    with pytest.raises(InputError) as err:
        make_policy(PolicySpec.parse(text), CTX)
    assert named in str(err.value)
    assert text in str(err.value)


def test_spec_defaults() -> None:
    policy = keda("keda", PolicyContext(min_replicas=2, max_replicas=9))
    assert (policy.threshold, policy.activation_threshold) == (10.0, 0.0)
    assert (policy.polling_interval_s, policy.cooldown_s) == (30.0, 300.0)
    assert (policy.min_replica_count, policy.max_replica_count) == (2, 9)
    assert (policy.engine.min_replicas, policy.engine.max_replicas) == (2, 9)
    assert not policy.use_cached_metrics  # stock KEDA: useCachedMetrics false
    policy = keda("keda:min=0")
    assert policy.min_replica_count == 0 and policy.engine.min_replicas == 1


def test_state_is_frozen_and_serializable() -> None:
    policy = keda()
    state = policy.initial_state()
    replicas = 2
    for i, w in enumerate([45.0, 80.0, 0.0, 0.0]):
        rec, state = policy.decide(PolicyInput(snap(i * 15.0, replicas, w), CTX), state)
        replicas = rec.replicas
    assert isinstance(state, KedaState)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.last_poll = 0.0  # type: ignore[misc]
    json.dumps(dataclasses.asdict(state))


@settings(max_examples=120, deadline=None)
@given(
    lo=st.integers(0, 5),
    span=st.integers(0, 30),
    threshold=st.floats(0.5, 50.0),
    start=st.integers(0, 40),
    waiting=st.lists(st.one_of(st.floats(0.0, 2000.0), st.just(math.nan)), min_size=1,
                     max_size=30),
)
def test_property_result_within_bounds(lo: int, span: int, threshold: float, start: int,
                                       waiting: list[float]) -> None:
    hi = max(lo, 1) + span
    policy = keda(f"keda:min={lo},max={hi},threshold={threshold}")
    state, replicas = policy.initial_state(), min(max(start, lo), hi)
    for i, w in enumerate(waiting):
        s = snap(i * 15.0, replicas, w, ready=replicas)
        rec, state = policy.decide(PolicyInput(s, CTX), state)
        assert lo <= rec.replicas <= hi
        replicas = rec.replicas
