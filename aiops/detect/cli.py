"""``aiops detect``: score a CSV file, or every CSV under a folder, with a streaming detector.

Nothing heavy is imported at module level (``aiops --help`` imports this module); numpy,
scipy and pyod are imported inside the command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

# Kept literal so this module imports no numpy; tests check it equals DEFAULT_DETECTOR.
DEFAULT_DETECTOR = "knn"


def register(app: typer.Typer) -> None:
    app.command(name="detect")(detect)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, true, [..])."""
    from aiops.errors import InputError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param {pair!r} is not key=value")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out


def detect(
    input: Annotated[Path | None, typer.Option(
        "--input", help="One CSV with timestamp,value columns.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", help="Where to write timestamp,value,anomaly_score.")] = None,
    input_dir: Annotated[Path | None, typer.Option(
        "--input-dir", help="Score every *.csv below this folder.")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", help="Mirror of --input-dir's folders with the scored files.")] = None,
    detector: Annotated[str, typer.Option(
        help="Detector name (knn, seasonal, ensemble, iforest, ...).")] = DEFAULT_DETECTOR,
    param: Annotated[list[str] | None, typer.Option(
        help="Detector parameter key=value (repeatable), e.g. short=10.")] = None,
) -> None:
    """Score each point from the points before it (no look-ahead); one output row per input row.

    Scores are in [0, 1]: 0.5 is a 1e-5 tail probability, 0.9 (the daemon's default
    threshold) about 1e-9. The first ~250 points of each file score 0 (warm-up).
    """
    from aiops.cli import fail_input
    from aiops.errors import InputError

    try:
        jobs = _jobs(input, output, input_dir, output_dir)
        params = parse_params(param or [])
        _check_detector(detector, params)
        _run(jobs, detector, params)
    except InputError as err:
        fail_input(err)


def _jobs(input: Path | None, output: Path | None, input_dir: Path | None,
          output_dir: Path | None) -> list[tuple[Path, Path]]:
    from aiops.errors import InputError

    if (input is None) == (input_dir is None):
        raise InputError("give either --input FILE --output FILE or --input-dir DIR "
                         "--output-dir DIR")
    if input is not None:
        if output is None or output_dir is not None:
            raise InputError("--input needs --output (and no --output-dir)")
        if not input.is_file():
            raise InputError("no such file", path=str(input))
        return [(input, output)]
    assert input_dir is not None
    if output_dir is None or output is not None:
        raise InputError("--input-dir needs --output-dir (and no --output)")
    if not input_dir.is_dir():
        raise InputError("no such folder", path=str(input_dir))
    files = sorted(p for p in input_dir.rglob("*.csv") if p.is_file())
    if not files:
        raise InputError("no *.csv files below this folder", path=str(input_dir))
    return [(p, output_dir / p.relative_to(input_dir)) for p in files]


def _check_detector(name: str, params: dict[str, Any]) -> None:
    from aiops.detect.detectors import make_detector
    from aiops.errors import InputError

    try:
        make_detector(name, **params)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _run(jobs: list[tuple[Path, Path]], name: str, params: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from aiops.detect.detectors import make_detector
    from aiops.detect.io import read_series, write_scores

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True, disable=len(jobs) < 2) as progress:
        task = progress.add_task(f"detect ({name})", total=len(jobs))
        for src, dst in jobs:
            series = read_series(src)
            det = make_detector(name, **params)
            scores = det.update(series.t, series.x)
            write_scores(dst, series, scores)
            issues = _summary(det.issues)
            if issues:
                console.print(f"{src}: {issues}")
            progress.advance(task)
    if len(jobs) > 1:
        console.print(f"scored {len(jobs)} files with {name}")


def _summary(issues: Any) -> str:
    """One line of the input problems worth a user's attention (warm-up is expected)."""
    counts: dict[str, int] = {}
    for i in issues:
        if i.kind != "warmup":
            counts[i.kind] = counts.get(i.kind, 0) + i.count
    return ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items())

