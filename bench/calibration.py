"""The simulated server against Vidur's replay of the Azure code trace, as a table.

Replays ``data/calibration/azure-code-30m.csv`` on fixed fleets of 2 and 4 replicas with both
schedulers, as ``tests/test_calibration.py`` does (Vidur's router; prefill first with a budget
that admits the longest prompt; TPOT in Vidur's definition, decode time over all output
tokens), prints aiops beside Vidur's figures, and the same fleets under aiops' default router.
The test holds the bands; this prints the numbers.

    python bench/calibration.py [--profile NAME] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data" / "calibration"


def replay(profile_name: str, scheduler: str, replicas: int, routing: str) -> dict[str, float]:
    from aiops.sim.cluster import ClusterSim
    from aiops.sim.profiles import load_profile
    from aiops.sim.workloads import resolve_workload

    trace = resolve_workload(str(DATA / "azure-code-30m.csv"))
    prof = load_profile(profile_name).with_changes(
        scheduler=scheduler, routing=routing,
        max_num_batched_tokens=2048 if scheduler == "chunked-prefill" else 8192)
    sim = ClusterSim(prof, trace, replicas=replicas)
    sim.step(trace.duration)
    sim.finish(max_seconds=7200.0)
    gen = trace.generated_tokens.astype(np.float64)
    multi = gen > 1
    tpot = sim.tpot[multi] * (gen[multi] - 1.0) / gen[multi]
    tpot_all = np.where(multi, np.nan_to_num(sim.tpot) * (gen - 1.0) / gen, 0.0)
    return {
        "ttft_p50_s": float(np.quantile(sim.ttft, 0.5)),
        "ttft_p99_s": float(np.quantile(sim.ttft, 0.99)),
        "tpot_p50_s": float(np.quantile(tpot, 0.5)),
        "tpot_p99_s": float(np.quantile(tpot, 0.99)),
        "slo_attainment": float(np.mean((sim.ttft <= 0.5) & (tpot_all <= 0.05))),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="llama3-8b-a100")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    ref = json.loads((DATA / "vidur-reference-code-30m.json").read_text())["runs"]
    rows = []
    for key, scheduler in (("sarathi", "chunked-prefill"), ("vllm", "prefill-first")):
        for n in (2, 4):
            ours = replay(args.profile, scheduler, n, "least-waiting")
            ours_lor = replay(args.profile, scheduler, n, "least-outstanding")
            rows.append({"run": f"{key}-{n}", "vidur": ref[f"{key}-{n}"], "aiops": ours,
                         "aiops_least_outstanding": ours_lor})
    print(f"{'run':10s} {'figure':22s} {'vidur':>10s} {'aiops':>10s} {'ratio':>7s} "
          f"{'aiops (default router)':>24s}")
    for row in rows:
        for fig in ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "slo_attainment"):
            v, a, d = row["vidur"][fig], row["aiops"][fig], row["aiops_least_outstanding"][fig]
            ratio = f"{a / v:7.2f}" if fig != "slo_attainment" else f"{100 * (a - v):+6.1f}p"
            print(f"{row['run']:10s} {fig:22s} {v:10.4f} {a:10.4f} {ratio} {d:24.4f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"benchmark": "calibration", "profile": args.profile,
                                         "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
