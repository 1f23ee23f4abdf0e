"""Labelled cluster faults: does the daemon tell a broken exporter from a real surge?

    nice .venv/bin/python bench/faults.py [--workload SPEC[@SCALE] ...] [--duration 4h]
        [--onsets 0.55,0.8] [--windows 3] [--policy predictive] [--events KIND,...]
        [--plots out/faults] [--json OUT]

For every workload and onset, each event of ``aiops.detect.scenarios.standard_events``
(nine kinds of telemetry fault, four kinds of real load change, some in two or three
variants) is injected into its own run of the daemon's tick on the simulated fleet
(controller, anomaly monitor, forecaster, policy, guardrails; enforce mode). Each run is
compared with a reference run of the same workload:

- a telemetry fault with the same run without the fault (what the fault cost, and which
  blind scale-downs it caused: those the run without it did not make at that tick), and
  with the same faulty run without anomaly detection (how many the detector prevented);
- a real load change with the same run without anomaly detection (what the detector's
  freezes cost; ideally nothing).

Printed: a table per event class (precision and recall of ``bad_telemetry`` per tick and
per event, median ticks to detect, blind scale-downs, freezes during real load changes,
GPU-hours and SLO against the reference) and the verdict on each goal. ``--plots`` writes
one PNG per event kind: the metric as served and as true, the detector's score, and the
replicas decided with and without the event. Workloads are ``synthetic:NAME``, a request
trace or rate series path (e.g. the Azure code trace), or any spec ``aiops simulate
--workload`` accepts, with ``@SCALE`` for a rate scale (``servegen:DIR:start=1d:end=8d@0.03``:
a ServeGen week at 3 % of its traffic).

A workload longer than ``--duration`` (a ServeGen week) is run in ``--windows`` windows of
that length rather than whole: one around each of its longest stretches without traffic
(its real service gaps, which must not look like an exporter failure, nor the traffic that
comes back like a counter reset; see :func:`window_starts`) and the rest spread evenly.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per run: the machine is shared

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
from collections import defaultdict  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from aiops.detect.faults import Fault, load_change_of  # noqa: E402
from aiops.detect.scenarios import (  # noqa: E402
    GRACE_S,
    Run,
    Scenario,
    false_alarms,
    run_scenario,
    scenarios_for,
    score_event,
    standard_events,
)
from aiops.errors import InputError  # noqa: E402
from aiops.sim.workloads import Workload, resolve_stream, resolve_workload  # noqa: E402
from aiops.train.evaluate import parse_eval_spec  # noqa: E402
from aiops.units import parse_duration  # noqa: E402

FROZEN_GOAL = 0.01  # at most 1% of real-load-change ticks frozen
TTD_GOAL = 2.0  # median ticks to detect a telemetry fault


@dataclass
class Row:
    """One event in one run, scored, with its references."""

    workload: str
    event: Fault
    run: Run
    reference: Run  # no fault, its load change kept (telemetry) / no detection (real change)
    blind_without: int | None = None  # scale-downs inside the fault without detection


GAP_BIN_S = 600.0
"""Bins in which a workload's stretches without traffic are looked for (ServeGen's windows)."""


def split_scale(spec: str) -> tuple[str, float]:
    """``SPEC@0.03`` -> (SPEC, 0.03); no ``@``: scale 1 (the evaluation harness's syntax)."""
    try:
        return parse_eval_spec(spec)
    except InputError as err:
        raise SystemExit(f"error: --workload: {err}") from None


def window_starts(rate: np.ndarray, bin_s: float, span: float, duration: float,
                  count: int) -> list[float]:
    """Starts of ``count`` windows of ``duration`` in a workload of ``span`` seconds whose
    rate per ``bin_s`` bin is ``rate``. Half of them (at least one) each hold a stretch
    without traffic from a quarter of the window on: the longest that ends within half the
    window first, so that the onsets see the gap and the traffic coming back. The rest
    are spread evenly, each kept only if it overlaps no window already chosen."""
    last = max(span - duration, 0.0)
    starts: list[float] = []
    zero = np.concatenate([[False], rate == 0, [False]])
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    gaps = sorted(zip(edges[::2], edges[1::2], strict=True),
                  key=lambda g: (bool((g[1] - g[0]) * bin_s > duration / 2), g[0] - g[1]))
    lead = duration / 4
    for a, _ in gaps:
        if len(starts) >= max(1, count // 2):
            break
        s = min(max(a * bin_s - lead, 0.0), last)
        if all(abs(s - o) >= duration for o in starts):
            starts.append(s)
    for k in range(count * 4):
        if len(starts) >= count:
            break
        s = min((k + 0.5) * span / (count * 4), last)
        if all(abs(s - o) >= duration for o in starts):
            starts.append(s)
    return sorted(starts)


def load_workloads(specs: list[str], duration: float, windows: int) -> list[Workload]:
    """Each spec as one workload, or as ``windows`` windows of ``duration`` when longer."""
    out = []
    for raw in specs:
        spec, scale = split_scale(raw)
        stream = resolve_stream(spec, rate_scale=scale, seed=0)
        if not spec.startswith("servegen:") or stream.duration <= duration * 1.5:
            out.append(resolve_workload(spec, duration=duration, rate_scale=scale, seed=0))
            continue
        rate = stream.rate(GAP_BIN_S)
        for start in window_starts(rate, GAP_BIN_S, stream.duration, duration, windows):
            w = stream.window(start, duration)
            out.append(Workload(f"{w.name}@{start / 86400:.2f}d", w.arrivals,
                                w.context_tokens, w.generated_tokens, w.duration, w.meta))
    return out


def selected(event: Fault, wanted: set[str] | None) -> bool:
    """Whether ``--events`` asks for ``event``: by label (``flatline:arrival_rate``), by
    kind (``flatline``), or ``telemetry`` / ``changes`` for a whole side of the table."""
    if wanted is None:
        return True
    side = "telemetry" if event.telemetry else "changes"
    return bool({event.label, event.kind, side} & wanted)


def run_all(workloads: list[Workload], onsets: list[float], policy: str,
            progress: Any, wanted: set[str] | None = None) -> list[Row]:
    rows: list[Row] = []
    jobs = []
    for w in workloads:
        starts = sorted({round(f * w.duration / 60) * 60 for f in onsets})
        for sc in scenarios_for(w, starts):
            if selected(sc.events[0], wanted):
                jobs.append((w, sc))
    references = sum(1 for _, sc in jobs
                     if sc.events[0].telemetry and load_change_of(sc.events[0]) is not None)
    task = progress.add_task("fault scenarios",
                             total=len(jobs) * 2 + len(workloads) + references)
    clean: dict[str, Run] = {}
    for w in workloads:
        progress.update(task, description=f"{w.name}: clean run")
        clean[w.name] = run_scenario(Scenario(f"{w.name}/clean", w), policy=policy)
        progress.advance(task)
    for w, sc in jobs:
        (event,) = sc.events
        progress.update(task, description=sc.name)
        run = run_scenario(sc, policy=policy)
        progress.advance(task)
        without = run_scenario(sc, policy=policy, detect=False)
        progress.advance(task)
        if event.telemetry:
            blind = score_event(without, event).scale_downs
            # A fault that comes with a load change (the stuck queue's surge) is judged
            # against the same change read truly: against the clean run, what the surge
            # itself does (and a planning capacity measured on a different mix) would count
            # as the fault's.
            change = load_change_of(event)
            reference = clean[w.name]
            if change is not None:
                reference = run_scenario(Scenario(f"{sc.name}/true", w, (change,)),
                                         policy=policy)
                progress.advance(task)
            rows.append(Row(w.name, event, run, reference, blind))
        else:
            rows.append(Row(w.name, event, run, without))
    return rows


def caused(r: Row) -> int:
    """Blind scale-downs the same run without the fault did not make at that tick: the
    ones the fault caused (the others were due anyway, on a quiet or idle service)."""
    t = np.asarray(r.run.times)
    a, b = r.event.start, r.event.end
    down = np.asarray(r.run.replicas) < np.asarray(r.run.previous)
    ref = np.asarray(r.reference.replicas) < np.asarray(r.reference.previous)
    n = min(len(down), len(ref))
    seen = np.flatnonzero(np.asarray(r.run.altered) & (t >= a) & (t < b))
    if not len(seen):
        return 0
    inside = np.zeros(n, dtype=bool)
    inside[seen[0]:] = True
    inside &= (t[:n] < b)
    return int((down[:n] & inside & ~ref[:n]).sum())


def median_ttd(values: list[float]) -> float:
    return statistics.median(values) if values else math.inf


def summarise(rows: list[Row]) -> dict[str, Any]:
    by_class: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_class[r.event.label].append(r)
    table = []
    for label, group in by_class.items():
        scores = [score_event(r.run, r.event) for r in group]
        telemetry = group[0].event.telemetry
        ticks = sum(s.ticks for s in scores)
        flagged = sum(s.flagged for s in scores)
        false_ticks = 0
        for r in group:
            fa, _ = false_alarms(r.run)
            false_ticks += fa
        gpu = [r.run.result["gpu_hours"] - r.reference.result["gpu_hours"] for r in group]
        slo = [r.run.result["slo_attainment"] - r.reference.result["slo_attainment"]
               for r in group]
        row: dict[str, Any] = {
            "class": label, "telemetry": telemetry, "events": len(group),
            "detected": sum(math.isfinite(s.ticks_to_detect) for s in scores)
            if telemetry else None,
            "tick_recall": round(flagged / ticks, 3) if telemetry and ticks else None,
            "precision": round(flagged / (flagged + false_ticks), 3)
            if telemetry and flagged + false_ticks else None,
            "median_ticks_to_detect": median_ttd([s.ticks_to_detect for s in scores])
            if telemetry else None,
            "blind_scale_downs": sum(s.scale_downs for s in scores) if telemetry else None,
            "blind_caused_by_fault": sum(caused(r) for r in group) if telemetry else None,
            "blind_scale_downs_without_detection": sum(r.blind_without or 0 for r in group)
            if telemetry else None,
            "false_bad_telemetry_ticks": false_ticks if not telemetry else None,
            "ticks": ticks,
            "frozen_ticks": sum(s.frozen for s in scores),
            "doubted_ticks": sum(s.doubted for s in scores),
            "armed_ticks": sum(s.armed for s in scores),
            "load_change_reported": sum(s.load_seen for s in scores) if not telemetry else None,
            "delta_gpu_hours": round(float(np.mean(gpu)), 3),
            "delta_slo_pct": round(100 * float(np.mean(slo)), 2),
        }
        table.append(row)
    tele = [r for r in table if r["telemetry"]]
    real = [r for r in table if not r["telemetry"]]
    all_ttd = [score_event(r.run, r.event).ticks_to_detect for r in rows if r.event.telemetry]
    blind = sum(r["blind_scale_downs"] for r in tele)
    real_ticks = sum(r["ticks"] for r in real)
    frozen = sum(r["frozen_ticks"] for r in real)
    armed = sum(r["armed_ticks"] for r in real)
    med = median_ttd(all_ttd)
    goals = {
        "blind_scale_downs": {"value": blind, "goal": 0, "met": blind == 0,
                              "caused_by_fault": sum(r["blind_caused_by_fault"] for r in tele),
                              "without_detection": sum(
                                  r["blind_scale_downs_without_detection"] for r in tele)},
        "real_change_ticks_frozen": {
            "value": round(frozen / real_ticks, 4) if real_ticks else 0.0, "goal": FROZEN_GOAL,
            "met": real_ticks == 0 or frozen / real_ticks <= FROZEN_GOAL,
            "armed_share": round(armed / real_ticks, 4) if real_ticks else 0.0},
        "median_ticks_to_detect": {"value": med, "goal": TTD_GOAL, "met": med <= TTD_GOAL},
    }
    events = []
    for r in rows:
        sc = score_event(r.run, r.event)
        events.append({"workload": r.workload, "event": r.event.label,
                       "start_s": r.event.start, "ticks": sc.ticks, "flagged": sc.flagged,
                       "ticks_to_detect": sc.ticks_to_detect, "scale_downs": sc.scale_downs,
                       "caused": caused(r) if r.event.telemetry else None,
                       "frozen": sc.frozen, "armed": sc.armed,
                       "false_bad_telemetry": false_alarms(r.run)[0]})
    return {"classes": table, "goals": goals, "events": events}


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="telemetry faults (bad_telemetry should be reported, scale-down frozen)")
    for col in ("class", "events", "detected", "tick recall", "precision", "median TTD",
                "blind ↓", "caused", "blind ↓ w/o det.", "ΔGPU-h", "ΔSLO %"):
        t.add_column(col, justify="right" if col != "class" else "left")
    for r in summary["classes"]:
        if r["telemetry"]:
            t.add_row(r["class"], str(r["events"]), str(r["detected"]), str(r["tick_recall"]),
                      str(r["precision"]), f"{r['median_ticks_to_detect']:g}",
                      str(r["blind_scale_downs"]), str(r["blind_caused_by_fault"]),
                      str(r["blind_scale_downs_without_detection"]),
                      f"{r['delta_gpu_hours']:+.2f}", f"{r['delta_slo_pct']:+.2f}")
    u = Table(title="real load changes (no freeze, no bad_telemetry)")
    for col in ("class", "events", "ticks", "frozen", "of which doubt", "armed",
                "false bad_telemetry",
                "load change reported", "ΔGPU-h", "ΔSLO %"):
        u.add_column(col, justify="right" if col != "class" else "left")
    for r in summary["classes"]:
        if not r["telemetry"]:
            u.add_row(r["class"], str(r["events"]), str(r["ticks"]), str(r["frozen_ticks"]),
                      str(r["doubted_ticks"]),
                      str(r["armed_ticks"]), str(r["false_bad_telemetry_ticks"]),
                      f"{r['load_change_reported']}/{r['events']}",
                      f"{r['delta_gpu_hours']:+.2f}", f"{r['delta_slo_pct']:+.2f}")
    console = Console(width=160)
    console.print(t)
    console.print(u)
    g = summary["goals"]
    b, f, m = g["blind_scale_downs"], g["real_change_ticks_frozen"], g["median_ticks_to_detect"]
    console.print(f"goal 0 blind scale-downs in telemetry faults: {b['value']} "
                  f"({b['caused_by_fault']} not made by the run without the fault; "
                  f"{b['without_detection']} without detection) -> "
                  f"{'met' if b['met'] else 'NOT met'}")
    console.print(f"goal <= {100 * FROZEN_GOAL:g}% of real-load-change ticks frozen: "
                  f"{100 * f['value']:.2f}% (a freeze was due on {100 * f['armed_share']:.2f}%)"
                  f" -> {'met' if f['met'] else 'NOT met'}")
    console.print(f"goal median ticks to detect a telemetry fault <= {TTD_GOAL:g}: "
                  f"{m['value']:g} -> {'met' if m['met'] else 'NOT met'}")


def plot_kinds(rows: list[Row], out: Path) -> list[Path]:
    """One PNG per event kind: first workload and onset where it occurs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    for r in rows:
        kind = r.event.kind
        if kind in done:
            continue
        metric = r.event.metric or ("arrival_rate" if not r.event.telemetry
                                    or kind in ("counter_reset", "double_scrape")
                                    else "requests_running")
        t = (np.asarray(r.run.times) - r.event.start) / 60
        served = [float(getattr(s, metric)) for s in r.run.served]
        true = [float(getattr(s, metric)) for s in r.run.true]
        fig, axes = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True)
        a0, a1, a2 = axes
        a0.plot(t, true, color="#7f7f7f", lw=1.0, label=f"{metric} (true)")
        a0.plot(t, served, color="#1f77b4", lw=1.0, label=f"{metric} (read by the daemon)")
        a0.set_yscale("symlog", linthresh=1e-2)
        a0.legend(loc="upper left", fontsize=8)
        a0.set_title(f"{r.event.label} on {r.workload}", fontsize=10)
        a1.plot(t, r.run.score, color="#9467bd", lw=1.0, label="highest anomaly score")
        bad = np.asarray(r.run.bad)
        a1.scatter(t[bad], np.ones(bad.sum()) * 1.05, s=6, color="#d62728",
                   label="bad_telemetry")
        a1.axhline(0.9, color="#d62728", lw=0.8, ls=":")
        a1.set_ylim(-0.05, 1.15)
        a1.legend(loc="upper left", fontsize=8)
        ref_t = (np.asarray(r.reference.times) - r.event.start) / 60
        label_ref = "no fault" if r.event.telemetry else "no anomaly detection"
        a2.step(ref_t, r.reference.replicas, where="post", color="#7f7f7f", lw=1.0,
                label=f"replicas, {label_ref}")
        a2.step(t, r.run.replicas, where="post", color="#2ca02c", lw=1.2,
                label="replicas decided")
        frozen = np.asarray(r.run.frozen)
        a2.scatter(t[frozen], np.asarray(r.run.replicas)[frozen], s=8, color="#d62728",
                   label="anomaly_freeze fired", zorder=3)
        a2.legend(loc="upper left", fontsize=8)
        a2.set_xlabel("minutes from the event's start")
        end = min(r.event.duration, r.run.times[-1] - r.event.start) / 60
        for ax in axes:
            ax.axvspan(0, end, color="#ff7f0e", alpha=0.12, lw=0)
            ax.axvspan(end, end + GRACE_S / 60, color="#ff7f0e", alpha=0.05, lw=0)
        fig.tight_layout()
        path = out / f"{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        done[kind] = path
    return list(done.values())


def main() -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", action="append",
                    help="workload spec (repeatable; default: synthetic:diurnal-bursty)")
    ap.add_argument("--duration", default="4h", help="length of each run (a trace may be "
                    "shorter: it then runs its own length)")
    ap.add_argument("--onsets", default="0.55,0.8",
                    help="event starts as fractions of each run's length")
    ap.add_argument("--windows", type=int, default=3,
                    help="windows of --duration run from a longer workload (a ServeGen week)")
    ap.add_argument("--policy", default="predictive")
    ap.add_argument("--events", help="run only these events: labels (flatline:arrival_rate), "
                    "kinds (double_scrape), 'telemetry' or 'changes', comma-separated "
                    "(default: all; a goal with no event behind it is judged on nothing)")
    ap.add_argument("--plots", type=Path, help="write one PNG per event kind here")
    ap.add_argument("--json", type=Path, help="write the summary as JSON here")
    a = ap.parse_args()
    duration = parse_duration(a.duration)
    onsets = [float(x) for x in a.onsets.split(",")]
    if a.windows < 1:
        ap.error("--windows must be at least 1")
    wanted = None
    if a.events is not None:
        wanted = {x.strip() for x in a.events.split(",") if x.strip()}
        every = standard_events(duration, 0.0)
        known = {e.label for e in every} | {e.kind for e in every} | {"telemetry", "changes"}
        if not wanted or wanted - known:
            ap.error(f"--events: unknown {', '.join(sorted(wanted - known)) or '(empty)'}; "
                     f"known: {', '.join(sorted(known))}")
    workloads = load_workloads(a.workload or ["synthetic:diurnal-bursty"], duration,
                               a.windows)
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:
        rows = run_all(workloads, onsets, a.policy, progress, wanted)
    summary = summarise(rows)
    summary["workloads"] = [w.name for w in workloads]
    summary["policy"] = a.policy
    print_table(summary)
    if a.plots:
        for p in plot_kinds(rows, a.plots):
            console.print(f"wrote {p}")
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
