"""``aiops run`` and ``aiops validate-config``: build the daemon from a config and start it.

Both run the same checks (:func:`aiops.wiring.check_config`), so a config that
``validate-config`` accepts starts, and one it rejects does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LOG_FORMATS = ("json", "text")


def register(app: typer.Typer) -> None:
    app.command(name="run", epilog=RUN_EXAMPLES)(run)
    app.command(name="validate-config", epilog=VALIDATE_EXAMPLES)(validate_config)


VALIDATE_EXAMPLES = """Examples:

  aiops validate-config examples/sim.yaml

  AIOPS_PROMETHEUS__URL=http://prom:9090 aiops validate-config my.yaml
"""

RUN_EXAMPLES = """Examples:

  aiops run --config examples/sim.yaml --duration 90m

  aiops run --config my-config.yaml --dry-run --log-format json
"""


def validate_config(
    path: Annotated[Path, typer.Argument(help="The YAML config file.")],
) -> None:
    """Check a config as `aiops run` does before its first tick; print it (secrets masked).

    Checks the file (every field, its type and bounds, with the line of each error), then
    what `aiops run` checks at start: policy names and parameters, profiles, PPO model
    files, the workload of the simulated cluster, the forecaster and the detector, and for
    the Kubernetes backend the client configuration and the credentials. A config written
    for a pod (kubernetes.in_cluster: true) checked outside one: what only the pod has (its
    service account, mounted secrets) is listed as not checked here.
    """
    import json
    import os

    from aiops.cli import fail_input
    from aiops.config import load_config
    from aiops.errors import InputError
    from aiops.wiring import check_config

    try:
        cfg = load_config(path)
        problems = check_config(cfg, path)
    except InputError as err:
        fail_input(err)
    in_pod = "KUBERNETES_SERVICE_HOST" in os.environ
    deferred = cfg.backend == "kubernetes" and cfg.kubernetes.in_cluster and not in_pod
    errors = [p for p in problems if not (p.local and deferred)]
    if errors:
        fail_input(InputError("; ".join(p.text for p in errors), path=str(path)))
    typer.echo(json.dumps(cfg.masked(), indent=2))
    for p in problems:
        if p.local and deferred:
            typer.echo(f"note: not checked here, `aiops run` checks it in the pod: {p.text}",
                       err=True)
    typer.echo(f"ok: {len(cfg.targets)} target(s), backend {cfg.backend}, "
               f"{'dry-run' if cfg.dry_run else 'enforce'}", err=True)


def run(
    config: Annotated[Path, typer.Option(help="The YAML config file.")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only report what would be done (overrides the config).")] = False,
    enforce: Annotated[bool, typer.Option(
        "--enforce", help="Apply the decisions (overrides the config).")] = False,
    duration: Annotated[str | None, typer.Option(
        help="Stop after this long (simulated time with backend sim): 90s, 15m, 2h, 7d.")]
    = None,
    log_format: Annotated[str | None, typer.Option(
        help="json or text (overrides daemon.log_format).")] = None,
) -> None:
    """Run the autoscaler: dry-run unless the config or --enforce says otherwise.

    Checks everything `aiops validate-config` checks first, and stops with exit code 2 on
    any problem: a typo never changes which policy drives a fleet.
    """
    from aiops.cli import duration_option, fail_input
    from aiops.errors import InputError
    from aiops.wiring import build, run_built

    try:
        if dry_run and enforce:
            raise InputError("--dry-run and --enforce contradict each other; give one of them "
                             "(or neither, to follow the config's dry_run)")
        if log_format is not None and log_format not in LOG_FORMATS:
            raise InputError(f"--log-format {log_format!r}: expected json or text")
        seconds = duration_option(duration, "--duration") if duration else None
        mode = True if dry_run else False if enforce else None
        built = build(config, dry_run=mode, log_format=log_format, duration_s=seconds)
    except InputError as err:
        fail_input(err)
    run_built(built, seconds)
