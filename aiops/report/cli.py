"""``aiops recommend``: write the dry-run recommendation report (HTML, optionally JSON).

Imports nothing heavy at module level (``aiops --help`` imports this module to list the
command): numpy, matplotlib, the simulator and the Prometheus client are imported inside
the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from aiops.report.build import ProgressFn
    from aiops.report.model import Report

DEFAULT_PROFILE = "llama3-8b-a100"  # literal, not imported: keeps `aiops --help` light
DEFAULT_POLICY = "predictive"


def register(app: typer.Typer) -> None:
    """Add ``recommend`` to the ``aiops`` command line."""
    app.command(name="recommend")(recommend)


def recommend(
    output: Annotated[Path, typer.Option(help="Where to write the HTML report.")],
    config: Annotated[Path | None, typer.Option(
        help="The daemon's YAML config: read each target's history from its Prometheus.")]
    = None,
    workload: Annotated[str | None, typer.Option(
        help="A request trace or rate-series CSV (or synthetic:NAME, servegen:DIR) instead "
             "of Prometheus.")]
    = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Also write the figures as JSON here.")] = None,
    since: Annotated[str, typer.Option(
        help="With --config: how much history to replay, e.g. 7d, 24h.")] = "7d",
    rate_scale: Annotated[float, typer.Option(
        help="Multiply the load by this factor before the replay (what-if growth).")] = 1.0,
    profile: Annotated[str | None, typer.Option(
        help="With --workload: model/hardware profile name or YAML path. With --config each "
             "target names its own.", show_default=DEFAULT_PROFILE)] = None,
    policy: Annotated[str | None, typer.Option(
        help="The aiops policy to replay, NAME or NAME:key=value,...",
        show_default=f"the target's policy; {DEFAULT_POLICY} for --workload")] = None,
    forecast_model: Annotated[str | None, typer.Option(
        help="Forecaster for forecast-driven policies.",
        show_default="the config's forecast.model; auto for --workload")] = None,
    interval: Annotated[float | None, typer.Option(
        help="Seconds between decisions.",
        show_default="the config's daemon.interval_s; 15 for --workload")] = None,
    max_replicas: Annotated[int, typer.Option(
        help="With --workload: upper bound for every policy.")] = 64,
    max_refits: Annotated[int, typer.Option(
        help="Refits of the forecaster over the whole replay, at most (fits are slow).")] = 6,
    seed: Annotated[int, typer.Option(help="Seed for rebuilt arrivals and rate scaling.")]
    = 0,
    jobs: Annotated[int | None, typer.Option(
        help="With --config: targets replayed at once in local processes.",
        show_default="one per CPU")] = None,
    ray: Annotated[str | None, typer.Option(
        help="With --config: replay the targets on a Ray cluster instead (auto, HOST:PORT "
             "or ray://HOST:PORT; pip install 'aiops-autoscaler[ray]').")] = None,
) -> None:
    """Replay recent traffic under aiops, the HPA and KEDA; write what aiops would have done."""
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
                        jobs=jobs, ray=ray)
        sizes = write(report, output, json_out)
    except InputError as err:
        fail_input(err)
        return
    for t in report.targets:
        if not t.ok:
            console.print(f"[yellow]warning:[/] target {t.name}: {t.status}: {t.message}",
                          markup=True, highlight=False, soft_wrap=True)
    typer.echo(report.summary_text())
    for path, size in sizes:
        typer.echo(f"wrote {path} ({size / 1024:,.0f} KiB)")
    typer.echo(f"took {time.monotonic() - started:.1f} s", err=True)


def _build(console: Console, *, config: Path | None, workload: str | None, since: str,
           rate_scale: float, profile: str | None, policy: str | None,
           forecast_model: str | None, interval: float | None, max_replicas: int,
           max_refits: int, seed: int, jobs: int | None = None,
           ray: str | None = None) -> Report:
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from aiops.errors import InputError

    if (config is None) == (workload is None):
        raise InputError("give exactly one of --config FILE (Prometheus history) or "
                         "--workload TRACE")
    if interval is not None and not interval > 0:
        raise InputError(f"--interval must be > 0 seconds, got {interval:g}")
    if max_refits < 1:
        raise InputError(f"--max-refits must be >= 1, got {max_refits}")
    if not rate_scale > 0:
        raise InputError(f"--rate-scale must be > 0, got {rate_scale:g}")
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
            if jobs is not None or ray is not None:
                raise InputError("--jobs and --ray spread the targets of a --config; a "
                                 "--workload is one replay")
            return _from_trace(workload, rate_scale=rate_scale, profile=profile, policy=policy,
                               forecast_model=forecast_model, interval=interval,
                               max_replicas=max_replicas, max_refits=max_refits, seed=seed,
                               progress=on_progress)
        assert config is not None
        if profile is not None:
            raise InputError("--profile is for --workload; with --config every target names "
                             "its profile (targets[].profile)")
        return _from_prometheus(config, since=since, rate_scale=rate_scale, policy=policy,
                                forecast_model=forecast_model, interval=interval,
                                max_refits=max_refits, seed=seed, progress=on_progress,
                                progress_bar=progress, jobs=jobs, ray=ray)


def _from_trace(workload: str, *, rate_scale: float, profile: str | None, policy: str | None,
                forecast_model: str | None, interval: float | None, max_replicas: int,
                max_refits: int, seed: int, progress: ProgressFn) -> Report:
    from aiops.errors import InputError
    from aiops.report.build import report_from_trace

    if max_replicas < 1:
        raise InputError(f"--max-replicas must be >= 1, got {max_replicas}")
    return report_from_trace(workload, rate_scale=rate_scale, profile=profile or DEFAULT_PROFILE,
                             policy=policy or DEFAULT_POLICY,
                             forecast_model=forecast_model or "auto",
                             interval_s=interval or 15.0, max_replicas=max_replicas,
                             seed=seed, max_refits=max_refits, progress=progress)


def _from_prometheus(config: Path, *, since: str, rate_scale: float, policy: str | None,
                     forecast_model: str | None, interval: float | None, max_refits: int,
                     seed: int, progress: ProgressFn, progress_bar: Progress,
                     jobs: int | None = None, ray: str | None = None) -> Report:
    from aiops.clock import WallClock
    from aiops.config import load_config
    from aiops.ingest.prometheus import PrometheusSource
    from aiops.policy.base import PolicySpec
    from aiops.report.build import report_from_prometheus
    from aiops.units import parse_duration

    since_s = parse_duration(since)
    cfg = load_config(config)
    if policy is not None:
        PolicySpec.parse(policy)  # a malformed override is the user's input: fail now
    clock = WallClock()
    if len(cfg.targets) > 1 or ray is not None:  # one job per target, on a pool or Ray
        from aiops.sweep import recommend_targets

        return recommend_targets(cfg, since_s=since_s, now=clock.now(), processes=jobs,
                                 ray=ray, progress=progress_bar, rate_scale=rate_scale,
                                 policy=policy, forecast_model=forecast_model,
                                 interval_s=interval, seed=seed, max_refits=max_refits)
    source = PrometheusSource(cfg.prometheus, clock, rate_window_s=cfg.prometheus.rate_window_s)
    overall = progress_bar.add_task("targets", total=len(cfg.targets))

    def done(_: object) -> None:
        progress_bar.advance(overall)

    try:
        return report_from_prometheus(cfg, source, since_s=since_s, now=clock.now(),
                                      rate_scale=rate_scale, policy=policy,
                                      forecast_model=forecast_model, interval_s=interval,
                                      seed=seed, max_refits=max_refits, progress=progress,
                                      on_target=done)
    finally:
        source.close()


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
