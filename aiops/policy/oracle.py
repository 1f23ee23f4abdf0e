"""The hindsight oracle: a lower bound on cost, for benchmarks only.

It knows every future arrival. It plans, for each decision interval, the fewest replicas
that serve that interval's requests within the SLO, and asks for each replica one cold start
before it is needed, keeping a replica through a dip shorter than a cold start (removing it
and starting another would cost as much and risk being late). The plan is refined by
simulation: intervals whose requests miss the SLO get more replicas, until the target
attainment is reached among the requests that can meet the SLO at all (a prompt whose
prefill alone outlasts the TTFT objective misses on any fleet). It is never offered to the
daemon: no real policy can see the future.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aiops.policy.base import (
    PolicyContext,
    PolicyInput,
    PolicySpec,
    check_known_params,
    param_float,
    param_int,
)
from aiops.sim.cluster import ClusterSim, SloSpec
from aiops.sim.profiles import Profile
from aiops.sim.stream import RequestStream, as_stream
from aiops.sim.workloads import Workload
from aiops.types import IntArray, Recommendation


@dataclass(frozen=True)
class OracleState:
    pass


class OraclePolicy:
    """Replays a precomputed plan: ``plan[i]`` replicas requested at decision ``i``."""

    name = "oracle"

    def __init__(self, plan: IntArray, interval_s: float, start_replicas: int = 1) -> None:
        self.plan = np.asarray(plan, dtype=np.int64)
        self.interval_s = interval_s
        self.start_replicas = start_replicas  # the plan starts with these, ready at time 0

    @classmethod
    def from_spec(cls, spec: PolicySpec, context: PolicyContext, workload: Workload,
                  profile: Profile, *, slo: SloSpec | None = None) -> OraclePolicy:
        check_known_params(spec, {"target", "rounds"})
        return cls.build(workload, profile, context, slo=slo,
                         target=param_float(spec, "target", 0.99, lo=0.0, hi=1.0),
                         rounds=param_int(spec, "rounds", 10, lo=1, hi=50))

    def initial_state(self) -> OracleState:
        return OracleState()

    def decide(self, inp: PolicyInput, state: OracleState) -> tuple[Recommendation, OracleState]:
        # Decision i is taken at the end of interval i, i.e. at time (i + 1) * interval.
        i = round(inp.snapshot.time / self.interval_s) - 1
        i = min(max(i, 0), len(self.plan) - 1)
        n = int(self.plan[i])
        return Recommendation(n, None, f"hindsight plan: {n} replicas"), state

    @classmethod
    def build(
        cls,
        workload: Workload | RequestStream,
        profile: Profile,
        context: PolicyContext,
        *,
        slo: SloSpec | None = None,
        target: float = 0.99,
        rounds: int = 10,
    ) -> OraclePolicy:
        """Plan by hindsight (a Workload, or a stream too long to hold: only its load curve
        and the simulator's per-interval attainment are needed)."""
        slo = slo or SloSpec()
        stream = as_stream(workload)
        interval = context.interval_s
        steps = max(1, math.ceil(stream.duration / interval))
        cap = max(context.replica_capacity_rps, 1e-6)
        # Need per interval from the busiest 5 s inside it: bursts, not the mean, set TTFT.
        sub = 5.0
        per = max(1, round(interval / sub))
        rate = stream.rate(interval / per)
        rate = np.pad(rate, (0, max(0, steps * per - len(rate))))[: steps * per]
        need = np.ceil(rate.reshape(steps, per).max(axis=1) / (cap * 1.3)).astype(np.int64)
        need = np.clip(need, context.min_replicas, context.max_replicas)
        # Needs only grow from round to round, so the first plan that reaches the target is
        # the cheapest found; if none does, keep the one with the best attainment. The
        # target counts only requests an idle replica could serve within the SLO.
        best_need, best_att = need.copy(), -1.0
        for _ in range(rounds):
            plan, start = cls._plan(need, context)
            sim = ClusterSim(profile, workload, replicas=start, slo=slo, keep_requests=False,
                             stats_bin_s=interval)
            for i in range(steps):
                sim.step(interval)
                sim.scale(int(plan[i]))
            sim.finish()
            feasible, good = sim.attainment_by_arrival()
            attained = float(good.sum()) / max(float(feasible.sum()), 1.0)
            if attained > best_att:
                best_need, best_att = need.copy(), attained
            if attained >= target:
                break
            feasible, good = feasible[:steps], good[:steps]
            feasible = np.pad(feasible, (0, steps - len(feasible)))
            good = np.pad(good, (0, steps - len(good)))
            with np.errstate(invalid="ignore", divide="ignore"):
                att = np.where(feasible > 0, good / np.maximum(feasible, 1.0), 1.0)
            bad = att < target
            if not bad.any():
                break
            # A miss in interval i may come from a backlog built in i-1: raise both, by a
            # quarter (at least one replica) so bursty traces converge in a few rounds.
            bump = bad | np.roll(bad, -1)
            bump[-1] = bad[-1]
            step = np.maximum(1, np.ceil(0.25 * need)).astype(np.int64)
            need = np.minimum(need + bump * step, context.max_replicas)
        plan, start = cls._plan(best_need, context)
        return cls(plan, interval, start)

    @staticmethod
    def _plan(need: IntArray, context: PolicyContext) -> tuple[IntArray, int]:
        """Turn per-interval needs into requests made one cold start ahead."""
        steps = len(need)
        ahead = math.ceil(context.cold_start_s / context.interval_s)
        plan = np.empty(steps, dtype=np.int64)
        # Decision i (end of interval i) affects interval i+1 onwards; a replica asked for
        # now is ready after the cold start, so look that far ahead (and keep what is needed
        # again within a cold start).
        for i in range(steps):
            lo = i + 1
            hi = min(steps, i + 2 + ahead)
            plan[i] = need[lo:hi].max() if lo < hi else need[-1]
        start = int(need[: ahead + 1].max())
        return plan, start
