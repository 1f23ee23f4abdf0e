"""``AutoscaleEnv``: the gymnasium environment the PPO agent trains in.

One step is one decision interval (15 s by default) of a simulated deployment. The
observation comes from ``aiops.features`` — the same builder the daemon uses live — and the
reward is the negative of what an operator pays: GPU cost, SLO misses and churn, all in US
dollars so the weights mean something:

    reward = -(gpu_hours * price + slo_miss_usd * missed + churn_usd * |replica change|
               + batch_change_usd * [batch changed]) / reward_scale

With an error budget (``slo_budget``, e.g. 0.01) only the misses beyond that share of the
episode's requests are priced: the goal ">= 99 % at the least cost" rather than a price
on every miss.

Two action spaces:

* **agent** (``agent=PpoMeta``, what ``aiops train`` uses): the deployed ``ppo`` policy's
  own decision, run for real. Every step the environment makes the forecast the evaluation
  makes (``forecast``), lets :meth:`~aiops.policy.ppo.PpoPolicy.observe` run the base
  policy (``predictive``) and build the observation, and turns the agent's (factor, batch)
  into replicas and a batch size with :meth:`~aiops.policy.ppo.PpoPolicy.act_on` — the
  residual over the base plan, its stabilization, the shield's floor and batch rules. The
  code between the observation and the Deployment is the daemon's, line for line.
* **deltas** (the default): (replica change, batch size) straight to the simulator, for
  measuring the simulator's speed and the reward alone.

Episodes are windows of ``episode_s`` seconds taken at random offsets of the workloads
given, on a profile drawn from ``profile`` (one, or several: hardware and cold starts
randomised per episode), so one long trace yields many different episodes. Requests still
unserved when the episode ends count as missed: otherwise starving the queue at the end
would pay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from aiops.features import HIGH, LOW, FeatureState, build_features
from aiops.policy.base import PolicyContext, PolicyInput
from aiops.policy.ppo import Observed, PpoMeta, PpoPolicy, ShieldConfig, build_fallback
from aiops.sim.cluster import ClusterSim, SloSpec
from aiops.sim.profiles import Profile
from aiops.sim.runner import ForecastFn, initial_replicas, planning_context
from aiops.sim.workloads import Workload
from aiops.types import Snapshot

DEFAULT_DELTAS: tuple[int, ...] = (-4, -2, -1, 0, 1, 2, 4)
WorkloadSource = Sequence[Workload] | Callable[[np.random.Generator], Workload]
ForecastFactory = Callable[[PolicyContext], ForecastFn]


class _NoModel:
    """The agent's network inside the environment: the action comes from the learner."""

    def act(self, obs: npt.NDArray[np.float32]) -> tuple[int, int]:
        raise RuntimeError("the environment's agent acts through act_on")


class AutoscaleEnv(gym.Env[npt.NDArray[np.float32], npt.NDArray[np.int64]]):
    """Replicas and batch size of one simulated deployment."""

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it on the instance)

    def __init__(
        self,
        workloads: WorkloadSource,
        profile: Profile | Sequence[Profile],
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
        agent: PpoMeta | None = None,
        shield: ShieldConfig | None = None,
        forecast: ForecastFactory | None = None,
    ) -> None:
        super().__init__()
        if not callable(workloads) and len(workloads) == 0:
            raise ValueError("AutoscaleEnv needs at least one workload")
        if 0 not in deltas:
            raise ValueError("deltas must include 0 (hold)")
        self.profiles: tuple[Profile, ...] = (
            (profile,) if isinstance(profile, Profile) else tuple(profile))
        if not self.profiles:
            raise ValueError("AutoscaleEnv needs at least one profile")
        self.workloads = workloads
        self.profile = self.profiles[0]  # this episode's (reset draws one)
        self.episode_s = episode_s
        self.interval_s = interval_s
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.deltas = tuple(deltas)
        self.agent_meta = agent
        self.shield = shield or ShieldConfig()
        self.forecast_factory = forecast
        if agent is not None:
            self.batch_sizes = tuple(agent.batch_sizes)
            replica_actions = len(agent.factors)
        else:
            self.batch_sizes = tuple(batch_sizes or self.profile.batch_sizes)
            replica_actions = len(self.deltas)
        self.slo = slo or SloSpec()
        self.slo_miss_usd = slo_miss_usd
        self.slo_budget = slo_budget
        self.churn_usd = churn_usd
        self.batch_change_usd = batch_change_usd
        self.reward_scale = reward_scale
        self.action_space = gym.spaces.MultiDiscrete([replica_actions, len(self.batch_sizes)])
        self.observation_space = gym.spaces.Box(LOW, HIGH, dtype=np.float32)
        self._sim: ClusterSim | None = None
        self._context = PolicyContext()
        self._fstate = FeatureState()
        self._agent: PpoPolicy | None = None
        self._seen: Observed | None = None
        self._inp: PolicyInput | None = None
        self._forecast: ForecastFn | None = None
        self._rates = np.zeros(0)
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
        if len(self.profiles) > 1:
            self.profile = self.profiles[int(rng.integers(len(self.profiles)))]
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
        self._rates = np.zeros(self._max_steps + 1)
        if self.agent_meta is not None:
            base, name = build_fallback(self._context)
            self._agent = PpoPolicy(_NoModel(), self.agent_meta, shield=self.shield,
                                    fallback=base, fallback_name=name)
            self._forecast = (self.forecast_factory(self._context)
                              if self.forecast_factory is not None else None)
        self._sim.step(self.interval_s)
        obs = self._observe(self._sim.snapshot(), 0, None)
        return obs, {}

    def _observe(self, snap: Snapshot, i: int, state: Any) -> npt.NDArray[np.float32]:
        """The observation of ``snap``, the ``i``-th of the episode (0-based)."""
        if self._agent is None:
            obs, self._fstate = build_features(snap, self._context, None, self._fstate)
            return obs
        self._rates[i] = snap.arrival_rate
        fc = self._forecast(snap, self._rates[:i + 1]) if self._forecast is not None else None
        self._inp = PolicyInput(snap, self._context, forecast=fc)
        if state is None:
            state = self._agent.initial_state()
        self._seen = self._agent.observe(self._inp, state)
        return self._seen.obs

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

    def _decide(self, action: npt.NDArray[np.int64]) -> tuple[int, int | None, Any]:
        """(replicas, batch size or None to keep it, the agent's next state)."""
        sim = self._sim
        assert sim is not None
        if self._agent is None:
            delta = self.deltas[int(action[0])]
            target = min(max(sim.desired_replicas + delta, self.min_replicas),
                         self.max_replicas)
            return target, self.batch_sizes[int(action[1])], None
        assert self._seen is not None and self._inp is not None
        rec, state = self._agent.act_on(self._inp, self._seen, int(action[0]), int(action[1]))
        target = min(max(rec.replicas, self.min_replicas), self.max_replicas)
        return target, rec.batch_size, state

    def step(
        self, action: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        sim = self._sim
        if sim is None:
            raise RuntimeError("call reset() before step()")
        before = sim.desired_replicas
        target, batch, state = self._decide(action)
        sim.scale(target)
        batch_changed = batch is not None and batch != sim.batch_size
        if batch is not None and batch_changed:
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
        obs = self._observe(snap, self._steps, state)
        info = {"gpu_hours": gpu_hours, "finished": finished, "missed": missed,
                "unserved": unserved, "replicas": target, "batch_size": sim.batch_size}
        return obs, -cost / self.reward_scale, False, truncated, info
