"""Labelled cluster faults: what breaks telemetry, and what changes load for real.

The anomaly detector exists to tell the two apart (a broken exporter must freeze a
scale-down, a real surge must not), so both are injected at known times into a simulated
fleet and the daemon's own tick is watched (:mod:`aiops.detect.scenarios`).

Telemetry faults are injected at the metric-source edge: :class:`FaultySource` wraps the
``MetricSource`` the controller reads and rewrites the ``Snapshot`` it returns, as a broken
exporter or scrape would; the simulated cluster underneath keeps serving the true load.
Each fault is modelled on what the daemon's queries see in a real cluster:

==================  ========================================================================
``scrape_gap``      the vLLM series vanish for a few minutes (the scrape fails; Prometheus
                    marks them stale): every vLLM field is NaN.
``stale_series``    the scrape stops; Prometheus returns the last sample for five minutes
                    (its lookback), then nothing. The daemon's ingest reads the samples'
                    timestamps too (``vllm_sample_time``, served as ``sample_age_s``) and
                    refuses a snapshot whose oldest vLLM sample is older than
                    ``stale_after_s`` (120 s by default): the source raises the same
                    ``StaleSampleError`` then. Before that the detector has the values and
                    their growing age. (A real server also stops answering ``rate()``
                    once its window holds one sample, which the ingest refuses as empty;
                    rates frozen until the freshness limit are the harder case.)
``counter_reset``   one pod's exporter restarts and its counters restart from 0. Read
                    through ``rate(sum(...))`` (a common recording rule) the drop of the
                    sum is taken for a reset of the whole sum: for one rate window every
                    counter rate reads the sum's entire history divided by the window.
``flatline``        one metric stuck at its last value (an exporter bug, a cached gauge).
``double_scrape``   the pods scraped twice under one label set (a ServiceMonitor and a
                    PodMonitor): every summed vLLM series doubles; means (KV usage) and
                    latency quantiles do not.
``unit_change``     one metric multiplied by ``factor`` (1000: seconds read as milliseconds,
                    a per-second rate read per millisecond the other way round).
``nan_inf``         one metric alternates between NaN and +Inf (a division by a zero count).
``renamed_metric``  a vLLM upgrade renames a metric: its query matches nothing from then on.
``queue_stuck``     ``requests_waiting`` stuck at its value while a real surge makes the
                    queue, and TTFT, explode (the scenario adds the surge to the workload).
==================  ========================================================================

Sample ages follow a scrape every ``scrape_interval_s`` (30 s by default, twice the tick,
so live ages cycle as they do in a real cluster rather than sitting at one value); a
scrape gap has no sample to date.

Real load changes reshape the workload itself (:func:`reshape`), so every metric moves as
it would: ``surge`` (x ``factor`` within a minute), ``drop_to_zero`` (a client outage),
``level_shift`` (a lasting step) and ``slow_drift`` (a linear ramp over the duration).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from aiops.config import PrometheusConfig, TargetConfig
from aiops.ingest.base import MetricSource
from aiops.sim.workloads import Workload
from aiops.types import FloatArray, Snapshot

TELEMETRY_FAULTS: tuple[str, ...] = (
    "scrape_gap", "stale_series", "counter_reset", "flatline", "double_scrape",
    "unit_change", "nan_inf", "renamed_metric", "queue_stuck",
)
LOAD_CHANGES: tuple[str, ...] = ("surge", "drop_to_zero", "level_shift", "slow_drift")

VLLM_FIELDS: tuple[str, ...] = (
    "requests_running", "requests_waiting", "kv_cache_usage", "arrival_rate",
    "prompt_tokens_rate", "generation_tokens_rate", "ttft_p50", "ttft_p99", "tpot_p99",
    "gpu_utilization", "pods_reporting",
)
"""Snapshot fields that come from the model servers' exporters (the rest is the API's)."""
SUMMED_FIELDS: tuple[str, ...] = (
    "requests_running", "requests_waiting", "arrival_rate", "prompt_tokens_rate",
    "generation_tokens_rate", "pods_reporting",
)
"""Fields the queries sum (or count) over pods: a pod counted twice counts twice here."""
COUNTER_FIELDS: tuple[str, ...] = ("arrival_rate", "prompt_tokens_rate", "generation_tokens_rate")
"""Fields read as ``rate()`` of a counter."""
COPY_SPREAD_S = 1.0
"""How far from its original a request copied by a real load change may land (seconds)."""
LOOKBACK_S = 300.0
"""Prometheus' default ``--query.lookback-delta``: how long a vanished series is returned."""
STALE_AFTER_S: float = PrometheusConfig.model_fields["stale_after_s"].default
"""The ingest's default freshness limit (``prometheus.stale_after_s``)."""


@dataclass(frozen=True)
class Fault:
    """One injected event: ``kind`` from :data:`TELEMETRY_FAULTS` or :data:`LOAD_CHANGES`.

    ``start`` and ``duration`` are seconds of the run (``math.inf``: until the end);
    ``metric`` names the ``Snapshot`` field of single-metric faults; ``factor`` is the unit
    change's multiplier or the load change's (surge peak, shift level, drift end).
    """

    kind: str
    start: float
    duration: float
    metric: str = ""
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in (*TELEMETRY_FAULTS, *LOAD_CHANGES):
            raise ValueError(f"unknown fault {self.kind!r}; known: "
                             f"{', '.join((*TELEMETRY_FAULTS, *LOAD_CHANGES))}")
        if not (self.start >= 0 and self.duration > 0):
            raise ValueError(f"fault {self.kind}: need start >= 0 and duration > 0")
        if self.metric and self.metric not in VLLM_FIELDS:
            raise ValueError(f"fault {self.kind}: {self.metric!r} is not a vLLM field; "
                             f"known: {', '.join(VLLM_FIELDS)}")
        if self.kind in ("flatline", "unit_change", "nan_inf", "renamed_metric") and (
                not self.metric):
            raise ValueError(f"fault {self.kind} needs a metric")
        if self.factor < 0 or not math.isfinite(self.factor):
            raise ValueError(f"fault {self.kind}: factor must be finite and >= 0")

    @property
    def telemetry(self) -> bool:
        return self.kind in TELEMETRY_FAULTS

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def label(self) -> str:
        """Short name for tables: ``flatline:requests_running``, ``surge:x5``."""
        if self.metric:
            return f"{self.kind}:{self.metric}"
        if self.kind in ("surge", "level_shift", "slow_drift"):
            return f"{self.kind}:x{self.factor:g}"
        return self.kind

    def active(self, t: float) -> bool:
        return self.start <= t < self.end


class FaultySource:
    """A ``MetricSource`` that returns ``inner``'s snapshots with telemetry faults applied.

    ``rate_window_s`` is the window of the counter rates (the ``counter_reset`` artefact
    lasts one window); ``stale_after_s`` is the ingest's freshness limit
    (``prometheus.stale_after_s``; None: no freshness check); scrapes happen every
    ``scrape_interval_s`` from ``scrape_phase_s`` and date the samples (``sample_age_s``,
    when ``inner`` does not). ``unscraped`` fields are NaN
    throughout, as for a cluster that does not scrape them (the fault-free truth too). What
    was served and what was true are kept for the benchmark's plots in ``served`` and
    ``true`` (one row per snapshot).
    """

    def __init__(self, inner: MetricSource, faults: Sequence[Fault],
                 rate_window_s: float = 60.0, unscraped: Sequence[str] = (),
                 stale_after_s: float | None = STALE_AFTER_S,
                 scrape_interval_s: float = 30.0, scrape_phase_s: float = 7.0) -> None:
        if not scrape_interval_s > 0:
            raise ValueError("scrape_interval_s must be > 0")
        self.inner = inner
        self.scrape_interval_s, self.scrape_phase_s = scrape_interval_s, scrape_phase_s
        self.stale_after_s = stale_after_s
        self.unscraped = dict.fromkeys(unscraped, math.nan)
        self.faults = tuple(f for f in faults if f.telemetry)
        self.rate_window_s = rate_window_s
        self.served: list[Snapshot] = []
        self.true: list[Snapshot] = []
        self._last_t = math.nan
        self._cumulative = dict.fromkeys(COUNTER_FIELDS, 0.0)
        self._frozen: dict[int, Snapshot] = {}  # fault index -> what it froze
        self._reset_sums: dict[int, dict[str, float]] = {}
        self._tick = 0

    def snapshot(self, target: TargetConfig, at: float) -> Snapshot:
        snap = self.inner.snapshot(target, at)
        if self.unscraped:
            snap = _with(snap, self.unscraped)
        dt = at - self._last_t if math.isfinite(self._last_t) else 0.0
        self._last_t = at
        for f in COUNTER_FIELDS:  # the counters the exporters would hold
            rate = float(getattr(snap, f))
            if math.isfinite(rate):
                self._cumulative[f] += rate * dt
        if math.isnan(snap.sample_age_s):
            snap = replace(snap, sample_age_s=at - self._last_scrape(at))
        out = snap
        for i, fault in enumerate(self.faults):
            if fault.active(at):
                out = self._apply(i, fault, out, at)
            elif at < fault.start:
                self._frozen.pop(i, None)
        self._tick += 1
        self.true.append(snap)
        self.served.append(out)
        self._check_fresh(target, out, at)
        return out

    def _last_scrape(self, t: float, *, before: bool = False) -> float:
        """The time of the last scrape at or (``before``) strictly before ``t``."""
        back = (t - self.scrape_phase_s) % self.scrape_interval_s
        if before and back == 0.0:
            back = self.scrape_interval_s
        return t - back

    def _check_fresh(self, target: TargetConfig, out: Snapshot, at: float) -> None:
        """Raise what the daemon's ingest raises on a series whose scrapes stopped longer
        ago than ``stale_after_s`` and that Prometheus still returns."""
        from aiops.ingest.prometheus import StaleSampleError

        if self.stale_after_s is None:
            return
        age = out.sample_age_s
        for f in self.faults:
            if f.kind == "stale_series" and f.active(at) and (
                    self.stale_after_s < age < LOOKBACK_S):
                raise StaleSampleError(
                    f"oldest sample is {age:.0f} s old (stale after {self.stale_after_s:g} s)",
                    query="vllm_sample_time", promql="(injected stale_series)",
                    target=target.name if target is not None else "")

    def load_history(self, target: TargetConfig, start: float, end: float,
                     step: float) -> tuple[FloatArray, FloatArray]:
        return self.inner.load_history(target, start, end, step)

    def _before(self) -> Snapshot | None:
        return self.served[-1] if self.served else None

    def _apply(self, i: int, fault: Fault, snap: Snapshot, at: float) -> Snapshot:
        kind = fault.kind
        if kind == "scrape_gap":
            return _with(snap, {**dict.fromkeys(VLLM_FIELDS, math.nan),
                                "sample_age_s": math.nan})
        if kind == "stale_series":
            frozen = self._frozen.setdefault(i, self._before() or snap)
            age = at - self._last_scrape(fault.start, before=True)
            if age >= LOOKBACK_S:
                return _with(snap, {**dict.fromkeys(VLLM_FIELDS, math.nan),
                                    "sample_age_s": math.nan})
            return _with(snap, {**{f: getattr(frozen, f) for f in VLLM_FIELDS},
                                "sample_age_s": age})
        if kind == "counter_reset":
            sums = self._reset_sums.setdefault(i, dict(self._cumulative))
            if at - fault.start >= self.rate_window_s:
                return snap
            return _with(snap, {f: float(getattr(snap, f)) + sums[f] / self.rate_window_s
                                for f in COUNTER_FIELDS})
        if kind in ("flatline", "queue_stuck"):
            metric = fault.metric or "requests_waiting"
            frozen = self._frozen.setdefault(i, self._before() or snap)
            return _with(snap, {metric: getattr(frozen, metric)})
        if kind == "double_scrape":
            return _with(snap, {f: 2.0 * float(getattr(snap, f)) for f in SUMMED_FIELDS})
        if kind == "unit_change":
            factor = fault.factor if fault.factor != 1.0 else 1000.0
            return _with(snap, {fault.metric: factor * float(getattr(snap, fault.metric))})
        if kind == "nan_inf":
            return _with(snap, {fault.metric: math.nan if self._tick % 2 == 0 else math.inf})
        if kind == "renamed_metric":
            return _with(snap, {fault.metric: math.nan})
        raise AssertionError(kind)  # every telemetry kind is handled above


def _with(snap: Snapshot, fields: dict[str, float]) -> Snapshot:
    """``snap`` with some exporter fields replaced (all of them floats)."""
    changes: dict[str, Any] = dict(fields)
    return replace(snap, **changes)


# --------------------------------------------------------------------- real load changes
def load_factor(change: Fault) -> Callable[[FloatArray], FloatArray]:
    """The multiplier of the request rate over time for a real load change.

    ``surge`` climbs to ``factor`` within 60 s, holds, and falls back within 60 s;
    ``drop_to_zero`` falls to 0 within 15 s and comes back within 15 s; ``level_shift``
    moves to ``factor`` within 15 s and stays; ``slow_drift`` moves linearly to ``factor``
    over the duration and stays.
    """
    a, d, k = change.start, change.duration, change.factor

    def ramp(t: FloatArray, t0: float, width: float, lo: float, hi: float) -> FloatArray:
        u = np.clip((t - t0) / width, 0.0, 1.0)
        out: FloatArray = lo + (hi - lo) * u
        return out

    def f(t: FloatArray) -> FloatArray:
        t = np.asarray(t, dtype=np.float64)
        if change.kind == "surge":
            up = ramp(t, a, 60.0, 1.0, k)
            return np.where(t < a + d, up, ramp(t, a + d, 60.0, k, 1.0))
        if change.kind == "drop_to_zero":
            down = ramp(t, a, 15.0, 1.0, 0.0)
            return np.where(t < a + d, down, ramp(t, a + d, 15.0, 0.0, 1.0))
        if change.kind == "level_shift":
            return ramp(t, a, 15.0, 1.0, k)
        if change.kind == "slow_drift":
            return ramp(t, a, d if math.isfinite(d) else 3600.0, 1.0, k)
        raise ValueError(f"{change.kind} is not a load change")

    return f


def load_change_of(event: Fault) -> Fault | None:
    """The real change of load ``event`` brings: itself for a load change; for a stuck
    queue, the surge that comes with it (a queue stuck near empty under spare capacity is
    no fault that matters); None for the other telemetry faults, which change only what is
    read. The reference a telemetry fault is judged against is its scenario with this change
    and without the fault: the decisions the daemon would make on true numbers."""
    if not event.telemetry:
        return event
    if event.kind == "queue_stuck":
        return replace(event, kind="surge", metric="",
                       factor=event.factor if event.factor != 1.0 else 4.0)
    return None


def reshape(w: Workload, changes: Sequence[Fault], seed: int = 0) -> Workload:
    """``w`` with its request rate multiplied by each change's :func:`load_factor`.

    Each request is kept ``floor(m)`` times plus once more with probability ``m - floor(m)``
    where ``m`` is the multiplier at its arrival; copies land uniformly between the
    midpoints to its neighbours, at most ``COPY_SPREAD_S`` away, and carry its tokens, so
    the token mix and the burstiness stay the workload's own (as ``rate_scale`` does, with
    a multiplier that varies in time). The cap keeps a sparse trace's idle minutes idle:
    copies of one request spread over a long gap would arrive one a tick with identical
    prompts, a metronome no client makes.
    """
    changes = [c for c in map(load_change_of, changes) if c is not None]
    if not changes or len(w) == 0:
        return w
    t = w.arrivals
    m = np.ones(len(t))
    for c in changes:
        m *= load_factor(c)(t)
    rng = np.random.default_rng(seed)
    whole = np.floor(m).astype(np.int64)
    n = whole + (rng.random(len(t)) < m - whole).astype(np.int64)
    if len(t) > 1:
        mid = (t[:-1] + t[1:]) / 2
        lo = np.concatenate([[max(0.0, t[0] - (mid[0] - t[0]))], mid])
        hi = np.concatenate([mid, [min(w.duration, t[-1] + (t[-1] - mid[-1]))]])
        lo, hi = np.maximum(lo, t - COPY_SPREAD_S), np.minimum(hi, t + COPY_SPREAD_S)
    else:
        lo, hi = np.zeros(1), np.full(1, w.duration)
    keep = np.flatnonzero(n >= 1)
    extra = np.repeat(np.arange(len(t)), np.maximum(n - 1, 0))
    times = np.concatenate([t[keep], lo[extra] + rng.random(len(extra)) * (hi - lo)[extra]])
    index = np.concatenate([keep, extra])
    order = np.argsort(times, kind="stable")
    return Workload(name=w.name, arrivals=np.clip(times[order], 0.0, w.duration),
                    context_tokens=w.context_tokens[index[order]],
                    generated_tokens=w.generated_tokens[index[order]],
                    duration=w.duration,
                    meta={**w.meta, "reshaped": ",".join(c.label for c in changes)})
