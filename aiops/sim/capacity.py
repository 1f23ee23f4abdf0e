"""What one replica sustains within the SLO, measured on the simulated server itself.

Planning (the predictive policy, the oracle's first plan, a fleet's starting size, the PPO
agent's load features) needs "requests/s per replica". A closed-form steady state of the
iteration model gets it wrong where it matters: chunked prefill is lumpy (a 2,000-token
prompt makes one iteration ten times longer, not every iteration a little longer), and the
cliff where queues start to grow is steep. So the answer is measured: one replica of the
profile, Poisson arrivals of fixed-size requests at the mix's means, and a bisection on the
rate for the highest one (within 2 %) at which ``TARGET`` of the requests meet the SLO. It is
deterministic (fixed seed) and cached per profile, batch size, mix (two significant digits;
mixes in between are interpolated) and SLO, so a planner pays for it once.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from aiops.sim.profiles import Profile

TARGET = 0.99
"""Share of requests meeting the SLO at the capacity: the attainment autoscalers aim for."""

PROBE_REQUESTS = 2000
"""Requests per probe run: enough that one slow request does not decide, few enough that a
bisection costs tens of milliseconds."""


def _neighbours(x: float, digits: int = 2) -> tuple[float, float, float]:
    """The two values with ``digits`` significant digits around ``x`` (``x >= 1``), and
    where ``x`` lies between them (0 at the lower, 1 at the upper)."""
    step = 10.0 ** (math.floor(math.log10(x)) - (digits - 1))
    lo = round(math.floor(x / step) * step, 9)
    return lo, round(lo + step, 9), (x - lo) / step


def replica_capacity_rps(profile: Profile, batch: int, mean_context: float,
                         mean_generated: float, *, ttft_slo: float = 0.5,
                         tpot_slo: float = 0.05) -> float:
    """Requests/s one ready replica serves with ``TARGET`` of them within the SLO.

    Measured at mixes of two significant digits (cached) and interpolated between the four
    around the one asked for. Near the TTFT limit the capacity is steep (at a 0.5-s
    objective a replica of the shipped 8B profile serves about half as many 2,100-token
    prompts as 2,000-token ones), so a planner following a live mix would see its plan jump
    by half as the mean prompt crossed a rounding boundary; interpolated, it moves with
    the mix."""
    c0, c1, wc = _neighbours(max(mean_context, 1.0))
    g0, g1, wg = _neighbours(max(mean_generated, 1.0))
    total = 0.0
    for c, a in ((c0, 1.0 - wc), (c1, wc)):
        for g, b in ((g0, 1.0 - wg), (g1, wg)):
            if a * b > 0.0:
                total += a * b * _capacity(profile, int(batch), c, g, float(ttft_slo),
                                           float(tpot_slo))
    return total


@lru_cache(maxsize=4096)
def _capacity(profile: Profile, batch: int, ctx: float, gen: float, ttft_slo: float,
              tpot_slo: float) -> float:
    from aiops.sim.cluster import ClusterSim, SloSpec, feasible_mask
    from aiops.sim.workloads import Workload

    slo = SloSpec(ttft_slo, tpot_slo)
    prof = profile if batch in profile.batch_sizes else profile.with_changes(
        batch_sizes=(*profile.batch_sizes, batch))
    if not feasible_mask(prof, np.array([ctx]), slo, np.array([gen]))[0]:
        return 1e-6  # no rate meets the SLO for this mix on this hardware
    rng = np.random.default_rng(0)
    gaps = rng.exponential(1.0, PROBE_REQUESTS)
    unit = np.cumsum(gaps)  # arrival times at 1 request/s

    def attained(rate: float) -> float:
        arrivals = unit / rate
        duration = float(arrivals[-1])
        w = Workload("capacity-probe", arrivals, np.full(PROBE_REQUESTS, int(ctx)),
                     np.full(PROBE_REQUESTS, int(gen)), duration)
        sim = ClusterSim(prof, w, replicas=1, batch_size=batch, slo=slo, keep_requests=False)
        sim.step(duration)
        sim.finish(max_seconds=600.0)
        return sim.result().slo_attainment

    # The rate at which prompts alone fill the replica bounds the answer from above.
    hi = prof.prefill_tokens_per_s() / ctx
    lo = 0.0
    if attained(hi) >= TARGET:
        return hi
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        if attained(mid) >= TARGET:
            lo = mid
        else:
            hi = mid
        if hi - lo < 0.02 * hi:
            break
    return max(lo, 1e-6) if math.isfinite(lo) else 1e-6
