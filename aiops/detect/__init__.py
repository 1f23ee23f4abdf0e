"""Streaming anomaly detection: one score in [0, 1] per point, from the past only.

Layout: ``base`` (the ``Detector`` protocol, input hygiene, state files), ``raw`` (pyod and
seasonal raw scorers), ``calibrate`` (anomaly likelihood, spatial novelty), ``detectors``
(the registry: ``make_detector``, ``DETECTORS``), ``multivariate`` (``TargetScorer``: the
metrics of one target into an ``AnomalyReport``), ``cli`` (``aiops detect``).

Names are loaded lazily so that importing ``aiops.detect.cli`` (for ``aiops --help``) does
not import numpy, scipy or pyod.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiops.detect.base import Detector, DetectorState, InputIssue, load_state, save_state
    from aiops.detect.detectors import (
        DEFAULT_DETECTOR,
        DETECTORS,
        load_detector,
        make_detector,
        restore_detector,
    )
    from aiops.detect.monitor import TargetMonitor
    from aiops.detect.multivariate import VLLM_METRICS, MetricSpec, TargetScorer

_WHERE = {
    "Detector": "base", "DetectorState": "base", "InputIssue": "base",
    "load_state": "base", "save_state": "base",
    "DEFAULT_DETECTOR": "detectors", "DETECTORS": "detectors", "make_detector": "detectors",
    "restore_detector": "detectors", "load_detector": "detectors",
    "TargetMonitor": "monitor", "MetricSpec": "multivariate", "TargetScorer": "multivariate",
    "VLLM_METRICS": "multivariate",
}

__all__ = [
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "VLLM_METRICS",
    "Detector",
    "DetectorState",
    "InputIssue",
    "MetricSpec",
    "TargetMonitor",
    "TargetScorer",
    "load_detector",
    "load_state",
    "make_detector",
    "restore_detector",
    "save_state",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"aiops.detect.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'aiops.detect' has no attribute {name!r}")
