"""Generated vLLM telemetry for the detection tests: one target's metrics, tick by tick."""

from __future__ import annotations

import math

import numpy as np


def traffic(n: int, seed: int = 0, load: float = 1.0, *, rate: float = 10.0,
            kv_drift: float = 1.0, integer_counts: bool = True) -> list[dict[str, float]]:
    """``n`` ticks of a vLLM deployment at ``load x rate`` requests/s swinging ±30 % over an
    hour of 15-s ticks: tokens follow requests, running follows Little's law (5 s in
    system), KV follows running (times a factor drifting linearly to ``kv_drift``: a
    request mix whose sequences grow), latency is steady, nothing waits.
    ``integer_counts=False`` reads the running sequences as a mean over the window (not an
    integer), which takes the parity rule out of a test about something else."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        r = load * rate * (1 + 0.3 * np.sin(2 * np.pi * k / 240)) * (1 + rng.normal(0, 0.05))
        running = float(rng.poisson(5 * r)) + (0.0 if integer_counts else 0.5)
        drift = 1.0 + (kv_drift - 1.0) * k / max(n - 1, 1)
        out.append({
            "arrival_rate": r,
            "prompt_tokens_rate": 500 * r * (1 + rng.normal(0, 0.05)),
            "generation_tokens_rate": 200 * r * (1 + rng.normal(0, 0.05)),
            "requests_running": running,
            "requests_waiting": 0.0,
            "kv_cache_usage": min(1.0, 0.0008 * drift * running * (1 + rng.normal(0, 0.05))),
            "gpu_utilization": math.nan,
            "ttft_p99": 0.5 * (1 + rng.normal(0, 0.05)),
            "tpot_p99": 0.03 * (1 + rng.normal(0, 0.05)),
        })
    return out
