"""`aiops recommend` on a trace, measured: its summary line, its size, its time.

    .venv/bin/python bench/report.py TRACE.csv [--rate-scale 5] [--output report.html]
        [--json report.json] [--forecast-model auto] [--policy predictive]

Does what ``aiops recommend --workload TRACE --output ... --json ...`` does (same library
calls, no progress bar) and prints one JSON object: the summary line, the HTML and JSON sizes
in bytes, the wall-clock seconds, and the per-policy figures. For the Azure code trace:

    .venv/bin/python bench/report.py \\
        PATH/TO/AzureLLMInferenceTrace_code.csv --rate-scale 5

Most of the time is the forecaster: ``auto`` backtests several models at each refit (20 s
to a minute each on two cores); ``--forecast-model naive`` shows the rest takes seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from aiops.errors import InputError
from aiops.report.build import report_from_trace
from aiops.report.cli import write


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("trace")
    ap.add_argument("--rate-scale", type=float, default=5.0)
    ap.add_argument("--output", type=Path, default=Path("report.html"))
    ap.add_argument("--json", type=Path, default=Path("report.json"))
    ap.add_argument("--forecast-model", default="auto")
    ap.add_argument("--policy", default="predictive")
    ap.add_argument("--profile", default="llama3-8b-a100")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        report = report_from_trace(args.trace, rate_scale=args.rate_scale, profile=args.profile,
                                   policy=args.policy, forecast_model=args.forecast_model)
        sizes = write(report, args.output, args.json)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    (target,) = report.targets
    out = {
        "trace": args.trace,
        "rate_scale": args.rate_scale,
        "policy": args.policy,
        "forecast_model": args.forecast_model,
        "summary": report.summary_text(),
        "html": str(args.output),
        "html_bytes": sizes[0][1],
        "json_bytes": sizes[1][1],
        "seconds": round(seconds, 1),
        "requests": target.requests,
        "policies": {p.label: p.as_json() for p in target.policies},
        "forecast": None if target.forecast is None else target.forecast.text(),
        "changes": len(target.changes),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
