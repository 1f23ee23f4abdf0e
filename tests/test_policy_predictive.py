"""The predictive policy: forecast p90 one cold start ahead, never below the HPA by default."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiops.errors import InputError
from aiops.policy.base import Policy, PolicyContext, PolicyInput, PolicySpec
from aiops.policy.hpa import HpaPolicy
from aiops.policy.predictive import PredictivePolicy, PredictiveState, window_load
from aiops.types import Forecast, Snapshot

CTX = PolicyContext(min_replicas=1, max_replicas=64, interval_s=15.0, cold_start_s=90.0,
                    replica_capacity_rps=2.0)
BATCH = 32


def snap(t: float, replicas: int, usage: float = 0.7) -> Snapshot:
    """A steady target whose HPA metric (running / batch per pod) is ``usage``."""
    return Snapshot(time=t, replicas=replicas, ready_replicas=replicas, batch_size=BATCH,
                    requests_running=usage * BATCH * replicas, requests_waiting=0.0,
                    kv_cache_usage=0.5, arrival_rate=1.0, prompt_tokens_rate=0.0,
                    generation_tokens_rate=0.0)


def forecast(start: float, values: list[float] | np.ndarray, step: float = 15.0,
             spread: float = 0.2) -> Forecast:
    v = np.asarray(values, dtype=float)
    return Forecast(start=start, step=step, mean=v,
                    quantiles={0.1: v * (1 - spread), 0.5: v, 0.9: v * (1 + spread)},
                    model="test")


def policy(text: str = "predictive", ctx: PolicyContext = CTX) -> PredictivePolicy:
    return PredictivePolicy.from_spec(PolicySpec.parse(text), ctx)


def hpa_answer(inp: PolicyInput) -> int:
    hpa = HpaPolicy.from_spec(PolicySpec.parse("hpa"), inp.context)
    return hpa.decide(inp, hpa.initial_state())[0].replicas


def test_no_forecast_acts_as_the_hpa_and_says_so() -> None:
    p = policy()
    inp = PolicyInput(snapshot=snap(1000.0, 4, usage=1.4), context=CTX)
    rec, state = p.decide(inp, p.initial_state())
    assert rec.replicas == hpa_answer(inp) == 8
    assert "no forecast" in rec.reason and isinstance(state, PredictiveState)


def test_unknown_capacity_acts_as_the_hpa() -> None:
    ctx = dataclasses.replace(CTX, replica_capacity_rps=0.0)
    p = policy(ctx=ctx)
    inp = PolicyInput(snapshot=snap(0.0, 3), context=ctx, forecast=forecast(15, [50] * 20))
    rec, _ = p.decide(inp, p.initial_state())
    assert rec.replicas == hpa_answer(inp) and "capacity unknown" in rec.reason


def test_replicas_from_p90_in_the_cold_start_window() -> None:
    p = policy()  # headroom 0.9, quantile 0.9
    now = 1000.0
    values = np.full(20, 1.0)
    # steps cover [start + i*15, +15); the window is [now+90, now+105]
    values[6] = 9.0  # step 6 starts at now+90 (inside)
    inp = PolicyInput(snapshot=snap(now, 2), context=CTX, forecast=forecast(now, values))
    rec, state = p.decide(inp, p.initial_state())
    want = math.ceil(9.0 * 1.2 / (2.0 * 0.9))  # p90 = 10.8 req/s at 1.8 req/s per replica
    assert rec.replicas == want == 6
    assert rec.details["forecast_load_rps"] == pytest.approx(10.8)
    assert state.last_forecast_replicas == want
    assert "p90 load 10.80 req/s" in rec.reason and "above the HPA" in rec.reason


@pytest.mark.parametrize("spike_step", [0, 3, 5, 8, 15])
def test_load_outside_the_window_is_ignored(spike_step: int) -> None:
    p = policy()
    now = 1000.0
    values = np.full(20, 1.0)
    values[spike_step] = 50.0
    inp = PolicyInput(snapshot=snap(now, 2), context=CTX, forecast=forecast(now, values))
    rec, _ = p.decide(inp, p.initial_state())
    assert rec.details["forecast_load_rps"] == pytest.approx(1.2)
    assert rec.replicas == hpa_answer(inp) == 2


def test_forecast_that_ends_before_the_window_is_not_used() -> None:
    p = policy()
    inp = PolicyInput(snapshot=snap(1000.0, 2), context=CTX,
                      forecast=forecast(1000.0, [40.0] * 4))  # ends at now+60 s
    rec, _ = p.decide(inp, p.initial_state())
    assert rec.replicas == hpa_answer(inp) and "does not cover" in rec.reason
    assert window_load(forecast(1000.0, [1.0] * 4), 1000.0, 90.0, 15.0, 0.9) is None


def test_scale_in_allows_going_below_the_hpa() -> None:
    busy = snap(1000.0, 4, usage=1.4)  # the HPA wants 8
    fc = forecast(1000.0, [1.0] * 20)  # the forecast says 1 replica is enough
    default, _ = policy().decide(PolicyInput(busy, CTX, fc), policy().initial_state())
    p_in = policy("predictive:scale_in=true")
    scaled_in, _ = p_in.decide(PolicyInput(busy, CTX, fc), p_in.initial_state())
    assert default.replicas == 8
    assert scaled_in.replicas == 1 and "scale_in on" in scaled_in.reason


def test_bounds_are_respected() -> None:
    ctx = dataclasses.replace(CTX, max_replicas=5)
    p = policy(ctx=ctx)
    inp = PolicyInput(snapshot=snap(0.0, 2), context=ctx, forecast=forecast(0.0, [500.0] * 20))
    rec, _ = p.decide(inp, p.initial_state())
    assert rec.replicas == 5 and "bounded to 5" in rec.reason


@settings(max_examples=150, deadline=None)
@given(
    replicas=st.integers(1, 40),
    usage=st.floats(0.0, 3.0),
    loads=st.lists(st.floats(0.0, 200.0), min_size=1, max_size=30),
    offset=st.floats(-60.0, 60.0),
    capacity=st.floats(0.1, 20.0),
)
def test_never_below_the_hpa_by_default(replicas: int, usage: float, loads: list[float],
                                        offset: float, capacity: float) -> None:
    ctx = dataclasses.replace(CTX, replica_capacity_rps=capacity)
    p = policy(ctx=ctx)
    inp = PolicyInput(snapshot=snap(500.0, replicas, usage), context=ctx,
                      forecast=forecast(500.0 + offset, loads))
    rec, _ = p.decide(inp, p.initial_state())
    assert rec.replicas >= hpa_answer(inp)
    assert ctx.min_replicas <= rec.replicas <= ctx.max_replicas


def test_decide_is_pure_and_state_frozen() -> None:
    p = policy()
    inp = PolicyInput(snapshot=snap(1000.0, 2), context=CTX,
                      forecast=forecast(1000.0, [5.0] * 20))
    s0 = p.initial_state()
    a = p.decide(inp, s0)
    b = p.decide(inp, s0)
    assert a == b
    with pytest.raises(dataclasses.FrozenInstanceError):
        a[1].last_forecast_replicas = 3  # type: ignore[misc]


def test_from_spec() -> None:
    p = policy("predictive:headroom=0.8,quantile=0.5,hpa.target=0.5")
    assert p.headroom == 0.8 and p.quantile == 0.5 and p.hpa.target == 0.5
    with pytest.raises(InputError, match="unknown parameter"):
        policy("predictive:horizon=3")
    with pytest.raises(InputError, match="headroom"):
        policy("predictive:headroom=2")
    with pytest.raises(InputError, match="scale_in"):
        policy("predictive:scale_in=maybe")
    with pytest.raises(InputError):
        policy("predictive:hpa.colour=red")
    assert p.name == "predictive"


def test_adds_replicas_ahead_of_a_forecast_ramp() -> None:
    """Load steps from 2 to 16 req/s at t=600 s. With a forecast that knows it, predictive
    starts adding replicas a cold start before the ramp; the HPA only after it."""
    ramp_at, svc_s = 600.0, 8.0

    def load(t: float) -> float:
        return 16.0 if t >= ramp_at else 2.0

    def run(pol: Policy[Any], with_forecast: bool) -> float:
        replicas, state = 2, pol.initial_state()
        for k in range(60):
            t = 15.0 * k
            # Busy slots per pod follow the current load (Little's law, 8 s per request).
            s = snap(t, replicas, usage=load(t) * svc_s / (BATCH * replicas))
            fc = forecast(t + 15.0, [load(t + 15.0 * (i + 1)) for i in range(16)], spread=0.0)
            rec, state = pol.decide(PolicyInput(s, CTX, fc if with_forecast else None), state)
            if rec.replicas > replicas:
                return t
            replicas = rec.replicas
        return math.inf

    first_predictive = run(policy(), True)
    first_hpa = run(HpaPolicy.from_spec(PolicySpec.parse("hpa"), CTX), False)
    assert first_predictive <= ramp_at - CTX.cold_start_s
    assert first_hpa >= ramp_at


def test_forecast_plan_scales_down_only_after_a_cold_start() -> None:
    """A forecast peak that passes keeps its replicas for one cold start (90 s), then
    lets go; scaling up is never delayed."""
    p = policy()
    state = p.initial_state()
    seen = []
    for i, level in enumerate([9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 14.0]):
        now = 1000.0 + 15.0 * i
        inp = PolicyInput(snapshot=snap(now, 1, usage=0.1), context=CTX,
                          forecast=forecast(now, [level] * 20))
        rec, state = p.decide(inp, state)
        seen.append(rec.replicas)
    peak = math.ceil(9.0 * 1.2 / 1.8)  # 6
    low = math.ceil(1.0 * 1.2 / 1.8)  # 1
    assert seen[:6] == [peak] * 6  # t = 0..75 s after the peak plan: held
    assert seen[6] == low  # 90 s later the peak plan has left the window
    assert seen[8] == math.ceil(14.0 * 1.2 / 1.8)  # a rise is followed at once
    assert "held at 6" in p.decide(
        PolicyInput(snapshot=snap(1015.0, 1, usage=0.1), context=CTX,
                    forecast=forecast(1015.0, [1.0] * 20)),
        p.decide(PolicyInput(snapshot=snap(1000.0, 1, usage=0.1), context=CTX,
                             forecast=forecast(1000.0, [9.0] * 20)), p.initial_state())[1],
    )[0].reason


def test_down_window_zero_follows_the_forecast_down_at_once() -> None:
    p = policy("predictive:down_window=0")
    s1 = p.decide(PolicyInput(snapshot=snap(1000.0, 1, usage=0.1), context=CTX,
                              forecast=forecast(1000.0, [9.0] * 20)), p.initial_state())[1]
    rec, _ = p.decide(PolicyInput(snapshot=snap(1015.0, 1, usage=0.1), context=CTX,
                                  forecast=forecast(1015.0, [1.0] * 20)), s1)
    assert rec.replicas == 1
    with pytest.raises(InputError, match="down_window"):
        policy("predictive:down_window=-5")
