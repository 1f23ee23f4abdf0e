"""``aiops forecast backtest | fit | predict``.

Thin wrappers: the work is in ``aiops.forecast.*``. This module imports only typer at load
time (numpy, pandas, torch and prophet load inside the command that needs them), so
``aiops --help`` stays fast. Bad files, bad model specs and untrustworthy data all end as
``error: ...`` on stderr with exit code 2.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from aiops.forecast.series import RegularSeries

forecast_app = typer.Typer(
    name="forecast",
    help="Backtest, fit and run load forecasters on a timestamp,value CSV or a request trace.",
    no_args_is_help=True,
)

InputOpt = Annotated[Path, typer.Option("--input", help="timestamp,value CSV or request trace.")]
IntervalOpt = Annotated[str | None, typer.Option(
    help="A duration (60s, 5m): aggregate a request trace to requests/s per interval, or "
         "resample a timestamp,value series onto this grid (mean of the samples).")]

BACKTEST_EXAMPLES = """Examples:

  aiops forecast backtest --input series.csv --model naive,seasonal_naive,auto

  aiops forecast backtest --input trace.csv --interval 1m --horizon 6 --json bt.json
"""
FIT_EXAMPLES = """Examples:

  aiops forecast fit --input series.csv --model auto --output models/my-load
"""
PREDICT_EXAMPLES = """Examples:

  aiops forecast predict --model-dir models/my-load --input series.csv --horizon 12
"""
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON.")]


def register(app: typer.Typer) -> None:
    """Add the ``forecast`` sub-app to the ``aiops`` command line."""
    app.add_typer(forecast_app, name="forecast")


def split_model_list(text: str) -> list[str]:
    """``"naive,lstm:window=96,hidden=64,prophet"`` -> three specs.

    A comma starts a new model unless what follows is a ``key=value`` of the current one.
    """
    specs: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if specs and "=" in part and ":" not in part.split("=", 1)[0]:
            specs[-1] += "," + part
        else:
            specs.append(part)
    return specs


def _fail(err: Exception, path: Path | None = None) -> None:
    from aiops.cli import fail_input
    from aiops.errors import InputError

    if isinstance(err, InputError):
        fail_input(err)
    fail_input(InputError(str(err), path=str(path) if path else None))


def _load(path: Path, interval: str | None) -> RegularSeries:
    """The series in ``path``; with ``--interval`` a rate series is put on that grid first."""
    from aiops.cli import duration_option
    from aiops.forecast.series import load_series
    from aiops.ingest.traces import sniff_csv_kind

    step = duration_option(interval, "--interval") if interval else None
    if step is not None and path.is_file() and sniff_csv_kind(path) == "rate_series":
        return _resampled(path, step)
    return load_series(str(path), interval=step)


def _resampled(path: Path, step: float) -> RegularSeries:
    """A rate series on a grid of ``step`` seconds from its first sample: the mean of the
    samples nearest each grid point. Monitoring exports are irregular (a scrape a few
    seconds late, a missed one); what ``--interval`` promises is a regular series from them.
    Grid points with no sample are gaps, filled or refused as for any series."""
    from dataclasses import replace

    import numpy as np

    from aiops.forecast.series import regularize
    from aiops.ingest.traces import load_rate_series

    rs = load_rate_series(path)
    ts, vs = np.asarray(rs.timestamps, dtype=np.float64), np.asarray(rs.values, np.float64)
    pos = np.rint((ts - ts[0]) / step).astype(np.int64)
    slots, first = np.unique(pos, return_index=True)
    sums = np.add.reduceat(vs, first)
    counts = np.diff(np.append(first, len(vs)))
    series = regularize(ts[0] + step * slots, sums / counts, name=path.stem, interval=step)
    merged = int(len(vs) - len(slots))
    off = int(np.count_nonzero(np.abs((ts - ts[0]) / step - pos) > 0.01))
    if not (merged or off):
        return series
    note = (f"resampled to the {step:g} s grid: {off} of {len(vs)} samples off it moved to "
            f"the nearest point" + (f", {merged} averaged with another" if merged else ""))
    return replace(series, notes=(note, *series.notes))


def _write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")


def _check_json(path: Path | None) -> None:
    from aiops.cli import check_output_file

    if path is not None:
        check_output_file(path, "--json", create_parents=True)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


@forecast_app.command(epilog=BACKTEST_EXAMPLES)
def backtest(
    input_path: InputOpt,
    model: Annotated[str, typer.Option(help="NAME[:k=v,...][,NAME...] (see 'models').")]
    = "naive,seasonal_naive,auto",
    horizon: Annotated[int, typer.Option(help="Steps ahead; metrics average steps 1..H.")] = 12,
    season: Annotated[int | None, typer.Option(
        help="Season in steps for the MASE scale and seasonal_naive (default: detected).")]
    = None,
    folds: Annotated[int, typer.Option(help="Forecast origins in the test part.")] = 20,
    test_fraction: Annotated[float, typer.Option(
        help="Share of the series the origins are spread over.")] = 0.2,
    interval: IntervalOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Rolling-origin backtest of one or more models, side by side."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from aiops.errors import DataQualityError, InputError
    from aiops.forecast.backtest import rolling_origin
    from aiops.forecast.base import make_forecaster, parse_model_spec

    console = Console(stderr=True)
    specs = split_model_list(model)
    try:
        if horizon < 1 or folds < 1 or not 0 < test_fraction < 1:
            raise InputError("--horizon and --folds must be >= 1, --test-fraction in (0, 1)")
        if season is not None and season < 1:
            raise InputError(f"--season must be >= 1 step, got {season}")
        _check_json(json_out)
        parsed = {}
        for spec in specs:
            name, params = parse_model_spec(spec)
            if season is not None and name == "seasonal_naive":
                params.setdefault("season", season)
            make_forecaster(name, **params)  # fail on a bad spec before any work
            parsed[spec] = (name, params)
        series = _load(input_path, interval)
        results = {}
        with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                      console=console, transient=True) as progress:
            for spec, (name, params) in parsed.items():
                task = progress.add_task(spec, total=folds)
                results[spec] = rolling_origin(
                    partial(make_forecaster, name, **params),
                    series, [horizon], folds=folds, test_fraction=test_fraction,
                    season=season, on_step=partial(progress.advance, task))
    except (InputError, DataQualityError) as err:
        _fail(err, input_path)
        return
    payload = {
        "series": series.name, "path": str(input_path), "horizon": horizon,
        "interval_s": series.interval, "points": len(series), "notes": list(series.notes),
        "results": {spec: r.as_dict(horizon) for spec, r in results.items()},
    }
    table = Table(title=f"{series.name}: {len(series)} points every {series.interval:g} s, "
                        f"horizon {horizon}")
    for col in ("model", "MASE", "sMAPE %", "cover 80", "pinball", "fit s", "predict ms"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for spec, r in results.items():
        d = r.as_dict(horizon)
        table.add_row(spec if not r.error else f"{spec} ({r.error})", _fmt(d.get("mase")),
                      _fmt(d.get("smape"), 1), _fmt(d.get("coverage_80"), 2),
                      _fmt(d.get("pinball")), _fmt(d["fit_seconds"], 2),
                      _fmt(1000 * d["predict_seconds"], 1))
    Console().print(table)
    for note in series.notes:
        console.print(f"note: {note}")
    _write_json(json_out, payload)


@forecast_app.command(epilog=FIT_EXAMPLES)
def fit(
    input_path: InputOpt,
    output: Annotated[Path, typer.Option(help="Directory for the artifact (created).")],
    model: Annotated[str, typer.Option(help="NAME[:k=v,...]")] = "auto",
    horizon: Annotated[int, typer.Option(help="Horizon of the recorded backtest.")] = 12,
    folds: Annotated[int, typer.Option(
        help="Origins of the backtest recorded in meta.json (0 skips it).")] = 20,
    interval: IntervalOpt = None,
) -> None:
    """Fit one model on the whole series and save it with meta.json."""
    from rich.console import Console

    from aiops.cli import check_output_dir
    from aiops.errors import DataQualityError, InputError
    from aiops.forecast.backtest import rolling_origin
    from aiops.forecast.base import make_from_spec

    console = Console(stderr=True)
    try:
        if horizon < 1 or folds < 0:
            raise InputError("--horizon must be >= 1 and --folds >= 0")
        check_output_dir(output, "--output")
        make_from_spec(model)
        series = _load(input_path, interval)
        figures: dict[str, Any] | None = None
        if folds > 0:
            with console.status(f"backtesting {model} ({folds} origins)"):
                r = rolling_origin(lambda: make_from_spec(model), series, [horizon],
                                   folds=folds)
            figures = {"horizon": horizon, **r.as_dict(horizon)}
        with console.status(f"fitting {model} on {len(series)} points"):
            fitted = make_from_spec(model).fit(series.timestamps, series.values)
        meta = fitted.save(output, backtest=figures)
    except (InputError, DataQualityError) as err:
        _fail(err, input_path)
        return
    console.print(f"saved {fitted.label()} to {meta.parent}")
    if figures and figures.get("mase") is not None:
        console.print(f"backtest at horizon {horizon}: MASE {figures['mase']:.3f}, "
                      f"80% coverage {figures['coverage_80']:.2f}")
    reason = getattr(fitted, "reason_", None)
    if reason:
        console.print(f"auto: {reason}")


@forecast_app.command(epilog=PREDICT_EXAMPLES)
def predict(
    model_dir: Annotated[Path, typer.Option(help="Directory written by 'aiops forecast fit'.")],
    input_path: InputOpt,
    horizon: Annotated[int, typer.Option(help="Steps to forecast.")] = 12,
    interval: IntervalOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Forecast after the end of ``--input`` with a saved model (points after the fit are
    fed to the model's cheap update first)."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from aiops.errors import DataQualityError, InputError
    from aiops.forecast.base import load_forecaster

    try:
        if horizon < 1:
            raise InputError("--horizon must be >= 1")
        _check_json(json_out)
        fitted = load_forecaster(model_dir)
        series = _load(input_path, interval)
        if abs(series.interval - fitted.interval_) > 1e-6 * fitted.interval_:
            raise InputError(f"series interval {series.interval:g} s differs from the "
                             f"model's {fitted.interval_:g} s", path=str(input_path))
        new = series.timestamps > fitted.end_ + 0.5 * fitted.interval_
        if series.timestamps[-1] < fitted.end_ - 0.5 * fitted.interval_:
            raise InputError("series ends before the model's training data; nothing to "
                             "forecast from", path=str(input_path))
        if new.any():
            fitted.update(series.timestamps[new], series.values[new])
        fc = fitted.predict(horizon)
    except (InputError, DataQualityError) as err:
        _fail(err, input_path)
        return
    times = fc.start + fc.step * np.arange(fc.horizon)
    rows = [{"time": float(t), "mean": float(m), "p10": float(a), "p50": float(b),
             "p90": float(c)}
            for t, m, a, b, c in zip(times, fc.mean, fc.quantile(0.1), fc.quantile(0.5),
                                     fc.quantile(0.9), strict=True)]
    table = Table(title=f"{fc.model}: {horizon} steps of {fc.step:g} s")
    for col in ("time (UTC)", "mean", "p10", "p50", "p90"):
        table.add_column(col, justify="right")
    for r in rows:
        stamp = np.datetime_as_string(np.datetime64(round(r["time"]), "s"), unit="s")
        table.add_row(stamp, *(f"{r[k]:.4g}" for k in ("mean", "p10", "p50", "p90")))
    Console().print(table)
    _write_json(json_out, {"model": fc.model, "series": series.name, "start": fc.start,
                           "step": fc.step, "horizon": fc.horizon, "forecast": rows})


@forecast_app.command()
def models() -> None:
    """List the registered forecasters."""
    from aiops.forecast.base import available_forecasters

    for name in available_forecasters():
        typer.echo(name)
