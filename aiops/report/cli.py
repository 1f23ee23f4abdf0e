"""``aiops recommend``: write the dry-run recommendation report (HTML, optionally JSON).

Imports nothing heavy at module level (``aiops --help`` imports this module to list the
command): numpy, matplotlib, the simulator and the Prometheus client are imported inside
the command.

Every input is checked before the replay starts (the replay of a week takes minutes): the
options, the output paths, the config as ``aiops run`` checks it, the policy and forecaster
overrides. A report that evaluated no target is still written (it says why), but the
command then exits with code 1, never 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from aiops.config import Config
    from aiops.report.build import Overrides, ProgressFn
    from aiops.report.model import Report

DEFAULT_PROFILE = "llama3-8b-a100"  # literal, not imported: keeps `aiops --help` light
DEFAULT_POLICY = "predictive"
DEFAULT_SINCE = "7d"
EXIT_NOTHING_EVALUATED = 1

EXAMPLES = """Examples:

  aiops recommend --config my-config.yaml --since 7d --output report.html

  aiops recommend --workload trace.csv --rate-scale 5 --output report.html
"""


def register(app: typer.Typer) -> None:
    """Add ``recommend`` to the ``aiops`` command line."""
    app.command(name="recommend", epilog=EXAMPLES)(recommend)


def recommend(
    output: Annotated[Path, typer.Option(help="Where to write the HTML report.")],
    config: Annotated[Path | None, typer.Option(
        help="The daemon's YAML config: each target's history from its Prometheus, or with "
             "backend: sim the simulated cluster's workload.")] = None,
    workload: Annotated[str | None, typer.Option(
        help="A request trace or rate-series CSV (or synthetic:NAME, servegen:DIR) instead of "
             "a config.")]
    = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Also write the figures as JSON here.")] = None,
    since: Annotated[str | None, typer.Option(
        help="With --config: how much history to replay (backend sim: how much of the "
             "simulated workload), e.g. 7d, 24h.", show_default=DEFAULT_SINCE)] = None,
    rate_scale: Annotated[float, typer.Option(
        help="Multiply the load by this factor before the replay (what-if growth).")] = 1.0,
    profile: Annotated[str | None, typer.Option(
        help="With --workload: model/hardware profile name or YAML path. With --config each "
             "target names its own.", show_default=DEFAULT_PROFILE)] = None,
    policy: Annotated[str | None, typer.Option(
        help="The aiops policy to replay, NAME or NAME:key=value,...",
        show_default=f"the target's policy; {DEFAULT_POLICY} for --workload")] = None,
    forecast_model: Annotated[str | None, typer.Option(
        help="Forecaster for forecast-driven policies (see 'aiops forecast models').",
        show_default="the config's forecast.model; auto for --workload")] = None,
    interval: Annotated[str | None, typer.Option(
        help="Time between decisions: seconds or 15s, 1m.",
        show_default="the config's daemon.interval_s; 15s for --workload")] = None,
    max_replicas: Annotated[int | None, typer.Option(
        help="With --workload: upper bound for every policy. With --config each target "
             "has its own.", show_default="64")] = None,
    max_refits: Annotated[int, typer.Option(
        help="Refits of the forecaster over the whole replay, at most (fits are slow; "
             "the model follows the data between them).")] = 6,
    seed: Annotated[int | None, typer.Option(
        help="Seed for rebuilt arrivals and rate scaling.",
        show_default="0; the config's sim.seed with backend sim")] = None,
    jobs: Annotated[int | None, typer.Option(
        help="Processes to work on: the targets of a --config with several (each then "
             "forecasts in its own process), or one replay's forecasts.",
        show_default="the CPUs available, as many as the free memory holds")] = None,
    ray: Annotated[str | None, typer.Option(
        help="With --config: replay the targets on a Ray cluster instead (auto, HOST:PORT or "
             "ray://HOST:PORT; pip install 'aiops-autoscaler[ray]').")] = None,
    slo_miss_usd: Annotated[float, typer.Option(
        help="Price of one request that misses its SLO, as in train: what the advice "
             "weighs misses against GPU cost with.")] = 0.005,
) -> None:
    """Replay recent traffic under aiops, the HPA, KEDA and a fixed fleet; say what to run.

    The report's first sentence is the recommendation: which policy and settings to run,
    what it saves against what ran, the HPA, KEDA and the best fixed fleet, or that a fixed
    fleet is the better choice — weighing each request that misses its SLO at
    --slo-miss-usd. It explains how its figures differ from `aiops simulate` on the same
    input.
    """
    import time

    from rich.console import Console

    from aiops.cli import fail_input
    from aiops.errors import InputError

    console = Console(stderr=True)
    started = time.monotonic()
    try:
        report = _build(console, config=config, workload=workload, since=since,
                        rate_scale=rate_scale, profile=profile, policy=policy,
                        forecast_model=forecast_model, interval=interval,
                        max_replicas=max_replicas, max_refits=max_refits, seed=seed,
                        jobs=jobs, ray=ray, slo_miss_usd=slo_miss_usd, output=output,
                        json_out=json_out)
        sizes = write(report, output, json_out)
    except InputError as err:
        fail_input(err)
    for t in report.targets:
        if not t.ok:
            console.print(f"[yellow]warning:[/] target {t.name}: {t.status}: {t.message}",
                          markup=True, highlight=False, soft_wrap=True)
    typer.echo(report.summary_text())
    for path, size in sizes:
        typer.echo(f"wrote {path} ({size / 1024:,.0f} KiB)")
    typer.echo(f"took {time.monotonic() - started:.1f} s", err=True)
    if report.evaluated == 0:
        typer.echo(f"error: no target could be evaluated; {output} says why", err=True)
        raise typer.Exit(code=EXIT_NOTHING_EVALUATED)


def _build(console: Console, *, config: Path | None, workload: str | None, since: str | None,
           rate_scale: float, profile: str | None, policy: str | None,
           forecast_model: str | None, interval: str | None, max_replicas: int | None,
           max_refits: int, seed: int | None, jobs: int | None, ray: str | None,
           slo_miss_usd: float, output: Path, json_out: Path | None) -> Report:
    import math

    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from aiops.cli import check_output_file, duration_option
    from aiops.errors import InputError
    from aiops.report.build import Overrides
    from aiops.report.forecasts import default_jobs

    if (config is None) == (workload is None):
        raise InputError("give exactly one of --config FILE (the daemon's targets) or "
                         "--workload TRACE")
    given = {"--profile": profile, "--max-replicas": max_replicas}
    for option, value in given.items():
        if config is not None and value is not None:
            raise InputError(f"{option} is for --workload; with --config every target names "
                             "its own (targets[].profile, targets[].max_replicas)")
    if workload is not None and ray is not None:
        raise InputError("--ray spreads the targets of a --config; a --workload is one replay")
    if workload is not None and since is not None:
        raise InputError("--since is for --config; with --workload the whole file is "
                         "replayed")
    interval_s = duration_option(interval, "--interval") if interval else None
    if max_refits < 1:
        raise InputError(f"--max-refits must be >= 1, got {max_refits}")
    if not (math.isfinite(rate_scale) and rate_scale > 0):
        raise InputError(f"--rate-scale must be a number > 0, got {rate_scale:g}")
    if max_replicas is not None and max_replicas < 1:
        raise InputError(f"--max-replicas must be >= 1, got {max_replicas}")
    if seed is not None and seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    if jobs is not None and jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {jobs}")
    if not (math.isfinite(slo_miss_usd) and slo_miss_usd >= 0):
        raise InputError(f"--slo-miss-usd must be a number >= 0, got {slo_miss_usd:g}")
    check_output_file(output, "--output")
    if json_out is not None:
        check_output_file(json_out, "--json")
        if json_out.resolve() == output.resolve():
            raise InputError("--json and --output name the same file; give two paths")
    over = Overrides(policy=policy, forecast_model=forecast_model, interval_s=interval_s,
                     rate_scale=rate_scale, seed=seed, max_refits=max_refits,
                     jobs=jobs or default_jobs(), slo_miss_usd=slo_miss_usd)
    cfg = None if config is None else _checked_config(config, over)
    with Progress(TextColumn("{task.description:<36}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        tasks: dict[tuple[str, str], TaskID] = {}

        def on_progress(target: str, row: str, done: float, total: float) -> None:
            key = (target, row)
            if key not in tasks:
                tasks[key] = progress.add_task(f"{target}: {row}"[:36], total=max(total, 1e-9))
            progress.update(tasks[key], completed=done)

        if workload is not None:
            return _from_trace(workload, over, profile=profile, max_replicas=max_replicas,
                               progress=on_progress)
        assert cfg is not None
        since_s = duration_option(since or DEFAULT_SINCE, "--since")
        return _from_config(cfg, over, since_s=since_s, progress=on_progress,
                            progress_bar=progress, processes=jobs, ray=ray)


def _checked_config(path: Path, over: Overrides) -> Config:
    """The config, checked as ``aiops run`` checks it (with the command line's policy and
    forecaster overrides in place), minus what only the daemon's machine has: the report
    needs neither the Kubernetes API nor the Lease."""
    from aiops.config import load_config
    from aiops.errors import InputError
    from aiops.wiring import check_config

    cfg = load_config(path)
    checked = cfg
    if over.policy is not None:
        checked = checked.model_copy(update={"targets": tuple(
            t.model_copy(update={"policy": over.policy}) for t in cfg.targets)})
    if over.forecast_model is not None:
        checked = checked.model_copy(update={"forecast": cfg.forecast.model_copy(
            update={"model": over.forecast_model})})
    problems = [p for p in check_config(checked, path) if not p.local]
    if problems:
        texts = [p.text for p in problems]
        if over.policy is not None:
            texts = [t.replace(".policy", ".policy (from --policy)", 1) for t in texts]
        raise InputError("; ".join(texts), path=str(path))
    return cfg


def _from_trace(workload: str, over: Overrides, *, profile: str | None,
                max_replicas: int | None, progress: ProgressFn) -> Report:
    from aiops.report.build import report_from_trace

    return report_from_trace(workload, rate_scale=over.rate_scale,
                             profile=profile or DEFAULT_PROFILE,
                             policy=over.policy or DEFAULT_POLICY,
                             forecast_model=over.forecast_model or "auto",
                             interval_s=over.interval_s or 15.0,
                             max_replicas=max_replicas or 64, seed=over.seed or 0,
                             max_refits=over.max_refits, jobs=over.jobs,
                             slo_miss_usd=over.slo_miss_usd, progress=progress)


def _from_config(cfg: Config, over: Overrides, *, since_s: float, progress: ProgressFn,
                 progress_bar: Progress, processes: int | None = None,
                 ray: str | None = None) -> Report:
    import logging

    from aiops.report.build import report_from_prometheus, report_from_sim

    overall = progress_bar.add_task("targets", total=len(cfg.targets))

    def done(_: object) -> None:
        progress_bar.advance(overall)

    if cfg.backend == "sim":
        return report_from_sim(cfg, since_s=since_s, over=over, progress=progress,
                               on_target=done)
    from aiops.clock import WallClock
    from aiops.ingest.prometheus import PrometheusSource

    if len(cfg.targets) > 1 or ray is not None:
        # One job per target on a process pool or Ray (each forecasts in its own process:
        # pools do not nest).
        from dataclasses import replace

        from aiops.sweep import recommend_targets

        return recommend_targets(cfg, since_s=since_s, now=WallClock().now(),
                                 processes=processes, ray=ray, progress=progress_bar,
                                 over=replace(over, jobs=1))
    # Each failed query is retried and logged by the source, which suits the daemon's log;
    # here the report and one warning per target say it once.
    quiet = logging.getLogger("aiops.ingest")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    clock = WallClock()
    source = PrometheusSource(cfg.prometheus, clock, rate_window_s=cfg.prometheus.rate_window_s)
    try:
        return report_from_prometheus(cfg, source, since_s=since_s, now=clock.now(), over=over,
                                      progress=progress, on_target=done)
    finally:
        source.close()
        quiet.setLevel(level)


def write(report: Report, output: Path, json_out: Path | None) -> list[tuple[Path, int]]:
    """Render and write the HTML (and JSON); InputError for a path that cannot be written."""
    import json

    from aiops.errors import InputError
    from aiops.report.html import render

    out: list[tuple[Path, int]] = []
    items = [(output, render(report))]
    if json_out is not None:
        items.append((json_out, json.dumps(report.as_json(), indent=2, allow_nan=False) + "\n"))
    for path, text in items:
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write the report: {exc.strerror}", path=str(path)) from None
        out.append((path, path.stat().st_size))
    return out
