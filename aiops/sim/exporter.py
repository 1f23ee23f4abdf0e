"""The simulated fleet, live: a ``ClusterSim`` stepped on the wall clock, its metrics served on
``/metrics`` under vLLM's and kube-state-metrics' names.

Why: the daemon's live path (a real Prometheus scraping pods, ``PrometheusSource``, the
controller, the Kubernetes API) can then run end to end with every part real except the
GPUs. A Prometheus pointed at this endpoint sees what it would see scraping vLLM pods and
kube-state-metrics, and the daemon's default queries run against it unchanged.

What is exported, per scrape:

* one set of vLLM series per ready pod, labelled ``namespace``, ``pod`` (named as a
  Deployment's pods are, ``<deployment>-<template hash>-<5 chars>``, so the daemon's pod
  regex selects them) and ``model_name``. The fleet is simulated as a whole; its gauges are
  shared evenly between the ready pods and its counters' growth since the last scrape is
  split evenly between them, so each pod's counters only grow and the sums over pods are
  the simulator's own figures. A pod that goes away takes its series with it, as on a
  cluster; a new pod's counters start at zero. No ready pod, no vLLM series.
* ``kube_deployment_spec_replicas``, ``kube_deployment_status_replicas_ready`` and
  ``kube_deployment_status_replicas``, labelled ``namespace`` and ``deployment``.

Only ``ClusterSim``'s public API is used (``step``, ``scale``, ``set_batch_size``,
``snapshot``, ``prometheus_metrics``), so the exporter follows the simulator's model, whatever
it becomes. Time: ``advance(now)`` steps the simulation to the wall-clock time ``now``
(seconds, any monotonic clock), the simulation's zero being the clock value given at
construction; a scrape calls it first, so a scrape always sees the present.
"""

from __future__ import annotations

import math
import random
import string
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiops.sim.cluster import ClusterSim
from aiops.types import Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format, which every Prometheus version scrapes."""

GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
SHARED_GAUGES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # a mean: same per pod
KUBE = ("kube_deployment_spec_replicas", "kube_deployment_status_replicas_ready",
        "kube_deployment_status_replicas")

Scrape = Mapping[str, float | Mapping[str, float]]


@dataclass
class _Pod:
    name: str
    counters: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[str, float]] = field(default_factory=dict)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())


def _number(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(float(value))


def _scalar(scrape: Scrape, name: str) -> float:
    value = scrape[name]
    if isinstance(value, Mapping):
        raise TypeError(f"{name} is a histogram, not a number")
    return float(value)


class FleetExporter:
    """One simulated Deployment's metrics as its pods and kube-state-metrics would serve them.

    Thread-safe: the scrape handler, the driver that applies the replica count and whoever
    reads snapshots may call from different threads.
    """

    def __init__(self, sim: ClusterSim, *, namespace: str, deployment: str,
                 model_name: str | None = None, start: float = 0.0,
                 template_hash: str = "7d9f8b6c5d", seed: int = 0) -> None:
        self.sim = sim
        self.namespace = namespace
        self.deployment = deployment
        self.model_name = model_name
        self.start = start
        self.template_hash = template_hash
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._pods: list[_Pod] = []
        self._last: Scrape | None = None

    # ------------------------------------------------------------------ the fleet
    def advance(self, now: float) -> None:
        """Step the simulation to wall-clock ``now`` (the simulator is event-driven: any step
        is exact; steps under a millisecond are left for the next call)."""
        with self._lock:
            behind = (now - self.start) - self.sim.time
            if behind >= 1e-3:
                self.sim.step(behind)

    def scale(self, replicas: int) -> None:
        """Apply ``spec.replicas`` (what the Deployment now asks for); a no-op if unchanged."""
        with self._lock:
            if replicas != self.sim.desired_replicas:
                self.sim.scale(replicas)

    def set_batch_size(self, batch: int) -> None:
        with self._lock:
            self.sim.set_batch_size(batch)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self.sim.snapshot()

    # ------------------------------------------------------------------ the scrape
    def _pod_name(self) -> str:
        suffix = "".join(self._rng.choice(string.ascii_lowercase + string.digits)
                         for _ in range(5))
        return f"{self.deployment}-{self.template_hash}-{suffix}"

    def _account(self, scrape: Scrape) -> None:
        """Follow the ready pods and give each its share of the counters' growth."""
        ready = round(_scalar(scrape, "kube_deployment_status_replicas_ready"))
        while len(self._pods) > ready:  # the newest go first, as a scale-down removes them
            self._pods.pop()
        while len(self._pods) < ready:
            self._pods.append(_Pod(self._pod_name()))
        last = self._last or {}
        for name, value in scrape.items():
            if name in GAUGES or name in SHARED_GAUGES or name in KUBE:
                continue
            before = last.get(name)
            if isinstance(value, Mapping):
                prev = before if isinstance(before, Mapping) else {}
                for le, count in value.items():
                    share = max(0.0, count - prev.get(le, 0.0)) / max(1, len(self._pods))
                    for pod in self._pods:
                        bucket = pod.buckets.setdefault(name, {})
                        bucket[le] = bucket.get(le, 0.0) + share
            else:
                prev_value = float(before) if isinstance(before, int | float) else 0.0
                share = max(0.0, float(value) - prev_value) / max(1, len(self._pods))
                for pod in self._pods:
                    pod.counters[name] = pod.counters.get(name, 0.0) + share
        self._last = scrape

    def exposition(self, now: float | None = None) -> str:
        """The text a scrape gets (after stepping to ``now``, when given)."""
        if now is not None:
            self.advance(now)
        with self._lock:
            scrape = self.sim.prometheus_metrics()
            self._account(scrape)
            return self._render(scrape)

    def _render(self, scrape: Scrape) -> str:
        lines: list[str] = []
        pods = self._pods
        n = max(1, len(pods))

        def pod_labels(pod: _Pod) -> dict[str, str]:
            out = {"namespace": self.namespace, "pod": pod.name}
            if self.model_name is not None:
                out["model_name"] = self.model_name
            return out

        for name, value in scrape.items():
            if name in KUBE:
                continue
            kind = ("gauge" if name in GAUGES or name in SHARED_GAUGES
                    else "histogram" if isinstance(value, Mapping) else "counter")
            if name.endswith(("_sum", "_count")) and name.rsplit("_", 1)[0] + "_bucket" in scrape:
                continue  # written with its histogram
            family = name.removesuffix("_bucket")
            lines.append(f"# TYPE {family} {kind}")
            for pod in pods:
                labels = pod_labels(pod)
                if kind == "gauge":
                    share = _scalar(scrape, name) / (1 if name in SHARED_GAUGES else n)
                    lines.append(f"{name}{{{_labels(labels)}}} {_number(share)}")
                elif kind == "counter":
                    lines.append(f"{name}{{{_labels(labels)}}} "
                                 f"{_number(pod.counters.get(name, 0.0))}")
                else:
                    for le, count in pod.buckets.get(name, {}).items():
                        lines.append(f"{name}{{{_labels({**labels, 'le': le})}}} "
                                     f"{_number(count)}")
                    for part in ("_sum", "_count"):
                        lines.append(f"{family}{part}{{{_labels(labels)}}} "
                                     f"{_number(pod.counters.get(family + part, 0.0))}")
        kube = {"namespace": self.namespace, "deployment": self.deployment}
        for name in KUBE:
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name}{{{_labels(kube)}}} {_number(_scalar(scrape, name))}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ HTTP
    def serve(self, host: str = "127.0.0.1", port: int = 0,
              clock: Callable[[], float] | None = None) -> MetricsServer:
        """Serve ``/metrics`` on a thread of its own; ``port`` 0 lets the OS pick one.

        ``clock`` gives ``now`` for each scrape (the simulation then steps to it first)."""
        return MetricsServer(self, host, port, clock).start()


class MetricsServer:
    """``GET /metrics`` for one :class:`FleetExporter` (anything else is 404)."""

    def __init__(self, exporter: FleetExporter, host: str, port: int,
                 clock: Callable[[], float] | None) -> None:
        exp = exporter

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    body, code, ctype = b"not found\n", 404, "text/plain"
                else:
                    now = clock() if clock is not None else None
                    body, code, ctype = exp.exposition(now).encode(), 200, CONTENT_TYPE
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per scrape would drown everything else

        self.host = host
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="fleet-metrics")

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
