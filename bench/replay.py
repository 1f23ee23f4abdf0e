"""Replay speed and memory of long workloads, against a baseline checkout in one run.

Each case replays a workload under one policy in a fresh process and reports requests
replayed per CPU second (one core) and the peak resident memory of that process:

* ``nyc-48h``: the NYC taxi demand series (NAB) as 48 hours of Poisson requests at
  0.002 requests/s per taxi trip (~5.3 M requests), a fixed fleet and the HPA;
* ``servegen-14d``: 14 days of a ServeGen model (``--servegen DIR``, e.g. m-small) at a rate
  scale that peaks near 60 replicas of ``llama3-8b-a100`` (``--servegen-rate``), a fixed
  fleet of 60 and the HPA. Only a simulator that streams can hold it.

``--baseline DIR`` runs the cases that the other checkout supports (it may lack streams)
and prints both side by side; ``--quick`` cuts every case to a tenth for a smoke run.

    git worktree add /tmp/aiops-before <commit>
    python bench/replay.py --nab DATA/nab --servegen DATA/servegen/language/m-small \\
        --baseline /tmp/aiops-before --json out/replay.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

POLICIES = ("static:replicas=60", "hpa")
NYC_POLICIES = ("static:replicas=12", "hpa")


def replay(spec: str, policy: str, rate_scale: float, duration: float) -> dict[str, object]:
    """One replay in this process (APIs common to old and new checkouts)."""
    from aiops.policy import make_policy
    from aiops.policy.base import PolicySpec
    from aiops.sim.profiles import load_profile
    from aiops.sim.runner import initial_replicas, peak_replicas, planning_context, run_policy

    try:
        from aiops.sim.workloads import resolve_source as resolve
    except ImportError:  # a checkout from before streams
        from aiops.sim.workloads import resolve_workload as resolve
    profile = load_profile("llama3-8b-a100")
    t0 = time.process_time()
    w = resolve(spec, rate_scale=rate_scale, duration=duration, seed=0)
    ctx = planning_context(profile, w, max_replicas=128)
    made = make_policy(PolicySpec.parse(policy), ctx, peak_replicas=peak_replicas(w, ctx),
                       workload=w, profile=profile)
    built = time.process_time() - t0
    t0 = time.process_time()
    out = run_policy(made, w, profile, ctx, start_replicas=initial_replicas(w, ctx))
    cpu = time.process_time() - t0
    r = out.result
    return {"requests": r.requests, "cpu_s": round(cpu, 2), "build_cpu_s": round(built, 2),
            "requests_per_cpu_s": round(r.requests / cpu), "gpu_hours": round(r.gpu_hours, 2),
            "slo_attainment": round(r.slo_attainment, 5), "max_replicas": r.max_replicas,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_case(checkout: Path, spec: str, policy: str, rate_scale: float,
             duration: float) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", spec, policy,
           str(rate_scale), str(duration)]
    proc = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:300]}
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nab", type=Path, help="NAB data folder (for nyc_taxi.csv)")
    ap.add_argument("--servegen", type=Path, help="one ServeGen model folder (e.g. m-small)")
    ap.add_argument("--servegen-rate", type=float, default=1.0,
                    help="rate scale of the ServeGen case (1.0 peaks near 60 replicas of "
                         "llama3-8b-a100 for m-small)")
    ap.add_argument("--baseline", type=Path, help="another aiops checkout to compare against")
    ap.add_argument("--quick", action="store_true", help="a tenth of every case")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        spec, policy, rate, duration = args.worker
        print(json.dumps(replay(spec, policy, float(rate), float(duration))))
        return 0
    cases: list[tuple[str, str, str, float, float]] = []
    cut = 0.1 if args.quick else 1.0
    if args.nab is not None:
        nyc = args.nab / "data" / "realKnownCause" / "nyc_taxi.csv"
        if not nyc.exists():
            ap.error(f"--nab {args.nab}: no data/realKnownCause/nyc_taxi.csv there")
        cases += [("nyc-48h", str(nyc), p, 0.002, 48 * 3600.0 * cut) for p in NYC_POLICIES]
    if args.servegen is not None:
        if not (args.servegen.is_dir() and any(args.servegen.glob("chunk-*-trace.csv"))):
            ap.error(f"--servegen {args.servegen}: not a ServeGen model folder")
        cases += [("servegen-14d", f"servegen:{args.servegen}", p, args.servegen_rate,
                   14 * 86400.0 * cut) for p in POLICIES]
    if not cases:
        ap.error("give --nab and/or --servegen")
    if args.baseline is not None and not (args.baseline / "aiops").is_dir():
        ap.error(f"--baseline {args.baseline}: not an aiops checkout (no aiops/ folder)")
    here = Path(__file__).resolve().parent.parent
    rows = []
    for name, spec, policy, rate, duration in cases:
        row: dict[str, object] = {"case": name, "policy": policy, "rate_scale": rate,
                                  "duration_s": duration,
                                  "this": run_case(here, spec, policy, rate, duration)}
        if args.baseline is not None:
            row["baseline"] = run_case(args.baseline.resolve(), spec, policy, rate, duration)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"benchmark": "replay", "cpu_time": True, "baseline": str(args.baseline or ""),
              "cases": rows}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
