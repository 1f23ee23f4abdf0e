"""Several metrics of one target, scored together into an ``AnomalyReport`` per tick.

Why together: a single series cannot tell a broken exporter from a real change, and the
guardrails act differently on each. Each tick:

1. :class:`~aiops.detect.telemetry.TelemetryChecks` judges whether the numbers can be true
   (per-metric priors: missing, impossible, frozen; cross-metric physics: tokens per
   request, KV per sequence, Little's law, a queue that does not move while TTFT explodes).
   A finding is **bad telemetry** (score 1.0): the guardrails hold, whatever the load does.
2. Each metric's streaming detector scores how unusual its value is (the learned part,
   pyod models calibrated by anomaly likelihood). A metric with a finding is fed "no data"
   instead of its value, so a fault does not teach the detector a new normal.
3. A detector anomaly on a load metric is a **load change**; on a usage or latency metric
   it is a load change while the load has moved in the last hour, and **health** at steady
   load (TTFT creeping up at constant traffic, a KV cache filling without more requests).

The guardrails hold on bad telemetry and refuse a scale-down on health; a load change is
what the policies are there to follow, so it never freezes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aiops.detect.base import DetectorState, StreamDetector
from aiops.detect.detectors import DEFAULT_DETECTOR, make_detector
from aiops.detect.telemetry import Capacity, Finding, MetricSpec, Role, TelemetryChecks
from aiops.types import AnomalyKind, AnomalyReport, MetricAnomaly, Snapshot

__all__ = ["VLLM_METRICS", "Capacity", "MetricSpec", "Role", "TargetScorer", "snapshot_values"]

VLLM_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("arrival_rate", "load", 0.0),
    MetricSpec("prompt_tokens_rate", "load", 0.0),
    MetricSpec("generation_tokens_rate", "load", 0.0),
    MetricSpec("requests_running", "usage", 0.0),
    MetricSpec("requests_waiting", "usage", 0.0),
    MetricSpec("kv_cache_usage", "usage", 0.0, 1.0),
    MetricSpec("gpu_utilization", "usage", 0.0, 1.0, optional=True),
    MetricSpec("ttft_p99", "health", 0.0, optional=True),
    MetricSpec("tpot_p99", "health", 0.0, optional=True),
    MetricSpec("ttft_p50", "health", 0.0, optional=True, learned=False),
)
"""The ``Snapshot`` fields worth watching, with their physical ranges. Latency quantiles are
NaN when no request finished in the window and GPU utilisation when DCGM is not scraped:
both optional. The median TTFT serves Little's law only (its p99 is the one scored)."""


def snapshot_values(snapshot: Snapshot) -> dict[str, float]:
    """The values of :data:`VLLM_METRICS` in a snapshot (NaN stays NaN: "no data")."""
    return {m.name: float(getattr(snapshot, m.name)) for m in VLLM_METRICS}


def snapshot_capacity(snapshot: Snapshot) -> Capacity:
    return Capacity(ready_replicas=snapshot.ready_replicas, replicas=snapshot.replicas,
                    batch_size=snapshot.batch_size, starting=snapshot.starting_replicas,
                    reporting=snapshot.pods_reporting, sample_age=snapshot.sample_age_s)


class TargetScorer:
    """Score the metrics of one target each tick and classify what is anomalous.

    Parameters:
        metrics: the metrics and their roles (default: :data:`VLLM_METRICS`).
        detector: registry name of the per-metric streaming detector.
        threshold: the report's threshold (0.9: tail probability ~1e-9 per point).
        report_floor: metrics scoring at least this are listed in the report (0.5: tail
            1e-5, worth showing on a dashboard even when not acted on).
        stale_after: seconds after which a sample is stale (300: a Prometheus series not
            scraped for five minutes is marked stale by Prometheus itself).
        load_memory: ticks over which "the load has moved" is judged (240: an hour at
            15-s ticks). The load moved when its recent level (a two-tick average) and its
            level over this memory differ by more than ``load_moved``.
        load_moved: that factor (1.5).
        checks: the telemetry checks' parameters (:class:`TelemetryChecks`).
        detector_params: passed to every per-metric detector.
    """

    def __init__(self, metrics: Sequence[MetricSpec] = VLLM_METRICS,
                 detector: str = DEFAULT_DETECTOR, *, threshold: float = 0.9,
                 report_floor: float = 0.5, stale_after: float = 300.0,
                 load_memory: int = 240, load_moved: float = 1.5,
                 checks: Mapping[str, Any] | None = None, **detector_params: Any) -> None:
        if not metrics:
            raise ValueError("a target scorer needs at least one metric")
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names repeat: {names}")
        if not (0 < report_floor <= threshold <= 1 and stale_after > 0 and load_memory >= 2
                and load_moved > 1):
            raise ValueError("need 0 < report_floor <= threshold <= 1, stale_after > 0, "
                             "load_memory >= 2, load_moved > 1")
        self.threshold, self.report_floor = threshold, report_floor
        self.stale_after = stale_after
        self.detector_name = detector
        self.specs = {m.name: m for m in metrics}
        # Flat stretches are the telemetry checks' to judge (they know each metric's bounds:
        # an empty queue for hours is normal), so the detectors' duration rule is off here.
        params = {"runs": False, **detector_params}
        self.detectors: dict[str, StreamDetector] = {
            m.name: make_detector(detector, **params) for m in metrics if m.learned}
        self.checks = TelemetryChecks(metrics, **dict(checks or {}))
        self.loads = [m.name for m in metrics if m.role == "load"]
        # fast and slow exponential averages of log(1 + load), per load metric
        self.fast_a, self.slow_a = 0.5, 1.0 / load_memory
        self.log_moved = math.log(load_moved)
        self.fast = np.full(len(self.loads), np.nan)
        self.slow = np.full(len(self.loads), np.nan)

    def update(self, time: float, values: Mapping[str, float],
               sample_times: Mapping[str, float] | None = None,
               capacity: Capacity | None = None) -> AnomalyReport:
        """One tick: ``values`` by metric name (missing or NaN = no data this tick).

        ``sample_times`` (optional) holds each metric's newest sample time, as Prometheus
        reports it; without it staleness is judged from the values alone (frozen). The
        ``capacity`` (ready pods, batch size) bounds running sequences and scales KV usage;
        without it those two checks are skipped.
        """
        unknown = set(values) - set(self.specs)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; known: {sorted(self.specs)}")
        findings = {f.metric: f for f in self.checks.update(time, values, capacity)}
        if sample_times is not None:
            for name, t in sample_times.items():
                age = time - float(t)
                if name in self.specs and age > self.stale_after:
                    findings[name] = Finding(name, "stale", f"stale: newest sample is "
                                             f"{age:.0f} s old")
        scores: dict[str, float] = {}
        for name, det in self.detectors.items():
            v = math.nan if name in findings else float(values.get(name, math.nan))
            scores[name] = float(det.update([time], [v])[0])
        moved = self._load_moved(values, findings)
        found: list[MetricAnomaly] = [
            MetricAnomaly(f.metric, 1.0, "bad_telemetry", f.detail) for f in findings.values()]
        for name, score in scores.items():
            if name in findings or score < self.report_floor:
                continue
            kind, detail = self._classify(self.specs[name].role, moved)
            found.append(MetricAnomaly(name, score, kind, detail))
        found.sort(key=lambda a: (-a.score, a.metric))
        return AnomalyReport(time=time, anomalies=tuple(found), threshold=self.threshold,
                             unverified=tuple(self.checks.doubts))

    def _load_moved(self, values: Mapping[str, float], findings: Mapping[str, Finding],
                    ) -> list[str]:
        """Load metrics whose recent level differs from their level over the last hour."""
        moved: list[str] = []
        for k, name in enumerate(self.loads):
            v = float(values.get(name, math.nan))
            if name in findings or not (math.isfinite(v) and v >= 0):
                continue
            x = math.log1p(v)
            if math.isnan(self.fast[k]):
                self.fast[k] = self.slow[k] = x
            self.fast[k] += self.fast_a * (x - self.fast[k])
            self.slow[k] += self.slow_a * (x - self.slow[k])
            if abs(self.fast[k] - self.slow[k]) > self.log_moved:
                moved.append(name)
        return moved

    @staticmethod
    def _classify(role: Role, moved: Sequence[str]) -> tuple[AnomalyKind, str]:
        if role == "load":
            return "load_change", "load metric"
        if moved:
            return "load_change", f"follows load ({', '.join(moved)} moved in the last hour)"
        return "health", f"{role} anomaly at steady load"

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> DetectorState:
        st = DetectorState(name="target", params={"detector": self.detector_name})
        for name, det in self.detectors.items():
            st.put(name, det.state_dict())
        st.put("__checks", self.checks.state())
        st.arrays["__load.fast"] = self.fast.copy()
        st.arrays["__load.slow"] = self.slow.copy()
        return st

    def load_state_dict(self, state: DetectorState) -> None:
        for name, det in self.detectors.items():
            sub = state.sub(name)
            sub.params = det.params
            det.load_state_dict(sub)
        self.checks.load(state.sub("__checks"))
        self.fast = state.arrays["__load.fast"].copy()
        self.slow = state.arrays["__load.slow"].copy()
