"""The embedded simulated cluster behind the daemon's ``MetricSource`` and ``Actuator`` protocols.

With ``backend: sim`` the daemon runs unchanged — the same controller, policies, guardrails
and annotators — against simulated Deployments instead of Prometheus and the API server, on
a simulated clock. That is how anyone can run ``aiops run`` with no cluster, and how the
parity test checks that the daemon's tick and ``aiops simulate`` agree.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from aiops.actuate.base import ApplyResult, TargetState
from aiops.clock import SimClock
from aiops.config import Config, TargetConfig
from aiops.errors import PermanentError
from aiops.sim.cluster import ClusterSim, SloSpec
from aiops.sim.profiles import load_profile
from aiops.sim.runner import initial_replicas, planning_context
from aiops.sim.workloads import Workload, materialise, resolve_stream
from aiops.types import Decision, FloatArray, Snapshot


class SimBackend:
    """One ClusterSim per target, all on one simulated clock starting at 0."""

    def __init__(self, config: Config, clock: SimClock,
                 workloads: Mapping[str, Workload] | None = None,
                 duration: float | None = None) -> None:
        self.clock = clock
        self.sims: dict[str, ClusterSim] = {}
        self.annotations: dict[str, dict[str, str]] = {}
        self._rates: dict[str, list[tuple[float, float]]] = {}
        for i, t in enumerate(config.targets):
            w = (workloads or {}).get(t.name) or self._workload(config, i, duration)
            profile = load_profile(t.profile)
            batch = profile.default_batch_size
            if batch not in t.batch_sizes:
                batch = t.batch_sizes[len(t.batch_sizes) // 2]
            if batch not in profile.batch_sizes:
                raise PermanentError(
                    f"target {t.name!r}: batch size {batch} is not one profile "
                    f"{profile.name!r} allows ({list(profile.batch_sizes)})")
            slo = SloSpec(t.slo.ttft_s, t.slo.tpot_s)
            ctx = planning_context(profile, w, min_replicas=t.min_replicas,
                                   max_replicas=t.max_replicas, slo=slo,
                                   interval_s=config.daemon.interval_s)
            self.sims[t.name] = ClusterSim(profile, w, replicas=initial_replicas(w, ctx),
                                           batch_size=batch, slo=slo)
            self.annotations[t.name] = {}
            self._rates[t.name] = []

    @staticmethod
    def _workload(config: Config, index: int, duration: float | None) -> Workload:
        """Target ``index``'s requests: ``sim.workload`` seeded per target, cut to the run.
        ClusterSim holds every request in memory, so the run's span is drawn in full (a
        ServeGen folder is read once and replayed per target from its own seed)."""
        stream = resolve_stream(config.sim.workload, rate_scale=config.sim.rate_scale,
                                seed=config.sim.seed + index, duration=duration)
        return materialise(stream)

    def _sim(self, target: TargetConfig) -> ClusterSim:
        try:
            return self.sims[target.name]
        except KeyError:
            raise PermanentError(f"target {target.name!r} is not simulated") from None

    def _advance(self, target: TargetConfig, at: float) -> ClusterSim:
        sim = self._sim(target)
        if at > sim.time + 1e-9:
            sim.step(at - sim.time)
            snap = sim.snapshot()
            self._rates[target.name].append((snap.time, snap.arrival_rate))
        return sim

    # ------------------------------------------------------------ MetricSource
    def snapshot(self, target: TargetConfig, at: float) -> Snapshot:
        return self._advance(target, at).snapshot()

    def load_history(self, target: TargetConfig, start: float, end: float,
                     step: float) -> tuple[FloatArray, FloatArray]:
        rows = [(t, r) for t, r in self._rates[target.name] if start <= t <= end]
        if not rows:
            return np.zeros(0), np.zeros(0)
        t = np.array([r[0] for r in rows])
        v = np.array([r[1] for r in rows])
        # Re-grid to ``step`` by averaging: the forecaster wants a regular series.
        edges = np.arange(t[0], t[-1] + step, step)
        idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 1)
        sums = np.bincount(idx, weights=v, minlength=len(edges))
        counts = np.bincount(idx, minlength=len(edges))
        keep = counts > 0
        return edges[keep] + step, sums[keep] / counts[keep]

    # ---------------------------------------------------------------- Actuator
    def read(self, target: TargetConfig) -> TargetState:
        # The cluster lives on the simulated clock: catch up before answering, as the API
        # server would answer with its state at the time of the request.
        sim = self._advance(target, self.clock.now())
        return TargetState(replicas=sim.desired_replicas, ready_replicas=sim.ready_replicas,
                           batch_size=sim.batch_size,
                           annotations=dict(self.annotations[target.name]))

    def apply(self, target: TargetConfig, decision: Decision, *, dry_run: bool) -> ApplyResult:
        sim = self._sim(target)
        if dry_run:
            return ApplyResult(applied=False, dry_run=True, message="dry-run: not applied")
        if decision.replicas != sim.desired_replicas:
            sim.scale(decision.replicas)
        if decision.batch_size != sim.batch_size:
            sim.set_batch_size(decision.batch_size)
        return ApplyResult(applied=True, dry_run=False,
                           message=f"replicas={decision.replicas} batch={decision.batch_size}")

    def save_state(self, target: TargetConfig, state: Mapping[str, str]) -> None:
        self.annotations[target.name].update(state)

    def set_annotation(self, target: str, key: str, value: str) -> None:
        """For tests and demos: what ``kubectl annotate`` does on a real cluster."""
        self.annotations[target][key] = value

    def finish(self) -> dict[str, dict[str, float | int]]:
        """Serve what is still queued and return each target's simulate-style figures."""
        out = {}
        for name, sim in self.sims.items():
            sim.finish()
            out[name] = sim.result().as_dict()
        return out
