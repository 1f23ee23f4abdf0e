"""Run a fault scenario through the daemon's own tick and measure what it did.

The fleet is the embedded simulated cluster (``SimBackend``), the tick is the daemon's
(``Daemon.run_simulated``: controller, anomaly monitor, forecaster, policy, guardrails,
actuation in enforce mode), and telemetry faults are injected between the two by
:class:`~aiops.detect.faults.FaultySource`. Nothing here is a copy of the product: a change
to the detector, the guardrails or a policy shows in these figures.

Per tick the run records what the monitor reported and what the guardrails decided, so
that the benchmark can count, per injected event:

- for a telemetry fault: whether and when ``bad_telemetry`` was reported (ticks to
  detect: 1 means on the first faulty tick) and how many scale-downs happened while the
  fault lasted (each one is blind);
- for a real load change: how many ticks the anomaly freeze or the unverified-telemetry
  hold changed a decision (they should not: the policies are there to follow real load)
  and whether a load change was reported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiops.detect.faults import VLLM_FIELDS, Fault, FaultySource, reshape
from aiops.sim.workloads import Workload
from aiops.types import AnomalyReport, Snapshot

UNSCRAPED: tuple[str, ...] = ("gpu_utilization",)
"""Fields the scenarios' cluster does not scrape (as a cluster without DCGM). The simulator's
GPU utilisation falls below zero after a pod leaves (the pod's busy seconds leave the fleet's
total within the window), which no DCGM exporter shows: the checks rightly call it
impossible, and it would count against them here. No policy reads it."""

GRACE_S = 120.0
"""After a fault ends, the detector may need a tick or two to see good data again; reports
within this grace are neither true nor false alarms."""
CHANGE_TAIL_S = 600.0
"""A load change's window runs this long past its end: the fleet is still adapting."""


@dataclass(frozen=True)
class Scenario:
    """A workload, the events injected into it, and how long to run."""

    name: str
    workload: Workload
    events: tuple[Fault, ...] = ()
    duration: float = 0.0  # 0: the workload's own duration

    @property
    def faults(self) -> tuple[Fault, ...]:
        return tuple(e for e in self.events if e.telemetry)

    @property
    def changes(self) -> tuple[Fault, ...]:
        return tuple(e for e in self.events if not e.telemetry or e.kind == "queue_stuck")


@dataclass
class Run:
    """Per-tick records of one run, and the simulator's accounting at the end."""

    scenario: Scenario
    detect: bool
    times: list[float] = field(default_factory=list)
    previous: list[int] = field(default_factory=list)  # replicas before the decision
    replicas: list[int] = field(default_factory=list)  # replicas decided
    frozen: list[bool] = field(default_factory=list)  # a detector's rule changed it (below)
    doubted: list[bool] = field(default_factory=list)  # of which unverified_telemetry
    held: list[bool] = field(default_factory=list)  # data_hold / fallback fired
    bad: list[bool] = field(default_factory=list)  # report.bad_telemetry
    armed: list[bool] = field(default_factory=list)  # a freeze was due (bad or health)
    load_seen: list[bool] = field(default_factory=list)  # an active load_change anomaly
    score: list[float] = field(default_factory=list)  # the report's highest score
    served: list[Snapshot] = field(default_factory=list)
    true: list[Snapshot] = field(default_factory=list)
    altered: list[bool] = field(default_factory=list)  # the fault changed what was served
    result: dict[str, float] = field(default_factory=dict)

    def array(self, name: str) -> np.ndarray[Any, Any]:
        return np.asarray(getattr(self, name))


class _Recorder:
    """The anomaly monitor, with its last report kept for the run's records."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.last: AnomalyReport | None = None

    def observe(self, snap: Snapshot) -> AnomalyReport:
        self.last = None
        report: AnomalyReport = self.inner.observe(snap)
        self.last = report
        return report


def config_text(policy: str, interval_s: float, max_replicas: int, detector: str) -> str:
    """The daemon config of a scenario run: one simulated target, enforce mode."""
    return (f"backend: sim\ndry_run: false\nleader_election: {{enabled: false}}\n"
            f"daemon: {{http_port: 0, interval_s: {interval_s:g}}}\n"
            f"detect: {{detector: {detector}}}\n"
            f"forecast: {{refit_interval_s: 1800}}\n"
            f"targets:\n  - {{name: t, deployment: t, policy: {policy}, "
            f"max_replicas: {max_replicas}}}\n")


def run_scenario(scenario: Scenario, *, detect: bool = True, policy: str = "predictive",
                 interval_s: float = 15.0, max_replicas: int = 32, seed: int = 0,
                 detector: str = "default", forecast: bool = True,
                 monitor_params: dict[str, Any] | None = None,
                 unscraped: Sequence[str] = UNSCRAPED) -> Run:
    """Run the daemon on ``scenario``; ``detect=False`` runs it without anomaly detection.

    ``forecast=False`` leaves the predictive policy without a forecaster (it then follows
    the HPA's answer): the same guardrails, a faster run, for tests.
    """
    from prometheus_client import CollectorRegistry

    from aiops.clock import SimClock
    from aiops.config import parse_config
    from aiops.controller import Controller
    from aiops.daemon import Daemon
    from aiops.detect.monitor import TargetMonitor
    from aiops.sim.backend import SimBackend
    from aiops.telemetry import Telemetry
    from aiops.wiring import forecaster_factory

    cfg = parse_config(config_text(policy, interval_s, max_replicas, detector), environ={})
    duration = scenario.duration or scenario.workload.duration
    workload = reshape(scenario.workload, scenario.changes, seed=seed)
    clock = SimClock(0.0)
    backend = SimBackend(cfg, clock, workloads={"t": workload}, duration=duration)
    source = FaultySource(backend, scenario.faults, unscraped=unscraped)
    recorder: _Recorder | None = None
    monitors = None
    if detect:
        target_monitor = TargetMonitor(threshold=cfg.detect.threshold,
                                       detector=cfg.detect.detector, **(monitor_params or {}))
        recorder = _Recorder(target_monitor)

        def monitors(target: Any) -> Any:
            return recorder

    telemetry = Telemetry(CollectorRegistry())
    controller = Controller(cfg, source, backend, clock, telemetry, monitor_factory=monitors,
                            forecaster_factory=forecaster_factory(cfg) if forecast else None)
    daemon = Daemon(cfg, controller, clock, telemetry)
    run = Run(scenario=scenario, detect=detect)
    runtime = controller.runtimes["t"]

    def record(_: float) -> None:
        d = runtime.last_decision
        report = recorder.last if recorder is not None else None
        run.times.append(clock.now())
        run.previous.append(d.previous_replicas if d else -1)
        run.replicas.append(d.replicas if d else -1)
        rules = d.rules if d else ()
        run.frozen.append("anomaly_freeze" in rules or "unverified_telemetry" in rules)
        run.doubted.append("unverified_telemetry" in rules)
        run.held.append("data_hold" in rules or "fallback" in rules)
        run.bad.append(bool(report and report.bad_telemetry))
        run.armed.append(bool(report and any(
            a.score >= report.threshold and a.kind in ("bad_telemetry", "health")
            for a in report.anomalies)))
        run.load_seen.append(bool(report and any(
            a.score >= report.threshold and a.kind == "load_change" for a in report.anomalies)))
        run.score.append(max((a.score for a in report.anomalies), default=0.0)
                         if report else 0.0)

    logging.disable(logging.WARNING)  # the daemon logs every held tick; the run records them
    try:
        daemon.run_simulated(duration, on_tick=record)
    finally:
        logging.disable(logging.NOTSET)
    run.served, run.true = source.served, source.true
    run.altered = [_differs(a, b) for a, b in zip(run.served, run.true, strict=True)]
    run.result = {k: float(v) for k, v in backend.finish()["t"].items()}
    return run


def _differs(served: Snapshot, true: Snapshot) -> bool:
    """Whether the fault changed what the daemon read: a value, or how old it is (a
    stopped scrape of an idle service serves the idle page it would serve anyway)."""
    for f in (*VLLM_FIELDS, "sample_age_s"):
        a, b = float(getattr(served, f)), float(getattr(true, f))
        if a != b and not (math.isnan(a) and math.isnan(b)):
            return True
    return False


# ------------------------------------------------------------------------------ scoring
@dataclass(frozen=True)
class EventScore:
    """What the daemon did about one injected event."""

    event: Fault
    ticks: int  # ticks inside the event's window
    flagged: int  # ticks with bad_telemetry inside it
    ticks_to_detect: float  # 1 = flagged on the first tick the fault altered; inf: never
    scale_downs: int  # inside the window (for a fault: once it altered what was read)
    frozen: int  # ticks the anomaly freeze changed a decision inside the window
    doubted: int  # of which the unverified_telemetry hold (a doubt, not a finding)
    armed: int  # ticks a freeze was due (bad telemetry or health) inside the window
    load_seen: bool  # an active load_change anomaly inside the window


def window(event: Fault, end_of_run: float) -> tuple[float, float]:
    """The span an event is judged on: the fault itself, or a load change and its tail."""
    stop = event.end if event.telemetry else event.end + CHANGE_TAIL_S
    if event.kind in ("level_shift",):  # a lasting change: judged while the fleet adapts
        stop = event.start + 1800.0
    if event.kind == "slow_drift" and not math.isfinite(event.duration):
        stop = event.start + 3600.0
    return event.start, min(stop, end_of_run)


def score_event(run: Run, event: Fault) -> EventScore:
    t = run.array("times")
    a, b = window(event, float(t[-1]) + 1.0)
    inside = (t >= a) & (t < b)
    bad = run.array("bad")
    # counted from the first tick the fault changed what the daemon read: a unit change
    # of a zero rate, or a flatline at the value the metric keeps anyway, is invisible
    seen = np.flatnonzero(inside & run.array("altered")) if event.telemetry else (
        np.flatnonzero(inside))
    first = np.flatnonzero(bad & inside)
    first = first[first >= seen[0]] if len(seen) else first[:0]
    ttd = float(first[0] - seen[0] + 1) if len(first) else math.inf
    # a scale-down is blind once the fault has changed what the daemon reads; before that
    # (a flatline at the value the metric keeps anyway) it was decided on true numbers
    lied = np.zeros(len(t), dtype=bool)
    if len(seen):
        lied[seen[0]:] = True
    downs = (run.array("replicas") < run.array("previous")) & inside & (
        lied if event.telemetry else True)
    return EventScore(event=event, ticks=int(inside.sum()), flagged=int((bad & inside).sum()),
                      ticks_to_detect=ttd, scale_downs=int(downs.sum()),
                      frozen=int((run.array("frozen") & inside).sum()),
                      doubted=int((run.array("doubted") & inside).sum()),
                      armed=int((run.array("armed") & inside).sum()),
                      load_seen=bool((run.array("load_seen") & inside).any()))


def false_alarms(run: Run) -> tuple[int, int]:
    """Ticks with bad_telemetry outside every fault window (and its grace), and how many
    ticks that outside counts."""
    t = run.array("times")
    outside = np.ones(len(t), dtype=bool)
    for f in run.scenario.faults:
        outside &= ~((t >= f.start) & (t < f.end + GRACE_S))
    return int((run.array("bad") & outside).sum()), int(outside.sum())


def standard_events(duration: float, onset: float, *, fault_s: float = 900.0,
                    change_s: float = 1200.0) -> list[Fault]:
    """The benchmark's events, one per run, each starting at ``onset`` seconds.

    Telemetry faults last ``fault_s`` (the counter-reset artefact one rate window, the
    stale series its five minutes then nothing, a renamed metric until the end); real
    changes ``change_s`` (a level shift until the end; a drift over an hour). The stuck
    queue comes with a tenfold surge: a fleet kept with spare capacity absorbs a fivefold one
    with a queue of a few requests, and a queue stuck near empty is then no fault that matters.
    """
    rest = max(duration - onset, 60.0)
    f = min(fault_s, rest)
    c = min(change_s, rest)
    return [
        Fault("scrape_gap", onset, min(300.0, f)),
        Fault("stale_series", onset, min(600.0, f)),
        Fault("counter_reset", onset, 60.0),
        Fault("flatline", onset, f, metric="requests_running"),
        Fault("flatline", onset, f, metric="arrival_rate"),
        Fault("flatline", onset, f, metric="kv_cache_usage"),
        Fault("double_scrape", onset, f),
        Fault("unit_change", onset, f, metric="arrival_rate", factor=1000.0),
        Fault("unit_change", onset, f, metric="ttft_p99", factor=1000.0),
        Fault("nan_inf", onset, min(600.0, f), metric="kv_cache_usage"),
        Fault("renamed_metric", onset, rest, metric="requests_waiting"),
        Fault("queue_stuck", onset, f, metric="requests_waiting", factor=10.0),
        Fault("surge", onset, c, factor=2.0),
        Fault("surge", onset, c, factor=5.0),
        Fault("surge", onset, c, factor=10.0),
        Fault("drop_to_zero", onset, c),
        Fault("level_shift", onset, rest, factor=0.5),
        Fault("level_shift", onset, rest, factor=1.8),
        Fault("slow_drift", onset, min(3600.0, rest), factor=2.0),
    ]


def scenarios_for(workload: Workload, onsets: Sequence[float],
                  events: Sequence[Fault] | None = None) -> list[Scenario]:
    """One scenario per standard event and onset on ``workload``."""
    out = []
    for onset in onsets:
        for proto in (events if events is not None
                      else standard_events(workload.duration, onset)):
            e = Fault(proto.kind, onset, proto.duration, proto.metric, proto.factor)
            out.append(Scenario(f"{workload.name}@{onset / 60:.0f}min/{e.label}", workload,
                                (e,)))
    return out
