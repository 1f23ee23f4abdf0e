"""Builds the daemon's object graph from a config: the only place that picks concrete edges.

``backend: sim`` wires the controller to the embedded simulated cluster and a simulated
clock; ``backend: kubernetes`` to Prometheus, the API server, the Lease and Grafana. The
controller, policies and guardrails are the same objects either way.

Before anything is built, :func:`check_config` runs every check that can fail at start —
policy names and parameters, profiles, model files, the workload of the simulated cluster,
the forecaster and the detector, the Kubernetes client configuration and the credentials
the backend in use needs — so that ``aiops validate-config`` and ``aiops run`` agree, and a
typo stops the daemon with exit code 2 instead of changing which policy drives a fleet.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiops.clock import Clock, SimClock, WallClock
from aiops.config import Config, TargetConfig, config_lines, load_config
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
    from aiops.cli import version as cli_version

    return cli_version()


# --------------------------------------------------------------------------- pre-flight
@dataclass(frozen=True)
class Problem:
    """One thing that would stop or silently degrade ``aiops run`` with this config.

    ``local``: it depends on the machine the daemon runs on (the pod's service account, a
    mounted secret, an environment variable), not on the file alone. ``validate-config``
    run outside the pod a config is written for cannot check those, and says so.
    """

    text: str
    local: bool = False


def _at(lines: dict[tuple[str | int, ...], int], *key: str | int) -> str:
    """``targets[0].policy (line 12)``: a field and its line in the file, when known."""
    name = ""
    for part in key:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    for n in range(len(key), 0, -1):
        if key[:n] in lines:
            return f"{name} (line {lines[key[:n]]})"
    return name


def check_config(config: Config, path: str | Path | None = None, *, models: bool = True,
                 workload: bool = True, environ: dict[str, str] | None = None
                 ) -> list[Problem]:
    """Every problem ``aiops run`` would meet with ``config`` before its first tick.

    ``models``: report unusable PPO model files (``validate-config``); ``run`` leaves them
    to the controller, which falls back to ``predictive`` and says why, as designed.
    ``workload``: load the simulated cluster's workload (``run`` loads it anyway).
    """
    from aiops.config import config_lines
    from aiops.errors import InputError
    from aiops.ingest.queries import validate_overrides
    from aiops.policy import known_policies, make_policy
    from aiops.policy.base import PolicyContext, PolicySpec
    from aiops.sim.profiles import load_profile

    env = dict(os.environ) if environ is None else environ
    lines = config_lines(path) if path is not None else {}
    out: list[Problem] = []
    for i, t in enumerate(config.targets):
        try:
            validate_overrides(t)
        except InputError as err:
            out.append(Problem(f"{_at(lines, 'targets', i, 'queries')}: {err.problem}"))
        try:
            profile = load_profile(t.profile)
        except InputError as err:
            out.append(Problem(f"{_at(lines, 'targets', i, 'profile')}: {err}"))
            continue
        if config.backend == "sim":
            batch = profile.default_batch_size
            if batch not in t.batch_sizes:
                batch = t.batch_sizes[len(t.batch_sizes) // 2]
            if batch not in profile.batch_sizes:
                out.append(Problem(
                    f"{_at(lines, 'targets', i, 'batch_sizes')}: the simulated cluster starts "
                    f"at batch size {batch}, which profile {profile.name!r} does not model; "
                    f"use sizes from {list(profile.batch_sizes)}"))
        where = _at(lines, "targets", i, "policy")
        try:
            spec = PolicySpec.parse(t.policy)
        except InputError as err:
            out.append(Problem(f"{where}: {err.problem}"))
            continue
        if spec.name not in known_policies():
            out.append(Problem(f"{where}: unknown policy {spec.name!r}; known: "
                               f"{', '.join(p for p in known_policies() if p != 'oracle')}"))
            continue
        ctx = PolicyContext(min_replicas=t.min_replicas, max_replicas=t.max_replicas,
                            batch_sizes=t.batch_sizes, interval_s=config.daemon.interval_s,
                            cold_start_s=profile.cold_start_s,
                            ttft_slo_s=t.slo.ttft_s, tpot_slo_s=t.slo.tpot_s)
        try:
            make_policy(spec, ctx)
        except InputError as err:
            unusable_model = spec.name == "ppo" and _is_ppo_load_error(err)
            if unusable_model and not models:
                continue  # the controller falls back to predictive and says why
            hint = "; `aiops run` would fall back to predictive" if unusable_model else ""
            out.append(Problem(f"{where}: {err}{hint}"))
    try:
        from aiops.forecast.base import make_from_spec

        make_from_spec(config.forecast.model)
    except InputError as err:
        out.append(Problem(f"{_at(lines, 'forecast', 'model')}: {err.problem}"))
    except ImportError:
        pass  # no forecasting installed: the daemon runs without forecasts and says so
    try:
        from aiops.detect.monitor import TargetMonitor

        TargetMonitor(threshold=config.detect.threshold, detector=config.detect.detector)
    except ImportError:
        pass
    except (ValueError, InputError) as exc:
        out.append(Problem(f"{_at(lines, 'detect', 'detector')}: {exc}"))
    if config.backend == "sim":
        if workload:
            from aiops.sim.workloads import resolve_workload

            try:
                resolve_workload(config.sim.workload, rate_scale=config.sim.rate_scale,
                                 seed=config.sim.seed, duration=SIM_DEFAULT_S)
            except InputError as err:
                out.append(Problem(f"{_at(lines, 'sim', 'workload')}: {err}"))
    else:
        out.extend(_backend_problems(config, lines, env))
    return out


def _is_ppo_load_error(err: Exception) -> bool:
    """A PPO model directory that cannot be used (missing, corrupt, mismatched), as opposed
    to a bad parameter in the spec."""
    from aiops.policy.ppo import PpoLoadError

    return isinstance(err, PpoLoadError)


def _backend_problems(config: Config, lines: dict[tuple[str | int, ...], int],
                      env: dict[str, str]) -> list[Problem]:
    """What the Kubernetes backend needs from the machine it runs on."""
    from aiops.actuate.k8s import build_configuration
    from aiops.errors import PermanentError

    out: list[Problem] = []
    kube = config.kubernetes
    try:
        build_configuration(kube)
    except PermanentError as exc:
        if kube.in_cluster:
            out.append(Problem(
                f"{_at(lines, 'kubernetes', 'in_cluster')}: in_cluster is true but this "
                "process is not in a Kubernetes pod (no service account: "
                f"{str(exc.__cause__ or exc).rstrip('.')}); to run outside a cluster set "
                "kubernetes.in_cluster: false and kubernetes.kubeconfig: PATH (and "
                "kubernetes.context)", local=True))
        else:
            where = kube.kubeconfig or "$KUBECONFIG or ~/.kube/config"
            out.append(Problem(f"{_at(lines, 'kubernetes', 'kubeconfig')}: cannot load a "
                               f"kubeconfig from {where}: {exc.__cause__ or exc}", local=True))
    prom = config.prometheus
    if prom.bearer_token_file is not None and not _readable(prom.bearer_token_file):
        out.append(Problem(f"{_at(lines, 'prometheus', 'bearer_token_file')}: cannot read "
                           f"{prom.bearer_token_file}", local=True))
    for key, var in (("bearer_token_env", prom.bearer_token_env),
                     ("basic_auth_password_env", prom.basic_auth_password_env)):
        if var is not None and not env.get(var):
            out.append(Problem(f"{_at(lines, 'prometheus', key)}: the environment variable "
                               f"{var} is not set", local=True))
    graf = config.grafana
    if graf.url and graf.token_file is not None and not _readable(graf.token_file):
        out.append(Problem(f"{_at(lines, 'grafana', 'token_file')}: cannot read "
                           f"{graf.token_file}", local=True))
    return out


def _readable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


def monitor_factory(config: Config) -> Any:
    """Per-target anomaly monitors, or None where detection is unavailable."""
    try:
        from aiops.detect.monitor import TargetMonitor
    except ImportError:
        return None

    def make(target: TargetConfig) -> AnomalyMonitor | None:
        # An unchanged page stays a doubt for as long as the ingest would still accept a
        # stopped scrape's last sample: the Prometheus source's freshness limit. Latency
        # quantiles cover the requests of the ingest's rate window.
        return TargetMonitor(threshold=config.detect.threshold,
                             detector=config.detect.detector,
                             checks={"still_s": config.prometheus.stale_after_s,
                                     "window_s": config.prometheus.rate_window_s})

    return make


def forecaster_factory(config: Config) -> Any:
    def make(target: TargetConfig) -> LoadForecaster | None:
        try:
            from aiops.forecast.base import make_from_spec

            fc: LoadForecaster = make_from_spec(config.forecast.model)
            return fc
        except Exception as exc:  # a broken forecaster must not stop the daemon
            log.warning("target %s: no forecaster (%s); policies run without forecasts",
                        target.name, exc)
            return None

    return make


def build(path: str | Path, *, dry_run: bool | None = None, log_format: str | None = None,
          duration_s: float | None = None) -> Built:
    """Load, check (:func:`check_config`) and wire the daemon; InputError before anything
    starts when the config or the machine would not let it run as configured."""
    from aiops.errors import InputError

    config = load_config(path)
    problems = check_config(config, path, models=False, workload=False)
    if problems:
        raise InputError("; ".join(p.text for p in problems), path=str(path))
    update: dict[str, Any] = {}
    if dry_run is not None:
        update["dry_run"] = dry_run
    if log_format is not None:
        # The start-up line logs the config: it must show the format actually used.
        update["daemon"] = config.daemon.model_copy(update={"log_format": log_format})
    if update:
        config = config.model_copy(update=update)
    setup_logging(config.daemon.log_format)
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
        try:
            backend: Any = SimBackend(config, sim_clock, duration=duration_s or SIM_DEFAULT_S)
        except InputError as err:
            where = _at(config_lines(path), "sim", "workload")
            raise InputError(f"{where}: {err}", path=str(path)) from None
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
    # Logged once the backend is built: a config that fails there never says "starting".
    log.info("aiops %s starting: %s", version(), "dry-run" if config.dry_run else "ENFORCE",
             extra={"fields": {"config": config.masked()}})
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
    """Run on the simulated cluster; at the end, what each target cost and how it served.

    With ``log_format: json`` the summary is one JSON log line per target (no progress bar,
    no table: a log pipeline reads every line). In dry-run nothing was scaled, so the
    figures are the unchanged fleet's: the policy column says so instead of naming the
    policy, whose recommendations are in the log.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    cfg = built.config
    as_json = cfg.daemon.log_format == "json"
    console = Console(stderr=True)
    with Progress(TextColumn("simulated time"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=as_json) as progress:
        task = progress.add_task("sim", total=duration_s)
        built.daemon.run_simulated(duration_s,
                                   on_tick=lambda t: progress.update(task, completed=t))
    results = built.backend.finish()
    firings: dict[str, dict[str, int]] = {}
    for metric in built.daemon.telemetry.guardrails.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                per = firings.setdefault(s.labels["target"], {})
                per[s.labels["rule"]] = int(s.value)
    mode = "dry-run" if cfg.dry_run else "enforce"
    rows = []
    for name, r in results.items():
        rt = built.controller.runtimes[name]
        top = sorted(firings.get(name, {}).items(), key=lambda kv: -kv[1])[:3]
        policy = (f"unchanged fleet (dry-run; {rt.policy_name} only recommended)"
                  if cfg.dry_run else rt.policy_name)
        rows.append({"target": name, "policy": policy, "gpu_hours": round(r["gpu_hours"], 4),
                     "slo_attainment": round(float(r["slo_attainment"]), 5),
                     "slo_attainment_feasible": round(float(r["slo_attainment_feasible"]), 5),
                     "ttft_p99_s": round(float(r["ttft_p99_s"]), 4),
                     "scale_ups": r["scale_ups"], "scale_downs": r["scale_downs"],
                     "max_replicas": r["max_replicas"], "requests": r["requests"],
                     "guardrails_fired": dict(top)})
    title = (f"aiops on the simulated cluster, {duration_s / 3600:.2f} h simulated ({mode})")
    if as_json:
        for row in rows:
            log.info("%s: %s", title, row["target"], extra={"fields": row})
        return
    table = Table(title=title)
    for col in ("target", "policy", "GPU-hours", "SLO %", "SLO feas. %", "TTFT p99 s",
                "scale-ups", "scale-downs", "max replicas", "requests", "guardrails fired"):
        table.add_column(col)
    for row in rows:
        fired = row["guardrails_fired"]
        assert isinstance(fired, dict)
        table.add_row(str(row["target"]), str(row["policy"]), f"{row['gpu_hours']:.2f}",
                      f"{100 * float(str(row['slo_attainment'])):.2f}",
                      f"{100 * float(str(row['slo_attainment_feasible'])):.2f}",
                      f"{row['ttft_p99_s']:.3f}", str(row["scale_ups"]),
                      str(row["scale_downs"]), str(row["max_replicas"]), str(row["requests"]),
                      ", ".join(f"{k} {v}" for k, v in fired.items()) or "none")
    Console(width=max(Console().width, 160)).print(table)
