"""Several metrics of one target, scored together into an ``AnomalyReport`` per tick.

Why together: a single series cannot tell a broken exporter from a real change. The metrics
of one vLLM deployment are tied by physics: arrival rate, prompt tokens/s and generated
tokens/s move together (they count the same requests); latency and KV-cache usage follow
load. So:

- a value the metric cannot take (negative rate, KV usage above 1), a sample older than
  ``stale_after``, or a metric frozen at one value while it used to move (and while the
  target is not simply idle) is **bad telemetry**, whatever the detectors say;
- a step in one load metric that the other load metrics do not show is **bad telemetry**
  (requests cannot arrive without tokens arriving);
- an anomaly in a load metric that the others corroborate is a **load change**;
- an anomaly in latency or usage while the load metrics are steady is **health** (TTFT
  creeping up at constant load, a KV cache filling without more traffic); with load moving
  too it is a **load change**.

The guardrails freeze scale-down during an anomaly and hold when the input is bad telemetry,
so the classification errs towards ``bad_telemetry`` only on evidence, never by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from aiops.detect.base import DetectorState, FloatArray, StreamDetector
from aiops.detect.detectors import DEFAULT_DETECTOR, make_detector
from aiops.types import AnomalyKind, AnomalyReport, MetricAnomaly, Snapshot

Role = Literal["load", "health", "usage"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a target: its role and the values it can physically take."""

    name: str
    role: Role
    lower: float = -math.inf
    upper: float = math.inf


VLLM_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("arrival_rate", "load", 0.0),
    MetricSpec("prompt_tokens_rate", "load", 0.0),
    MetricSpec("generation_tokens_rate", "load", 0.0),
    MetricSpec("requests_running", "usage", 0.0),
    MetricSpec("requests_waiting", "usage", 0.0),
    MetricSpec("kv_cache_usage", "usage", 0.0, 1.0),
    MetricSpec("gpu_utilization", "usage", 0.0, 1.0),
    MetricSpec("ttft_p99", "health", 0.0),
    MetricSpec("tpot_p99", "health", 0.0),
)
"""The ``Snapshot`` fields worth watching, with their physical ranges."""


def snapshot_values(snapshot: Snapshot) -> dict[str, float]:
    """The values of :data:`VLLM_METRICS` in a snapshot (NaN stays NaN: "no data")."""
    return {m.name: float(getattr(snapshot, m.name)) for m in VLLM_METRICS}


class _Series:
    """Per-metric state: its detector and a short buffer for flatline and step checks."""

    def __init__(self, spec: MetricSpec, detector: StreamDetector, keep: int) -> None:
        self.spec = spec
        self.detector = detector
        self.keep = keep
        self.values = np.zeros(0)  # recent finite values, oldest first
        self.varied = False  # the metric has taken two different values at some point
        self.fresh = False  # this tick brought a finite value

    def push(self, v: float) -> None:
        self.fresh = math.isfinite(v)
        if self.fresh:
            if len(self.values) and v != self.values[-1]:
                self.varied = True
            self.values = np.concatenate([self.values, [v]])[-self.keep:]


class TargetScorer:
    """Score the metrics of one target each tick and classify what is anomalous.

    Parameters:
        metrics: the metrics and their roles (default: :data:`VLLM_METRICS`).
        detector: registry name of the per-metric streaming detector.
        threshold: the report's threshold (0.9: tail probability ~1e-9 per point).
        report_floor: metrics scoring at least this are listed in the report (0.5: tail
            1e-5, worth showing on a dashboard even when not acted on).
        flat_points: identical consecutive samples that make a flatline (12: an hour at
            5-minute ticks; real load is never exactly constant that long unless zero).
        base_points: the reference window of the step test (36: three hours at 5 minutes).
            The step is the newest value against the reference median, so a step is
            classified at the tick it appears, when the detector reports it.
        corroborate_z: a related metric "shows the step" when its own step is at least this
            many robust standard deviations in the same direction (3: clearly moved, far
            below the detector's bar, so corroboration is easy and bad-telemetry calls are
            made only when the others are really flat).
        stale_after: seconds after which a sample is stale (300: a Prometheus series not
            scraped for five minutes is marked stale by Prometheus itself).
    """

    def __init__(self, metrics: Sequence[MetricSpec] = VLLM_METRICS,
                 detector: str = DEFAULT_DETECTOR, *, threshold: float = 0.9,
                 report_floor: float = 0.5, flat_points: int = 12, base_points: int = 36,
                 corroborate_z: float = 3.0, stale_after: float = 300.0,
                 **detector_params: Any) -> None:
        if not metrics:
            raise ValueError("a target scorer needs at least one metric")
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names repeat: {names}")
        if not (0 < report_floor <= threshold <= 1 and flat_points >= 2 and base_points >= 3
                and stale_after > 0):
            raise ValueError("need 0 < report_floor <= threshold <= 1, flat_points >= 2, "
                             "base_points >= 3, stale_after > 0")
        self.threshold, self.report_floor = threshold, report_floor
        self.flat_points, self.base_points = flat_points, base_points
        self.corroborate_z, self.stale_after = corroborate_z, stale_after
        self.detector_name = detector
        keep = max(flat_points, base_points + 1)
        self.series = {
            m.name: _Series(m, make_detector(detector, **detector_params), keep) for m in metrics
        }

    def update(self, time: float, values: Mapping[str, float],
               sample_times: Mapping[str, float] | None = None) -> AnomalyReport:
        """One tick: ``values`` by metric name (missing or NaN = no data this tick).

        ``sample_times`` (optional) holds each metric's newest sample time, as Prometheus
        reports it; without it staleness is not judged here.
        """
        unknown = set(values) - set(self.series)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; known: {sorted(self.series)}")
        scores: dict[str, float] = {}
        for name, s in self.series.items():
            v = float(values.get(name, math.nan))
            scores[name] = float(s.detector.update([time], [v])[0])
            s.push(v)
        steps = {name: self._step_z(s) for name, s in self.series.items()}
        idle = self._idle()
        found: list[MetricAnomaly] = []
        for name, s in self.series.items():
            v = float(values.get(name, math.nan))
            anomaly = self._judge(name, s, v, time, sample_times, scores[name], steps, idle)
            if anomaly is not None:
                found.append(anomaly)
        found.sort(key=lambda a: (-a.score, a.metric))
        return AnomalyReport(time=time, anomalies=tuple(found), threshold=self.threshold)

    # --- checks ---------------------------------------------------------------------------
    def _judge(self, name: str, s: _Series, v: float, time: float,
               sample_times: Mapping[str, float] | None, score: float,
               steps: Mapping[str, float], idle: bool) -> MetricAnomaly | None:
        spec = s.spec
        if math.isfinite(v) and not spec.lower <= v <= spec.upper:
            return MetricAnomaly(name, 1.0, "bad_telemetry",
                                 f"impossible value {v:g} (range [{spec.lower:g}, {spec.upper:g}])")
        if sample_times is not None and name in sample_times:
            age = time - float(sample_times[name])
            if age > self.stale_after:
                return MetricAnomaly(name, 1.0, "bad_telemetry",
                                     f"stale: newest sample is {age:.0f} s old")
        if self._flat(s) and not idle:
            return MetricAnomaly(name, 1.0, "bad_telemetry",
                                 f"flatline: {self.flat_points} identical samples "
                                 f"({s.values[-1]:g}) from a metric that varies")
        if score < self.report_floor:
            return None
        kind, detail = self._classify(name, spec.role, steps)
        return MetricAnomaly(name, score, kind, detail)

    def _flat(self, s: _Series) -> bool:
        tail = s.values[-self.flat_points:]
        if not (s.varied and len(tail) == self.flat_points and np.all(tail == tail[-1])):
            return False
        # A usage gauge resting at its floor is a healthy state (an empty queue for an hour
        # while the replicas keep up), not a stuck exporter.
        return not (s.spec.role == "usage" and tail[-1] == s.spec.lower)

    def _idle(self) -> bool:
        """All load metrics at exactly 0 over the flatline window: no traffic, not a fault."""
        loads = [s for s in self.series.values() if s.spec.role == "load"]
        if not loads:
            return False
        for s in loads:
            tail = s.values[-self.flat_points:]
            if len(tail) < self.flat_points or np.any(tail != 0.0):
                return False
        return True

    def _step_z(self, s: _Series) -> float:
        """How far this tick's value is from the reference window's median, in MADs."""
        need = self.base_points + 1
        if not s.fresh or len(s.values) < need:
            return 0.0
        ref = s.values[-need:-1]
        center = float(np.median(ref))
        spread = 1.4826 * float(np.median(np.abs(ref - center)))
        # a flat reference has no spread: measure against 1% of its level instead
        spread = max(spread, 0.01 * abs(center), 1e-9)
        return (float(s.values[-1]) - center) / spread

    def _classify(self, name: str, role: Role,
                  steps: Mapping[str, float]) -> tuple[AnomalyKind, str]:
        z = steps[name]
        others = [m for m, s in self.series.items() if s.spec.role == "load" and m != name]
        if role == "load":
            if not others:
                return "load_change", f"step {z:+.1f} MAD"
            moved = [m for m in others if self._agrees(z, steps[m])]
            if moved or abs(z) < self.corroborate_z:
                why = f"with {', '.join(moved)}" if moved else "no clear step"
                return "load_change", f"step {z:+.1f} MAD, {why}"
            return "bad_telemetry", (f"step {z:+.1f} MAD not seen in related "
                                     f"{', '.join(others)}")
        load_moved = [m for m in self.series if self.series[m].spec.role == "load"
                      and abs(steps[m]) >= self.corroborate_z]
        if load_moved:
            return "load_change", f"follows load ({', '.join(load_moved)})"
        return "health", f"{role} anomaly at steady load (step {z:+.1f} MAD)"

    def _agrees(self, z: float, other: float) -> bool:
        return abs(other) >= self.corroborate_z and math.copysign(1.0, other) == math.copysign(
            1.0, z)

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> DetectorState:
        st = DetectorState(name="target", params={"detector": self.detector_name})
        for name, s in self.series.items():
            st.put(name, s.detector.state_dict())
            st.arrays[f"{name}.__values"] = s.values.copy()
            st.meta[f"{name}.__varied"] = s.varied
        return st

    def load_state_dict(self, state: DetectorState) -> None:
        for name, s in self.series.items():
            sub = state.sub(name)
            sub.params = s.detector.params
            values: FloatArray = sub.arrays.pop("__values")
            varied = bool(sub.meta.pop("__varied"))
            s.detector.load_state_dict(sub)
            s.values, s.varied = values, varied
