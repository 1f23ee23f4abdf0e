"""``AutoscaleEnv``: the gymnasium environment the PPO agent trains in.

One step is one decision interval (15 s by default) of a simulated deployment. The agent
chooses a replica change and a batch size; the observation comes from ``aiops.features`` —
the same builder the daemon uses live — and the reward is the negative of what an operator
pays: GPU cost, SLO misses and churn, all in US dollars so the weights mean something:

    reward = -(gpu_hours * price + slo_miss_usd * missed + churn_usd * |replica change|
               + batch_change_usd * [batch changed]) / reward_scale

With an error budget (``slo_budget``, e.g. 0.01) only the misses beyond that share of the
episode's requests are priced: the goal ">= 99 % at the least cost" rather than a price
on every miss.

Episodes are windows of ``episode_s`` seconds taken at random offsets of the workloads
given, so one long trace yields many different episodes. Requests still unserved when the
episode ends count as missed: otherwise starving the queue at the end would pay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from aiops.features import HIGH, LOW, FeatureState, build_features
from aiops.policy.base import PolicyContext
from aiops.sim.cluster import ClusterSim, SloSpec
from aiops.sim.profiles import Profile
from aiops.sim.runner import initial_replicas, planning_context
from aiops.sim.workloads import Workload

DEFAULT_DELTAS: tuple[int, ...] = (-4, -2, -1, 0, 1, 2, 4)
WorkloadSource = Sequence[Workload] | Callable[[np.random.Generator], Workload]


class AutoscaleEnv(gym.Env[npt.NDArray[np.float32], npt.NDArray[np.int64]]):
    """Replicas and batch size of one simulated deployment."""

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it on the instance)

    def __init__(
        self,
        workloads: WorkloadSource,
        profile: Profile,
        *,
        episode_s: float = 3600.0,
        interval_s: float = 15.0,
        min_replicas: int = 1,
        max_replicas: int = 32,
        deltas: tuple[int, ...] = DEFAULT_DELTAS,
        batch_sizes: tuple[int, ...] | None = None,
        slo: SloSpec | None = None,
        slo_miss_usd: float = 0.005,
        slo_budget: float = 0.0,
        churn_usd: float = 0.002,
        batch_change_usd: float = 0.05,
        reward_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if not callable(workloads) and len(workloads) == 0:
            raise ValueError("AutoscaleEnv needs at least one workload")
        if 0 not in deltas:
            raise ValueError("deltas must include 0 (hold)")
        self.workloads = workloads
        self.profile = profile
        self.episode_s = episode_s
        self.interval_s = interval_s
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.deltas = tuple(deltas)
        self.batch_sizes = tuple(batch_sizes or profile.batch_sizes)
        self.slo = slo or SloSpec()
        self.slo_miss_usd = slo_miss_usd
        self.slo_budget = slo_budget
        self.churn_usd = churn_usd
        self.batch_change_usd = batch_change_usd
        self.reward_scale = reward_scale
        self.action_space = gym.spaces.MultiDiscrete([len(self.deltas), len(self.batch_sizes)])
        self.observation_space = gym.spaces.Box(LOW, HIGH, dtype=np.float32)
        self._sim: ClusterSim | None = None
        self._context = PolicyContext()
        self._fstate = FeatureState()
        self._steps = 0
        self._max_steps = 1
        self._requests = 0  # this episode's totals, for the error budget
        self._missed = 0
        self._charged = 0.0

    # ---------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        source = self.workloads
        w = source(rng) if callable(source) else source[int(rng.integers(len(source)))]
        if w.duration > self.episode_s:
            offset = float(rng.uniform(0.0, w.duration - self.episode_s))
            w = w.window(offset, self.episode_s)
        self._context = planning_context(
            self.profile, w, min_replicas=self.min_replicas, max_replicas=self.max_replicas,
            interval_s=self.interval_s, slo=self.slo,
        )
        start = initial_replicas(w, self._context)
        batch = self.profile.default_batch_size
        if batch not in self.batch_sizes:
            batch = self.batch_sizes[len(self.batch_sizes) // 2]
        self._sim = ClusterSim(self.profile, w, replicas=start, batch_size=batch, slo=self.slo,
                               keep_requests=False)
        self._steps = 0
        self._requests = self._missed = 0
        self._charged = 0.0
        self._max_steps = max(1, math.ceil(min(w.duration, self.episode_s) / self.interval_s))
        self._fstate = FeatureState()
        self._sim.step(self.interval_s)
        obs, self._fstate = build_features(self._sim.snapshot(), self._context, None, self._fstate)
        return obs, {}

    def _priced_misses(self, requests: int, missed: int) -> float:
        """Misses to charge for this step. Without a budget, all of them. With one, the
        growth of the episode's excess — misses beyond ``slo_budget`` of its requests so
        far — so the episode's charges add up to its final excess exactly (a step that
        serves well while the excess shrinks earns some back)."""
        if self.slo_budget <= 0:
            return float(missed)
        self._requests += requests
        self._missed += missed
        excess = max(0.0, self._missed - self.slo_budget * self._requests)
        charge, self._charged = excess - self._charged, excess
        return charge

    def step(
        self, action: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        sim = self._sim
        if sim is None:
            raise RuntimeError("call reset() before step()")
        delta = self.deltas[int(action[0])]
        batch = self.batch_sizes[int(action[1])]
        before = sim.desired_replicas
        target = min(max(before + delta, self.min_replicas), self.max_replicas)
        sim.scale(target)
        batch_changed = batch != sim.batch_size
        if batch_changed:
            sim.set_batch_size(batch)
        gpu_before = sim.gpu_seconds
        sim.step(self.interval_s)
        self._steps += 1
        finished, missed = sim.window_slo()
        truncated = self._steps >= self._max_steps
        gpu_hours = (sim.gpu_seconds - gpu_before) / 3600.0
        unserved = 0
        if truncated:
            # Requests in flight at the end still get their outcome (the fleet as it is
            # serves them; that time is not charged); what is never served counts as missed.
            snap_end = sim.snapshot()
            before_tail = sim.slo_counts()
            sim.finish(max_seconds=600.0)
            after_tail = sim.slo_counts()
            finished += after_tail[0] - before_tail[0]
            missed += after_tail[1] - before_tail[1]
            unserved = sim.unserved()
            missed += unserved
        cost = (
            gpu_hours * self.profile.gpu_hour_usd
            + self.slo_miss_usd * self._priced_misses(finished + unserved, missed)
            + self.churn_usd * abs(target - before)
            + (self.batch_change_usd if batch_changed else 0.0)
        )
        snap = snap_end if truncated else sim.snapshot()
        obs, self._fstate = build_features(snap, self._context, None, self._fstate)
        info = {"gpu_hours": gpu_hours, "finished": finished, "missed": missed,
                "unserved": unserved, "replicas": target, "batch_size": sim.batch_size}
        return obs, -cost / self.reward_scale, False, truncated, info
