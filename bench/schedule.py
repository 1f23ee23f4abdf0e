"""The cheapest fleet schedule in hindsight: what a policy that foresaw both the load and the
misses could save against the cheapest fixed fleet.

``bench/autoscale.py`` compares the policies with every reactive setting tuned in hindsight
and with its ``oracle``. That oracle plans, interval by interval, the fewest replicas for the
load it knows is coming and adds replicas where requests still miss; where misses depend on
the fleet more than on the load (prompts near the TTFT limit, which meet it only on an almost
idle replica; replies of a few tokens whose inter-token gaps take in another prompt's prefill)
it ends up no cheaper than a fixed fleet. So "how much could any policy save here?" needs
another measure. This one prices misses directly:

1. The workload is replayed on fixed fleets of each size in ``--sizes``, recording the
   requests that finished and those that missed the SLO in every ``--bucket``.
2. A schedule chooses one size per bucket. It costs its replica-seconds, plus one cold
   start for every replica it adds (asked for a cold start before its bucket); it misses
   what the chosen fleets missed in their buckets.
3. At a price per miss, dynamic programming over the buckets finds the cheapest schedule
   (replica-seconds + price x misses); bisection on the price finds the cheapest schedule
   that reaches ``--target`` over the whole run.

Beside it, the schedule sized on the *last* bucket's misses at one price held all run (the
best price in hindsight): what reacting to misses five minutes late could make of them.

The figures are estimates, not bounds a policy must respect: a bucket's misses are those of a
fleet that had its size all along, with no queue carried over from a smaller one, and a
policy reacts every tick, not every five minutes. What they show is the room there is. On
the calibrated ``llama3-8b-a100`` profile, when this bench was written: the ServeGen m-mid
week reaches 99 % on 0.70x the GPU-hours of the cheapest fixed fleet in hindsight and 0.88x
on the last bucket's misses; the bundled diurnal day 0.87x and 1.00x. The second depends on
the sizes offered: a choice between fewer sizes changes less on noise (the bundled day, on
8, 12 and 16 replicas only: 0.95x).

``--json`` writes every curve and both schedules; ``--plot`` draws them against each
workload's cheapest fixed fleet.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import runpy
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

HERE = Path(__file__).resolve().parent

PRICE_RANGE = (1e-3, 1e9)
"""Price of one miss in replica-seconds, bracketing every useful one: at the low end a miss
costs less than a millisecond of a replica (the smallest fleet everywhere), at the high end
more than a replica-decade (the largest)."""

BISECTIONS = 80
"""Halvings of the price's log-range: enough to pin the price to well within a percent."""


@dataclass(frozen=True)
class Curves:
    """Per bucket and fleet size: ``requests[b]`` finished and ``misses[b][k]`` among them
    that missed the SLO on a fixed fleet of ``sizes[k]``; ``seconds[b]`` the bucket's length
    (the last one may be cut short by the end of the run); ``gpus`` per replica."""

    sizes: tuple[int, ...]
    requests: tuple[float, ...]
    misses: tuple[tuple[float, ...], ...]
    seconds: tuple[float, ...]
    gpus: int = 1


@dataclass(frozen=True)
class Schedule:
    """One fleet size per bucket, what it costs and what it meets."""

    fleet: tuple[int, ...]
    gpu_hours: float
    attainment: float
    price: float  # replica-seconds one miss is worth at this schedule


@functools.cache
def _workload_ref() -> Callable[[str, int], Any]:
    """``bench/ppo.py``'s parser of the benchmarks' workload syntax, which
    ``bench/autoscale.py`` takes too (bench/ is scripts, not a package)."""
    ref: Callable[[str, int], Any] = runpy.run_path(str(HERE / "ppo.py"))["workload_ref"]
    return ref


def _schedule_at(curves: Curves, price: float, cold_start_s: float) -> tuple[int, ...]:
    """The schedule minimising replica-seconds + cold starts + ``price`` x misses."""
    sizes = np.asarray(curves.sizes, dtype=np.float64)
    misses = np.asarray(curves.misses, dtype=np.float64)
    t_len, k = misses.shape
    rise = np.maximum(sizes[None, :] - sizes[:, None], 0.0) * cold_start_s  # [from, to]
    cost = sizes * curves.seconds[0] + price * misses[0]
    back = np.zeros((t_len, k), dtype=np.int64)
    for t in range(1, t_len):
        total = cost[:, None] + rise
        back[t] = total.argmin(axis=0)
        cost = total.min(axis=0) + sizes * curves.seconds[t] + price * misses[t]
    j = int(cost.argmin())
    path = [j]
    for t in range(t_len - 1, 0, -1):
        j = int(back[t, j])
        path.append(j)
    return tuple(reversed(path))


def _evaluate(curves: Curves, path: Sequence[int], cold_start_s: float,
              price: float) -> Schedule:
    sizes = curves.sizes
    requests = float(sum(curves.requests))
    missed = sum(curves.misses[t][k] for t, k in enumerate(path))
    rises = sum(max(sizes[b] - sizes[a], 0) for a, b in itertools.pairwise(path))
    seconds = (sum(sizes[k] * s for k, s in zip(path, curves.seconds, strict=True))
               + rises * cold_start_s)
    return Schedule(fleet=tuple(sizes[k] for k in path),
                    gpu_hours=seconds * curves.gpus / 3600.0,
                    attainment=1.0 - missed / requests if requests > 0 else math.nan,
                    price=price)


def cheapest_schedule(curves: Curves, target: float, cold_start_s: float) -> Schedule | None:
    """The cheapest schedule whose attainment over the run reaches ``target``; None when
    even the largest fleet throughout does not."""
    if not curves.requests or not curves.sizes:
        return None
    largest = len(curves.sizes) - 1
    top = _evaluate(curves, [largest] * len(curves.requests), cold_start_s, math.inf)
    if not top.attainment >= target:
        return None
    lo, hi = math.log(PRICE_RANGE[0]), math.log(PRICE_RANGE[1])
    best = top
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        sched = _evaluate(curves, _schedule_at(curves, math.exp(mid), cold_start_s),
                          cold_start_s, math.exp(mid))
        if sched.attainment >= target:
            hi = mid
            if sched.gpu_hours < best.gpu_hours:
                best = sched
        else:
            lo = mid
    return best


LAGGED_PRICES = 400
"""Prices tried, log-spaced over ``PRICE_RANGE``, for the schedule that sees only the last
bucket: its attainment need not rise with the price, so it is scanned, not bisected."""


def lagged_schedule(curves: Curves, target: float, cold_start_s: float) -> Schedule | None:
    """The cheapest schedule, over one price held all run, that sizes each bucket on the
    *last* bucket's misses (the first on its own): what knowing the miss curve of the past
    five minutes, and the right price, would save. A policy sees its misses only as they
    happen, and only at the fleet it has: this is what it could make of them five minutes
    late (it reacts every tick, so it may do better)."""
    if len(curves.requests) < 2 or not curves.sizes:
        return None
    sizes = np.asarray(curves.sizes, dtype=np.float64)
    misses = np.asarray(curves.misses, dtype=np.float64)
    seen = np.vstack([misses[:1], misses[:-1]])  # what is known when each bucket is sized
    best: Schedule | None = None
    for price in np.geomspace(*PRICE_RANGE, LAGGED_PRICES):
        path = (sizes[None, :] + price * seen / np.maximum(
            np.asarray(curves.seconds)[:, None], 1e-9)).argmin(axis=1)
        sched = _evaluate(curves, [int(k) for k in path], cold_start_s, float(price))
        if sched.attainment >= target and (best is None or sched.gpu_hours < best.gpu_hours):
            best = sched
    return best


def cheapest_fixed(curves: Curves, target: float) -> tuple[int, float, float] | None:
    """(size, GPU-hours, attainment) of the smallest fixed fleet reaching ``target``."""
    requests = float(sum(curves.requests))
    for k, size in enumerate(curves.sizes):
        missed = sum(row[k] for row in curves.misses)
        att = 1.0 - missed / requests if requests > 0 else math.nan
        if att >= target:
            return size, size * curves.gpus * sum(curves.seconds) / 3600.0, att
    return None


# --------------------------------------------------------------------------- the replays


def _record(job: tuple[str, int, int, float, str]
            ) -> tuple[int, dict[int, tuple[float, float]], float, float, int]:
    """Replay one workload on a fixed fleet: {bucket: (finished, missed)}, the cold start,
    the run's length in seconds and the GPUs per replica."""
    text, index, size, bucket_s, profile = job
    from aiops.policy import make_policy
    from aiops.policy.base import PolicySpec
    from aiops.sim.profiles import load_profile
    from aiops.sim.runner import peak_replicas
    from aiops.train.evaluate import EvalSetup, EvalWorkload, run_on

    ref = _workload_ref()(text, index)
    w = ref.load()
    setup = EvalSetup(load_profile(profile))
    ctx = setup.context(w)
    inner = make_policy(PolicySpec.parse(f"static:replicas={size}"), ctx,
                        peak_replicas=peak_replicas(w, ctx), workload=w,
                        profile=setup.profile, slo=setup.slo)
    buckets: dict[int, tuple[float, float]] = {}
    last = max(1, math.ceil(w.duration / bucket_s)) - 1

    class Recording:
        """The fixed fleet, noting each tick's finished and missed requests."""

        name = "static"

        def initial_state(self) -> Any:
            return inner.initial_state()

        def decide(self, inp: Any, state: Any) -> Any:
            snap = inp.snapshot
            n, a = snap.requests_finished, snap.slo_attainment
            if math.isfinite(n) and n > 0 and math.isfinite(a):
                # a tick reports the interval that ends at it; the run's drain goes last
                b = min(int(max(snap.time - 1e-6, 0.0) // bucket_s), last)
                f, m = buckets.get(b, (0.0, 0.0))
                buckets[b] = (f + n, m + (1.0 - a) * n)
            return inner.decide(inp, state)

    run_on(Recording(), EvalWorkload(ref.spec, w), setup, start=size)
    return (size, buckets, ctx.cold_start_s, float(w.duration),
            setup.profile.gpus_per_replica)


def record_curves(text: str, index: int, sizes: Sequence[int], bucket_s: float,
                  jobs: int, profile: str) -> tuple[Curves, float]:
    """The miss curves of one workload and its cold start, one replay per size."""
    from rich.progress import Progress

    runs: dict[int, dict[int, tuple[float, float]]] = {}
    cold = duration = 0.0  # the same for every size: the workload's and the profile's
    gpus = 1
    with Progress(transient=True) as bar, ProcessPoolExecutor(jobs) as pool:
        task = bar.add_task(f"{text}: fixed fleets", total=len(sizes))
        for size, buckets, cold_s, run_s, per_replica in pool.map(
                _record, [(text, index, s, bucket_s, profile) for s in sizes]):
            runs[size], cold, duration, gpus = buckets, cold_s, run_s, per_replica
            bar.advance(task)
    # every bucket of the run, those with no request (a service gap) too: a fleet costs there
    keys = range(max(1, math.ceil(duration / bucket_s)))
    seconds = tuple(min(bucket_s, duration - b * bucket_s) for b in keys)
    # requests per bucket as the largest fleet counted them (every size finishes about as many)
    requests = tuple(runs[sizes[-1]].get(b, (0.0, 0.0))[0] for b in keys)
    misses = tuple(tuple(runs[s].get(b, (0.0, 0.0))[1] for s in sizes) for b in keys)
    return Curves(tuple(sizes), requests, misses, seconds, gpus), cold


def _label(text: str) -> str:
    """A workload spec without its folders: ``nyc_taxi.csv,rate=0.002``, ``m-mid,rate=0.05``."""
    spec, sep, opts = text.partition(",")
    return os.path.basename(spec.rstrip("/")) + sep + opts


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.6 * len(rows)), squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        hours = np.arange(len(row["schedule"]["fleet"])) * row["bucket_s"] / 3600.0
        ax.step(hours, row["schedule"]["fleet"], where="post",
                label=f"schedule {row['schedule']['gpu_hours']:.1f} GPU-h")
        if row["lagged"]:
            ax.step(hours, row["lagged"]["fleet"], where="post", alpha=0.6, linewidth=0.8,
                    label=f"on the last bucket's misses {row['lagged']['gpu_hours']:.1f} GPU-h")
        if row["fixed"]:
            ax.axhline(row["fixed"]["replicas"], color="grey", linestyle="--",
                       label=f"fixed {row['fixed']['replicas']}: "
                             f"{row['fixed']['gpu_hours']:.1f} GPU-h")
        ax.set_title(_label(row["workload"]), fontsize=9)
        ax.set_ylabel("replicas")
        ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("hours")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_sizes(text: str) -> tuple[int, ...]:
    """``--sizes``: distinct fleet sizes >= 1, ascending."""
    try:
        sizes = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        _fail(f"--sizes {text!r}: expected whole numbers, e.g. 4,8,12,16")
    if not sizes or sizes[0] < 1:
        _fail(f"--sizes {text!r}: expected fleet sizes >= 1, e.g. 4,8,12,16")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", action="append", required=True,
                    help="bench/autoscale.py's workload syntax: SPEC[,rate=K][,duration=S]"
                         "[,seed=N] (repeatable)")
    ap.add_argument("--sizes", default="2,4,6,8,10,12,14,16,18,20,24,32",
                    help="fixed fleet sizes replayed (default %(default)s)")
    ap.add_argument("--bucket", type=float, default=300.0,
                    help="seconds a schedule holds one size (default %(default)s)")
    ap.add_argument("--target", type=float, default=0.99,
                    help="SLO attainment over feasible requests (default %(default)s)")
    ap.add_argument("--profile", default="llama3-8b-a100",
                    help="model/hardware profile name or YAML path (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    sizes = parse_sizes(args.sizes)
    if not args.bucket > 0:
        _fail(f"--bucket {args.bucket:g}: expected seconds > 0")
    if not 0.0 < args.target < 1.0:
        _fail(f"--target {args.target:g}: expected a share in (0, 1), e.g. 0.99")
    if args.jobs < 1:
        _fail(f"--jobs {args.jobs}: expected >= 1")
    from aiops.errors import InputError
    from aiops.sim.profiles import load_profile

    try:  # the profile and every workload checked before any replay
        load_profile(args.profile)
    except InputError as err:
        _fail(f"--profile: {err}")
    for i, text in enumerate(args.workload):
        try:
            _workload_ref()(text, i).load()
        except InputError as err:
            _fail(f"--workload: {err}")
    rows: list[dict[str, Any]] = []
    for i, text in enumerate(args.workload):
        curves, cold = record_curves(text, i, sizes, args.bucket, args.jobs, args.profile)
        sched = cheapest_schedule(curves, args.target, cold)
        lagged = lagged_schedule(curves, args.target, cold)
        fixed = cheapest_fixed(curves, args.target)
        row: dict[str, Any] = {
            "workload": text, "bucket_s": args.bucket, "cold_start_s": cold,
            "target": args.target, "sizes": list(sizes),
            "fixed": (dict(zip(("replicas", "gpu_hours", "attainment"), fixed, strict=True))
                      if fixed else None),
            "schedule": asdict(sched) if sched else None,
            "lagged": asdict(lagged) if lagged else None,
            "curves": {"requests": curves.requests, "misses": curves.misses},
        }
        rows.append(row)
        if args.json:  # after each workload: a week's replays are not lost to a later one
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1) + "\n")
        if sched is None:
            print(f"{text}: no schedule reaches {args.target:.1%} "
                  f"(not even {sizes[-1]} replicas throughout)")
            continue
        ratio = (f"{sched.gpu_hours / fixed[1]:.2f}x the fixed fleet of {fixed[0]} "
                 f"({fixed[1]:.2f} GPU-h, {fixed[2]:.2%})" if fixed else "no fixed size reaches it")
        print(f"{text}: schedule {sched.gpu_hours:.2f} GPU-h at {sched.attainment:.2%}, "
              f"{ratio}")
        if lagged is not None:
            vs = f", {lagged.gpu_hours / fixed[1]:.2f}x" if fixed else ""
            print(f"  sized on the last bucket's misses: {lagged.gpu_hours:.2f} GPU-h at "
                  f"{lagged.attainment:.2%}{vs}")
    if args.plot:
        drawn = [r for r in rows if r["schedule"]]
        if drawn:
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            _plot(args.plot, drawn)
            print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
