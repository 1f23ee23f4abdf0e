"""The live loop: ``aiops run`` on the shipped enforce config against real Prometheus and a
simulated vLLM fleet, in real time, every part real except the GPUs.

::

    simulated fleet ──/metrics──► Prometheus (scrape 1 s) ◄──relay── aiops run (subprocess)
      (ClusterSim,                                                      │ HTTPS, token,
       FleetExporter)  ◄── replicas ── fake API server ◄── scale ───────┘ shipped RBAC
                       ── status ───►  (Deployment controller)    Events, Lease ─┘
                                                          Grafana annotations ─► fake Grafana

* The fleet (:class:`aiops.sim.exporter.FleetExporter`) serves vLLM's and kube-state-metrics'
  series; a real Prometheus scrapes it every second.
* ``aiops run`` is the command operators run, on the ConfigMap and environment that
  ``kubectl kustomize deploy/overlays/enforce`` renders, changed only where a cluster differs
  from this machine (addresses, a kubeconfig, shorter intervals, a profile with a short cold
  start so a scale-up is ready within the test).
* The fake API server holds the target Deployment under the shipped RBAC; a driver thread
  plays the Deployment controller: the replica count aiops sets there is applied to the
  simulated fleet, and the fleet's ready count is written back as the Deployment's status.
* Prometheus is reached through a relay (a Service), so it can be killed and come back on
  another port while the daemon keeps its URL.

Used by tests/integration/test_live_loop.py and scripts/live-demo.sh.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from aiops.sim.cluster import ClusterSim
from aiops.sim.exporter import FleetExporter, MetricsServer
from aiops.sim.profiles import load_profile
from aiops.sim.workloads import Workload

from .apiserver import FakeApiServer
from .grafana import FakeGrafana
from .kustomize import (
    DEPLOY,
    LEASE_NAME,
    LEASE_NS,
    TARGET_DEPLOYMENT,
    TARGET_NS,
    daemon_config,
    overlay,
)
from .prometheus import PrometheusServer, prometheus_binary
from .rbac import Rbac
from .relay import Relay
from .tls import TestCA, make_test_ca

GRAFANA_TOKEN = "glsa_live_loop"
NAMESPACES = ("default", "kube-system", LEASE_NS, TARGET_NS)


@dataclass(frozen=True)
class Phase:
    """From ``start_s`` (seconds after the fleet starts), Poisson arrivals at ``rate_rps``."""

    start_s: float
    rate_rps: float


@dataclass(frozen=True)
class LiveSettings:
    """What the loop runs with; every interval is short so that minutes hold a story."""

    schedule: tuple[Phase, ...] = (Phase(0.0, 6.0), Phase(30.0, 30.0))
    duration_s: float = 600.0  # workload length: longer than any run
    context_tokens: int = 500
    generated_tokens: int = 100
    cold_start_s: float = 10.0  # the fleet's: a scale-up is ready within a test
    interval_s: float = 2.0  # the daemon's tick
    scrape_interval_s: float = 1.0
    rate_window_s: float = 10.0  # four scrapes and more: rate() survives a missed one
    # The daemon starts once the fleet has served a rate window and two scrapes, as it does
    # in a cluster against a service already running: within the first window of a
    # service's life, prompts are counted (at prefill) before their completions, so tokens
    # per request read high, and ``predictive`` would plan at a capacity a third of the
    # real one from its first reading on.
    daemon_after_s: float = 12.0
    stale_after_s: float = 10.0
    cooldown_s: float = 10.0
    scale_down_stabilization_s: float = 20.0
    start_replicas: int = 1
    max_replicas: int | None = None  # None: the shipped config's
    policy: str | None = None  # None: the shipped config's
    seed: int = 0
    queries: dict[str, str] = field(default_factory=dict)  # PromQL overrides (tests)


def tick_synced_policy(interval_s: float, down_window_s: float) -> str:
    """``predictive`` that follows the observed rate at once (no smoothing, no burst memory,
    no learnt spare) and scales down after ``down_window_s``, so that minutes hold a story
    (and a wrong scale-down can show): the shipped two-minute smoothing, two-hour burst
    memory and SLO-learnt spare are for production, where a minute of lag is nothing beside
    a cold start. ``interval_s`` (the tick) is kept in the signature for the callers'
    record."""
    del interval_s
    return (f"predictive:smoothing=0,burst_window=0,spare=0,gain=0,base_gain=0,"
            f"down_window={down_window_s:g}")


def step_workload(s: LiveSettings) -> Workload:
    """Poisson arrivals at each phase's rate; every request ``context``/``generated`` tokens
    long, so a replica's capacity is one number the test can reason with."""
    rng = np.random.default_rng(s.seed)
    parts = []
    for i, phase in enumerate(s.schedule):
        end = s.schedule[i + 1].start_s if i + 1 < len(s.schedule) else s.duration_s
        n = int(rng.poisson(phase.rate_rps * (end - phase.start_s)))
        parts.append(np.sort(rng.uniform(phase.start_s, end, n)))
    arrivals = np.concatenate(parts)
    n = len(arrivals)
    return Workload("live-step", arrivals, np.full(n, s.context_tokens),
                    np.full(n, s.generated_tokens), s.duration_s,
                    meta={"source": "live loop", "seed": s.seed})


def live_profile(s: LiveSettings, directory: Path) -> Path:
    """The default profile with the short cold start, as a YAML file both the fleet and the
    daemon load (so the daemon plans with the fleet's real cold start)."""
    raw = yaml.safe_load((files("aiops") / "profiles" / "llama3-8b-a100.yaml").read_text())
    raw["name"] = "llama3-8b-a100-live"
    raw["cold_start_s"] = s.cold_start_s
    path = directory / "live-profile.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def aiops_command() -> list[str]:
    script = Path(sys.executable).with_name("aiops")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from aiops.cli import main; main()"]


@dataclass
class Decision:
    """One ``aiops.decision`` log line of the daemon."""

    time: float
    event: str
    current: int
    final: int
    recommended: int
    rules: list[str]
    text: str


class LiveLoop:
    """Start with :meth:`start`, stop with :meth:`stop` (also on any failure in between)."""

    def __init__(self, root: Path, settings: LiveSettings | None = None, *,
                 ca: TestCA | None = None, rbac: Rbac | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.s = settings or LiveSettings()
        self.ca = ca or make_test_ca(root / "tls")
        self.rbac = rbac or Rbac.from_objects(overlay("enforce"))
        self.echo = echo
        self.api = FakeApiServer(tls=self.ca, rbac=self.rbac, namespaces=NAMESPACES)
        self.grafana = FakeGrafana(token=GRAFANA_TOKEN)
        self.relay = Relay()
        self.profile_path = live_profile(self.s, root)
        self.profile = load_profile(str(self.profile_path))
        self.workload = step_workload(self.s)
        self.t0 = 0.0
        self.exporter: FleetExporter | None = None
        self.metrics: MetricsServer | None = None
        self.prometheus: PrometheusServer | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_log = root / "aiops.log"
        self.config_path = root / "config.yaml"
        self.identity = "aiops-live-0"
        self._stop = threading.Event()
        self._driver: threading.Thread | None = None
        self.driver_errors: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LiveLoop:
        self.api.start()
        self.grafana.start()
        example = [d for d in yaml.safe_load_all((DEPLOY / "examples" /
                                                  "vllm-llama3-8b.yaml").read_text())
                   if d and d["kind"] == "Deployment"]
        containers = example[0]["spec"]["template"]["spec"]["containers"]
        self.api.add_deployment(TARGET_NS, TARGET_DEPLOYMENT, replicas=self.s.start_replicas,
                                containers=containers)
        # The fleet, on the wall clock from now.
        self.t0 = time.monotonic()
        batch = self.profile.default_batch_size
        sim = ClusterSim(self.profile, self.workload, replicas=self.s.start_replicas,
                         batch_size=batch)
        cfg, _ = daemon_config(overlay("enforce"))
        model = cfg["targets"][0].get("model_name")
        self.exporter = FleetExporter(sim, namespace=TARGET_NS, deployment=TARGET_DEPLOYMENT,
                                      model_name=model, start=self.t0, seed=self.s.seed)
        self.metrics = self.exporter.serve(clock=time.monotonic)
        self._driver = threading.Thread(target=self._drive, daemon=True, name="deployment")
        self._driver.start()
        self.prometheus = PrometheusServer(prometheus_binary(), self.root / "prometheus",
                                           self._prometheus_config())
        self.relay.point_at(int(self.prometheus.start().rsplit(":", 1)[1]))
        time.sleep(max(0.0, self.s.daemon_after_s - self.elapsed()))
        self._start_daemon()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait(timeout=10)
        if self.prometheus is not None:
            self.prometheus.stop()
        self.relay.close()
        if self._driver is not None:
            self._driver.join(timeout=5)
        if self.metrics is not None:
            self.metrics.close()
        self.grafana.stop()
        self.api.stop()

    def __enter__(self) -> LiveLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------ the parts
    def _prometheus_config(self) -> str:
        assert self.metrics is not None
        interval = f"{self.s.scrape_interval_s:g}s"
        return yaml.safe_dump({
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [{
                "job_name": "vllm",
                "scrape_interval": interval,
                "scrape_timeout": interval,
                # The fleet's pods carry their own namespace/pod labels, as the relabelling
                # of a Kubernetes service discovery would set them.
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{self.metrics.port}"]}],
            }],
        })

    def _drive(self) -> None:
        """The Deployment controller: spec.replicas → fleet, fleet → status, 5 times a second."""
        assert self.exporter is not None
        while not self._stop.wait(0.2):
            try:
                dep = self.api.deployment(TARGET_NS, TARGET_DEPLOYMENT)
                self.exporter.scale(int(dep["spec"]["replicas"]))
                self.exporter.advance(time.monotonic())
                snap = self.exporter.snapshot()
                self.api.set_status(
                    TARGET_NS, TARGET_DEPLOYMENT,
                    observedGeneration=dep["metadata"].get("generation", 1),
                    replicas=snap.ready_replicas + snap.starting_replicas,
                    updatedReplicas=snap.ready_replicas + snap.starting_replicas,
                    readyReplicas=snap.ready_replicas, availableReplicas=snap.ready_replicas)
            except Exception as exc:  # keep driving; the test reads these
                self.driver_errors.append(repr(exc))

    def daemon_config(self) -> dict[str, Any]:
        """The enforce overlay's config, with what differs on this machine."""
        cfg, _ = daemon_config(overlay("enforce"))
        token = self.root / "grafana-token"
        token.write_text(GRAFANA_TOKEN + "\n")
        s = self.s
        cfg["prometheus"].update(url=self.relay.url, timeout_s=2, retries=1, backoff_s=0.2,
                                 rate_window_s=s.rate_window_s,
                                 stale_after_s=s.stale_after_s)
        cfg["kubernetes"] = {"in_cluster": False, "request_timeout_s": 5,
                             "kubeconfig": str(self.api.write_kubeconfig(
                                 self.root / "kubeconfig", token="daemon-token"))}
        cfg["grafana"].update(url=self.grafana.url, token_file=str(token))
        cfg["guardrails"].update(cooldown_s=s.cooldown_s,
                                 scale_down_stabilization_s=s.scale_down_stabilization_s)
        cfg["daemon"].update(interval_s=s.interval_s, http_port=0)
        target = cfg["targets"][0]
        target["profile"] = str(self.profile_path)
        if s.max_replicas is not None:
            target["max_replicas"] = s.max_replicas
        if s.policy is not None:
            target["policy"] = s.policy
        if s.queries:
            target["queries"] = dict(s.queries)
        return cfg

    def _start_daemon(self) -> None:
        self.api.tokens["daemon-token"] = self.api.user  # the service account's token
        self.config_path.write_text(yaml.safe_dump(self.daemon_config()))
        _, env_overlay = daemon_config(overlay("enforce"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOPS_")}
        env.update(env_overlay)  # AIOPS_DRY_RUN=false: the enforce overlay's switch
        env.update(POD_NAME=self.identity, PYTHONUNBUFFERED="1")
        with self.daemon_log.open("ab") as out:
            self.daemon = subprocess.Popen(
                [*aiops_command(), "run", "--config", str(self.config_path),
                 "--log-format", "json"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    # ------------------------------------------------------------------ events
    def kill_prometheus(self) -> None:
        """Prometheus crashes; the relay has nothing to send connections to."""
        assert self.prometheus is not None
        self.relay.point_at(None)
        self.prometheus.kill()

    def restart_prometheus(self) -> None:
        """The replacement comes up (new port, same TSDB) and the relay points at it."""
        assert self.prometheus is not None
        self.relay.point_at(int(self.prometheus.start().rsplit(":", 1)[1]))

    def sigterm(self) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGTERM)

    # ------------------------------------------------------------------ what happened
    def replicas(self) -> int:
        return int(self.api.deployment(TARGET_NS, TARGET_DEPLOYMENT)["spec"]["replicas"])

    def scales(self) -> list[tuple[float, int]]:
        """(seconds since start, replicas) of every scale the API server persisted."""
        out = []
        for r in self.api.find("PATCH", "/scale$"):
            if r.status == 200 and not r.dry_run:
                out.append((r.received - self.t0, int(r.body["spec"]["replicas"])))
        return out

    def decisions(self) -> list[Decision]:
        out = []
        for line in self.log_lines():
            if line.get("logger") == "aiops.decision":
                out.append(Decision(float(line["decision_time"]), str(line["event"]),
                                    int(line["current_replicas"]), int(line["final_replicas"]),
                                    int(line["recommended_replicas"]), list(line["rules"]),
                                    str(line["msg"])))
        return out

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        try:
            text = self.daemon_log.read_text(errors="replace")
        except OSError:
            return []
        for raw in text.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                out.append(line)
        return out

    def offered_rps(self, t: float | None = None) -> float:
        t = self.elapsed() if t is None else t
        return [p.rate_rps for p in self.s.schedule if p.start_s <= t][-1]

    def wait_for(self, what: str, cond: Callable[[], bool], timeout_s: float,
                 poll_s: float = 0.25) -> float:
        """Wait until ``cond()``; the seconds it took. On timeout, AssertionError naming
        ``what`` with the end of the daemon's log."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if cond():
                return time.monotonic() - start
            if self.daemon is not None and self.daemon.poll() is not None and not cond():
                break
            time.sleep(poll_s)
        lines = [ln for ln in self.daemon_log.read_text(errors="replace").splitlines()
                 if "apscheduler" not in ln]
        tail = "\n".join(lines[-12:])
        raise AssertionError(f"{what}: not within {timeout_s:.0f} s "
                             f"(t={self.elapsed():.0f} s); the daemon's log ends:\n{tail}")

    def dashboard_line(self) -> str:
        """One line of the Grafana-less dashboard: load, fleet, the daemon's last word."""
        assert self.exporter is not None
        snap = self.exporter.snapshot()
        spec = self.replicas()
        last = next((d for d in reversed(self.decisions())), None)
        said = f"{last.event} {last.current}→{last.final}" if last else "-"
        prom = "up" if self.prometheus is not None and self.prometheus.running else "DOWN"
        return (f"t={self.elapsed():6.1f}s load {self.offered_rps():5.1f} rps "
                f"(served {snap.arrival_rate:5.1f}) | replicas spec {spec} ready "
                f"{snap.ready_replicas} starting {snap.starting_replicas} | queue "
                f"{snap.requests_waiting:6.0f} ttft p99 {snap.ttft_p99:6.2f}s | "
                f"prometheus {prom} | aiops: {said}")


def lease_holder(api: FakeApiServer) -> str | None:
    lease = api.lease(LEASE_NS, LEASE_NAME)
    return None if lease is None else str(lease["spec"].get("holderIdentity") or "")


__all__: Sequence[str] = ["LiveLoop", "LiveSettings", "Phase", "lease_holder", "step_workload",
                          "tick_synced_policy"]
