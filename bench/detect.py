"""NAB benchmark for the streaming detectors: scores per profile and throughput, as JSON.

    nice .venv/bin/python bench/detect.py --nab ../shared/data/nab \\
        --scorer ../shared/tools/nab_score.py [--detectors knn,seasonal,...] [--out DIR]
        [--baseline CHECKOUT]

A detector can carry parameters, as ``aiops detect --param`` does: ``knn:short=10;lag=8``;
values are JSON, so ``ensemble:members=["knn-novelty","seasonal"];combine="max"`` works too.

For each detector this runs exactly what ``aiops detect --input-dir NAB/data --output-dir
OUT/<detector> --detector NAME`` runs (the command function itself), then the NAB scorer
given by ``--scorer`` (run as a program, not imported) on that folder, and reports the
normalised standard / reward_low_FP_rate / reward_low_FN_rate scores with the threshold the
scorer chose. Throughput is measured on one core (BLAS/OpenMP threads pinned to 1) in steady
state, i.e. after warm-up, on the longest NAB file: ``batch`` scores a day of points per
call (a replay), ``per_point`` one point per call (the daemon's tick). CPU time, not wall
time, so other load on the machine inflates it less. ``--baseline`` times the same per-point
and per-tick measurements on another aiops checkout (``git worktree add /tmp/before main``)
in a subprocess of this run, so before and after are measured side by side.

Heavy: about a minute per detector on one free core (iforest and the row-wise ecod/copod take
several); run it niced.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, before numpy loads a BLAS

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from aiops.detect.cli import detect  # noqa: E402
from aiops.detect.detectors import DEFAULT_DETECTOR, DETECTORS, make_detector  # noqa: E402
from aiops.detect.io import read_series  # noqa: E402

DEFAULT_SET = "knn,knn12,seasonal,ensemble,hbos,lof,iforest"
"""Compared with the default (which is always run first): ``knn`` was the default before."""
PUBLISHED = {  # the same 24 files, standard / low FP / low FN (tools/README.md)
    "ARTime": (67.7, 59.0, 73.7), "Numenta HTM": (66.5, 60.1, 71.6),
    "contextOSE": (61.6, 56.2, 65.6), "Random Cut Forest": (51.9, 40.1, 59.1),
    "Twitter ADVec": (33.9, 23.9, 39.6), "windowed Gaussian": (24.3, 6.8, 32.2),
}
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def split_spec(spec: str) -> tuple[str, list[str]]:
    """``knn:short=10,lag=8`` -> ("knn", ["short=10", "lag=8"]) (``aiops detect --param``)."""
    name, _, rest = spec.partition(":")
    return name, [p for p in rest.split(";") if p] if rest else []


def split_specs(text: str) -> list[str]:
    """``--detectors`` into specs: commas inside brackets or quotes belong to a parameter's
    JSON value (``ensemble:members=["knn","seasonal"]`` is one spec, not two)."""
    specs: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "[{":
            depth += 1
        elif not quoted and ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0 and not quoted:
            specs.append(text[start:i])
            start = i + 1
    specs.append(text[start:])
    return [s for s in specs if s]


def nab_scores(spec: str, data: Path, nab: Path, scorer: Path, out: Path) -> dict[str, Any]:
    """Score every NAB file with detector ``spec`` via the CLI command, then run the scorer."""
    name, params = split_spec(spec)
    results = out / spec.replace(":", "_").replace(";", "_")
    start = time.process_time()
    # NAB's machine_temperature file repeats an hour: its earlier rows are scored 0.
    # The command's summary line goes to stderr: stdout is this benchmark's JSON.
    with contextlib.redirect_stdout(sys.stderr):
        detect(input=None, output=None, input_dir=data, output_dir=results, detector=name,
               param=params, unsorted="skip")
    cpu = time.process_time() - start
    done = subprocess.run([sys.executable, str(scorer), "--nab", str(nab), "--results",
                           str(results), "--detector", name],
                          capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)[name]
    row: dict[str, Any] = {p: round(report[p]["normalized"], 2) for p in PROFILES}
    row["thresholds"] = {p: round(report[p]["threshold"], 4) for p in PROFILES}
    row["cpu_s_incl_csv"] = round(cpu, 1)
    return row


def throughput(spec: str, t: np.ndarray, x: np.ndarray) -> dict[str, float]:
    """Points per CPU-second after warm-up: in batches of a day, and one point per call."""
    from aiops.detect.cli import parse_params

    name, params = split_spec(spec)
    kwargs = parse_params(params)
    warm = 2500  # past every warm-up and the first full training window
    n_batch = min(len(x) - warm, 8000)
    det = make_detector(name, **kwargs)
    det.update(t[:warm], x[:warm])
    start = time.process_time()
    for a in range(warm, warm + n_batch, 288):
        b = min(a + 288, warm + n_batch)
        det.update(t[a:b], x[a:b])
    batch = n_batch / (time.process_time() - start)
    n_single = min(len(x) - warm, 1500)
    det = make_detector(name, **kwargs)
    det.update(t[:warm], x[:warm])
    start = time.process_time()
    for i in range(warm, warm + n_single):
        det.update(t[i:i + 1], x[i:i + 1])
    single = n_single / (time.process_time() - start)
    return {"batch_points_per_s": round(batch), "per_point_points_per_s": round(single)}


def target_tick(detector: str, ticks: int = 1500, warm: int = 600) -> dict[str, float]:
    """The daemon's per-target tick: every vLLM metric of a snapshot, one tick per call
    (``TargetScorer.update``: the telemetry checks and one detector per metric), on a
    steady synthetic deployment. Points per CPU-second count each metric of a tick."""
    from aiops.detect import multivariate
    from aiops.detect.multivariate import VLLM_METRICS, TargetScorer

    rng = np.random.default_rng(0)
    capacity = getattr(multivariate, "Capacity", None)
    caps: list[Any] | None
    if capacity is None:  # a checkout from before the telemetry checks: the tick takes none
        caps = None
    else:
        try:  # a 30-s scrape read every 15 s: two sample ages in turn, as the ingest reads them
            caps = [capacity(ready_replicas=8, replicas=8, batch_size=64, sample_age=age)
                    for age in (8.0, 23.0)]
        except TypeError:  # an older checkout reads no sample age
            caps = [capacity(ready_replicas=8, replicas=8, batch_size=64)] * 2
    scorer = TargetScorer(detector=detector)

    known = {m.name for m in VLLM_METRICS}  # an older checkout may watch fewer
    rows = []
    for k in range(warm + ticks):
        rate = (10 + 3 * np.sin(2 * np.pi * k / 240)) * (1 + rng.normal(0, 0.05))
        running = float(rng.poisson(5 * rate))
        row = {"arrival_rate": rate, "prompt_tokens_rate": 500 * rate,
               "generation_tokens_rate": 200 * rate, "requests_running": running,
               "requests_waiting": float(rng.poisson(0.3)),
               "kv_cache_usage": 0.0008 * running, "gpu_utilization": 0.5 + 0.01 * (k % 7),
               "ttft_p99": 0.5 * (1 + rng.normal(0, 0.05)),
               "tpot_p99": 0.03 * (1 + rng.normal(0, 0.05)),
               "ttft_p50": 0.1 * (1 + rng.normal(0, 0.05))}
        rows.append({m: x for m, x in row.items() if m in known})

    def tick(k: int) -> None:
        if caps is None:
            scorer.update(15.0 * k, rows[k])
        else:
            scorer.update(15.0 * k, rows[k], capacity=caps[k % 2])

    for k in range(warm):
        tick(k)
    start = time.process_time()
    for k in range(warm, warm + ticks):
        tick(k)
    per_tick = (time.process_time() - start) / ticks
    return {"ticks_per_s": round(1 / per_tick), "points_per_s": round(len(rows[0]) / per_tick)}


def speed_here(longest: Path) -> dict[str, Any]:
    """The default detector one point per call, and the daemon's tick with it."""
    try:
        series = read_series(longest, unsorted="skip")
    except TypeError:  # an older checkout has no --unsorted (and the file is sorted)
        series = read_series(longest)
    return {"default": DEFAULT_DETECTOR,
            "per_point": throughput(DEFAULT_DETECTOR, series.t, series.x),
            "target_tick": target_tick(DEFAULT_DETECTOR)}


def speed_on(checkout: Path, longest: Path) -> dict[str, Any]:
    """:func:`speed_here` on another aiops checkout, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    # Absolute: the worker runs in the other checkout, where a relative data path means
    # something else.
    out = subprocess.run([sys.executable, __file__, "--speed-worker", str(longest.resolve())],
                         env=env,
                         cwd=checkout, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--speed-worker":
        print(json.dumps(speed_here(Path(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nab", type=Path, required=True, help="NAB root (data/, labels/)")
    ap.add_argument("--scorer", type=Path, required=True, help="path of nab_score.py")
    ap.add_argument("--detectors", default=DEFAULT_SET,
                    help="comma-separated names or 'all'; NAME:key=value;key=value sets "
                         f"parameters (known: {', '.join(DETECTORS)})")
    ap.add_argument("--no-throughput-for", default="",
                    help="comma-separated specs scored on NAB but not timed")
    ap.add_argument("--out", type=Path, help="keep the scored files here (default: temp)")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--baseline", type=Path,
                    help="another aiops checkout: time its default detector and tick too")
    a = ap.parse_args()
    if a.baseline is not None and not (a.baseline / "aiops").is_dir():
        ap.error(f"--baseline {a.baseline}: not an aiops checkout (no aiops/ folder)")
    names = list(DETECTORS) if a.detectors == "all" else split_specs(a.detectors)
    if DEFAULT_DETECTOR not in names:
        names.insert(0, DEFAULT_DETECTOR)
    data = a.nab / "data"
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        nab = {n: nab_scores(n, data, a.nab, a.scorer, out) for n in names}
    speed: dict[str, dict[str, float]] = {}
    tick: dict[str, dict[str, float]] = {}
    if not a.no_throughput:
        longest = max(data.rglob("*.csv"), key=lambda p: p.stat().st_size)
        series = read_series(longest, unsorted="skip")
        skip = set(split_specs(a.no_throughput_for))
        speed = {n: throughput(n, series.t, series.x) for n in names if n not in skip}
        # the daemon's tick, with the old default detector and the new one, in this run
        tick = {n: target_tick(n) for n in dict.fromkeys([DEFAULT_DETECTOR, "knn"])}
    side: dict[str, Any] = {}
    if a.baseline is not None:
        longest = max(data.rglob("*.csv"), key=lambda p: p.stat().st_size)
        here = Path(__file__).resolve().parent.parent
        side = {"this": speed_on(here, longest),
                "baseline": {"checkout": str(a.baseline),
                             **speed_on(a.baseline.resolve(), longest)}}
    print(json.dumps({
        "default": DEFAULT_DETECTOR,
        "nab": nab,
        "throughput_one_core": speed,
        "target_tick_one_core": tick,
        "before_after_one_core": side,
        "throughput_series": str(longest.relative_to(data)) if speed else None,
        "published_standard_lowFP_lowFN": PUBLISHED,
    }, indent=1))


if __name__ == "__main__":
    main()
