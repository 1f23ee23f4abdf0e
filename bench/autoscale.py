"""Reactive autoscalers, floors and fixed fleets tuned by hindsight vs predictive, PPO and
the oracle.

For each workload (issue 5), sweeps the HPA target and the KEDA threshold and reports, for
each, the cheapest setting that keeps SLO attainment >= the goal (99%), next to
``predictive``, ``ppo`` (the shipped policy) and the hindsight ``oracle``, and the HPA and
KEDA at their default settings. It also finds the smallest fixed fleet that reaches the goal
(``static:replicas=N``, N found by bisection over 1..--max-replicas; ``--no-static`` skips
it): on some workloads no HPA/KEDA setting reaches 99% but a fleet sized in hindsight does,
so it is the honest reference for "reaching the goal without seeing the future".

Floors. The daemon's ``min_replicas`` guardrail keeps a floor of replicas standing under
whatever the autoscaler decides. On bursty workloads an autoscaler above a floor reaches
99% cheaper than a fixed fleet: the floor takes the burst no policy sees coming, the
autoscaler the slow swell (synthetic:diurnal-bursty: ppo above 5 replicas 8.56 GPU-h at
99.91%, a fixed fleet of 6 9.01 GPU-h). A floor is an operator setting tuned in hindsight
just like the HPA target, so the fair comparison tunes it for every autoscaler: for each
policy in ``--floor-search`` (default hpa, predictive, ppo; ``--no-floor-search`` skips)
the smallest floor N at which it reaches the goal, by the same bisection, run by the same
scheduler, as the fixed fleet. Floor 1 is the policy's plain run: when that reaches the
goal, N = 1 and nothing is probed. Otherwise the probes bisect 2..N_static, the fixed
fleet's answer (a floor at or above it costs at least that fleet), or 2..--max-replicas
when no fixed fleet reaches the goal or ``--no-static``; a search starts once its
workload's fixed-fleet search and the policy's plain run have ended. A probe's row keeps
the policy's spec and carries ``min_replicas`` (shown as ``ppo + floor 5``); the answer
goes by ``<spec>+floor`` (``hpa+floor``, ``ppo+floor``) in ``results``, ``versus`` and
``goal``, and each search is reported under ``floors`` in the JSON (``{spec: {spec run,
found, min_replicas, probes, max_floor}}``). ``hpa`` is searched from the HPA default's
run (``hpa:target=0.7``); a spec that is not run anyway (``hpa:target=0.35``) adds its
plain run.

The cheapest of all these hindsight-tuned settings (HPA, KEDA, static, and HPA/KEDA above
their tuned floor, kind ``hpa+floor``) that reaches the goal is the *best no-foresight
reference*, shown with its GPU-hours over the oracle's.

Then, for predictive and ppo and for each above its tuned floor (``predictive+floor``,
``ppo+floor``), the saving in GPU-hours against each of those and whether the goal of the
issue holds for them:

* ppo reaches the goal (SLO attainment >= 99%);
* it is cheaper than every reactive setting that reaches the goal, the floor-tuned
  HPA/KEDA among them (a reactive setting tuned in hindsight includes its floor);
* it uses at most 15% more GPU-hours than the oracle;
* it is not worse than predictive: if both reach the goal, no more GPU-hours; if only
  one does, ppo; if neither does, not both a lower attainment and more GPU-hours.
  ``ppo+floor`` is held to ``predictive+floor`` (plain predictive when its search found
  no floor); plain ppo to plain predictive.

Next to the verdict, for information only (not a check), ``oracle_gap_reachable``: whether
the best no-foresight reference is within the same 15% of the oracle's GPU-hours (None when
nothing reaches the goal). When it is false, the "near the oracle" check asks more than any
policy that cannot see the future has been shown to do on that workload.

Attainment is judged by ``--slo-metric``: ``feasible`` (default) counts only the requests
an idle replica could serve within the SLO (``SimResult.slo_attainment_feasible``) —
on the Azure code trace ~6% of prompts are too long to prefill within TTFT 0.5 s, so no
fleet reaches 99% of *all* requests there; ``all`` counts every request.

Every run goes through the loop behind ``aiops simulate`` and the evaluation harness of
``aiops train`` (``aiops.train.evaluate.run_on``): same workload, profile, starting fleet,
decision interval and forecast (a naive last-value forecast refitted each decision, as in
``bench/ppo.py``; ``--no-forecast`` to run without one). Workloads are given as in
``bench/ppo.py``: ``SPEC[,rate=K][,time=T][,duration=S]``, a CSV path, synthetic:NAME or
servegen:DIR[:start=D][:end=D] (a ServeGen model folder, ``aiops.sim.servegen``),
rate-scaled by K, time-scaled by T, cut to S seconds. A workload that cannot be built (a
missing file, more requests than an in-memory replay holds) is reported as not run, in
the JSON (``not_run``) and after the tables; the others run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/autoscale.py --json /tmp/autoscale.json

prints one table per workload, an overview and each aiops policy against the cost-vs-SLO
frontier of the hindsight-tuned reactive settings on stdout (progress on stderr), writes
everything as JSON and draws that frontier next to it (``/tmp/autoscale.png``): per
workload, GPU-hours against attainment of every HPA/KEDA setting, fixed fleet and floor
run, the frontier of the ones no other beats on both, each aiops policy and the oracle.
The frontier is in the JSON too (``frontier``: its points, and for each policy
``beyond`` — no reactive setting is as cheap and as good — or ``behind``, with the
setting it is compared with).

The default workloads: the Azure code trace, Azure x5, a NYC-taxi day and the bundled
diurnal day, then a week of each ServeGen model (m-small's second week, m-mid's first,
with its service gaps); those two are 50-80 M requests each and need a simulator that
reads requests window by window (until then they are reported as not run: the in-memory
replay holds 20 M). The first four: 4 x (10 HPA targets + 7 KEDA thresholds + predictive,
ppo, oracle) = 80 runs, plus at most ceil(log2(64)) + 1 = 7 fixed-fleet probes per workload
(24 measured), plus per floor search at most ceil(log2(N_static - 1)) + 1 probes, none
where the plain run reaches the goal (37 measured: 4, 6, 0 and 2-3 per policy on Azure,
Azure x5, NYC taxi, diurnal-bursty). 141 runs in all took 153 s with ``--jobs 2`` (about
4 CPU-minutes, most of it the NYC-taxi day).

Runs go through ``aiops.sweep``: on a local process pool, one process per CPU unless
``--jobs N`` says otherwise, or on a Ray cluster with ``--ray ADDRESS`` (``auto`` for the
one ``ray start`` made; every node needs aiops and the data at the same paths). The
bisections of different workloads and policies run side by side, each probe as soon as
the previous one of its chain is done. A run that fails is reported with its spec and
the rest go on.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

from aiops.errors import InputError
from aiops.policy.base import PolicySpec
from aiops.policy.hpa import HpaPolicy
from aiops.policy.keda import KedaPolicy
from aiops.policy.ppo import DEFAULT_POLICY_DIR, read_meta
from aiops.sim.profiles import load_profile
from aiops.sweep import Runner, SimJob, WorkloadRef, run_sim_job
from aiops.train.evaluate import EvalSetup, EvalWorkload

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
AZURE = DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv"
NYC_TAXI = DATA / "nab" / "data" / "realKnownCause" / "nyc_taxi.csv"
SERVEGEN = DATA / "servegen" / "language"
AZURE_SHOWN = os.path.relpath(AZURE)  # shorter in titles and JSON keys: ../shared/data/...
WEEK_S = 7 * 86400
DEFAULT_WORKLOADS = (
    AZURE_SHOWN,
    f"{AZURE_SHOWN},rate=5",
    # Taxi trips per 30 min read as requests/s x 0.002: 15-80 req/s, a fleet of 3-15
    # replicas; one day (00:00 to 24:00 of a Tuesday), so the run takes a minute or so.
    f"{os.path.relpath(NYC_TAXI)},rate=0.002,duration=86400",
    "synthetic:diurnal-bursty",
    # Two weeks of production traffic (ServeGen), one week each: m-small's second week
    # (bursts, short gaps) at 0.1 of the service, ~130 req/s, short prompts (~70 req/s per
    # replica), a fleet of 2-8; m-mid's first week (level shifts, service gaps of up to 80
    # minutes with no traffic at all) at 0.05, ~80 req/s, ~26 req/s per replica. Each is
    # 50-80 M requests: they need a simulator that reads requests window by window.
    f"servegen:{os.path.relpath(SERVEGEN / 'm-small')}:start=7d,rate=0.1,duration={WEEK_S}",
    f"servegen:{os.path.relpath(SERVEGEN / 'm-mid')},rate=0.05,duration={WEEK_S}",
)
HPA_TARGETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
KEDA_THRESHOLDS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0)
SLO_METRICS = {"feasible": "slo_attainment_feasible", "all": "slo_attainment"}
REACTIVE = ("hpa", "keda")
PLANNERS = ("predictive", "ppo")
FLOOR_SEARCH = ("hpa", "predictive", "ppo")  # whose floor is tuned by default


def is_ppo(spec: str) -> bool:
    """``ppo`` or a variant of it (``ppo:slo_miss_usd=0.05``): judged against predictive."""
    return spec == "ppo" or spec.startswith("ppo:")


def _load_sibling(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (bench/ is scripts, not a package)."""
    module_name = f"_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@cache
def load_workload(text: str, index: int) -> EvalWorkload:
    """The workload ``text`` names, built as ``bench/ppo.py`` builds it (seeded by position).

    Cached per process: the parent loads every workload before the pool forks, so workers
    inherit them; a worker started otherwise loads each one once."""
    ew: EvalWorkload = _load_sibling("ppo").parse_workload(text, index)
    return ew


# --------------------------------------------------------------------------------------
# selection and verdicts: pure functions of result rows
# --------------------------------------------------------------------------------------

Row = Mapping[str, Any]


def meets(row: Row, metric: str, goal: float) -> bool:
    """Did this run happen (it has GPU-hours) and reach the goal on ``metric``?

    A failed run never counts as reaching the goal, so it cannot become a reference."""
    return "gpu_hours" in row and row.get(metric) is not None and row[metric] >= goal


def cheapest_meeting(points: Iterable[Row], metric: str, goal: float) -> Row | None:
    """The point with the fewest GPU-hours among those with ``point[metric] >= goal``.

    None when no point reaches the goal. Ties on GPU-hours go to the higher attainment,
    then to the earlier point. Points that failed to run (no ``gpu_hours``) are ignored.
    GPU-hours need not fall as the target rises (an under-provisioned fleet builds a queue
    that a reactive scaler then over-corrects), so every point is considered."""
    best: Row | None = None
    for p in points:
        if not meets(p, metric, goal):
            continue
        if best is None or (p["gpu_hours"], -p[metric]) < (best["gpu_hours"], -best[metric]):
            best = p
    return best


def static_spec(n: int) -> str:
    """The policy spec of a fixed fleet of ``n`` replicas."""
    return f"static:replicas={n}"


def probe_bound(hi: int, lo: int = 1) -> int:
    """Most probes :func:`bisect_steps` makes over lo..hi: ceil(log2(hi - lo + 1)) + 1, and
    none over an empty range."""
    return 0 if hi < lo else (hi - lo).bit_length() + 1


Found = tuple[dict[str, Any] | None, list[dict[str, Any]]]


def bisect_steps(max_n: int, metric: str, goal: float, *, lo: int = 1,
                 key: str = "replicas") -> Generator[int, Row, Found]:
    """The bisection for the smallest N in lo..max_n whose run reaches the goal, one probe
    at a time.

    Yields the N to run next and is sent that run's row; returns the row of the smallest N
    with ``row[metric] >= goal`` (None when even ``max_n`` misses) and every probe in the
    order made, each row with N under ``key`` (``replicas`` for a fixed fleet,
    ``min_replicas`` for a floor). Attainment is taken as non-decreasing in N (more
    replicas, or a higher floor under them, never hurt), so the answer is found in at most
    :func:`probe_bound` runs instead of one per N. A generator so that the runner can
    interleave the searches of several workloads on one process pool;
    :func:`smallest_meeting` drives it with a callable."""
    if max_n < lo:
        raise InputError(f"bisection: largest N {max_n} must be >= {lo}")
    probes: list[dict[str, Any]] = []
    found: dict[str, Any] | None = None
    hi = max_n  # the answer, if any, is in lo..hi; hi passes once found is set
    while lo < hi:
        mid = (lo + hi) // 2
        row = {key: mid, **(yield mid)}
        probes.append(row)
        if meets(row, metric, goal):
            hi, found = mid, row
        else:
            lo = mid + 1
    if found is None:  # every probe missed: lo == max_n, not run yet
        row = {key: lo, **(yield lo)}
        probes.append(row)
        found = row if meets(row, metric, goal) else None
    return found, probes


def drive(steps: Generator[int, Row, Found], run: Callable[[int], Row]) -> Found:
    """Run a search generator to its end with ``run(n)`` (the row of the run for n)."""
    try:
        n = next(steps)
        while True:
            n = steps.send(run(n))
    except StopIteration as stop:
        result: Found = stop.value
        return result


def smallest_meeting(attainment_of: Callable[[int], Row], max_n: int, metric: str,
                     goal: float) -> Found:
    """:func:`bisect_steps` over 1..max_n run with ``attainment_of(n)`` (a fleet of n)."""
    return drive(bisect_steps(max_n, metric, goal), attainment_of)


FLOOR = "+floor"  # a floor-tuned setting's name: ``ppo+floor``, ``hpa+floor``
FLOOR_TAG = "@floor="  # what a floor probe's run is filed under: ``ppo@floor=5``


def floor_name(spec: str) -> str:
    """The name a floor search's answer goes by in results, references and verdicts."""
    return f"{spec}{FLOOR}"


def is_reactive(spec: str) -> bool:
    """An HPA or KEDA spec: its floor-tuned setting is a no-foresight reference."""
    return PolicySpec.parse(spec).name in REACTIVE


def floor_searchable(spec: str) -> bool:
    """Has ``spec`` a floor worth tuning? An autoscaler's: HPA, KEDA, predictive, ppo. A
    fixed fleet has no floor below it and the oracle sees the future anyway."""
    try:
        name = PolicySpec.parse(spec).name
    except InputError:
        return False
    return name in (*REACTIVE, "predictive", "ppo")


def floor_ceiling(static: Mapping[str, Any] | None, max_replicas: int) -> int:
    """The largest floor a floor search probes: the smallest fixed fleet reaching the goal
    (a floor at or above it costs at least that fleet, which needs no autoscaler), or
    ``max_replicas`` when the fixed-fleet search found none or did not run."""
    found = None if static is None else static.get("found")
    return max_replicas if found is None else int(found["replicas"])


def floor_steps(plain: Row | None, hi: int, metric: str,
                goal: float) -> Generator[int, Row, Found]:
    """The search for the smallest floor (``min_replicas``) at which a policy reaches the
    goal, as :func:`bisect_steps` over 2..hi; ``plain`` is the policy's run above the
    default floor of 1.

    When the plain run reaches the goal the answer is floor 1 and nothing is probed; it
    missed otherwise, so the probes start at 2. The floor is an operator setting, tuned
    in hindsight like the HPA target: the answer is the setting an operator who saw the
    workload would choose. Returns the answer's row (with its ``min_replicas``; None when
    no floor up to ``hi`` reaches the goal) and the probes made."""
    if plain is not None and meets(plain, metric, goal):
        return {"min_replicas": 1, **plain}, []
    if hi < 2:
        return None, []
    found: Found = yield from bisect_steps(hi, metric, goal, lo=2, key="min_replicas")
    return found


def oracle_gap_reachable(best: Row | None, oracle: Row | None,
                         oracle_margin: float) -> bool | None:
    """Does the best no-foresight reference use at most ``1 + oracle_margin`` times the
    oracle's GPU-hours? None when nothing reaches the goal (or the oracle did not run).

    ``best`` is the cheapest reference reaching the goal, so this answers whether *any*
    policy tuned in hindsight but blind to the future is known to pass the "near the
    oracle" check: when false, failing that check says more about the check than the
    policy."""
    if best is None or oracle is None or "gpu_hours" not in oracle or "gpu_hours" not in best:
        return None
    return bool(best["gpu_hours"] <= (1.0 + oracle_margin) * oracle["gpu_hours"])


def best_reference(candidates: Mapping[str, Iterable[Row]], oracle: Row | None, *,
                   metric: str, goal: float, oracle_margin: float) -> dict[str, Any]:
    """The cheapest no-foresight reference reaching the goal and how far it is from the oracle.

    ``candidates`` maps a kind (``hpa``, ``keda``, ``static``, ``hpa+floor``, ``keda+floor``)
    to its settings' rows, every one tuned in hindsight; the winner is picked as
    :func:`cheapest_meeting` picks. Returns ``kind``, ``spec``, ``row`` (None when none
    reaches the goal), ``over_oracle_pct`` (its GPU-hours over the oracle's, in %) and
    ``oracle_gap_reachable``."""
    labelled = [{"kind": kind, **p} for kind, points in candidates.items() for p in points]
    best = cheapest_meeting(labelled, metric, goal)
    over = None
    if best is not None and oracle is not None and oracle.get("gpu_hours"):
        over = round(100.0 * (best["gpu_hours"] / oracle["gpu_hours"] - 1.0), 1)
    return {"kind": None if best is None else best["kind"],
            "spec": None if best is None else best.get("spec"),
            "row": None if best is None else dict(best),
            "over_oracle_pct": over,
            "oracle_gap_reachable": oracle_gap_reachable(best, oracle, oracle_margin)}


def row_label(row: Row) -> str:
    """A row's spec, with its floor when it ran above one: ``hpa:target=0.7 + floor 5``."""
    spec = str(row.get("spec"))
    return spec if "min_replicas" not in row else f"{spec} + floor {row['min_replicas']}"


def vs_oracle(over_pct: float | None) -> str:
    """``+46.8% over the oracle`` / ``5.2% under the oracle`` (a reactive scaler can be
    cheaper than the oracle when it misses more requests the oracle chose to serve)."""
    if over_pct is None:
        return "oracle did not run"
    return (f"{over_pct:+.1f}% over the oracle" if over_pct >= 0
            else f"{-over_pct:.1f}% under the oracle")


def gap_detail(best: Mapping[str, Any], goal: float, oracle_margin: float) -> str:
    """One sentence on the best no-foresight reference against the oracle, for the report."""
    if best["row"] is None:
        return f"no HPA/KEDA setting, floor or fixed fleet reaches {100 * goal:g}%"
    row = best["row"]
    return (f"best no-foresight reference {row_label(row)} uses {row['gpu_hours']:.2f} GPU-h "
            f"({vs_oracle(best['over_oracle_pct'])}; limit +{100 * oracle_margin:g}%)")


def saving(row: Row, ref: Row | None, metric: str) -> dict[str, float | None] | None:
    """GPU-hours ``row`` saves against ``ref`` (% of ref's) and its attainment difference."""
    if ref is None or "gpu_hours" not in row or "gpu_hours" not in ref:
        return None
    pct = 100.0 * (1.0 - row["gpu_hours"] / ref["gpu_hours"]) if ref["gpu_hours"] > 0 else None
    return {"gpu_hours_saved_pct": None if pct is None else round(pct, 1),
            "slo_diff_pts": round(100.0 * (row[metric] - ref[metric]), 2)}


def not_worse(gpu: float, att: float, ref_gpu: float, ref_att: float,
              goal: float) -> tuple[bool, str]:
    """Is (gpu, att) not worse than (ref_gpu, ref_att)? Reaching the goal comes first:
    if both reach it, no more GPU-hours; if only one does, it must be this one; if neither
    does, not both a lower attainment and more GPU-hours."""
    mine, theirs = att >= goal, ref_att >= goal
    if mine and theirs:
        return gpu <= ref_gpu, "both meet the goal, cost decides"
    if mine != theirs:
        return mine, "only one meets the goal"
    return not (att < ref_att and gpu > ref_gpu), "neither meets the goal, not dominated"


def goal_checks(
    row: Row,
    *,
    reactive_points: Iterable[Row],
    oracle: Row | None,
    predictive: Row | None,
    metric: str,
    goal: float,
    oracle_margin: float,
) -> dict[str, Any]:
    """The issue's goal for one policy's row: each check as ``{"pass", "detail"}``, and
    ``holds`` (every check passes). A check that cannot be made (its reference did not run)
    has ``pass`` None and does not count as passed."""
    checks: dict[str, dict[str, Any]] = {}
    if "gpu_hours" not in row:
        return {"checks": checks, "holds": False}
    gpu, att = row["gpu_hours"], row[metric]
    checks["meets_slo"] = {"pass": att >= goal,
                           "detail": f"{100 * att:.2f}% vs goal {100 * goal:g}%"}
    meeting = [p for p in reactive_points if "gpu_hours" in p and p[metric] >= goal]
    if meeting:
        ref = min(meeting, key=lambda p: p["gpu_hours"])
        checks["cheaper_than_reactive"] = {
            "pass": gpu < ref["gpu_hours"],
            "detail": f"{gpu:.2f} vs {ref['gpu_hours']:.2f} GPU-h ({row_label(ref)})"}
    else:
        checks["cheaper_than_reactive"] = {
            "pass": True, "detail": "vacuous: no reactive setting reaches the goal"}
    if oracle is not None and "gpu_hours" in oracle:
        limit = (1.0 + oracle_margin) * oracle["gpu_hours"]
        checks["near_oracle"] = {
            "pass": gpu <= limit,
            "detail": f"{gpu:.2f} vs oracle {oracle['gpu_hours']:.2f} GPU-h "
                      f"(limit +{100 * oracle_margin:g}%: {limit:.2f})"}
    else:
        checks["near_oracle"] = {"pass": None, "detail": "oracle did not run"}
    if predictive is not None:
        if "gpu_hours" not in predictive:
            checks["not_worse_than_predictive"] = {"pass": None,
                                                   "detail": "predictive did not run"}
        else:
            p_gpu, p_att = predictive["gpu_hours"], predictive[metric]
            ok, why = not_worse(gpu, att, p_gpu, p_att, goal)
            checks["not_worse_than_predictive"] = {
                "pass": ok,
                "detail": f"{gpu:.2f} vs {p_gpu:.2f} GPU-h, {100 * att:.2f}% vs "
                          f"{100 * p_att:.2f}%: {why}"}
    return {"checks": checks, "holds": all(c["pass"] is True for c in checks.values())}


def summarise_workload(
    rows: Mapping[str, Row],
    *,
    sweeps: Mapping[str, Sequence[tuple[float, str]]],
    defaults: Mapping[str, str],
    metric: str,
    goal: float,
    oracle_margin: float,
    static: Mapping[str, Any] | None = None,
    floors: Mapping[str, Mapping[str, Any]] | None = None,
    planners: Sequence[str] = PLANNERS,
) -> dict[str, Any]:
    """One workload's report from its result rows (``{spec: row}``).

    ``sweeps`` maps ``hpa``/``keda`` to their ``(value, spec)`` points, ``defaults`` to the
    spec of their default setting (one of the points, or a run of its own). ``static`` is
    the fixed-fleet search (``found``: the row or None, ``probes``), None when skipped.
    ``floors`` maps a policy spec to its floor search (``spec`` run, ``found``, ``probes``,
    ``max_floor``). A reactive policy's floor-tuned setting (``hpa+floor``) is one more
    setting tuned in hindsight: it joins the best no-foresight reference's candidates and
    the reactive settings every planner must be cheaper than. A planner's (``ppo+floor``)
    is judged like the planner, ppo's against ``predictive+floor`` when there is one."""
    out: dict[str, Any] = {"sweep": {}, "cheapest": {}, "default": {}, "static": None,
                           "floors": {}, "best_reference": None, "results": {},
                           "versus": {}, "goal": {}}
    for name, points in sweeps.items():
        out["sweep"][name] = [{"value": v, **rows[s]} for v, s in points]
        out["cheapest"][name] = cheapest_meeting(out["sweep"][name], metric, goal)
        out["default"][name] = dict(rows[defaults[name]])
    for name in (*planners, "oracle"):
        if name in rows:
            out["results"][name] = dict(rows[name])
    reactive = [p for points in out["sweep"].values() for p in points]
    refs: dict[str, Row | None] = {}
    for name in sweeps:
        refs[f"{name} cheapest"] = out["cheapest"][name]
        refs[f"{name} default"] = out["default"][name]
    candidates: dict[str, list[Row]] = {
        name: [*out["sweep"][name], out["default"][name]] for name in sweeps}
    if static is not None:
        found = static.get("found")
        out["static"] = {"spec": None if found is None else found.get("spec"),
                         "replicas": None if found is None else found.get("replicas"),
                         "found": None if found is None else dict(found),
                         "probes": [dict(p) for p in static.get("probes", ())],
                         "max_replicas": static.get("max_replicas")}
        refs["static cheapest"] = found
        candidates["static"] = [] if found is None else [found]
    floor_planners: list[str] = []
    for spec, search in (floors or {}).items():
        found = search.get("found")
        out["floors"][spec] = {"spec": search.get("spec", spec),
                               "found": None if found is None else dict(found),
                               "min_replicas": None if found is None else found["min_replicas"],
                               "probes": [dict(p) for p in search.get("probes", ())],
                               "max_floor": search.get("max_floor")}
        tuned = [] if found is None else [dict(found)]
        if is_reactive(spec):
            candidates.setdefault(floor_name(PolicySpec.parse(spec).name), []).extend(tuned)
            reactive += tuned
            refs[floor_name(spec)] = None if found is None else dict(found)
        else:
            floor_planners.append(floor_name(spec))
            if found is not None:
                out["results"][floor_name(spec)] = dict(found)
    refs["oracle"] = out["results"].get("oracle")
    best = best_reference(candidates, refs["oracle"], metric=metric, goal=goal,
                          oracle_margin=oracle_margin)
    out["best_reference"] = best
    predictive = out["results"].get("predictive")
    predictive_floor = out["results"].get(floor_name("predictive"))
    for name in (*planners, *floor_planners):
        row = out["results"].get(name)
        if row is None:
            continue
        floored = name.endswith(FLOOR)
        ppo_like = is_ppo(name.removesuffix(FLOOR))
        vs = dict(refs)
        if ppo_like:
            vs["predictive"] = predictive
            if predictive_floor is not None:
                vs[floor_name("predictive")] = predictive_floor
        out["versus"][name] = {k: saving(row, ref, metric) for k, ref in vs.items()}
        # A floor-tuned ppo is held to the floor-tuned predictive when there is one; plain
        # ppo to plain predictive, as before floors were searched.
        their = (predictive_floor or predictive) if floored else predictive
        out["goal"][name] = goal_checks(
            row, reactive_points=reactive, oracle=refs["oracle"],
            predictive=their if ppo_like else None,
            metric=metric, goal=goal, oracle_margin=oracle_margin)
        # Information beside the verdict, not a check: it does not change "holds".
        out["goal"][name]["oracle_gap_reachable"] = best["oracle_gap_reachable"]
        out["goal"][name]["oracle_gap_detail"] = gap_detail(best, goal, oracle_margin)
    return out


# --------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    index: int  # position of the workload: its seed, as in bench/ppo.py
    workload: str
    spec: str
    setup: EvalSetup  # a floor probe's carries its min_replicas
    ppo_dir: str
    tag: str = ""  # "@floor=N" for a floor probe: the same spec, another run

    @property
    def key(self) -> str:
        """What the run is filed under, with its workload's index: the spec, tagged for a
        floor probe so that it is never taken for the plain run of that spec."""
        return self.spec + self.tag

    def sim(self) -> SimJob:
        """The run as :mod:`aiops.sweep` ships it to a worker process or a Ray node: the
        workload by the arguments that rebuild it, not its arrays."""
        ref: WorkloadRef = _load_sibling("ppo").workload_ref(self.workload, self.index)
        return SimJob(ref, self.spec, self.setup, self.ppo_dir or None)


def run_job(job: Job) -> tuple[Job, dict[str, Any]]:
    """One policy on one workload, here: its ``SimResult.as_dict()`` row, or ``{"error"}``."""
    return job, run_sim_job(job.sim())


def with_param(base: str, key: str, value: float) -> str:
    """``hpa`` + target=0.5 -> ``hpa:target=0.5``; ``hpa:metric=kv`` -> ``...,target=0.5``."""
    spec = PolicySpec.parse(base)
    if key in spec.params:
        raise InputError(f"{base!r}: the sweep sets {key}= itself; leave it out")
    return f"{base}{',' if ':' in base else ':'}{key}={value:g}"


def default_value(name: str, base: str, setup: EvalSetup, ew: EvalWorkload) -> float:
    """The swept parameter's value when the spec leaves it out."""
    ctx = setup.context(ew.workload)
    spec = PolicySpec.parse(base)
    if name == "hpa":
        return HpaPolicy.from_spec(spec, ctx).target
    return KedaPolicy.from_spec(spec, ctx).threshold


def plan_jobs(
    texts: Sequence[str] | Mapping[int, str],
    setup: EvalSetup,
    *,
    bases: Mapping[str, str],
    grids: Mapping[str, Sequence[float]],
    ppo_dir: str,
    planners: Sequence[str] = PLANNERS,
    floor_specs: Sequence[str] = (),
) -> tuple[list[Job], list[dict[str, Any]]]:
    """Every run the benchmark needs, and per workload the specs of its sweep and defaults
    and (``floors``) the spec whose plain run starts each floor search.

    A default setting that is on the grid is the grid's run, not a second one; likewise a
    floor search of ``hpa`` starts from the HPA default's run, and one of a spec that is
    not run anyway (``hpa:target=0.35``) adds that run. ``texts`` by position, or as
    ``{position: text}`` for some of them (a position seeds its synthetic workload)."""
    keys = {"hpa": "target", "keda": "threshold"}
    jobs: list[Job] = []
    layout: list[dict[str, Any]] = []
    items = texts.items() if isinstance(texts, Mapping) else enumerate(texts)
    for i, text in items:
        ew = load_workload(text, i)
        specs: list[str] = []
        sweeps: dict[str, list[tuple[float, str]]] = {}
        defaults: dict[str, str] = {}
        for name in REACTIVE:
            sweeps[name] = [(v, with_param(bases[name], keys[name], v)) for v in grids[name]]
            specs += [s for _, s in sweeps[name]]
            dv = default_value(name, bases[name], setup, ew)
            on_grid = [s for v, s in sweeps[name] if math.isclose(v, dv)]
            defaults[name] = on_grid[0] if on_grid else bases[name]
            if not on_grid:
                specs.append(bases[name])
        specs += [*planners, "oracle"]
        floors: dict[str, str] = {}
        for spec in floor_specs:
            base = next((n for n in REACTIVE if bases[n] == spec), None)
            floors[spec] = defaults[base] if base is not None else spec
            if floors[spec] not in specs:
                specs.append(floors[spec])
        jobs += [Job(i, text, s, setup, ppo_dir) for s in specs]
        layout.append({"index": i, "spec": text, "sweeps": sweeps, "defaults": defaults,
                       "floors": floors,
                       "default_values": {n: default_value(n, bases[n], setup, ew)
                                          for n in REACTIVE}})
    return jobs, layout


def _cost(job: Job) -> float:
    """Rough relative run time, to start the longest runs first."""
    w = load_workload(job.workload, job.index).workload
    n = w.duration * float(w.rate(max(w.duration, 1.0))[0]) if w.duration > 0 else 0.0
    return n * (3.0 if job.spec == "oracle" else 1.5 if is_ppo(job.spec) else 1.0)


@dataclass(frozen=True)
class Search:
    """One bisection on one workload: the smallest fixed fleet reaching the goal
    (``policy`` None), or the smallest floor (``min_replicas``) under ``policy`` that does.

    Both are the same chain of probes (:func:`bisect_steps`) run by :func:`run_all`; they
    differ in the job a probe of N is and in their bounds (see :func:`floor_steps`)."""

    index: int
    workload: str
    setup: EvalSetup
    ppo_dir: str
    max_replicas: int
    metric: str
    goal: float
    policy: str | None = None  # a floor search: the policy spec as given, which names it
    runs: str | None = None  # the spec its runs use (``hpa`` -> the HPA default's spec)

    @property
    def name(self) -> str:
        """The search's key in :func:`run_all`'s results: ``static`` or the policy spec."""
        return "static" if self.policy is None else self.policy

    @property
    def spec(self) -> str:
        """What a probe runs: ``static`` (a fleet of N), else the policy above floor N."""
        return "static" if self.policy is None else (self.runs or self.policy)

    @property
    def is_floor(self) -> bool:
        return self.policy is not None

    def job(self, n: int) -> Job:
        if not self.is_floor:
            return Job(self.index, self.workload, static_spec(n), self.setup, self.ppo_dir)
        return Job(self.index, self.workload, self.spec, replace(self.setup, min_replicas=n),
                   self.ppo_dir, tag=f"{FLOOR_TAG}{n}")

    def bound(self) -> int:
        """Most probes it can make, before its bounds are known."""
        return probe_bound(self.max_replicas, 2 if self.is_floor else 1)


Rows = dict[tuple[int, str], dict[str, Any]]
Searched = dict[tuple[int, str], dict[str, Any]]


def run_all(jobs: Sequence[Job], n_procs: int | None,
            searches: Sequence[Search] = (), *, ray: str | None = None,
            fn: Callable[[SimJob], dict[str, Any]] = run_sim_job) -> tuple[Rows, Searched]:
    """Run every job (longest first) and every search on ``n_procs`` local processes (None:
    one per CPU) or a Ray cluster (``ray``), through :class:`aiops.sweep.Runner`, with a
    progress bar each; returns the jobs' rows by ``(index, spec)`` and the searches'
    results by ``(index, search.name)``: ``found``, ``probes``, ``max_replicas``, and for a
    floor search the ``spec`` it ran and ``max_floor``, the largest floor it would probe.
    ``fn`` runs one :class:`~aiops.sweep.SimJob` (tests give a fake); a run that raises is
    filed as a row ``{"spec", "error"}``, which never reaches the goal.

    A search is a chain (each probe depends on the last), so its next probe is submitted
    before any waiting job, and no more runs are submitted than can run at once: the chains
    then run alongside the jobs rather than after them, and different workloads' chains
    run side by side. A floor search starts once its workload's fixed-fleet search has
    ended (its answer bounds the floors) and its policy's plain run is done (floor 1: when
    it reaches the goal nothing is probed)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    keys = {(j.index, j.key) for j in jobs}
    for search in searches:
        if search.is_floor and (search.index, search.spec) not in keys:
            raise ValueError(f"floor search of {search.spec!r} on workload {search.index}: "
                             "its plain run is not among the jobs")
    pending = deque(sorted(jobs, key=_cost, reverse=True))
    probes: deque[Job] = deque()  # probes ready to run: they go first
    probing: dict[tuple[int, str], Search] = {}  # queued or running probes
    steps: dict[tuple[int, str], Generator[int, Row, Found]] = {}
    waiting = list(searches)  # not started yet
    with_static = {s.index for s in searches if not s.is_floor}
    rows: Rows = {}
    searched: Searched = {}
    submitted: dict[int, Job] = {}  # ticket -> job

    runner: Runner[SimJob, dict[str, Any]] = Runner(fn, processes=n_procs, ray=ray,
                                                   max_jobs=len(jobs) + len(searches))
    with runner, Progress(TextColumn("{task.description:<44}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                          console=Console(stderr=True)) as progress:
        task = progress.add_task(f"simulating on {runner.where}", total=len(pending))
        # Bounded by Search.bound per search; shrunk as searches end early.
        bars = {floor: progress.add_task(
                    "floors (bisection)" if floor else "static fleet (bisection)",
                    total=sum(s.bound() for s in searches if s.is_floor == floor),
                    visible=any(s.is_floor == floor for s in searches))
                for floor in (False, True)}

        def queue_probe(search: Search, n: int) -> None:
            job = search.job(n)
            probing[(job.index, job.key)] = search
            probes.append(job)

        def finish(search: Search, result: Found) -> None:
            found, tried = result
            out: dict[str, Any] = {"found": found, "probes": tried,
                                   "max_replicas": search.max_replicas}
            if search.is_floor:
                out |= {"spec": search.spec, "max_floor": floor_ceiling(
                    searched.get((search.index, "static")), search.max_replicas)}
            searched[(search.index, search.name)] = out
            bar = bars[search.is_floor]
            progress.update(bar, total=(progress.tasks[bar].total or 0)
                            - (search.bound() - len(tried)))

        def ready(search: Search) -> bool:
            if not search.is_floor:
                return True
            static_done = (search.index not in with_static
                           or (search.index, "static") in searched)
            return static_done and (search.index, search.spec) in rows

        def begin(search: Search) -> None:
            if search.is_floor:
                ceiling = floor_ceiling(searched.get((search.index, "static")),
                                        search.max_replicas)
                chain = floor_steps(rows[(search.index, search.spec)], ceiling,
                                    search.metric, search.goal)
            else:
                chain = bisect_steps(search.max_replicas, search.metric, search.goal)
            steps[(search.index, search.name)] = chain
            try:
                queue_probe(search, next(chain))
            except StopIteration as stop:  # answered without a probe
                finish(search, stop.value)

        def start_ready() -> None:
            started = True
            while started:  # a search ending at once may let another one start
                started = False
                for search in [s for s in waiting if ready(s)]:
                    waiting.remove(search)
                    begin(search)
                    started = True

        def record(job: Job, row: dict[str, Any]) -> None:
            short = Path(job.workload.split(",")[0]).stem[:16]
            description = f"{short} {job.key}"[:44]
            search = probing.pop((job.index, job.key), None)
            if search is None:
                rows[(job.index, job.key)] = row
                progress.update(task, advance=1, description=description)
            else:
                progress.update(bars[search.is_floor], advance=1, description=description)
                try:
                    queue_probe(search, steps[(search.index, search.name)].send(row))
                except StopIteration as stop:
                    finish(search, stop.value)
            start_ready()

        start_ready()
        while probes or pending or runner.in_flight:
            # Keep every slot busy, no more: a probe queued later must not wait behind
            # runs already handed to the executor.
            while runner.in_flight < runner.slots and (probes or pending):
                job = probes.popleft() if probes else pending.popleft()
                submitted[runner.submit(job.sim(), f"{job.workload} {job.key}")] = job
            ticket, outcome = runner.next_done()
            job = submitted.pop(ticket)
            if outcome.result is not None:
                record(job, outcome.result)
            else:
                error = (outcome.error or "").splitlines()[0]
                progress.console.print(f"failed: {job.workload} {job.key}: {error}",
                                       markup=False, highlight=False)
                record(job, {"spec": job.spec, "error": outcome.error})
    assert not waiting, "every floor search's plain run and static search have ended"
    return rows, searched


# --------------------------------------------------------------------------------------
# the cost-vs-SLO frontier of the hindsight-tuned reactive settings
# --------------------------------------------------------------------------------------


def reactive_points(w: Mapping[str, Any], metric: str) -> list[dict[str, Any]]:
    """Every reactive setting run on a workload, tuned in hindsight or not: the HPA and
    KEDA grids and defaults, the fixed-fleet probes and the floor probes under HPA/KEDA,
    each with its ``kind``. Failed runs are left out."""
    pts: list[dict[str, Any]] = []
    for name in REACTIVE:
        specs = {p["spec"] for p in w["sweep"][name]}
        pts += [{"kind": name, **p} for p in w["sweep"][name]]
        if w["default"][name].get("spec") not in specs:
            pts.append({"kind": name, **w["default"][name]})
    if w.get("static") is not None:
        pts += [{"kind": "static", **p} for p in w["static"]["probes"]]
    for spec, floor in w.get("floors", {}).items():
        if is_reactive(spec):
            kind = floor_name(PolicySpec.parse(spec).name)
            pts += [{"kind": kind, **p} for p in floor["probes"]]
            found = floor.get("found")
            if found is not None and not floor["probes"]:  # floor 1: the plain run
                pts.append({"kind": kind, **found})
    return [p for p in pts if "gpu_hours" in p and p.get(metric) is not None]


def pareto_frontier(points: Iterable[Row], metric: str) -> list[Row]:
    """The settings no other setting beats on both GPU-hours and attainment, cheapest
    first (attainment rising along it): what tuning in hindsight can reach."""
    out: list[Row] = []
    best = -math.inf
    for p in sorted(points, key=lambda p: (p["gpu_hours"], -p[metric])):
        if p[metric] > best:
            out.append(p)
            best = p[metric]
    return out


def frontier_position(row: Row, frontier: Sequence[Row], metric: str) -> dict[str, Any]:
    """Where a policy's run sits against the frontier. ``behind``: a reactive setting
    tuned in hindsight is as cheap and as good (one at least strictly), named with how
    much cheaper it is; ``beyond``: none is, and ``reference`` is the cheapest setting
    reaching the policy's attainment (None when none does), with the policy's GPU-hours
    over it (negative: the policy is cheaper)."""
    gpu, att = row["gpu_hours"], row[metric]
    better = [f for f in frontier if f["gpu_hours"] <= gpu and f[metric] >= att
              and (f["gpu_hours"] < gpu or f[metric] > att)]
    ref: Row | None
    if better:
        ref = min(better, key=lambda f: f["gpu_hours"])
        position = "behind"
    else:
        ref = next((f for f in frontier if f[metric] >= att), None)
        position = "beyond"
    out: dict[str, Any] = {"position": position, "gpu_hours": gpu, metric: att,
                           "reference": None if ref is None else row_label(ref),
                           "reference_kind": None if ref is None else ref.get("kind")}
    if ref is not None:
        out |= {"reference_gpu_hours": ref["gpu_hours"], "reference_" + metric: ref[metric],
                "gpu_hours_vs_reference_pct": round(100.0 * (gpu / ref["gpu_hours"] - 1.0), 1)
                if ref["gpu_hours"] > 0 else None}
    return out


def frontier_summary(w: Mapping[str, Any], metric: str) -> dict[str, Any]:
    """The frontier of one workload and every aiops policy's place against it (the
    planners and their floor-tuned settings; the oracle for reference)."""
    frontier = pareto_frontier(reactive_points(w, metric), metric)
    policies = {name: frontier_position(row, frontier, metric)
                for name, row in w["results"].items() if "gpu_hours" in row}
    return {"points": [{"kind": f.get("kind"), "spec": row_label(f),
                        "gpu_hours": f["gpu_hours"], metric: f[metric]} for f in frontier],
            "policies": policies}


def _miss_pct(att: float) -> float:
    """Plotted y: the share of requests missing the SLO, in %, floored for a log axis."""
    return max(100.0 * (1.0 - att), 1e-3)


def _x_limit(w: Mapping[str, Any], frontier: Sequence[Row], metric: str, goal: float) -> float:
    """The plot's GPU-hours range: twice the dearest of the aiops policies, the oracle and
    the cheapest reactive setting reaching the goal — where the comparison is. A KEDA
    setting at ten times the fleet would otherwise squeeze it into a corner."""
    focus = [r["gpu_hours"] for r in w["results"].values() if "gpu_hours" in r]
    reaching = [f["gpu_hours"] for f in frontier if f[metric] >= goal]
    focus += reaching[:1] or [f["gpu_hours"] for f in frontier[-1:]]
    return 2.0 * max(focus) if focus else 1.0


def plot_frontier(report: Mapping[str, Any], path: Path) -> None:
    """The PNG a user looks at: per workload, GPU-hours against SLO attainment of every
    reactive setting run (small dots, by kind), the frontier of the hindsight-tuned ones
    (a step line), each aiops policy (large markers, labelled), the oracle (a star) and
    the goal (dashed). Attainment is on a log scale of misses, so 99% and 99.9% are as far
    apart as 90% and 99%."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    metric = SLO_METRICS[report["slo_metric"]]
    goal = float(report["goal"])
    workloads = report["workloads"]
    n = max(1, len(workloads))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(5.6 * cols, 4.6 * rows), layout="constrained")
    colours = {"hpa": "#4c72b0", "keda": "#dd8452", "static": "#8c8c8c",
               "hpa+floor": "#64b5cd", "keda+floor": "#ccb974"}
    markers = ["o", "D", "s", "^", "v", "P", "X"]
    for k, (spec, w) in enumerate(workloads.items()):
        ax = fig.add_subplot(rows, cols, k + 1)
        pts = reactive_points(w, metric)
        frontier = pareto_frontier(pts, metric)
        right = _x_limit(w, frontier, metric, goal)
        for kind, colour in colours.items():
            mine = [p for p in pts if p["kind"] == kind]
            if mine:
                ax.scatter([min(p["gpu_hours"], right) for p in mine],
                           [_miss_pct(p[metric]) for p in mine], s=14, color=colour,
                           alpha=0.6, label=kind, zorder=2)
        beyond = [p for p in pts if p["gpu_hours"] > right]
        if beyond:  # far costlier settings sit on the right edge, counted
            ax.annotate(f"{len(beyond)} setting{'s' if len(beyond) > 1 else ''} at the "
                        "edge cost up to "
                        f"{max(p['gpu_hours'] for p in beyond):,.0f} GPU-h",
                        (0.98, 0.98), xycoords="axes fraction", ha="right", va="top",
                        fontsize=7, color="dimgray")
        if frontier:
            ax.plot([f["gpu_hours"] for f in frontier], [_miss_pct(f[metric]) for f in frontier],
                    drawstyle="steps-post", color="black", lw=1.2, zorder=3,
                    label="reactive frontier (hindsight)")
        planners = [(name, row) for name, row in w["results"].items()
                    if name != "oracle" and "gpu_hours" in row]
        for j, (name, row) in enumerate(planners):
            x, y = row["gpu_hours"], _miss_pct(row[metric])
            ax.scatter([x], [y], s=70, marker=markers[j % len(markers)], color=f"C{j + 3}",
                       edgecolor="black", zorder=5, label=name)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        oracle = w["results"].get("oracle")
        if oracle is not None and "gpu_hours" in oracle:
            ax.scatter([oracle["gpu_hours"]], [_miss_pct(oracle[metric])], s=120, marker="*",
                       color="gold", edgecolor="black", zorder=5, label="oracle")
        ax.axhline(_miss_pct(goal), color="red", ls="--", lw=0.8, label=f"goal {100 * goal:g}%")
        ax.set_xlim(0.0, right * 1.03)
        ax.set_yscale("log")
        ax.invert_yaxis()  # better is up
        ticks = (50.0, 20.0, 10.0, 5.0, 2.0, 1.0, 0.5, 0.1, 0.01, 0.001)
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{100.0 - v:g}"))
        summ = w["workload"]
        hours = summ["duration_s"] / 3600
        span = f"{hours / 24:.3g} days" if hours >= 48 else f"{hours:.3g} h"
        ax.set_title(f"{short_label(spec)}\n{span}, {summ['requests']:,} requests", fontsize=9)
        ax.set_xlabel("GPU-hours")
        ax.set_ylabel(f"SLO attainment % ({report['slo_metric']} requests)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Cost vs SLO: hindsight-tuned HPA/KEDA/fixed fleets/floors and the aiops "
                 "policies", fontsize=11)
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def render(report: dict[str, Any], metric: str, goal: float) -> list[Any]:
    """Rich renderables: per workload, the runs, then the planners' savings and verdicts."""
    from rich.table import Table
    from rich.text import Text

    out: list[Any] = []
    goal_txt = f"{100 * goal:g}%"
    for spec, w in report["workloads"].items():
        summ = w["workload"]
        title = (f"{spec}\n{summ['requests']} requests over {summ['duration_s'] / 3600:.1f} h, "
                 f"{w['infeasible_requests']} infeasible; SLO metric: {metric}")
        t = Table(title=title, title_justify="left")
        t.add_column("policy", no_wrap=True)
        for col in ("GPU-h", "SLO %", "SLO feas. %", "max repl.", "ups"):
            t.add_column(col, justify="right")
        t.add_column("note")
        for name in REACTIVE:
            cheapest = w["cheapest"][name]
            default_spec = w["default"][name].get("spec")
            for p in w["sweep"][name]:
                notes = []
                if cheapest is not None and p["spec"] == cheapest["spec"]:
                    notes.append(f"cheapest >= {goal_txt}")
                if p["spec"] == default_spec:
                    notes.append("default")
                t.add_row(*_cells(p), ", ".join(notes))
            if all(p["spec"] != default_spec for p in w["sweep"][name]):
                t.add_row(*_cells(w["default"][name]), "default")
            if cheapest is None:
                t.add_row("", "", "", "", "", "", f"{name}: none reaches {goal_txt}",
                          style="italic")
            t.add_section()
        static = w.get("static")
        if static is not None:
            found_spec = static["spec"]
            for p in sorted(static["probes"], key=lambda r: r["replicas"]):
                note = f"static ≥{goal_txt} (hindsight)" if p["spec"] == found_spec else "probe"
                t.add_row(*_cells(p), note, style=None if p["spec"] == found_spec else "dim")
            if found_spec is None:
                t.add_row("", "", "", "", "", "", f"static: no fleet up to "
                          f"{static['max_replicas']} replicas reaches {goal_txt}",
                          style="italic")
            t.add_section()
        for policy, floor in w.get("floors", {}).items():
            found = floor["found"]
            if found is not None and not floor["probes"]:  # floor 1: the plain run
                t.add_row(*_cells(found), f"floor ≥{goal_txt} (hindsight): the plain run")
            for p in sorted(floor["probes"], key=lambda r: r["min_replicas"]):
                hit = found is not None and p["min_replicas"] == found["min_replicas"]
                t.add_row(*_cells(p), f"floor ≥{goal_txt} (hindsight)" if hit else "probe",
                          style=None if hit else "dim")
            if found is None:
                t.add_row("", "", "", "", "", "", f"{policy}: no floor up to "
                          f"{floor['max_floor']} reaches {goal_txt}", style="italic")
        if w.get("floors"):
            t.add_section()
        for name, row in w["results"].items():
            if not name.endswith(FLOOR):  # shown with its floor search above
                t.add_row(*_cells(row), "")
        out.append(t)
        best = w.get("best_reference")
        if best is not None:
            what = "none"
            if best["row"] is not None:
                what = (f"{row_label(best['row'])}, {best['row']['gpu_hours']:.2f} GPU-h, "
                        f"{_pct(best['row'][SLO_METRICS[metric]])}%, "
                        f"{vs_oracle(best['over_oracle_pct'])}; within the oracle margin: "
                        f"{_yes_no(best['oracle_gap_reachable'])}")
            kinds = ("HPA, KEDA" + (", static" if static is not None else "")
                     + (", floor-tuned HPA/KEDA" if any(
                         is_reactive(f) for f in w.get("floors", {})) else ""))
            out.append(Text(f"best no-foresight reference (cheapest hindsight-tuned {kinds} "
                            f"setting reaching {goal_txt}): {what}", style="bold"))
        s = Table(title=f"{short_label(spec)}: GPU-hours saved (%) / SLO difference (pts)",
                  title_justify="left")
        s.add_column("vs")
        names = list(w["versus"])
        for name in names:
            s.add_column(name, justify="right")
        refs = list(dict.fromkeys(k for n in names for k in w["versus"][n]))
        for ref in refs:
            cells = []
            for name in names:
                v = w["versus"][name].get(ref)
                cells.append("—" if v is None or v["gpu_hours_saved_pct"] is None else
                             f"{v['gpu_hours_saved_pct']:+.1f}% / {v['slo_diff_pts']:+.2f}")
            s.add_row(ref, *cells)
        out.append(s)
        for name, g in w["goal"].items():
            line = Text(f"{name}: goal {'HOLDS' if g['holds'] else 'does not hold'} — ",
                        style="bold green" if g["holds"] else "bold red")
            line.append("; ".join(
                f"{k} {'✓' if c['pass'] else ('?' if c['pass'] is None else '✗')} "
                f"({c['detail']})" for k, c in g["checks"].items()) or "did not run",
                style="default")
            if "oracle_gap_reachable" in g:
                line.append(f" | info: oracle_gap_reachable {_yes_no(g['oracle_gap_reachable'])}"
                            f" ({g['oracle_gap_detail']})", style="dim")
            out.append(line)
        out.append(Text(""))
    out.append(overview(report, goal))
    out.append(frontier_table(report))
    return out


def frontier_table(report: dict[str, Any]) -> Any:
    """Each aiops policy against the frontier of the hindsight-tuned reactive settings:
    ``beyond`` (no setting is as cheap and as good) with its GPU-hours over the cheapest
    setting reaching its attainment, or ``behind`` with the setting that beats it."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="Against the cost-vs-SLO frontier of the hindsight-tuned HPA/KEDA/fixed "
                    "fleets/floors (GPU-h vs the cheapest setting reaching the same SLO)",
              title_justify="left")
    t.add_column("", no_wrap=True)
    workloads = report["workloads"]
    for spec in workloads:
        t.add_column(short_label(spec), justify="right", overflow="fold")
    names = list(dict.fromkeys(n for w in workloads.values() for n in w["frontier"]["policies"]))

    def cell(pos: Mapping[str, Any] | None) -> str:
        if pos is None:
            return "—"
        if pos["reference"] is None:
            return f"{pos['position']}: no setting reaches its SLO"
        pct = pos.get("gpu_hours_vs_reference_pct")
        return escape(f"{pos['position']} {'' if pct is None else f'{pct:+.1f}%'} "
                      f"[{pos['reference']}]")

    for name in names:
        t.add_row(escape(name), *(cell(w["frontier"]["policies"].get(name))
                                  for w in workloads.values()))
    return t


def _yes_no(flag: bool | None) -> str:
    return "—" if flag is None else "yes" if flag else "no"


def short_label(spec: str) -> str:
    """``../x/nyc_taxi.csv,rate=0.002`` -> ``nyc_taxi,rate=0.002``."""
    head, sep, opts = spec.partition(",")
    return Path(head).stem + sep + opts


def overview(report: dict[str, Any], goal: float) -> Any:
    """Contenders by workload: GPU-hours and attainment of each, and the planners'
    verdicts; floor-tuned settings (``<policy> + floor [N]``) beside the plain ones."""
    from rich.markup import escape
    from rich.table import Table

    metric = SLO_METRICS[report["slo_metric"]]
    t = Table(title=f"Overview: GPU-h / SLO attainment % ({report['slo_metric']} requests); "
                    f"cheapest = cheapest setting reaching {100 * goal:g}%",
              title_justify="left")
    t.add_column("", no_wrap=True)
    workloads = report["workloads"]
    for spec in workloads:
        t.add_column(short_label(spec), justify="right", overflow="fold")

    def cell(row: Row | None, label: str = "") -> str:
        if row is None:
            return "none"
        if "gpu_hours" not in row:
            return "error"
        # Escaped: rich would take "[static 3]" for a style tag and drop it.
        return escape(f"{f'[{label}] ' if label else ''}"
                      f"{row['gpu_hours']:.2f} / {100 * row[metric]:.2f}")

    for name in REACTIVE:
        t.add_row(escape(f"{name} cheapest [value]"),
                  *(cell(w["cheapest"][name], _setting(w["cheapest"][name], False))
                    for w in workloads.values()))
    with_static = any(w.get("static") is not None for w in workloads.values())
    if with_static:
        t.add_row(escape(f"static ≥{100 * goal:g}% [N]"),
                  *("skipped" if w.get("static") is None else
                    cell(w["static"]["found"], _setting(w["static"]["found"], False))
                    for w in workloads.values()))
    floor_specs = report.get("floor_search", [])

    def floor_row(spec: str) -> None:
        cells = []
        for w in workloads.values():
            floor = w.get("floors", {}).get(spec)
            cells.append("—" if floor is None else
                         cell(floor["found"], _setting(floor["found"], False)))
        t.add_row(escape(f"{spec} + floor [N]"), *cells)

    for spec in floor_specs:
        if is_reactive(spec):
            floor_row(spec)
    t.add_row(escape("best no-foresight [which]"),
              *(cell(w["best_reference"]["row"], _setting(w["best_reference"]["row"], True))
                for w in workloads.values()))
    t.add_row("  its GPU-h over oracle",
              *("—" if w["best_reference"]["over_oracle_pct"] is None
                else f"{w['best_reference']['over_oracle_pct']:+.1f}%"
                for w in workloads.values()))
    t.add_row("  oracle gap reachable",
              *(_yes_no(w["best_reference"]["oracle_gap_reachable"])
                for w in workloads.values()))
    t.add_section()
    for name in REACTIVE:
        t.add_row(f"{name} default", *(cell(w["default"][name]) for w in workloads.values()))
    planners = report.get("planners", PLANNERS)
    for name in planners:
        t.add_row(escape(name), *(cell(w["results"].get(name)) for w in workloads.values()))
    planner_floors = [spec for spec in floor_specs if not is_reactive(spec)]
    for spec in planner_floors:
        floor_row(spec)
    t.add_row("oracle", *(cell(w["results"].get("oracle")) for w in workloads.values()))
    for name in (*planners, *(floor_name(spec) for spec in planner_floors)):
        verdicts = []
        for w in workloads.values():
            g = w["goal"].get(name)
            failed = [] if g is None else [k for k, c in g["checks"].items()
                                           if c["pass"] is not True]
            verdicts.append("—" if g is None else "holds" if g["holds"]
                            else "fails: " + (", ".join(failed) or "did not run"))
        t.add_row(escape(f"{name} goal"), *verdicts,
                  style="bold" if is_ppo(name.removesuffix(FLOOR)) else None)
    return t


def _setting(row: Row | None, with_kind: bool) -> str:
    """The setting a reference row stands for, short: ``0.3``, ``N=10``; ``hpa 0.3``,
    ``static 10`` with its kind."""
    if row is None:
        return ""
    if "replicas" in row and str(row.get("spec", "")).startswith("static:"):
        return f"static {row['replicas']}" if with_kind else str(row["replicas"])
    if "min_replicas" in row:
        kind = row.get("kind") or str(row.get("spec", ""))
        return f"{kind} {row['min_replicas']}" if with_kind else str(row["min_replicas"])
    if "value" in row:
        kind = row.get("kind") or str(row.get("spec", "")).split(":")[0]
        return f"{kind} {row['value']:g}" if with_kind else f"{row['value']:g}"
    return str(row.get("spec", ""))


def _cells(row: Row) -> list[str]:
    if "error" in row:
        return [row_label(row), "error", "", "", "", ""]
    return [row_label(row), f"{row['gpu_hours']:.2f}", _pct(row["slo_attainment"]),
            _pct(row["slo_attainment_feasible"]), str(row["max_replicas"]),
            str(row["scale_ups"])]


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: not a comma-separated list of numbers") from None
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive numbers")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", action="append",
                    help="SPEC[,rate=K][,time=T][,duration=S][,seed=N] (repeatable; "
                         "default: the Azure code trace, Azure x5, NYC taxi for a day, "
                         "diurnal-bursty). A synthetic workload is seeded by its position "
                         "in the list; seed=N takes the realisation of position N "
                         "(synthetic:diurnal-bursty,seed=3 is the default run's)")
    ap.add_argument("--hpa-targets", type=_floats, default=HPA_TARGETS,
                    help="HPA targets to sweep (default %(default)s)")
    ap.add_argument("--keda-thresholds", type=_floats, default=KEDA_THRESHOLDS,
                    help="KEDA thresholds to sweep (default %(default)s)")
    ap.add_argument("--hpa", default="hpa",
                    help="HPA spec the target is added to, e.g. hpa:metric=kv")
    ap.add_argument("--keda", default="keda", help="KEDA spec the threshold is added to")
    ap.add_argument("--slo-metric", choices=sorted(SLO_METRICS), default="feasible",
                    help="attainment over feasible requests (default) or all requests")
    ap.add_argument("--goal", type=float, default=0.99, help="SLO attainment goal")
    ap.add_argument("--oracle-margin", type=float, default=0.15,
                    help="ppo may use this much more GPU-hours than the oracle")
    ap.add_argument("--ppo-policy", type=Path, default=DEFAULT_POLICY_DIR)
    ap.add_argument("--ppo-variant", action="append", default=[], metavar="SPEC",
                    help="also run ppo with these parameters, judged like ppo (repeatable), "
                         "e.g. ppo:slo_miss_usd=0.05 for a price-conditioned policy")
    ap.add_argument("--profile", default="llama3-8b-a100")
    ap.add_argument("--max-replicas", type=int, default=64,
                    help="largest fleet any policy may run, and the ceiling of the "
                         "fixed-fleet and floor searches (default %(default)s)")
    ap.add_argument("--no-forecast", action="store_true")
    ap.add_argument("--no-static", action="store_true",
                    help="skip the search for the smallest fixed fleet reaching the goal")
    ap.add_argument("--floor-search", action="append", metavar="SPEC",
                    help="find the smallest floor (min_replicas) at which this policy "
                         "reaches the goal, between 1 (its plain run) and the smallest "
                         "fixed fleet reaching it (repeatable; default: "
                         f"{', '.join(FLOOR_SEARCH)}); an HPA/KEDA spec "
                         "(hpa:target=0.5) gives a reference, a predictive/ppo one a "
                         "planner judged like its plain run")
    ap.add_argument("--no-floor-search", action="store_true",
                    help="search no floors: compare every autoscaler above a floor of 1")
    ap.add_argument("--jobs", type=int, default=None,
                    help="local worker processes (default: one per CPU; 1 runs here)")
    ap.add_argument("--ray", metavar="ADDRESS",
                    help="run on a Ray cluster instead: auto (the one `ray start` made "
                         "here), HOST:PORT or ray://HOST:PORT; needs the ray extra, and "
                         "the workloads' files at the same paths on every node")
    ap.add_argument("--json", type=Path, dest="json_out", help="write the report here")
    args = ap.parse_args(argv)
    if not 0.0 < args.goal <= 1.0:
        ap.error("--goal must be in (0, 1]")
    if args.jobs is not None and args.jobs < 1:
        ap.error("--jobs must be >= 1")
    if args.jobs is not None and args.ray is not None:
        ap.error("--jobs sets local processes; with --ray the cluster's CPUs decide")
    if args.max_replicas < 1:
        ap.error("--max-replicas must be >= 1")

    from rich.console import Console

    t0 = time.perf_counter()
    metric = SLO_METRICS[args.slo_metric]
    texts = list(args.workload or DEFAULT_WORKLOADS)
    planners = list(dict.fromkeys([*PLANNERS, *args.ppo_variant]))
    if not all(is_ppo(v) for v in args.ppo_variant):
        ap.error("--ppo-variant takes ppo:KEY=VALUE,... specs")
    floor_specs = [] if args.no_floor_search else list(
        dict.fromkeys(s.strip() for s in (args.floor_search or FLOOR_SEARCH)))
    wrong = [f for f in floor_specs if not floor_searchable(f)]
    if wrong:
        ap.error(f"--floor-search takes hpa, keda, predictive or ppo specs, not {wrong}")
    not_run: dict[str, str] = {}
    try:
        profile = load_profile(args.profile)
        setup = EvalSetup(profile, max_replicas=args.max_replicas,
                          with_forecast=not args.no_forecast)
        bases = {"hpa": args.hpa, "keda": args.keda}
        built: dict[int, str] = {}
        for i, text in enumerate(texts):
            try:
                load_workload(text, i)
                built[i] = text
            except InputError as err:  # the others still run; this one is reported
                not_run[text] = str(err)
                print(f"not run: {text}: {err}", file=sys.stderr)
        if not built:
            raise InputError("no workload could be built")
        jobs, layout = plan_jobs(built, setup, bases=bases,
                                 grids={"hpa": args.hpa_targets, "keda": args.keda_thresholds},
                                 ppo_dir=str(args.ppo_policy), planners=planners,
                                 floor_specs=floor_specs)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    common = (setup, str(args.ppo_policy), args.max_replicas, metric, args.goal)
    searches = [] if args.no_static else [Search(lay["index"], lay["spec"], *common)
                                          for lay in layout]
    searches += [Search(lay["index"], lay["spec"], *common, policy=spec,
                        runs=lay["floors"][spec]) for lay in layout for spec in floor_specs]
    try:
        rows, searched = run_all(jobs, args.jobs, searches, ray=args.ray)
    except InputError as err:  # --ray: no Ray installed, no cluster there
        print(f"error: {err}", file=sys.stderr)
        return 2
    static = {i: r for (i, name), r in searched.items() if name == "static"}
    static_runs = sum(len(s["probes"]) for s in static.values())
    floor_runs = sum(len(r["probes"]) for (_, name), r in searched.items() if name != "static")

    workloads: dict[str, Any] = {}
    for lay in layout:
        i = lay["index"]
        ew = load_workload(lay["spec"], i)
        mine = {spec: row for (j, spec), row in rows.items() if j == i}
        w = summarise_workload(mine, sweeps=lay["sweeps"], defaults=lay["defaults"],
                               metric=metric, goal=args.goal, oracle_margin=args.oracle_margin,
                               static=static.get(i), planners=planners,
                               floors={spec: searched[(i, spec)] for spec in floor_specs})
        probes = [p for (j, _), r in searched.items() if j == i for p in r["probes"]]
        errors = {s: r["error"] for s, r in [*mine.items(), *((row_label(p), p) for p in probes)]
                  if "error" in r}
        infeasible = next((r["infeasible_requests"] for r in mine.values()
                           if "infeasible_requests" in r), None)
        w["frontier"] = frontier_summary(w, metric)
        workloads[lay["spec"]] = {"workload": ew.workload.summary(),
                                  "infeasible_requests": infeasible, **w,
                                  "default_values": lay["default_values"],
                                  **({"errors": errors} if errors else {})}
    try:
        sha = read_meta(args.ppo_policy).get("sha256")
    except InputError:
        sha = None
    report: dict[str, Any] = {
        "benchmark": "autoscale",
        "profile": profile.name,
        "slo": {"ttft_s": setup.slo.ttft_s, "tpot_s": setup.slo.tpot_s},
        "slo_metric": args.slo_metric,
        "goal": args.goal,
        "oracle_margin": args.oracle_margin,
        "forecast": None if args.no_forecast else "naive",
        "interval_s": setup.interval_s,
        "max_replicas": setup.max_replicas,
        "ppo_policy": str(args.ppo_policy),
        "planners": planners,
        "floor_search": floor_specs,
        "ppo_sha256": sha,
        "sweep": {"hpa": {"base": args.hpa, "param": "target", "grid": list(args.hpa_targets)},
                  "keda": {"base": args.keda, "param": "threshold",
                           "grid": list(args.keda_thresholds)}},
        "runs": len(jobs) + static_runs + floor_runs,
        "static_runs": static_runs,
        "floor_runs": floor_runs,
        "jobs": args.jobs,
        "ray": args.ray,
        "workloads": workloads,
        "not_run": not_run,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    console = Console(width=max(Console().width, 120))
    for item in render(report, args.slo_metric, args.goal):
        console.print(item)
    console.print(f"{report['runs']} runs ({static_runs} of them fixed-fleet probes, "
                  f"{floor_runs} floor probes) in "
                  f"{report['wall_s']:.0f} s "
                  + (f"on Ray ({args.ray})" if args.ray else
                     f"with {args.jobs or os.cpu_count()} process(es)"))
    for text, error in not_run.items():
        console.print(f"not run: {text}: {error}", style="bold red", markup=False,
                      highlight=False)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        png = args.json_out.with_suffix(".png")
        plot_frontier(report, png)
        console.print(f"wrote {args.json_out} and the cost-vs-SLO frontier {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
