"""Metric sources for controller tests that need a target in a known state, not a Prometheus."""

from __future__ import annotations

from typing import Any

import numpy as np

from aiops.types import Snapshot


class Overloaded:
    """A target that needs more replicas than it has, at every tick: the daemon decides,
    acts (or, in dry-run, has the API server check the act) and explains, every time."""

    def snapshot(self, target: Any, at: float) -> Snapshot:
        return Snapshot(time=at, replicas=1, ready_replicas=1, batch_size=64,
                        requests_running=64.0, requests_waiting=300.0, kv_cache_usage=0.95,
                        arrival_rate=60.0, prompt_tokens_rate=36_000.0,
                        generation_tokens_rate=9_000.0)

    def load_history(self, target: Any, start: float, end: float, step: float) -> Any:
        return np.zeros(0), np.zeros(0)
