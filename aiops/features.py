"""The one observation builder, shared by the gym environment and the live daemon.

A policy trained in the simulator only works live if it sees the same numbers, computed the
same way (train/serve parity). Both the environment and the controller call
``build_features``; nothing else turns a Snapshot into an observation. Features are ratios
that do not depend on the deployment's size (load per replica of capacity, queue per batch
slot, latency per SLO), so a policy trained on 10 replicas still makes sense on 40, and each
is clipped to a fixed range so an out-of-range input cannot produce an extreme action — the
PPO shield flags observations that sat on a clip bound.

Bump ``FEATURE_SCHEMA_VERSION`` whenever a feature is added, removed, reordered or
redefined: shipped policies record the version they were trained with and refuse to load
against another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from aiops.policy.base import PolicyContext
from aiops.types import Forecast, Snapshot

FEATURE_SCHEMA_VERSION = 1

# (name, low, high): the order is the observation vector's order.
FEATURES: tuple[tuple[str, float, float], ...] = (
    ("replicas_frac_of_max", 0.0, 1.0),
    ("ready_frac", 0.0, 1.0),
    ("starting_frac", 0.0, 2.0),
    ("log2_batch_norm", 0.0, 1.0),
    ("load_per_ready_capacity", 0.0, 5.0),
    ("load_per_desired_capacity", 0.0, 5.0),
    ("log_arrival_rate", 0.0, 3.0),
    ("waiting_per_slot", 0.0, 5.0),
    ("running_per_slot", 0.0, 1.5),
    ("kv_cache_usage", 0.0, 1.0),
    ("ttft_p99_per_slo", 0.0, 10.0),
    ("ttft_missing", 0.0, 1.0),
    ("tpot_p99_per_slo", 0.0, 10.0),
    ("rate_trend", -3.0, 3.0),
    ("rate_slow_per_capacity", 0.0, 5.0),
    ("forecast_p50_per_capacity", 0.0, 5.0),
    ("forecast_p90_per_capacity", 0.0, 5.0),
    ("forecast_present", 0.0, 1.0),
    ("since_change_per_cold_start", 0.0, 1.0),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f[0] for f in FEATURES)
LOW = np.array([f[1] for f in FEATURES], dtype=np.float32)
HIGH = np.array([f[2] for f in FEATURES], dtype=np.float32)
N_FEATURES = len(FEATURES)


@dataclass(frozen=True)
class FeatureState:
    """What the builder remembers between ticks (survives a restart in the annotations)."""

    rate_fast: float = math.nan  # EWMA of the arrival rate, ~1 minute
    rate_slow: float = math.nan  # EWMA of the arrival rate, ~10 minutes
    last_replicas: int = -1
    last_change_time: float = -math.inf


def _ewma(prev: float, x: float, dt: float, tau: float) -> float:
    if math.isnan(prev):
        return x
    a = 1.0 - math.exp(-dt / tau)
    return prev + a * (x - prev)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def build_features(
    snap: Snapshot,
    context: PolicyContext,
    forecast: Forecast | None,
    state: FeatureState,
) -> tuple[npt.NDArray[np.float32], FeatureState]:
    """Observation vector for ``snap`` and the builder's next state. Pure."""
    cap = context.replica_capacity_rps if context.replica_capacity_rps > 0 else 1.0
    dt = context.interval_s
    rate = snap.arrival_rate if math.isfinite(snap.arrival_rate) else 0.0
    fast = _ewma(state.rate_fast, rate, dt, 60.0)
    slow = _ewma(state.rate_slow, rate, dt, 600.0)
    ready = max(snap.ready_replicas, 0)
    desired = max(snap.replicas, 0)
    slots = max(ready, 1) * snap.batch_size
    last_change = state.last_change_time
    if state.last_replicas >= 0 and snap.replicas != state.last_replicas:
        last_change = snap.time
    since = snap.time - last_change
    ttft_missing = not math.isfinite(snap.ttft_p99)
    f50 = f90 = 0.0
    if forecast is not None and forecast.horizon > 0:
        # The load one cold start ahead: what a replica asked for now will face.
        k = min(forecast.horizon - 1, max(0, math.ceil(context.cold_start_s / forecast.step) - 1))
        q = forecast.quantiles
        f50 = float(q[0.5][k]) if 0.5 in q else float(forecast.mean[k])
        f90 = float(q[0.9][k]) if 0.9 in q else f50
    values = (
        _ratio(desired, context.max_replicas),
        _ratio(ready, max(desired, 1)),
        _ratio(snap.starting_replicas, max(desired, 1)),
        math.log2(max(snap.batch_size, 1)) / 9.0,
        _ratio(rate, max(ready, 1) * cap),
        _ratio(rate, max(desired, 1) * cap),
        math.log10(1.0 + rate),
        _ratio(snap.requests_waiting, slots),
        _ratio(snap.requests_running, slots),
        snap.kv_cache_usage if math.isfinite(snap.kv_cache_usage) else 0.0,
        0.0 if ttft_missing else snap.ttft_p99 / context.ttft_slo_s,
        1.0 if ttft_missing else 0.0,
        snap.tpot_p99 / context.tpot_slo_s if math.isfinite(snap.tpot_p99) else 0.0,
        (fast - slow) / (slow + 1.0),
        _ratio(slow, max(desired, 1) * cap),
        _ratio(f50, max(desired, 1) * cap),
        _ratio(f90, max(desired, 1) * cap),
        1.0 if forecast is not None else 0.0,
        min(1.0, since / context.cold_start_s) if context.cold_start_s > 0 else 1.0,
    )
    obs = np.clip(np.array(values, dtype=np.float32), LOW, HIGH)
    obs = np.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0)
    return obs, FeatureState(fast, slow, snap.replicas, last_change)
