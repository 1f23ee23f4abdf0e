"""Builds the daemon's object graph from a config: the only place that picks concrete edges.

``backend: sim`` wires the controller to the embedded simulated cluster and a simulated
clock; ``backend: kubernetes`` to Prometheus, the API server, the Lease and Grafana. The
controller, policies and guardrails are the same objects either way.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiops.clock import Clock, SimClock, WallClock
from aiops.config import Config, TargetConfig, load_config
from aiops.controller import AnomalyMonitor, Controller, LoadForecaster
from aiops.daemon import Daemon, Leader, serve_http
from aiops.logsetup import setup_logging
from aiops.telemetry import Telemetry

log = logging.getLogger("aiops")
SIM_DEFAULT_S = 3600.0  # a simulated run without --duration lasts one hour


@dataclass
class Built:
    config: Config
    daemon: Daemon
    controller: Controller
    backend: Any  # SimBackend for backend: sim, else None


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("aiops-autoscaler")
    except PackageNotFoundError:
        return "unknown"


def monitor_factory(config: Config) -> Any:
    """Per-target anomaly monitors, or None where detection is unavailable."""
    try:
        from aiops.detect.monitor import TargetMonitor
    except ImportError:
        return None

    def make(target: TargetConfig) -> AnomalyMonitor | None:
        return TargetMonitor(threshold=config.detect.threshold,
                             detector=config.detect.detector)

    return make


def forecaster_factory(config: Config) -> Any:
    def make(target: TargetConfig) -> LoadForecaster | None:
        try:
            from aiops.forecast.base import make_forecaster

            fc: LoadForecaster = make_forecaster(config.forecast.model)
            return fc
        except Exception as exc:  # a broken forecaster must not stop the daemon
            log.warning("target %s: no forecaster (%s); policies run without forecasts",
                        target.name, exc)
            return None

    return make


def build(path: str | Path, *, dry_run: bool | None = None, log_format: str | None = None,
          duration_s: float | None = None) -> Built:
    from aiops.ingest.queries import validate_overrides

    config = load_config(path)
    for target in config.targets:
        validate_overrides(target)
    if dry_run is not None:
        config = config.model_copy(update={"dry_run": dry_run})
    setup_logging(log_format or config.daemon.log_format)
    log.info("aiops %s starting: %s", version(), "dry-run" if config.dry_run else "ENFORCE",
             extra={"fields": {"config": config.masked()}})
    telemetry = Telemetry(version=version())
    clock: Clock
    leader: Leader | None = None
    annotators: list[Any] = []
    from aiops.annotate.log import LogAnnotator

    if config.backend == "sim":
        from aiops.sim.backend import SimBackend

        sim_clock = SimClock(0.0)
        clock = sim_clock
        # The workload is cut to the run: what arrives after the end is not the daemon's.
        backend: Any = SimBackend(config, sim_clock, duration=duration_s or SIM_DEFAULT_S)
        source: Any = backend
        actuator: Any = backend
    else:
        from aiops.actuate.k8s import KubernetesActuator
        from aiops.ingest.prometheus import PrometheusSource

        clock = WallClock()
        backend = None
        source = PrometheusSource(config.prometheus, clock,
                                  rate_window_s=config.prometheus.rate_window_s)
        actuator = KubernetesActuator(config.kubernetes)
        if config.leader_election.enabled:
            from aiops.actuate.leader import LeaderElector

            identity = os.environ.get("POD_NAME") or socket.gethostname()
            leader = LeaderElector.from_config(config.leader_election, config.kubernetes,
                                               identity=identity, clock=clock)
        from aiops.annotate.events import EventAnnotator

        annotators.append(EventAnnotator.from_config(config.kubernetes))
        if config.grafana.url:
            from aiops.annotate.base import QueuedAnnotator
            from aiops.annotate.grafana import GrafanaAnnotator

            # On its own thread: a slow Grafana must not lengthen the tick.
            annotators.append(QueuedAnnotator(GrafanaAnnotator(config.grafana)))
    annotators.append(LogAnnotator())
    controller = Controller(config, source, actuator, clock, telemetry,
                            annotators=annotators,
                            monitor_factory=monitor_factory(config),
                            forecaster_factory=forecaster_factory(config))
    daemon = Daemon(config, controller, clock, telemetry, leader=leader)
    return Built(config, daemon, controller, backend)


def run_built(built: Built, duration_s: float | None) -> None:
    """Run until stopped; with the simulated backend, print what the run cost at the end."""
    import signal

    cfg = built.config
    server = None
    if cfg.daemon.http_port:
        server = serve_http(cfg.daemon.http_host, cfg.daemon.http_port, built.daemon.telemetry,
                            built.daemon.health)
    if cfg.backend == "sim":
        _run_sim(built, duration_s or SIM_DEFAULT_S)
    else:
        def stop(signum: int, frame: object) -> None:
            log.info("signal %d: stopping", signum)
            built.daemon.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        built.daemon.run_live(duration_s)
    if server is not None:
        server.shutdown()


def _run_sim(built: Built, duration_s: float) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console(stderr=True)
    with Progress(TextColumn("simulated time"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("sim", total=duration_s)
        built.daemon.run_simulated(duration_s,
                                   on_tick=lambda t: progress.update(task, completed=t))
    results = built.backend.finish()
    table = Table(title=f"aiops on the simulated cluster, {duration_s / 3600:.2f} h simulated "
                        f"({'dry-run' if built.config.dry_run else 'enforce'})")
    for col in ("target", "policy", "GPU-hours", "SLO %", "TTFT p99 s", "scale-ups",
                "scale-downs", "max replicas", "requests", "guardrails fired"):
        table.add_column(col)
    firings: dict[str, dict[str, int]] = {}
    for metric in built.daemon.telemetry.guardrails.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                per = firings.setdefault(s.labels["target"], {})
                per[s.labels["rule"]] = int(s.value)
    for name, r in results.items():
        rt = built.controller.runtimes[name]
        top = sorted(firings.get(name, {}).items(), key=lambda kv: -kv[1])[:3]
        table.add_row(name, rt.policy_name, f"{r['gpu_hours']:.2f}",
                      f"{100 * float(r['slo_attainment']):.2f}", f"{r['ttft_p99_s']:.3f}",
                      str(r["scale_ups"]), str(r["scale_downs"]), str(r["max_replicas"]),
                      str(r["requests"]), ", ".join(f"{k} {v}" for k, v in top) or "none")
    Console(width=max(Console().width, 160)).print(table)
