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
DEFAULT_DETECTOR = "knn-novelty"


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
        help="Detector name (default, knn, seasonal, ensemble, iforest, ...).")
    ] = DEFAULT_DETECTOR,
    param: Annotated[list[str] | None, typer.Option(
        help="Detector parameter key=value (repeatable), e.g. short=10.")] = None,
    unsorted: Annotated[str, typer.Option(
        help="A row earlier than the row before it: 'error' (the default, like every "
             "command that reads a series) or 'skip' (score it 0 and go on).")] = "error",
) -> None:
    """Score each point from the points before it (no look-ahead); one output row per input row.

    Scores are in [0, 1]: 0.5 is a 1e-5 tail probability, 0.9 (the daemon's default
    threshold) about 1e-9. The first few hundred points of each file score 0 (warm-up).
    Every input file is read and checked before anything is scored or written.
    """
    from aiops.cli import fail_input
    from aiops.errors import InputError

    try:
        if unsorted not in ("error", "skip"):
            raise InputError(f"--unsorted {unsorted!r}: expected 'error' or 'skip'")
        jobs = _jobs(input, output, input_dir, output_dir)
        params = parse_params(param or [])
        _check_detector(detector, params)
        series = _read_all(jobs, unsorted)
        summary = _run(jobs, series, detector, params, output or output_dir or Path("."))
    except InputError as err:
        fail_input(err)
    typer.echo(summary)


def _jobs(input: Path | None, output: Path | None, input_dir: Path | None,
          output_dir: Path | None) -> list[tuple[Path, Path]]:
    from aiops.errors import InputError

    if (input is None) == (input_dir is None):
        raise InputError("give either --input FILE --output FILE or --input-dir DIR "
                         "--output-dir DIR")
    if input is not None:
        if output is None or output_dir is not None:
            raise InputError("--input needs --output (and no --output-dir)")
        if input.is_dir():
            raise InputError("--input is a directory, not a CSV file (use --input-dir)",
                             path=str(input))
        if not input.is_file():
            raise InputError("--input: no such file", path=str(input))
        if output.is_dir():
            raise InputError("--output is a directory; give a file name (or use "
                             "--output-dir)", path=str(output))
        return [(input, output)]
    assert input_dir is not None
    if output_dir is None or output is not None:
        raise InputError("--input-dir needs --output-dir (and no --output)")
    if input_dir.is_file():
        raise InputError("--input-dir is a file, not a folder (use --input)",
                         path=str(input_dir))
    if not input_dir.is_dir():
        raise InputError("--input-dir: no such folder", path=str(input_dir))
    if output_dir.is_file():
        raise InputError("--output-dir is a file, not a folder", path=str(output_dir))
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
        raise InputError(f"--detector {name}: {exc}") from None


def _read_all(jobs: list[tuple[Path, Path]], unsorted: str) -> list[Any]:
    """Every input parsed and checked, so a bad file stops the command before any work."""
    from aiops.detect.io import read_series

    return [read_series(src, unsorted=unsorted) for src, _ in jobs]


def _run(jobs: list[tuple[Path, Path]], series: list[Any], name: str,
         params: dict[str, Any], target: Path) -> str:
    """Score and write every file; return the one-line summary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from aiops.detect.detectors import DEFAULT_DETECTOR, make_detector
    from aiops.detect.io import write_scores

    console = Console(stderr=True)
    rows = alarms = 0
    issues: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True, disable=len(jobs) < 2) as progress:
        task = progress.add_task(f"detect ({name})", total=len(jobs))
        for (_, dst), s in zip(jobs, series, strict=True):
            det = make_detector(name, **params)
            scores = det.update(s.t, s.x)
            write_scores(dst, s, scores)
            rows += len(scores)
            alarms += int((scores >= 0.9).sum())
            for i in det.issues:
                if i.kind != "warmup":
                    issues[i.kind] = issues.get(i.kind, 0) + i.count
            progress.advance(task)
    shown = DEFAULT_DETECTOR if name == "default" else name
    files = f"{len(jobs)} file" + ("s" if len(jobs) != 1 else "")
    noted = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in issues.items())
    return (f"scored {rows} rows in {files} with {shown}: {alarms} at or above 0.9; "
            f"input notes: {noted or 'none'}; wrote {target}")
