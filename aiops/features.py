"""The one observation builder, shared by the gym environment and the live daemon.

A policy trained in the simulator only works live if it sees the same numbers, computed the
same way (train/serve parity). Both the environment and the controller call
``build_features``; nothing else turns a Snapshot into an observation. Features are ratios
that do not depend on the deployment's size (load per replica of capacity, queue per batch
slot, latency per SLO), so a policy trained on 10 replicas still makes sense on 40, and each
is clipped to a fixed range so an out-of-range input cannot produce an extreme action — the
PPO shield flags observations that sat on a clip bound.

Three groups were added in schema 2, for an agent that adjusts a base plan:

* **burstiness** — the peak-to-mean of the 15-second arrival rates over the last cold start
  (what a fleet sized for the mean misses until new replicas are ready), and the dispersion
  of the per-interval request counts (``sqrt(variance / mean)``: 1 for Poisson arrivals,
  above 1 when requests come in clusters, as they do in real LLM traffic — the CV of the
  inter-arrival times, seen at the resolution the daemon has);
* **forecast spread** — how far the p90 lies above the median, relative to the median: an
  uncertain forecast asks for more standing capacity than a sure one;
* **the base plan** — the replicas the base policy (``predictive``) asks for, per desired
  replica and as capacity over the current load, so the agent knows what it adjusts;
  and the cold start in units of 10 minutes, since 90 s and 300 s call for different
  margins on the same load;
* **the token mix** — mean prompt and output lengths (log10, over 4.5: 30k tokens is 1).
  Load per replica of capacity already accounts for the mix's means; what it hides is the
  tail: long prompts come close to the TTFT objective even on an idle replica, so a
  code-completion mix needs more spare capacity for the same attainment than a chat mix.

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

FEATURE_SCHEMA_VERSION = 2

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
    ("cold_start_per_10min", 0.0, 1.0),
    ("burst_peak_to_mean", 1.0, 8.0),
    ("arrival_dispersion", 0.0, 10.0),
    ("forecast_spread", 0.0, 5.0),
    ("base_per_desired", 0.0, 5.0),
    ("base_capacity_per_load", 0.0, 10.0),
    ("base_present", 0.0, 1.0),
    ("log_mean_prompt_tokens", 0.0, 1.0),
    ("log_mean_output_tokens", 0.0, 1.0),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f[0] for f in FEATURES)
LOW = np.array([f[1] for f in FEATURES], dtype=np.float32)
HIGH = np.array([f[2] for f in FEATURES], dtype=np.float32)
N_FEATURES = len(FEATURES)
TOKENS_LOG_SCALE = 4.5
"""log10 of the token lengths the token-mix features map to 1 (~30k tokens)."""
NO_LOAD_SPARE = 10.0
"""``base_capacity_per_load`` without load: any plan is all spare (the feature's top)."""


@dataclass(frozen=True)
class FeatureState:
    """What the builder remembers between ticks (survives a restart in the annotations)."""

    rate_fast: float = math.nan  # EWMA of the arrival rate, ~1 minute
    rate_slow: float = math.nan  # EWMA of the arrival rate, ~10 minutes
    last_replicas: int = -1
    last_change_time: float = -math.inf
    recent_rates: tuple[float, ...] = ()  # the last BURST_MIN_SAMPLES+ interval rates


BURST_MIN_SAMPLES = 8
"""Rates the dispersion is taken over at least: a 90 s cold start is six 15-second
intervals, too few for a variance; 8 (2 minutes) keeps the estimate from jumping on one
interval."""


def burst_window(context: PolicyContext) -> tuple[int, int]:
    """(intervals in one cold start, intervals the dispersion is taken over)."""
    dt = context.interval_s if context.interval_s > 0 else 15.0
    peak = max(2, math.ceil(context.cold_start_s / dt - 1e-9))
    return peak, max(peak, BURST_MIN_SAMPLES)


def burst_stats(rates: tuple[float, ...], peak_n: int, interval_s: float
                ) -> tuple[float, float]:
    """(peak-to-mean over the last ``peak_n`` rates, sqrt of the counts' index of
    dispersion over all of them). (1, 0) without load: no burst is seen in silence."""
    if not rates:
        return 1.0, 0.0
    # Plain floats: a few dozen values, where numpy's per-call cost is most of the work.
    last = rates[-peak_n:]
    mean_last = sum(last) / len(last)
    ptm = max(last) / mean_last if mean_last > 0 else 1.0
    n = len(rates)
    mean = sum(rates) / n * interval_s
    if mean <= 0 or n < 2:
        return ptm, 0.0
    var = sum((r * interval_s - mean) ** 2 for r in rates) / (n - 1)
    disp = math.sqrt(var / mean)
    return ptm, disp


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
    base_replicas: int | None = None,
) -> tuple[npt.NDArray[np.float32], FeatureState]:
    """Observation vector for ``snap`` and the builder's next state. Pure.

    ``base_replicas``: the replicas the base policy asks for this tick (the PPO agent's
    action adjusts it), or None when there is no base plan (its features are then 0)."""
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
    prompt = _ratio(snap.prompt_tokens_rate, rate) if math.isfinite(
        snap.prompt_tokens_rate) else 0.0
    output = _ratio(snap.generation_tokens_rate, rate) if math.isfinite(
        snap.generation_tokens_rate) else 0.0
    peak_n, keep = burst_window(context)
    recent = (*state.recent_rates, rate)[-keep:]
    ptm, disp = burst_stats(recent, peak_n, dt)
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
        context.cold_start_s / 600.0,
        ptm,
        disp,
        _ratio(f90 - f50, f50) if f90 > f50 else 0.0,
        0.0 if base_replicas is None else _ratio(base_replicas, max(desired, 1)),
        0.0 if base_replicas is None else (
            _ratio(base_replicas * cap, rate) if rate > 0 else NO_LOAD_SPARE),
        0.0 if base_replicas is None else 1.0,
        math.log10(1.0 + max(prompt, 0.0)) / TOKENS_LOG_SCALE,
        math.log10(1.0 + max(output, 0.0)) / TOKENS_LOG_SCALE,
    )
    # NaN reads as 0 (no data), then every value is clipped into its range.
    raw = np.nan_to_num(np.array(values, dtype=np.float64), nan=0.0)
    obs = np.clip(raw, LOW, HIGH).astype(np.float32)
    return obs, FeatureState(fast, slow, snap.replicas, last_change, recent)
