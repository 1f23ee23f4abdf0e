"""How long `aiops recommend` takes on a week of traffic, this code against a baseline revision.

    .venv/bin/python bench/recommend_speed.py --make-week week.csv
    .venv/bin/python bench/recommend_speed.py week.csv --baseline-rev ee74768 [--jobs 2]

A week is where the forecaster's schedule decides the time: 40,320 decisions of 15 s. The
baseline and this checkout run the same command, one after the other, each in a fresh
process (`aiops recommend --workload WEEK --output ...`); the baseline's source is taken from
the git revision given (``git archive``), this checkout's from the working tree. Prints one
JSON object: per run, the wall-clock and CPU seconds (this process's children: the pool's
workers included), the exit code and the headline. Other jobs on the machine lengthen the
wall time of both alike; the CPU seconds do not depend on them.

``--make-week PATH`` writes the seeded 7-day rate series used for the figures in the README
(one row a minute: a daily cycle, weekends at 60 %, slow noise; ~6 req/s on average).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_699_920_000  # a Monday, 00:00 UTC


def make_week(path: Path, *, days: int = 7, seed: int = 1) -> None:
    """A week of one-minute request rates with a daily cycle, weekends and slow noise."""
    rng = random.Random(seed)
    level = 1.0
    with path.open("w") as f:
        f.write("timestamp,value\n")
        for i in range(days * 1440):
            day_frac = (i % 1440) / 1440
            weekend = 0.6 if (i // 1440) % 7 in (5, 6) else 1.0
            level = 0.98 * level + 0.02 * rng.lognormvariate(0.0, 0.3)
            rate = 6.0 * weekend * (1 + 0.6 * math.sin(2 * math.pi * (day_frac - 0.3))) * level
            f.write(f"{T0 + 60 * i},{rate:.4f}\n")


def run(src: Path, workload: str, out: Path, extra: list[str]) -> dict[str, object]:
    """One `aiops recommend` in a fresh interpreter importing aiops from ``src``."""
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from aiops.cli import main; "
            "sys.argv[0] = 'aiops'; main()")
    argv = [sys.executable, "-c", code, str(src), "recommend", "--workload", workload,
            "--output", str(out / "report.html"), "--json", str(out / "report.json"), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=out)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    return {"source": str(src), "command": " ".join(["aiops", *argv[4:]]),
            "exit_code": done.returncode, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "headline": lines[0] if lines else done.stderr.strip().splitlines()[-1:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("workload", nargs="?", help="the workload to replay (a CSV or synthetic:NAME)")
    ap.add_argument("--make-week", type=Path, help="write the seeded week here and stop")
    ap.add_argument("--baseline-rev", help="git revision to compare with (e.g. main)")
    ap.add_argument("--jobs", type=int, help="passed to this checkout's recommend --jobs")
    args = ap.parse_args(argv)
    if args.make_week is not None:
        make_week(args.make_week)
        print(json.dumps({"wrote": str(args.make_week), "rows": 7 * 1440}))
        return 0
    if args.workload is None:
        ap.error("give a workload, or --make-week PATH")
    workload = str(Path(args.workload).resolve()) if Path(args.workload).exists() \
        else args.workload
    results = {}
    with tempfile.TemporaryDirectory(prefix="recommend-speed-") as tmp:
        base = Path(tmp)
        if args.baseline_rev:
            src = base / "baseline"
            src.mkdir()
            archive = subprocess.run(["git", "archive", args.baseline_rev, "aiops"], cwd=ROOT,
                                     capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
            (base / "baseline-out").mkdir()
            results["baseline"] = run(src, workload, base / "baseline-out", [])
            results["baseline"]["revision"] = args.baseline_rev
        (base / "new-out").mkdir()
        extra = ["--jobs", str(args.jobs)] if args.jobs else []
        results["new"] = run(ROOT, workload, base / "new-out", extra)
    print(json.dumps({"workload": args.workload, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
