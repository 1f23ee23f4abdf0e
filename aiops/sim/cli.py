"""``aiops simulate``: every policy on the same workload, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

# Kept literal (not imported from aiops.sim.workloads) so `aiops --help` imports no numpy.
DEFAULT_WORKLOAD = "synthetic:diurnal-bursty"
BASELINES = ["hpa", "keda", "static", "oracle"]


def register(app: typer.Typer) -> None:
    app.command(name="simulate")(simulate)


def simulate(
    workload: Annotated[str, typer.Option(
        help="A request trace or rate-series CSV, synthetic:NAME, or servegen:DIR"
             "[:start=D][:end=D] (a ServeGen model folder).")] = DEFAULT_WORKLOAD,
    policy: Annotated[list[str] | None, typer.Option(
        help="NAME or NAME:key=value,... (repeatable). Default: every baseline.")] = None,
    profile: Annotated[str, typer.Option(help="Model/hardware profile name or YAML path.")]
    = "llama3-8b-a100",
    rate_scale: Annotated[float, typer.Option(help="Multiply the load by this factor.")] = 1.0,
    time_scale: Annotated[float, typer.Option(
        help="Stretch (>1) or compress (<1) time in the workload.")] = 1.0,
    duration: Annotated[str | None, typer.Option(
        help="Only the first part of the workload: seconds or 90s, 15m, 2h, 7d.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for workload generation.")] = 0,
    interval: Annotated[float, typer.Option(help="Seconds between decisions.")] = 15.0,
    max_replicas: Annotated[int, typer.Option(help="Upper bound for every policy.")] = 64,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")]
    = None,
) -> None:
    """Replay a workload through the simulated cluster under each policy and compare."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from aiops.cli import fail_input
    from aiops.errors import InputError
    from aiops.sim.profiles import load_profile
    from aiops.sim.runner import compare_policies
    from aiops.sim.workloads import resolve_source
    from aiops.units import parse_duration

    specs = policy or list(BASELINES)
    console = Console(width=max(Console().width, 120))
    try:
        prof = load_profile(profile)
        wl = resolve_source(workload, rate_scale=rate_scale, time_scale=time_scale,
                              seed=seed,
                              duration=parse_duration(duration) if duration else None)
        with Progress(TextColumn("{task.description:<24}"), BarColumn(),
                      TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            tasks = {s: progress.add_task(s, total=wl.duration) for s in specs}

            def on_step(name: str, t: float) -> None:
                if name in tasks:
                    progress.update(tasks[name], completed=min(t, wl.duration))

            comparison = compare_policies(wl, prof, specs, interval_s=interval,
                                          max_replicas=max_replicas, on_step=on_step)
    except InputError as err:
        fail_input(err)
        return
    summary = comparison.workload
    table = Table(title=f"{summary.get('name')} on {prof.name}: "
                        f"{summary.get('requests')} requests over "
                        f"{float(str(summary.get('duration_s', 0))) / 3600:.2f} h")
    # The policy column never shrinks: a truncated spec would not say which run a row is.
    table.add_column("policy", no_wrap=True,
                     min_width=max((len(k) for k in comparison.outputs), default=6))
    for col in ("GPU-hours", "cost $", "SLO %", "SLO feas. %", "TTFT p50 s", "TTFT p99 s",
                "TPOT p99 s", "ups", "downs", "max repl."):
        table.add_column(col, justify="right")
    infeasible = 0
    for name, out in comparison.outputs.items():
        r = out.result
        infeasible = r.infeasible_requests
        table.add_row(name, f"{r.gpu_hours:.2f}", f"{r.cost_usd:.2f}",
                      f"{100 * r.slo_attainment:.2f}",
                      f"{100 * r.slo_attainment_feasible:.2f}", f"{r.ttft_p50_s:.3f}",
                      f"{r.ttft_p99_s:.3f}", f"{r.tpot_p99_s:.4f}", str(r.scale_ups),
                      str(r.scale_downs), str(r.max_replicas))
    # Every policy replays the same workload, so the count is the same in every row.
    table.caption = ("SLO feas. %: over the requests an idle replica could serve within the "
                     f"SLO; {infeasible} of {summary.get('requests')} could not (prompt too "
                     "long to prefill within the TTFT objective) and miss on any fleet")
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(comparison.as_json(), indent=2) + "\n")
        console.print(f"wrote {json_out}")
