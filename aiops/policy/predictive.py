"""``predictive``: provision for the forecast load one cold start ahead, on top of the HPA.

A replica asked for now serves only after ``context.cold_start_s``, and the decision after
this one comes ``context.interval_s`` later; so the replicas this decision can still affect
are the ones serving during [now + cold start, now + cold start + interval]. The policy
takes the forecast's upper quantile (p90 by default: provision for a bad-but-plausible
minute, not the average one) over that window and needs

    replicas = ceil(load / (replica_capacity_rps * headroom))

By default this can only *add* to the reactive answer: the recommendation is
max(predictive, HPA), where the HPA is ``aiops.policy.hpa.HpaPolicy`` run inside this policy
(its state is held in ours). A forecast that under-predicts then costs nothing over the HPA,
and one that over-predicts costs replicas, never SLO. This is how AWS predictive scaling and
AIBrix combine the two. ``scale_in=true`` lets the forecast also take replicas away below the
HPA's answer (cheaper, and as good as the forecast).

The forecast's plan scales down no faster than ``down_window`` (default: one cold start): it
is the highest plan of that window. The HPA inside stabilizes its own answer, but the
maximum of the two would otherwise fall the moment a forecast peak passes — and a replica
removed now is a cold start away if the next forecast (p90 of a noisy series) rises again.

With no forecast, a forecast that does not reach the window, or an unknown per-replica
capacity, the policy is exactly the HPA, and its reason says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from aiops.errors import InputError
from aiops.policy.base import (
    PolicyContext,
    PolicyInput,
    PolicySpec,
    check_known_params,
    param_float,
)
from aiops.policy.hpa import HpaPolicy, HpaState
from aiops.types import Forecast, Recommendation

OWN_PARAMS = frozenset({"quantile", "headroom", "scale_in", "down_window"})
HPA_PREFIX = "hpa."
"""Parameters spelled ``hpa.<key>=...`` go to the inner HPA (``predictive:hpa.target=0.6``)."""

DEFAULT_HEADROOM = 0.9
"""Plan each replica at 90% of the rate it sustains at the SLO: the capacity is measured at
the edge of the SLO, and 10% absorbs its measurement error and uneven load balancing."""

DEFAULT_QUANTILE = 0.9


@dataclass(frozen=True)
class PredictiveState:
    """The inner HPA's state (opaque here) and the last forecast-driven replica count."""

    hpa: HpaState = field(default_factory=HpaState)
    last_forecast_replicas: int | None = None
    recent_plans: tuple[tuple[float, int], ...] = ()  # (time, forecast plan) in the window


@dataclass(frozen=True)
class WindowLoad:
    load_rps: float
    steps: tuple[int, ...]
    start: float
    end: float


def window_load(fc: Forecast, now: float, begin_s: float, length_s: float,
                quantile: float) -> WindowLoad | None:
    """Highest ``quantile`` of the forecast over the steps overlapping [now+begin, +length].

    Step i covers [start + i*step, start + (i+1)*step) (a rate series' value is the rate over
    its interval). None when the forecast does not reach the window.
    """
    a, b = now + begin_s, now + begin_s + length_s
    q = fc.quantile(quantile)
    steps = tuple(i for i in range(fc.horizon)
                  if fc.start + i * fc.step <= b and fc.start + (i + 1) * fc.step > a)
    if not steps:
        return None
    vals = q[list(steps)]
    if not np.isfinite(vals).all():
        return None
    return WindowLoad(float(vals.max()), steps, a, b)


def _param_bool(spec: PolicySpec, key: str, default: bool) -> bool:
    raw = spec.params.get(key)
    if raw is None:
        return default
    low = raw.lower()
    if low in ("true", "yes", "1", "on"):
        return True
    if low in ("false", "no", "0", "off"):
        return False
    raise InputError(f"policy {spec.text!r}: {key}={raw!r} is not true or false")


class PredictivePolicy:
    """Forecast-driven replicas, by default never below the HPA (see module docstring)."""

    name: str = "predictive"

    def __init__(self, hpa: HpaPolicy, *, quantile: float = DEFAULT_QUANTILE,
                 headroom: float = DEFAULT_HEADROOM, scale_in: bool = False,
                 down_window_s: float | None = None) -> None:
        if not 0.0 < headroom <= 1.0:
            raise InputError(f"predictive headroom {headroom} is outside (0, 1]")
        if not 0.0 < quantile < 1.0:
            raise InputError(f"predictive quantile {quantile} is outside (0, 1)")
        self.hpa = hpa
        self.quantile = quantile
        self.headroom = headroom
        self.scale_in = scale_in
        if down_window_s is not None and not down_window_s >= 0:
            raise InputError(f"predictive down_window {down_window_s} must be >= 0 s")
        self.down_window_s = down_window_s

    @classmethod
    def from_spec(cls, spec: PolicySpec, context: PolicyContext) -> PredictivePolicy:
        """``predictive[:quantile=0.9,headroom=0.9,scale_in=false,down_window=S,
        hpa.<key>=...]`` (``down_window`` defaults to the context's cold start)."""
        own = {k: v for k, v in spec.params.items() if not k.startswith(HPA_PREFIX)}
        check_known_params(PolicySpec(spec.name, own, spec.text), set(OWN_PARAMS))
        hpa_params = {k[len(HPA_PREFIX):]: v for k, v in spec.params.items()
                      if k.startswith(HPA_PREFIX)}
        hpa_text = "hpa" + (":" + ",".join(f"{k}={v}" for k, v in hpa_params.items())
                            if hpa_params else "")
        hpa = HpaPolicy.from_spec(PolicySpec("hpa", hpa_params, hpa_text), context)
        return cls(
            hpa,
            quantile=param_float(spec, "quantile", DEFAULT_QUANTILE, lo=0.01, hi=0.99),
            headroom=param_float(spec, "headroom", DEFAULT_HEADROOM, lo=0.01, hi=1.0),
            scale_in=_param_bool(spec, "scale_in", False),
            down_window_s=(param_float(spec, "down_window", context.cold_start_s, lo=0.0)
                           if "down_window" in spec.params else None),
        )

    def initial_state(self) -> PredictiveState:
        return PredictiveState(hpa=self.hpa.initial_state())

    def decide(self, inp: PolicyInput, state: PredictiveState
               ) -> tuple[Recommendation, PredictiveState]:
        ctx = inp.context
        hpa_rec, hpa_state = self.hpa.decide(inp, state.hpa)
        hpa_n = int(hpa_rec.replicas)
        details: dict[str, float] = {f"hpa_{k}": float(v) for k, v in hpa_rec.details.items()}
        details["hpa_replicas"] = float(hpa_n)

        def as_hpa(why: str) -> tuple[Recommendation, PredictiveState]:
            rec = Recommendation(replicas=hpa_n, batch_size=hpa_rec.batch_size,
                                 reason=f"predictive: {why}; HPA: {hpa_rec.reason}",
                                 details=details)
            return rec, PredictiveState(hpa=hpa_state, last_forecast_replicas=None)

        fc = inp.forecast
        if fc is None:
            return as_hpa("no forecast, acting as the HPA")
        if not ctx.replica_capacity_rps > 0:
            return as_hpa("per-replica capacity unknown, acting as the HPA")
        if self.quantile not in fc.quantiles:
            return as_hpa(f"forecast has no {self.quantile:g} quantile, acting as the HPA")
        win = window_load(fc, inp.snapshot.time, ctx.cold_start_s, ctx.interval_s,
                          self.quantile)
        if win is None:
            return as_hpa(
                f"forecast ({fc.model or 'unnamed'}) does not cover now+{ctx.cold_start_s:g}s "
                f"..+{ctx.interval_s:g}s, acting as the HPA")
        per_replica = ctx.replica_capacity_rps * self.headroom
        need = max(0, math.ceil(win.load_rps / per_replica - 1e-9))
        planned = min(max(need, ctx.min_replicas), ctx.max_replicas)
        now = inp.snapshot.time
        window = ctx.cold_start_s if self.down_window_s is None else self.down_window_s
        recent = (*((t, n) for t, n in state.recent_plans if now - t < window), (now, planned))
        held = max(n for _, n in recent)
        details.update(forecast_load_rps=win.load_rps, capacity_rps=ctx.replica_capacity_rps,
                       headroom=self.headroom, forecast_replicas=float(planned),
                       window_start=win.start, window_end=win.end)
        lead = (f"p{self.quantile * 100:g} load {win.load_rps:.2f} req/s over "
                f"now+{ctx.cold_start_s:g}s..+{ctx.interval_s:g}s ({fc.model or 'forecast'})"
                f" needs {need} replica(s) at {per_replica:.2f} req/s each")
        if planned != need:
            lead += f", bounded to {planned}"
        if held > planned:
            lead += (f"; held at {held}, the highest forecast plan of the last {window:g} s "
                     "(scale-down stabilization)")
        details["stabilized_forecast_replicas"] = float(held)
        if self.scale_in:
            replicas, rule = held, "scale_in on: forecast decides"
        elif held > hpa_n:
            replicas, rule = held, f"above the HPA's {hpa_n}"
        else:
            replicas, rule = hpa_n, f"HPA's {hpa_n} is at least that"
        rec = Recommendation(replicas=replicas, batch_size=None,
                             reason=f"predictive: {lead}; {rule}; HPA: {hpa_rec.reason}",
                             details=details)
        return rec, PredictiveState(hpa=hpa_state, last_forecast_replicas=planned,
                                    recent_plans=recent)


__all__ = ["PredictivePolicy", "PredictiveState", "WindowLoad", "window_load"]
