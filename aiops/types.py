"""The typed values that flow through one tick (see DESIGN.md, "One tick, as data flows").

All are frozen dataclasses: a policy or guardrail cannot mutate what it was given, and a
value can be logged, compared in tests and replayed. Times are Unix seconds (floats),
durations are seconds, rates are per second, fractions are in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

NAN = math.nan


@dataclass(frozen=True)
class Target:
    """One scaled Deployment."""

    namespace: str
    name: str
    container: str = "vllm"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Snapshot:
    """What the controller knows about one target at one instant.

    The daemon fills it from Prometheus, the simulator from its own state, under the same
    definitions, so a policy cannot tell them apart. Sums are over all ready pods of the
    target; latency quantiles are over the last scrape window (NaN when no request
    finished in it — "no data" is not "zero latency").
    """

    time: float
    replicas: int  # spec.replicas: what the Deployment asks for
    ready_replicas: int  # kube_deployment_status_replicas_ready
    batch_size: int  # --max-num-seqs of the running pods
    requests_running: float  # sum vllm:num_requests_running
    requests_waiting: float  # sum vllm:num_requests_waiting
    kv_cache_usage: float  # mean vllm:kv_cache_usage_perc over ready pods, 0..1
    arrival_rate: float  # requests/s over the last window
    prompt_tokens_rate: float  # prompt tokens/s over the last window
    generation_tokens_rate: float  # generated tokens/s over the last window
    ttft_p50: float = NAN
    ttft_p99: float = NAN
    tpot_p99: float = NAN
    starting_replicas: int = 0  # replicas asked for but not ready yet
    gpu_utilization: float = NAN  # DCGM, 0..1, NaN when not scraped
    # Share of the requests that finished in the window meeting both objectives, counting
    # only those an idle replica could serve within them (the misses more replicas can
    # fix), and how many finished: NaN / 0 when unknown.
    slo_attainment: float = NAN
    requests_finished: float = 0.0
    # vLLM exporters scraped: the series of one of their gauges (NaN when unknown). More of
    # them than pods is a pod counted twice in every sum above; fewer, a pod left out.
    pods_reporting: float = NAN
    # Age (s) of the oldest vLLM sample behind these values: under a scrape interval while
    # the scrapes run, growing once one stops, since Prometheus serves a stopped series'
    # last sample for five minutes and the values alone look like a quiet service. NaN
    # when unknown (the simulator's own source has no scrape).
    sample_age_s: float = NAN

    @property
    def requests_in_system(self) -> float:
        return self.requests_running + self.requests_waiting


@dataclass(frozen=True)
class Forecast:
    """Predicted load for the next ``len(mean)`` steps of ``step`` seconds after ``start``.

    Quantiles are keyed by level (0.1, 0.5, 0.9); each array has one value per step.
    """

    start: float
    step: float
    mean: FloatArray
    quantiles: Mapping[float, FloatArray]
    model: str = ""

    def __post_init__(self) -> None:
        n = len(self.mean)
        for q, arr in self.quantiles.items():
            if len(arr) != n:
                raise ValueError(f"quantile {q} has {len(arr)} steps, mean has {n}")

    @property
    def horizon(self) -> int:
        return len(self.mean)

    def quantile(self, q: float) -> FloatArray:
        if q in self.quantiles:
            return self.quantiles[q]
        raise KeyError(f"forecast has no quantile {q}; it has {sorted(self.quantiles)}")


AnomalyKind = Literal["none", "bad_telemetry", "load_change", "health"]


@dataclass(frozen=True)
class MetricAnomaly:
    metric: str
    score: float  # 0..1
    kind: AnomalyKind
    detail: str = ""


@dataclass(frozen=True)
class AnomalyReport:
    """Anomalies of one target at one tick; ``active`` when any score passes the threshold.

    ``unverified`` lists why the telemetry could not be shown live and consistent this tick
    although nothing was found wrong yet (a first repeat, a ratio off once, a check that could
    not run): not an alarm, but no ground for removing capacity either (``anomaly_freeze``).
    """

    time: float
    anomalies: tuple[MetricAnomaly, ...] = ()
    threshold: float = 0.9
    unverified: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return any(a.score >= self.threshold for a in self.anomalies)

    @property
    def bad_telemetry(self) -> bool:
        return any(
            a.score >= self.threshold and a.kind == "bad_telemetry" for a in self.anomalies
        )


@dataclass(frozen=True)
class Recommendation:
    """What a policy wants, before guardrails. ``batch_size`` None means "keep"."""

    replicas: int
    batch_size: int | None = None
    reason: str = ""
    details: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Clamp:
    """One guardrail that changed a recommendation, and why."""

    rule: str
    before: int
    after: int
    detail: str = ""

    def text(self) -> str:
        """``rule before→after``: how Events, annotations and the report name a clamp."""
        return f"{self.rule} {self.before}→{self.after}"


@dataclass(frozen=True)
class Decision:
    """What will be applied (or, in dry-run, reported) after the guardrails."""

    time: float
    target: str
    replicas: int
    batch_size: int
    previous_replicas: int
    previous_batch_size: int
    recommendation: Recommendation
    clamps: tuple[Clamp, ...] = ()
    dry_run: bool = True

    @property
    def changed(self) -> bool:
        return (
            self.replicas != self.previous_replicas
            or self.batch_size != self.previous_batch_size
        )

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(c.rule for c in self.clamps)
