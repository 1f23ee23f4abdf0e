"""``predictive``: capacity for the load one cold start ahead, with spare learnt from the SLO.

A replica asked for now serves only after ``context.cold_start_s``; so every decision plans
for the load of the cold start ahead, and what it cannot see coming must already be standing.
The plan, each decision:

1. **Load to plan for**, requests/s: the largest of
   * the forecast's ``quantile`` (median by default) over the window a replica asked for now
     will serve, ``[now + cold start, + interval]`` — the swell of a daily cycle, seen before
     it arrives — taken as the lowest of the last ``confirm`` ticks' forecasts of it. A
     forecast that follows the last tick (the naive one; any forecaster, at the moment a
     burst lands) echoes a 15-s burst as a load one cold start ahead; replicas asked for on
     it are ready only when the burst has long gone, and the scale-down window holds them
     until then, so each costs a cold start of GPU time and serves nothing. A rise the
     forecast repeats on the next tick is followed one tick later; a forecast of a daily
     cycle moves little from one tick to the next, so its lowest of two is itself. The
     first forecast, or the first after a tick without one, has nothing to confirm it and
     stands alone;
   * the observed rate, smoothed over ``smoothing`` seconds — a level the forecast has not
     caught up with yet;
   * the ``burst_quantile`` of the observed rate over the last ``burst_window`` seconds —
     *standing capacity for the bursts that really happened*. A burst shorter than a cold
     start is over before a replica asked for it is ready, so the only defence is capacity
     kept for the bursts the service has shown it has. The window decides how long a burst
     is remembered; two hours carry it across a daily cycle's shoulder without holding a
     morning's burst through the night.
2. **Offered load in replicas**, ``R = load / capacity``, with the capacity the rate one
   replica sustains at the SLO for the request mix, measured on the calibrated simulator
   (:mod:`aiops.sim.capacity`). The mix is the one the service is sending now: the mean
   prompt and output tokens per request over the last ``MIX_WINDOW_S``, from the token
   counters (``context.capacity_for``). A replica serves three times as many short chats as
   long summaries, and over a week a service's mix moves that much; planning with one
   fixed capacity would leave the spare to make up a factor of two, which it does slowly
   and then keeps too long. Bursts are remembered in replicas of load at the mix they came
   with. Only the part of the difference from the fixed ``replica_capacity_rps`` beyond
   the measurement's resolution (``MIX_RESOLUTION``) is acted on, and no more than a factor
   ``MIX_TRUST`` either way: a mean that far out is likelier a broken token counter than a
   new service.
3. **Replicas** ``N = ceil(R + spare * sqrt(R))``: square-root staffing (Halfin and Whitt).
   Random arrivals make the load a replica pool must absorb grow as ``R`` plus fluctuations
   of order ``sqrt(R)``, so the spare grows with the square root of the load: a small fleet
   needs a larger share of spare, a large one a smaller share. What ``spare`` must be depends
   on things no model here knows exactly — how bursty the arrivals are within a tick, how
   many prompts are near the TTFT limit (those meet the objective only on an almost idle
   replica), how unevenly the router spreads load — so it is learnt.
4. **The spare is learnt from the SLO** (``Snapshot.slo_attainment``, the share of the
   requests that finished in the window meeting the objectives, among those an idle replica
   could serve in time), on two time scales:

   * a fast integral controller moves ``spare`` by ``gain`` per minute per error budget:
     attainment over the last ``horizon`` seconds below ``target`` (the 99 % goal plus a
     margin for the controller's own lag) raises it, above lowers it, and a ``leak`` pulls
     it back towards the base below, so that one bad hour is not paid for all day. Misses
     while the fleet is still below its plan (replicas starting) are not the spare's fault
     and do not move it (anti-windup): more spare would only ask for replicas that are
     already coming. They do stay in the window the controller judges by, so for up to a
     ``horizon`` after the fleet has caught up the spare still answers them. That is on
     purpose: misses made while replicas start say the standing capacity was short when
     the load rose, which is the spare's job for the next rise. Leaving them out of the
     window took 9 % off the Azure code hour (18.39 against 20.27 GPU-h, 99.23 against
     99.38 %), but the bundled 90-minute day fell from 99.00 to 98.73 %, and four other
     seeds of its generator from 98.72-98.88 % to 96.64-98.70 %.
   * the **base** the leak returns to is itself learnt, by a slow integral of every miss
     against the ``goal``'s budget, request by request, with no anti-windup (``base_gain``
     per minute per error budget at the mean load). A leak towards a fixed value would
     make the fast controller a leaky integrator, which settles *below* its target by an
     amount that grows with the spare the traffic needs (over a week of bursty traffic,
     0.3-0.4 point); and the misses of scale-ups that came too late would never be paid
     for. The slow integral has no such offset: it stops moving only when, over the
     requests it has seen, the share that missed equals the goal's budget. It is
     request-weighted because the objective is (a peak hour's misses count for its
     requests, not for its minutes). Its goal needs a smaller margin over the 99 % than the
     fast target does: what the integral leaves unpaid at the end of a run is its last
     step over the run's length, about 0.03 point over a week.
   * the fast target's margin over the goal is for short runs, where the slow integral
     has not had the time to pay misses back; it shrinks to nothing as a day of requests
     is seen (:meth:`PredictivePolicy.fast_target`).
5. **Scale-down** no faster than ``down_window`` (default: one cold start): the plan is the
   highest of that window, so a replica is not removed just before the plan needs it again.

With no forecast the plan uses the observed rate alone; with an unknown per-replica capacity
the policy holds the current fleet and says why. Each reason names the load, the capacity,
the spare and which term set the plan.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from aiops.errors import InputError
from aiops.policy.base import (
    PolicyContext,
    PolicyInput,
    PolicySpec,
    check_known_params,
    param_float,
)
from aiops.types import Forecast, Recommendation

DEFAULTS: dict[str, float] = {
    "quantile": 0.5,
    "target": 0.993,
    "goal": 0.991,
    "spare": 1.0,
    "gain": 0.1,
    "horizon": 300.0,
    "leak": 0.02,
    "base_gain": 0.005,
    "max_spare": 4.0,
    "smoothing": 120.0,
    "burst_window": 7200.0,
    "burst_quantile": 0.95,
    "confirm": 2.0,
}
"""Defaults, one configuration for every workload (none is tuned per workload): the forecast's
median, because bursts are covered by the burst term and the spare, not by a pessimistic
forecast; 99.3 % aimed at by the fast controller for a 99 % objective (a margin for its lag
and its leak) and 99.1 % over the long run by the slow one; one square root of spare to start
with; a minute of error-budget overrun moves the spare by 0.1; attainment judged over five
minutes; the spare relaxes towards the base with a 50-minute time constant; two hours of
burst memory at its 95th percentile; two minutes of smoothing for the observed rate; a rise in
the forecast believed when two ticks in a row say it (one tick's spike is the bursts term's
business: on the one-hour Azure code trace, whose bursts last one or two ticks, acting on
one tick's forecast cost 8 % more GPU-hours for no better attainment, and on a flash crowd
that rises in ten seconds, waiting one tick costs about one point of its attainment). The base
moves twenty times more slowly than the spare (``base_gain``): a five-minute burst that half
the requests miss raises it by about one and a half, which good service then pays back over
hours, while the fast spare has long since dealt with the burst itself.

Both stop at four square roots (``max_spare``). Spare covers queueing, and at three square
roots about one request in 700 waits at all (Halfin and Whitt's approximation), at four one
in 30,000. Misses that more spare would still remove are not queueing's: prompts near the
TTFT limit, which meet it only on an almost idle replica, and replies of a few tokens whose
one or two inter-token gaps take in a long prompt's prefill on the same replica (on the
ServeGen m-mid week's first six hours, 1.1 % of requests miss on a fixed fleet of 18, over
three times its mean load; four in five of those misses are on TPOT, mostly of 2-4-token replies,
and the prompts beyond half the TTFT limit bring 7 %). Replicas buy such misses down slowly,
so spare bought for them costs more than the misses, which the objective's budget is for.
A higher cap also let the fast controller wind up on a crowd's misses made while replicas
were starting: on a crowd that quadruples a 90-minute day's load, a cap of 8 kept 22
replicas for the next 50 minutes where a fixed fleet of 12 reaches 99 %.
Capped at 4, the held-out crowds cost 11-27 % fewer GPU-hours, and a ServeGen week whose
first hours bring such misses 4 % fewer, both at the same attainment within 0.1 point."""

PARAMS = frozenset({*DEFAULTS, "down_window"})

MIX_WINDOW_S = 300.0
"""Time constant of the request mix the capacity is looked up at: five minutes hold
hundreds of requests even at a few per second, so one long prompt does not move the plan,
and a client that changes what it sends is followed within minutes."""

MIX_TRUST = 4.0
"""How far the mix's capacity may stray from the fixed one, as a factor either way."""

MIX_RESOLUTION = 0.1
"""Relative differences between the mix's capacity and the fixed one that are not acted on:
the measurement's own resolution (its bisection stops within 2 %, and between the mixes it
was measured at it is interpolated along a curve that is not straight). Acting on them would
make a steady mix's plan jitter by a replica, and a plan that dips at the wrong minute costs
SLO that the minute it rises does not give back; beyond it, only the excess counts, so the
capacity moves continuously with the mix."""

MEAN_LOAD_S = 86_400.0
"""Time constant of the mean requests per tick the base's steps are measured against: a day,
so that a peak hour's tick weighs more than a night's and the integral counts requests."""

MIN_REQUESTS = 50
"""Requests the controller's window must hold before it acts: fewer say little about a 1 %
objective."""


@dataclass(frozen=True)
class PredictiveState:
    """What the policy carries from tick to tick (small: it is logged and replayed).

    ``spare`` is the learnt square-root spare and ``base`` the value it relaxes to;
    ``missed`` and ``finished`` are the decayed request counts of the controller's horizon;
    ``mean_finished`` the day-long mean of requests finished per tick (negative before the
    first) and ``mean_weight`` how much of its day has been seen (:func:`running_mean`);
    ``loads`` the observed loads of the burst window, in replicas; ``mix`` the
    smoothed (requests/s, prompt tokens/s, generated tokens/s) (negative before the first);
    ``smoothed`` the smoothed rate (negative before the first observation);
    ``plans`` the (time, replicas) plans of the scale-down window;
    ``forecasts`` the forecast loads (requests/s) of the last ticks' windows, for ``confirm``.
    """

    spare: float = DEFAULTS["spare"]
    base: float = DEFAULTS["spare"]
    mean_finished: float = -1.0
    mean_weight: float = 0.0
    missed: float = 0.0
    finished: float = 0.0
    loads: tuple[tuple[float, float], ...] = ()
    mix: tuple[float, float, float] = (-1.0, 0.0, 0.0)
    smoothed: float = -1.0
    plans: tuple[tuple[float, int], ...] = ()
    forecasts: tuple[float, ...] = ()


def running_mean(mean: float, weight: float, x: float, alpha: float) -> tuple[float, float]:
    """An exponential mean whose start weighs each reading by what has been seen so far.

    ``weight`` is the share of the time constant already seen, ``1 - (1 - alpha)^k`` after k
    readings; each reading moves the mean by ``alpha / weight``: the whole way for the first,
    a k-th of the way for the k-th while k is small against the time constant, ``alpha``
    once it is large. Seeded with its first reading instead, a day-long mean keeps that
    reading for most of a day, and a service's first tick is its least typical: a handful of
    requests where the day averages dozens, which made every step of the slow integral
    several times too large (on the Azure code hour one burst at minute four raised the base
    spare from 1.0 to 1.5, and it held the fleet up for the rest of the hour). Returns the new
    (mean, weight).
    """
    weight = (1.0 - alpha) * weight + alpha
    return mean + alpha / weight * (x - mean), weight


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


class PredictivePolicy:
    """Square-root staffing for the load a cold start ahead, spare learnt from the SLO."""

    name: str = "predictive"

    def __init__(self, *, down_window_s: float | None = None, **params: float) -> None:
        unknown = sorted(set(params) - set(DEFAULTS))
        if unknown:
            raise InputError(f"predictive: unknown parameter(s) {', '.join(unknown)}")
        p = {**DEFAULTS, **params}
        if not 0.0 < p["quantile"] < 1.0:
            raise InputError(f"predictive quantile {p['quantile']} is outside (0, 1)")
        for key in ("target", "goal"):
            if not 0.5 <= p[key] < 1.0:
                raise InputError(f"predictive {key} {p[key]} is outside [0.5, 1)")
        if not 0.0 <= p["spare"] <= p["max_spare"]:
            raise InputError(f"predictive spare {p['spare']} is outside [0, max_spare="
                             f"{p['max_spare']}]")
        if not 0.0 < p["burst_quantile"] <= 1.0:
            raise InputError(f"predictive burst_quantile {p['burst_quantile']} is outside "
                             "(0, 1]")
        for key in ("gain", "leak", "base_gain", "smoothing", "burst_window"):
            if not p[key] >= 0.0:
                raise InputError(f"predictive {key} {p[key]} must be >= 0")
        if not (p["confirm"] >= 1.0 and float(p["confirm"]).is_integer()):
            raise InputError(f"predictive confirm {p['confirm']} must be a whole number of "
                             "ticks >= 1")
        if not p["horizon"] > 0.0:
            raise InputError(f"predictive horizon {p['horizon']} must be > 0 s")
        if down_window_s is not None and not down_window_s >= 0:
            raise InputError(f"predictive down_window {down_window_s} must be >= 0 s")
        self.params = p
        self.down_window_s = down_window_s

    @classmethod
    def from_spec(cls, spec: PolicySpec, context: PolicyContext) -> PredictivePolicy:
        """``predictive[:quantile=0.5,target=0.993,goal=0.991,spare=1,gain=0.1,horizon=300,
        leak=0.02,base_gain=0.005,max_spare=4,smoothing=120,burst_window=7200,burst_quantile=0.95,
        confirm=2,down_window=S]``
        (times in seconds; ``down_window`` defaults to the context's cold start)."""
        check_known_params(spec, set(PARAMS))
        params = {k: param_float(spec, k, v, lo=0.0) for k, v in DEFAULTS.items()
                  if k in spec.params}
        down = (param_float(spec, "down_window", context.cold_start_s, lo=0.0)
                if "down_window" in spec.params else None)
        return cls(down_window_s=down, **params)

    def initial_state(self) -> PredictiveState:
        return PredictiveState(spare=self.params["spare"], base=self.params["spare"])

    # ------------------------------------------------------------------ the controller
    def fast_target(self, seen: float) -> float:
        """The attainment the fast controller aims at, once ``seen`` (0..1) of a day's
        requests have been seen (``PredictiveState.mean_weight``).

        It starts at ``target``, above the long-run ``goal`` by a margin for the fast
        controller's own lag: over a short run the slow integral has not had the time to
        pay misses back, so the fast one must keep the run's attainment up by itself. As a
        day of requests is seen, the slow integral holds the long run to the goal, and the
        fast target comes down to it: aiming higher then only buys attainment the
        objective does not ask for (3 % of the GPU-hours over a day of the NYC taxi
        trace, 1 % over a ServeGen week, at 99.02-99.09 % attainment)."""
        p = self.params
        return p["target"] - (p["target"] - p["goal"]) * min(max(seen, 0.0), 1.0)

    def _learn(self, inp: PolicyInput, state: PredictiveState) -> PredictiveState:
        """The controller's part of the state after this tick's SLO outcome."""
        p = self.params
        ctx, snap = inp.context, inp.snapshot
        decay = 0.5 ** (ctx.interval_s / p["horizon"])
        missed, finished = state.missed * decay, state.finished * decay
        a, n = snap.slo_attainment, snap.requests_finished
        minutes = ctx.interval_s / 60.0
        base, mean_n, mean_w = state.base, state.mean_finished, state.mean_weight
        if math.isfinite(a) and math.isfinite(n) and n > 0:
            missed_now = (1.0 - min(max(a, 0.0), 1.0)) * n
            missed += missed_now
            finished += n
            alpha = 1.0 - math.exp(-ctx.interval_s / MEAN_LOAD_S)
            mean_n, mean_w = running_mean(mean_n, mean_w, n, alpha)
            # Every request counts here, those of late scale-ups too: this is the integral
            # that makes the week's attainment, not just the settled ticks', meet the goal.
            goal_budget = 1.0 - p["goal"]
            base += (p["base_gain"] * (missed_now - goal_budget * n) / (goal_budget * mean_n)
                     * minutes)
            base = min(max(base, 0.0), p["max_spare"])
        spare = state.spare
        budget = 1.0 - self.fast_target(mean_w)
        attained = 1.0 - missed / finished if finished > 0 else math.nan
        # Misses while replicas are still starting (or held back by a guardrail) are not the
        # spare's fault: the fleet has not got what the last plans asked for. They still
        # count in the window above once it has (see the module's docstring for why).
        planned = max((m for _, m in state.plans), default=0)
        settled = snap.ready_replicas >= max(planned, snap.replicas)
        if finished >= MIN_REQUESTS and settled:
            spare += p["gain"] * ((1.0 - attained) - budget) / budget * minutes
        spare -= p["leak"] * (spare - base) * minutes
        spare = min(max(spare, 0.0), p["max_spare"])
        return dataclasses.replace(state, spare=spare, base=base, mean_finished=mean_n,
                                   mean_weight=mean_w, missed=missed, finished=finished)

    # ------------------------------------------------------------------ the plan
    @staticmethod
    def _mix(snap_rate: float, prompt: float, generated: float,
             mix: tuple[float, float, float], interval_s: float) -> tuple[float, float, float]:
        """The smoothed (requests/s, prompt tokens/s, generated tokens/s) after this tick."""
        if not (math.isfinite(snap_rate) and math.isfinite(prompt) and math.isfinite(generated)
                and snap_rate > 0 and prompt >= 0 and generated >= 0):
            return mix
        if mix[0] < 0:
            return snap_rate, prompt, generated
        a = 1.0 - math.exp(-interval_s / MIX_WINDOW_S)
        return (mix[0] + a * (snap_rate - mix[0]), mix[1] + a * (prompt - mix[1]),
                mix[2] + a * (generated - mix[2]))

    @staticmethod
    def _capacity(ctx: PolicyContext, mix: tuple[float, float, float]) -> float:
        """Requests/s per replica at the mix seen, else the context's fixed capacity."""
        fixed = ctx.replica_capacity_rps
        if ctx.capacity_for is None or mix[0] <= 0 or not fixed > 0:
            return fixed
        cap = ctx.capacity_for(mix[1] / mix[0], mix[2] / mix[0])
        if not (math.isfinite(cap) and cap > 0):
            return fixed
        off = math.log(cap / fixed)
        off = math.copysign(max(abs(off) - math.log1p(MIX_RESOLUTION), 0.0), off)
        return fixed * min(max(math.exp(off), 1.0 / MIX_TRUST), MIX_TRUST)

    def decide(self, inp: PolicyInput, state: PredictiveState
               ) -> tuple[Recommendation, PredictiveState]:
        p = self.params
        ctx, snap = inp.context, inp.snapshot
        now = snap.time
        learnt = self._learn(inp, state)
        spare = learnt.spare
        attained = (1.0 - learnt.missed / learnt.finished if learnt.finished > 0
                    else math.nan)
        observed = snap.arrival_rate if math.isfinite(snap.arrival_rate) else math.nan
        smoothed = state.smoothed
        if math.isfinite(observed):
            alpha = 1.0 - math.exp(-ctx.interval_s / p["smoothing"]) if p["smoothing"] > 0 \
                else 1.0
            smoothed = observed if smoothed < 0 else smoothed + alpha * (observed - smoothed)
        mix = self._mix(observed, snap.prompt_tokens_rate, snap.generation_tokens_rate,
                        state.mix, ctx.interval_s)
        cap = self._capacity(ctx, mix)
        new_state = dataclasses.replace(learnt, smoothed=smoothed, mix=mix)
        details: dict[str, float] = {}
        if not cap > 0:
            details.update(spare=spare, base_spare=learnt.base, attainment=attained)
            rec = Recommendation(snap.replicas, None,
                                 "predictive: per-replica capacity unknown, holding "
                                 f"{snap.replicas} replicas", details)
            return rec, new_state
        loads = (*((t, r) for t, r in state.loads if now - t < p["burst_window"]),
                 *(((now, observed / cap),) if math.isfinite(observed) else ()))
        new_state = dataclasses.replace(new_state, loads=loads)
        # Each term in replicas of load at today's mix (bursts at the mix they came with).
        terms: dict[str, float] = {}
        if smoothed >= 0:
            terms["observed"] = smoothed / cap
        if loads:
            terms["bursts"] = float(np.quantile([r for _, r in loads], p["burst_quantile"]))
        fc = inp.forecast
        win = (window_load(fc, now, ctx.cold_start_s, ctx.interval_s, p["quantile"])
               if fc is not None and p["quantile"] in fc.quantiles else None)
        # A tick without a forecast breaks the run: the next one is not confirmed by a
        # reading from before the gap.
        keep = int(p["confirm"]) - 1
        recent = ((*state.forecasts[max(len(state.forecasts) - keep, 0):], win.load_rps)
                  if win is not None else ())
        new_state = dataclasses.replace(new_state, forecasts=recent)
        if recent:
            terms["forecast"] = min(recent) / cap
        details.update({f"load_{k}_rps": v * cap for k, v in terms.items()})
        details.update(spare=spare, base_spare=learnt.base, attainment=attained)
        if not terms:
            rec = Recommendation(snap.replicas, None,
                                 "predictive: no load observed or forecast yet, holding "
                                 f"{snap.replicas} replicas", details)
            return rec, new_state
        which = max(terms, key=lambda k: terms[k])
        offered = terms[which]
        load = offered * cap
        need = math.ceil(offered + spare * math.sqrt(offered) - 1e-9)
        planned = min(max(need, ctx.min_replicas), ctx.max_replicas)
        window = ctx.cold_start_s if self.down_window_s is None else self.down_window_s
        plans = (*((t, n) for t, n in state.plans if now - t < window), (now, planned))
        held = max(n for _, n in plans)
        details.update(load_rps=load, capacity_rps=cap,
                       offered_replicas=offered, planned_replicas=float(planned),
                       held_replicas=float(held))
        reason = (f"predictive: {load:.2f} req/s ({which}) at {cap:.2f} "
                  f"req/s per replica is {offered:.2f} replicas of load, plus spare "
                  f"{spare:.2f} x sqrt(load) -> {need}")
        if planned != need:
            reason += f", bounded to {planned}"
        if held > planned:
            reason += f"; held at {held}, the highest plan of the last {window:g} s"
        if math.isfinite(attained):
            reason += f" (SLO attainment over {p['horizon']:g} s: {100 * attained:.2f}%)"
        return (Recommendation(held, None, reason, details),
                dataclasses.replace(new_state, plans=plans))


__all__ = ["DEFAULTS", "PredictivePolicy", "PredictiveState", "WindowLoad", "window_load"]
