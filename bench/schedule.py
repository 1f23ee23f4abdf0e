"""The cheapest fleet schedule in hindsight, and the cheapest that reacts to misses: what a
policy that foresaw the load and the misses could save against the cheapest fixed fleet, and
what one that only sees them as they happen could.

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

Beside it, three schedules that *react*: each bucket is sized on the misses of buckets
already over, smoothed with one half-life, at one price, both the best in hindsight. Two see
the misses at every fleet size: one waits a cold start for the replicas it adds, as a policy
that reacts to misses must, the other has them at once. The third waits too and sees only
the misses of the fleet it has, as a policy does, taking other sizes to miss as a power of
the size. Before the run has shown anything they hold the fleet every policy starts with.
For a run of two days or more the bench also shows, day by day, what the cheapest fixed
fleet reaches and what each day would need on its own.

The figures are estimates, not bounds a policy must respect: a bucket's misses are those of a
fleet that had its size all along, with no queue carried over from a smaller one; the reacting
schedules know the misses at every size, not only at the one they ran, but they see only
misses, and a policy also sees the load, which leads them. What they show is where the room
is: in what foresight buys, or in what reacting buys. On the calibrated ``llama3-8b-a100``
profile, when this bench was last run (15-s buckets, one per tick, read again at five
minutes for the foresight figure), against the cheapest fixed fleet that reaches 99 %:

* the ServeGen m-mid week: 0.69x with foresight; 0.80x reacting, a cold start late, to the
  misses at every size, and 0.80x to its own fleet's misses only (taken to fall as the
  fleet size to the power -4). Both borrow from the end of the week as the fixed fleet of
  12 does, which reaches 99.00 % over it with 96.7 % on the first day: on its own that day
  needs 20 replicas (``by_day``);
* the one-hour Azure code trace: 0.77x with foresight; reacting a cold start late, no
  schedule reaches 99 %, and with replicas ready at once 1.09x: its bursts last a tick or
  two, and only standing capacity chosen knowing them all beats the fixed fleet;
* the bundled diurnal day 0.86x, 0.99x and 0.95x; the NYC taxi day 0.74x, 0.81x and 0.79x;
  the m-small week 0.67x, 0.74x and 0.74x.

``--json`` writes every curve and every schedule; ``--plot`` draws them against each
workload's cheapest fixed fleet. ``--curves`` reads an earlier ``--json`` again instead of
replaying, and ``--bucket`` then merges whole recorded buckets: a week replayed once per size
at one tick's resolution can be read at any coarser one in seconds.
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
    (the last one may be cut short by the end of the run); ``gpus`` per replica; ``start``
    the fleet every policy starts the run with (``aiops.sim.runner.initial_replicas``)."""

    sizes: tuple[int, ...]
    requests: tuple[float, ...]
    misses: tuple[tuple[float, ...], ...]
    seconds: tuple[float, ...]
    gpus: int = 1
    start: int = 1


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


REACTING_PRICES = 400
"""Prices tried, log-spaced over ``PRICE_RANGE``, for the schedules that see only past
buckets: their attainment need not rise with the price, so it is scanned, not bisected."""

HALF_LIVES: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0,
                                 1024.0, math.inf)
"""Half-lives, in buckets, of the miss curves a reacting schedule may be sized on: 0 is the
last bucket seen alone (what five minutes of misses say), ``inf`` the mean of every bucket
seen (a fleet that settles where the run's misses put it). The best one is chosen in
hindsight, as the price is: a policy would have to guess both."""


def information_lag(bucket_s: float, cold_start_s: float) -> int:
    """Buckets from the last one a schedule has seen to the one it sizes.

    A replica that serves in bucket b is asked for a cold start before b begins; by then
    only the buckets that have ended are known. With a 90-s cold start: 2 buckets of five
    minutes, 7 of 15 s."""
    return 1 + math.ceil(cold_start_s / bucket_s - 1e-9)


def _weight(half_life: float, b: int) -> float:
    """How far bucket b moves the smoothed misses towards its own: the whole way for the
    first bucket or with no smoothing (0), a (b+1)-th for the plain mean (inf), else the
    exponential weight of the half-life in buckets."""
    if b == 0 or half_life == 0.0:
        return 1.0
    if math.isinf(half_life):
        return 1.0 / (b + 1)
    return 1.0 - float(0.5 ** (1.0 / half_life))


def _smoothed(misses: np.ndarray, half_life: float) -> np.ndarray:
    """Row b: the misses per fleet size of buckets 0..b, smoothed (``_weight``)."""
    out = np.empty_like(misses)
    level = misses[0]
    for b, row in enumerate(misses):
        level = level + _weight(half_life, b) * (row - level)
        out[b] = level
    return out


def reacting_schedule(curves: Curves, target: float, cold_start_s: float, lag: int = 1,
                      half_lives: Sequence[float] = HALF_LIVES
                      ) -> tuple[Schedule, float] | None:
    """The cheapest schedule reaching ``target`` that sizes each bucket on the misses of
    buckets that ended ``lag`` buckets before it, smoothed; one price and one half-life
    held all run, both the best in hindsight. Returns it with its half-life (None when
    no price reaches the target).

    What a policy reacting to its misses could make of them, and kinder than any policy:
    it knows the miss curve at *every* fleet size, not just at the one it ran, and the
    replicas it asked for and lets go before they are ready cost nothing. Until it has seen
    a bucket it holds the fleet every policy starts with (the smallest size offered that
    is at least ``curves.start``). A rise is sized on what was known ``lag`` buckets
    before (``information_lag(bucket, cold start)`` waits for replicas as a policy does),
    a fall on the bucket before; ``lag=1`` is replicas ready at once. A bucket of one tick
    decides as often as a policy does."""
    if len(curves.requests) < 2 or not curves.sizes or lag < 1:
        return None
    sizes = np.asarray(curves.sizes, dtype=np.float64)
    misses = np.asarray(curves.misses, dtype=np.float64)
    seconds = np.asarray(curves.seconds, dtype=np.float64)
    per_second = 1.0 / np.maximum(seconds, 1e-9)[:, None]
    rows = np.arange(len(misses))
    budget = (1.0 - target) * float(np.sum(curves.requests))
    first = int(np.searchsorted(sizes, curves.start))
    first = min(first, len(sizes) - 1)
    found: tuple[float, np.ndarray, float, float] | None = None  # cost, path, price, half-life
    def sized(known: np.ndarray, price: float, late: int) -> np.ndarray:
        """Per bucket, the size chosen on the buckets that ended ``late`` before it."""
        seen = known[:max(len(known) - late, 0)]
        return np.concatenate([np.full(min(late, len(known)), first),
                               (sizes[None, :] + price * seen * per_second[late:]
                                ).argmin(axis=1)])

    for half_life in half_lives:
        known = _smoothed(misses, half_life)
        for price in np.geomspace(*PRICE_RANGE, REACTING_PRICES):
            # a rise waits for its cold start; a fall need not: replicas asked for and no
            # longer wanted by the next bucket are let go (and cost nothing here)
            path = np.minimum(sized(known, price, lag), sized(known, price, 1))
            if misses[rows, path].sum() > budget:
                continue
            fleet = sizes[path]
            cost = float(fleet @ seconds + np.maximum(np.diff(fleet), 0.0).sum() * cold_start_s)
            if found is None or cost < found[0]:
                found = (cost, path, float(price), half_life)
    if found is None:
        return None
    _, path, price, half_life = found
    return _evaluate(curves, [int(k) for k in path], cold_start_s, price), half_life


ELASTICITIES: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
"""How steeply misses are taken to fall with the fleet (misses at size s ~ s^-e) by the
schedule that sees only its own fleet's misses: 1-2 is roughly the short replies whose
inter-token gaps take in another prompt's prefill (more replicas dilute the prefills each
one runs), 3-4 queueing near capacity. The best one is chosen in hindsight."""


def own_fleet_schedule(curves: Curves, target: float, cold_start_s: float, lag: int,
                       half_lives: Sequence[float] = HALF_LIVES,
                       elasticities: Sequence[float] = ELASTICITIES
                       ) -> tuple[Schedule, float, float] | None:
    """``reacting_schedule`` as a policy would have to run it: it sees only the misses of
    the fleet it has, and takes a fleet of another size to miss ``(its size / that
    size)^e`` times as many. Returns the cheapest reaching ``target`` with its half-life and
    elasticity (each, and the price, the best in hindsight), or None.

    The schedule's path depends on what it saw, so each half-life and elasticity is one
    pass over the buckets, every price at once."""
    if len(curves.requests) < 2 or not curves.sizes or lag < 1:
        return None
    sizes = np.asarray(curves.sizes, dtype=np.float64)
    misses = np.asarray(curves.misses, dtype=np.float64)
    seconds = np.asarray(curves.seconds, dtype=np.float64)
    prices = np.geomspace(*PRICE_RANGE, REACTING_PRICES)[:, None]
    rows = np.arange(len(misses))
    budget = (1.0 - target) * float(np.sum(curves.requests))
    first = min(int(np.searchsorted(sizes, curves.start)), len(sizes) - 1)
    found: tuple[float, np.ndarray, float, float, float] | None = None
    for elasticity, half_life in itertools.product(elasticities, half_lives):
        ratio = (sizes[:, None] / sizes[None, :]) ** elasticity  # [own, other]
        path = np.empty((len(misses), len(prices)), dtype=np.int64)
        known: list[np.ndarray] = []  # the estimate after each of the last ``lag`` buckets
        level = np.zeros((len(prices), len(sizes)))
        for b in range(len(misses)):
            cost_per_s = sizes[None, :] * seconds[b]
            own = np.full(len(prices), first)
            if known:
                down = (cost_per_s + prices * known[-1]).argmin(axis=1)
                up = ((cost_per_s + prices * known[0]).argmin(axis=1) if len(known) == lag
                      else own)
                own = np.minimum(up, down)
            path[b] = own
            seen = misses[b, own][:, None] * ratio[own]
            level = level + _weight(half_life, b) * (seen - level)
            known = [*known[1 - lag:], level] if lag > 1 else [level]
        missed = misses[rows[:, None], path].sum(axis=0)
        fleet = sizes[path]
        cost = fleet.T @ seconds + np.maximum(np.diff(fleet, axis=0), 0.0).sum(
            axis=0) * cold_start_s
        for j in np.flatnonzero(missed <= budget):
            if found is None or cost[j] < found[0]:
                found = (float(cost[j]), path[:, j].copy(), float(prices[j, 0]), half_life,
                         elasticity)
    if found is None:
        return None
    _, best, price, half_life, elasticity = found
    return (_evaluate(curves, [int(k) for k in best], cold_start_s, price), half_life,
            elasticity)


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
            ) -> tuple[int, dict[int, tuple[float, float]], float, float, int, int]:
    """Replay one workload on a fixed fleet: {bucket: (finished, missed)}, the cold start,
    the run's length in seconds, the GPUs per replica and the fleet policies start with."""
    text, index, size, bucket_s, profile = job
    from aiops.policy import make_policy
    from aiops.policy.base import PolicySpec
    from aiops.sim.profiles import load_profile
    from aiops.sim.runner import initial_replicas, peak_replicas
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
            setup.profile.gpus_per_replica, initial_replicas(w, ctx))


def record_curves(text: str, index: int, sizes: Sequence[int], bucket_s: float,
                  jobs: int, profile: str) -> tuple[Curves, float]:
    """The miss curves of one workload and its cold start, one replay per size."""
    from rich.progress import Progress

    runs: dict[int, dict[int, tuple[float, float]]] = {}
    cold = duration = 0.0  # the same for every size: the workload's and the profile's
    gpus = start = 1
    with Progress(transient=True) as bar, ProcessPoolExecutor(jobs) as pool:
        task = bar.add_task(f"{text}: fixed fleets", total=len(sizes))
        for size, buckets, cold_s, run_s, per_replica, first in pool.map(
                _record, [(text, index, s, bucket_s, profile) for s in sizes]):
            runs[size], cold, duration, gpus, start = buckets, cold_s, run_s, per_replica, first
            bar.advance(task)
    # every bucket of the run, those with no request (a service gap) too: a fleet costs there
    keys = range(max(1, math.ceil(duration / bucket_s)))
    seconds = tuple(min(bucket_s, duration - b * bucket_s) for b in keys)
    # requests per bucket as the largest fleet counted them (every size finishes about as many)
    requests = tuple(runs[sizes[-1]].get(b, (0.0, 0.0))[0] for b in keys)
    misses = tuple(tuple(runs[s].get(b, (0.0, 0.0))[1] for s in sizes) for b in keys)
    return Curves(tuple(sizes), requests, misses, seconds, gpus, start), cold


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
        for key, what in (("reacting", "reacting to the misses seen"),
                          ("own_fleet", "reacting to its own fleet's misses")):
            if row.get(key):
                ax.step(hours, row[key]["fleet"], where="post", alpha=0.6, linewidth=0.8,
                        label=f"{what} {row[key]['gpu_hours']:.1f} GPU-h")
        if row["fixed"]:
            ax.axhline(row["fixed"]["replicas"], color="grey", linestyle="--",
                       label=f"fixed {row['fixed']['replicas']}: "
                             f"{row['fixed']['gpu_hours']:.1f} GPU-h")
        ax.set_title(_label(row["workload"]), fontsize=9)
        ax.set_ylabel("replicas")
        ax.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("hours")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_curves(path: Path, bucket_s: float | None
                ) -> list[tuple[str, Curves, float, float]]:
    """(workload, curves, cold start, bucket) of each row of an earlier ``--json``, with
    ``bucket_s`` (a whole multiple of the recorded bucket) merging consecutive buckets:
    a week replayed once per size at one tick's resolution can then be read at any
    coarser one."""
    try:
        rows = json.loads(path.read_text())
        out = []
        for row in rows:
            recorded = float(row["bucket_s"])
            c = row["curves"]
            curves = Curves(tuple(int(x) for x in row["sizes"]),
                            tuple(float(x) for x in c["requests"]),
                            tuple(tuple(float(x) for x in r) for r in c["misses"]),
                            tuple(float(x) for x in c["seconds"]), int(c["gpus"]),
                            int(c["start"]))
            if not (len(curves.requests) == len(curves.misses) == len(curves.seconds)
                    and all(len(r) == len(curves.sizes) for r in curves.misses)):
                raise ValueError("curves of unequal lengths")
            out.append((str(row["workload"]), curves, float(row["cold_start_s"]), recorded))
    except KeyError as err:
        _fail(f"--curves {path}: expected a JSON written by this bench's --json (a row has "
              f"no {err})")
    except (OSError, ValueError, TypeError) as err:
        _fail(f"--curves {path}: expected a JSON written by this bench's --json ({err})")
    if bucket_s is None:
        return out
    merged = []
    for text, curves, cold, recorded in out:
        k = bucket_s / recorded
        if not (k >= 1 and abs(k - round(k)) < 1e-9):
            _fail(f"--bucket {bucket_s:g}: expected a whole multiple of the recorded "
                  f"{recorded:g} s of {path}")
        merged.append((text, merge_buckets(curves, round(k)), cold, bucket_s))
    return merged


def merge_buckets(curves: Curves, k: int) -> Curves:
    """Curves with every ``k`` consecutive buckets made one (the last of what remains)."""
    def sums(values: Sequence[Any]) -> list[Any]:
        return [np.sum(np.asarray(values[i:i + k], dtype=np.float64), axis=0)
                for i in range(0, len(values), k)]

    return Curves(curves.sizes, tuple(float(x) for x in sums(curves.requests)),
                  tuple(tuple(float(x) for x in row) for row in sums(curves.misses)),
                  tuple(float(x) for x in sums(curves.seconds)), curves.gpus, curves.start)


DAY_S = 86_400.0


def by_day(curves: Curves, bucket_s: float, target: float,
           fixed: int | None) -> list[dict[str, Any]]:
    """Per day of a run of two days or more (none otherwise, or when a day is not a whole
    number of buckets): the requests, the attainment of the cheapest fixed fleet over the
    run (``fixed``), and the smallest fixed fleet that would reach ``target`` on that day
    alone. A fleet sized for the run can meet the target by missing more on its hard days
    and paying that back on its easy ones: something only hindsight of the whole run can
    plan for."""
    k = DAY_S / bucket_s
    if sum(curves.seconds) < 2 * DAY_S or abs(k - round(k)) > 1e-9:
        return []
    days = merge_buckets(curves, round(k))
    out = []
    for requests, misses in zip(days.requests, days.misses, strict=True):
        share = [1.0 - m / requests if requests > 0 else math.nan for m in misses]
        out.append({
            "requests": requests,
            "fixed_attainment": share[curves.sizes.index(fixed)] if fixed else None,
            "smallest_fixed": next((size for size, a in zip(curves.sizes, share, strict=True)
                                    if a >= target), None)})
    return out


def _row(text: str, curves: Curves, cold: float, bucket_s: float,
         target: float) -> dict[str, Any]:
    """Every schedule of one workload's curves, as the JSON row ``--json`` writes."""
    sched = cheapest_schedule(curves, target, cold)
    fixed = cheapest_fixed(curves, target)
    row: dict[str, Any] = {
        "workload": text, "bucket_s": bucket_s, "cold_start_s": cold, "target": target,
        "sizes": list(curves.sizes),
        "fixed": (dict(zip(("replicas", "gpu_hours", "attainment"), fixed, strict=True))
                  if fixed else None),
        "schedule": asdict(sched) if sched else None,
        "curves": {"requests": curves.requests, "misses": curves.misses,
                   "seconds": curves.seconds, "gpus": curves.gpus, "start": curves.start},
    }
    row["days"] = by_day(curves, bucket_s, target, fixed[0] if fixed else None)
    lag = information_lag(bucket_s, cold)
    for key, found in (("reacting", reacting_schedule(curves, target, cold, lag)),
                       ("reacting_at_once", reacting_schedule(curves, target, cold, 1)),
                       ("own_fleet", own_fleet_schedule(curves, target, cold, lag))):
        row[key] = None if found is None else {
            **asdict(found[0]), "lag_buckets": lag if key != "reacting_at_once" else 1,
            "half_life_buckets": None if math.isinf(found[1]) else found[1],
            **({"elasticity": found[2]} if len(found) > 2 else {})}
    return row


def _report(row: dict[str, Any]) -> None:
    """The row's figures, one line each, against the cheapest fixed fleet."""
    text, fixed, sched = row["workload"], row["fixed"], row["schedule"]
    if sched is None:
        print(f"{text}: no schedule reaches {row['target']:.1%} "
              f"(not even {row['sizes'][-1]} replicas throughout)")
        return
    ref = fixed["gpu_hours"] if fixed else math.nan
    ratio = (f"{sched['gpu_hours'] / ref:.2f}x the fixed fleet of {fixed['replicas']} "
             f"({ref:.2f} GPU-h, {fixed['attainment']:.2%})" if fixed
             else "no fixed size reaches it")
    print(f"{text}: schedule {sched['gpu_hours']:.2f} GPU-h at {sched['attainment']:.2%}, "
          f"{ratio}")
    if row["days"] and fixed:
        print(f"  day by day, the fixed fleet of {fixed['replicas']} reaches "
              + ", ".join(f"{d['fixed_attainment']:.2%}" for d in row["days"])
              + "; the smallest fixed fleet reaching it each day alone: "
              + ", ".join(str(d["smallest_fixed"] or f">{row['sizes'][-1]}")
                          for d in row["days"]))
    for key, what in (("reacting", "reacting to the misses seen, replicas a cold start away"),
                      ("reacting_at_once", "reacting to the misses seen, replicas ready at "
                                           "once"),
                      ("own_fleet", "reacting to its own fleet's misses only, replicas a "
                                    "cold start away")):
        got = row[key]
        if got is None:
            print(f"  {what}: none reaches {row['target']:.1%}")
            continue
        hl = got["half_life_buckets"]
        smoothing = ("the mean of every bucket seen" if hl is None
                     else "that bucket alone" if hl == 0 else f"a half-life of {hl:g} buckets")
        if "elasticity" in got:
            smoothing += f", misses taken to fall as size^-{got['elasticity']:g}"
        vs = f", {got['gpu_hours'] / ref:.2f}x" if fixed else ""
        print(f"  {what} ({smoothing}): {got['gpu_hours']:.2f} GPU-h at "
              f"{got['attainment']:.2%}{vs}")


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
    ap.add_argument("--workload", action="append",
                    help="bench/autoscale.py's workload syntax: SPEC[,rate=K][,duration=S]"
                         "[,seed=N] (repeatable)")
    ap.add_argument("--curves", type=Path,
                    help="instead of --workload: a JSON this bench wrote (--json), whose "
                         "curves are read again rather than replayed; --bucket then merges "
                         "whole recorded buckets")
    ap.add_argument("--sizes", default="2,4,6,8,10,12,14,16,18,20,24,32",
                    help="fixed fleet sizes replayed (default %(default)s)")
    ap.add_argument("--bucket", type=float,
                    help="seconds a schedule holds one size (default 300; with --curves, "
                         "the recorded bucket)")
    ap.add_argument("--target", type=float, default=0.99,
                    help="SLO attainment over feasible requests (default %(default)s)")
    ap.add_argument("--profile", default="llama3-8b-a100",
                    help="model/hardware profile name or YAML path (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    if (args.workload is None) == (args.curves is None):
        _fail("--workload or --curves: expected one of them (workloads to replay, or the "
              "JSON of an earlier run)")
    sizes = parse_sizes(args.sizes)
    if args.bucket is not None and not args.bucket > 0:
        _fail(f"--bucket {args.bucket:g}: expected seconds > 0")
    if not 0.0 < args.target < 1.0:
        _fail(f"--target {args.target:g}: expected a share in (0, 1), e.g. 0.99")
    if args.curves is not None:
        reread = [_row(text, curves, cold, bucket, args.target)
                  for text, curves, cold, bucket in read_curves(args.curves, args.bucket)]
        for row in reread:
            _report(row)
        _save(args, reread)
        _draw(args, reread)
        return 0
    bucket_s = 300.0 if args.bucket is None else args.bucket
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
        curves, cold = record_curves(text, i, sizes, bucket_s, args.jobs, args.profile)
        rows.append(_row(text, curves, cold, bucket_s, args.target))
        _save(args, rows)  # after each workload: a week's replays are not lost to a later one
        _report(rows[-1])
    _draw(args, rows)
    return 0


def _save(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """The rows so far as ``--json``, if asked for."""
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


def _draw(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """The schedules as ``--plot``, if asked for."""
    if args.plot:
        drawn = [r for r in rows if r["schedule"]]
        if drawn:
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            _plot(args.plot, drawn)
            print(f"wrote {args.plot}")


if __name__ == "__main__":
    sys.exit(main())
