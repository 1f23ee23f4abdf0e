"""The live loop by hand: ``aiops run`` against real Prometheus and a simulated vLLM fleet.

The same loop tests/integration/test_live_loop.py checks (tests/fakes/live.py): the shipped
enforce config, a fake API server with the shipped RBAC, a fleet whose replica count that
server holds. Prints, every second, the load, the fleet and the daemon's last decision (the
Grafana-less dashboard), and each decision the daemon explains as it comes. Ctrl-C (or the
end of --duration) sends the daemon SIGTERM and shows it release its Lease.

    scripts/live-demo.sh [--duration 300] [--kill-prometheus-at 100 --down-for 30]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.live import LiveLoop, LiveSettings, Phase, lease_holder, tick_synced_policy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds to run")
    parser.add_argument("--kill-prometheus-at", type=float, default=None,
                        help="kill Prometheus this many seconds in")
    parser.add_argument("--down-for", type=float, default=30.0,
                        help="seconds before Prometheus comes back")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, Prometheus data) afterwards")
    args = parser.parse_args()
    settings = LiveSettings(
        schedule=(Phase(0, 6), Phase(30, 30), Phase(120, 90), Phase(200, 10)),
        duration_s=max(args.duration + 60, 600), max_replicas=8,
        policy=tick_synced_policy(LiveSettings().interval_s, 20.0))
    root = Path(tempfile.mkdtemp(prefix="aiops-live-"))
    loop = LiveLoop(root, settings)
    print(f"work directory {root} (aiops.log: the daemon's JSON log)", flush=True)
    loop.start()
    print(f"fleet /metrics {loop.metrics.url if loop.metrics else '?'} | Prometheus via "
          f"{loop.relay.url} | API server {loop.api.url} | Grafana {loop.grafana.url}",
          flush=True)
    seen = 0
    revived = False
    try:
        while loop.elapsed() < args.duration:
            time.sleep(1.0)
            at = args.kill_prometheus_at
            if at is not None and loop.prometheus and loop.prometheus.running and \
                    not revived and loop.elapsed() >= at:
                print(">>> killing Prometheus", flush=True)
                loop.kill_prometheus()
            if at is not None and not revived and loop.elapsed() >= at + args.down_for:
                print(">>> Prometheus comes back", flush=True)
                loop.restart_prometheus()
                revived = True
            decisions = loop.decisions()
            for d in decisions[seen:]:
                print(f"    aiops: {d.text[:150]}", flush=True)
            seen = len(decisions)
            print(loop.dashboard_line(), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if loop.daemon is not None and loop.daemon.poll() is None:
            print(">>> SIGTERM to aiops", flush=True)
            loop.sigterm()
            code = loop.daemon.wait(timeout=60)
            print(f"aiops exited {code}; Lease holder now {lease_holder(loop.api)!r}",
                  flush=True)
        loop.stop()
        if args.keep:
            print(f"kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
