"""The daemon's per-target anomaly monitor (``aiops.controller.AnomalyMonitor``).

A thin adapter: it takes a ``Snapshot`` per tick, feeds the vLLM metrics in it to a
:class:`~aiops.detect.multivariate.TargetScorer`, and returns its ``AnomalyReport``. Kept
separate so the controller depends on one method, ``observe``, and not on how scoring works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiops.detect.base import DetectorState
from aiops.detect.multivariate import (
    VLLM_METRICS,
    MetricSpec,
    TargetScorer,
    snapshot_capacity,
    snapshot_values,
)
from aiops.types import AnomalyReport, Snapshot


class TargetMonitor:
    """Anomaly report per tick for one target, from its snapshots.

    ``detector`` is a registry name (``"default"`` = ``DEFAULT_DETECTOR``); ``threshold`` is
    the report's (``config.detect.threshold``, 0.9 by default).
    """

    def __init__(self, threshold: float = 0.9, detector: str = "default",
                 metrics: Sequence[MetricSpec] = VLLM_METRICS, **params: Any) -> None:
        self.scorer = TargetScorer(metrics, detector, threshold=threshold,
                                   report_floor=min(0.5, threshold), **params)

    def observe(self, snap: Snapshot) -> AnomalyReport:
        return self.scorer.update(snap.time, snapshot_values(snap),
                                  capacity=snapshot_capacity(snap))

    def state_dict(self) -> DetectorState:
        return self.scorer.state_dict()

    def load_state_dict(self, state: DetectorState) -> None:
        self.scorer.load_state_dict(state)
