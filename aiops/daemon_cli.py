"""``aiops run`` and ``aiops validate-config``: build the daemon from a config and start it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command(name="run")(run)
    app.command(name="validate-config")(validate_config)


def validate_config(
    path: Annotated[Path, typer.Argument(help="The YAML config file.")],
) -> None:
    """Check a config file; print the effective config (secrets masked) or the errors."""
    import json

    from aiops.cli import fail_input
    from aiops.config import load_config
    from aiops.errors import InputError
    from aiops.ingest.queries import validate_overrides

    try:
        cfg = load_config(path)
        for target in cfg.targets:
            validate_overrides(target)
    except InputError as err:
        fail_input(err)
        return
    typer.echo(json.dumps(cfg.masked(), indent=2))
    typer.echo(f"ok: {len(cfg.targets)} target(s), backend {cfg.backend}, "
               f"{'dry-run' if cfg.dry_run else 'enforce'}", err=True)


def run(
    config: Annotated[Path, typer.Option(help="The YAML config file.")],
    dry_run: Annotated[bool | None, typer.Option(
        "--dry-run/--enforce", help="Override the config: only report, or apply.")] = None,
    duration: Annotated[str | None, typer.Option(
        help="Stop after this long (simulated time with backend sim): 90s, 15m, 2h, 7d.")]
    = None,
    log_format: Annotated[str | None, typer.Option(help="json or text.")] = None,
) -> None:
    """Run the autoscaler: dry-run unless the config or --enforce says otherwise."""
    from aiops.cli import fail_input
    from aiops.errors import InputError
    from aiops.units import parse_duration
    from aiops.wiring import build, run_built

    try:
        seconds = parse_duration(duration) if duration else None
        built = build(config, dry_run=dry_run, log_format=log_format, duration_s=seconds)
    except InputError as err:
        fail_input(err)
        return
    run_built(built, seconds)
