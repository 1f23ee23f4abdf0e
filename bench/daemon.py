"""Tick latency and resident memory of the daemon for 1, 10 and 100 targets (sim backend).

One process per target count, so each resident-memory figure is that run's own peak. Each
target is a simulated deployment on the bundled workload; the controller runs the full tick
(detector, forecaster, policy, guardrails, annotators). Prints JSON.

    python bench/daemon.py [--targets 1,10,100] [--ticks 120] [--policy predictive]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time, logging
import numpy as np
from prometheus_client import CollectorRegistry
from aiops.clock import SimClock
from aiops.config import parse_config
from aiops.controller import Controller
from aiops.sim.backend import SimBackend
from aiops.telemetry import Telemetry
from aiops.wiring import forecaster_factory, monitor_factory
logging.disable(logging.WARNING)
n, ticks, policy = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
targets = "\n".join(f"  - {{name: t{i}, deployment: t{i}, policy: {policy}, max_replicas: 32}}"
                    for i in range(n))
cfg = parse_config(f"backend: sim\ndry_run: false\nleader_election: {{enabled: false}}\n"
                   f"daemon: {{http_port: 0}}\ntargets:\n{targets}\n", environ={})
clock = SimClock(0.0)
backend = SimBackend(cfg, clock, duration=ticks * 15.0)
ctl = Controller(cfg, backend, backend, clock, Telemetry(CollectorRegistry()),
                 monitor_factory=monitor_factory(cfg), forecaster_factory=forecaster_factory(cfg))
lat = []
for i in range(ticks):
    clock.advance(15.0)
    if i == 40:
        ctl.refit()
    for rt in ctl.runtimes.values():
        t0 = time.perf_counter(); ctl.tick(rt); lat.append(time.perf_counter() - t0)
lat = np.array(lat[40 * n:])  # steady state: after warm-up and the first refit
p50, p99 = (1e3 * float(np.quantile(lat, q)) for q in (0.5, 0.99))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"targets": n, "ticks": ticks, "tick_p50_ms": round(p50, 2),
                  "tick_p99_ms": round(p99, 2), "round_p50_ms": round(p50 * n, 1),
                  "peak_rss_mib": round(rss, 1)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--targets", default="1,10,100")
    ap.add_argument("--ticks", type=int, default=120)
    ap.add_argument("--policy", default="predictive")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.targets.split(",")):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.ticks), args.policy],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
    print(json.dumps({"benchmark": "daemon_tick", "policy": args.policy, "results": rows},
                     indent=2))



if __name__ == "__main__":
    main()
