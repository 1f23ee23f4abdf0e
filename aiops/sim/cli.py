"""``aiops simulate``: every policy on the same workload, side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from aiops.sim.profiles import Profile
    from aiops.sim.stream import RequestStream
    from aiops.sim.workloads import Workload

# Kept literal (not imported from aiops.sim.workloads) so `aiops --help` imports no numpy.
DEFAULT_WORKLOAD = "synthetic:diurnal-bursty"
BASELINES = ["predictive", "hpa", "keda", "static", "oracle"]


EXAMPLES = """Examples:

  aiops simulate --workload synthetic:flash-crowd --policy hpa --policy ppo

  aiops simulate --workload trace.csv --rate-scale 5 --duration 2h --json r.json

  aiops simulate --workload servegen:m-small:start=7d --rate-scale 0.1 --duration 7d
      --forecast-model naive

  aiops simulate --workload azure-code-30m.csv --routing least-waiting
      --policy static:replicas=2 --policy static:replicas=4
"""


def register(app: typer.Typer) -> None:
    app.command(name="simulate", epilog=EXAMPLES)(simulate)


def simulate(
    workload: Annotated[str, typer.Option(
        help="A request trace or rate-series CSV, synthetic:NAME, or servegen:DIR"
             "[:start=D][:end=D] (a ServeGen model folder).")] = DEFAULT_WORKLOAD,
    policy: Annotated[list[str] | None, typer.Option(
        help="NAME or NAME:key=value,... (repeatable). Default: predictive (the default "
             "policy) and every baseline.")] = None,
    profile: Annotated[str, typer.Option(help="Model/hardware profile name or YAML path.")]
    = "llama3-8b-a100",
    rate_scale: Annotated[float, typer.Option(
        help="Multiply the load by this factor (> 0).")] = 1.0,
    time_scale: Annotated[float, typer.Option(
        help="Stretch (>1) or compress (<1) time in the workload.")] = 1.0,
    duration: Annotated[str | None, typer.Option(
        help="Only the first part of the workload: seconds or 90s, 15m, 2h, 7d.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for workload generation.")] = 0,
    interval: Annotated[str, typer.Option(
        help="Time between decisions: seconds or 15s, 1m.")] = "15s",
    max_replicas: Annotated[int, typer.Option(help="Upper bound for every policy.")] = 64,
    forecast_model: Annotated[str, typer.Option(
        help="Forecaster for forecast-driven policies, refitted every 30 minutes on the "
             "run's own past (see 'aiops forecast models'). auto backtests its candidates at "
             "every refit: for replays of days, naive or seasonal_naive is minutes faster.")
    ] = "auto",
    routing: Annotated[str | None, typer.Option(
        help="How the gateway spreads requests over replicas: least-outstanding, "
             "least-waiting or round-robin.", show_default="the profile's")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")]
    = None,
) -> None:
    """Replay a workload through the simulated cluster under each policy and compare.

    Every policy is replayed bare (no guardrails), from the same starting fleet, with
    forecasts refitted online on the run's own past: a benchmark of policies. `aiops
    recommend` replays what the daemon would do instead, and says where the two differ.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from aiops.cli import check_output_file, duration_option, fail_input
    from aiops.errors import InputError
    from aiops.forecast.base import available_forecasters
    from aiops.sim.profiles import ROUTINGS, load_profile
    from aiops.sim.runner import compare_policies
    from aiops.sim.workloads import resolve_source

    specs = policy or list(BASELINES)
    console = Console(width=max(Console().width, 120))
    try:
        interval_s = duration_option(interval, "--interval")
        span = duration_option(duration, "--duration") if duration else None
        for name, value in (("--rate-scale", rate_scale), ("--time-scale", time_scale)):
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a number > 0, got {value:g}")
        if max_replicas < 1:
            raise InputError(f"--max-replicas must be >= 1, got {max_replicas}")
        if seed < 0:
            raise InputError(f"--seed must be >= 0, got {seed}")
        if json_out is not None:
            check_output_file(json_out, "--json")
        prof = load_profile(profile)
        if forecast_model not in available_forecasters():
            raise InputError(f"--forecast-model: unknown forecaster {forecast_model!r}; "
                             f"known: {', '.join(available_forecasters())}")
        if routing is not None:
            if routing not in ROUTINGS:
                raise InputError(f"--routing must be one of {', '.join(ROUTINGS)}, "
                                 f"got {routing!r}")
            prof = prof.with_changes(routing=routing)
        wl = resolve_source(workload, rate_scale=rate_scale, time_scale=time_scale,
                            seed=seed, duration=span)
        _check_policies(specs, wl, prof, interval_s, max_replicas)
        with Progress(TextColumn("{task.description:<24}"), BarColumn(),
                      TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            tasks = {s: progress.add_task(s, total=wl.duration) for s in specs}

            def on_step(name: str, t: float) -> None:
                if name in tasks:
                    progress.update(tasks[name], completed=min(t, wl.duration))

            comparison = compare_policies(wl, prof, specs, interval_s=interval_s,
                                          max_replicas=max_replicas, on_step=on_step,
                                          forecast_model=forecast_model)
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
                     "long to prefill within the TTFT objective) and miss on any fleet. "
                     "Bare policies, no guardrails: `aiops recommend` on the same input "
                     "replays what the daemon would do and explains the difference")
    console.print(table)
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(comparison.as_json(), indent=2) + "\n")
        except OSError as exc:
            fail_input(InputError(f"--json {json_out}: cannot write: {exc.strerror}"))
        console.print(f"wrote {json_out}")


def _check_policies(specs: list[str], wl: Workload | RequestStream, prof: Profile,
                    interval_s: float, max_replicas: int) -> None:
    """Build every policy once before the first replay, so a bad name or parameter in the
    last ``--policy`` fails now, not after the others have run."""
    from aiops.policy import make_policy
    from aiops.policy.base import PolicySpec
    from aiops.sim.runner import peak_replicas, planning_context

    ctx = planning_context(prof, wl, max_replicas=max_replicas, interval_s=interval_s)
    for text in specs:
        spec = PolicySpec.parse(text)
        if spec.name == "oracle":
            continue  # its plan is the costly part; compare_policies builds it once
        make_policy(spec, ctx, peak_replicas=peak_replicas(wl, ctx), profile=prof, slo=None)
