"""The ``MetricSource`` protocol: where a tick's Snapshot comes from.

Prometheus in production, the embedded simulated cluster in ``backend: sim``; the controller
cannot tell them apart (DESIGN principle 4). Failures are typed: ``TransientError`` when the
source could not be reached (retry, hold), ``DataQualityError`` when it answered with data
that cannot be trusted (hold, never scale down on it).
"""

from __future__ import annotations

from typing import Protocol

from aiops.config import TargetConfig
from aiops.types import FloatArray, Snapshot


class MetricSource(Protocol):
    def snapshot(self, target: TargetConfig, at: float) -> Snapshot:
        """The target's state at time ``at`` (Unix seconds)."""
        ...

    def load_history(
        self, target: TargetConfig, start: float, end: float, step: float
    ) -> tuple[FloatArray, FloatArray]:
        """Arrival rate (requests/s) of the target on a regular grid: (timestamps, values)."""
        ...
