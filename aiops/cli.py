"""The ``aiops`` command line: thin wrappers around the library.

Every heavy import (numpy-heavy simulator, torch, prophet, stable-baselines3) happens inside
the command that needs it, so ``aiops --help`` stays fast. Subsystems add their own commands
through a ``register(app)`` function that itself imports nothing heavy.
"""

from __future__ import annotations

import sys

import typer

from aiops.errors import InputError

app = typer.Typer(
    name="aiops",
    help="Predictive, explainable autoscaling for LLM inference deployments on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Predictive, explainable autoscaling for LLM inference deployments on Kubernetes."""


def fail_input(err: InputError) -> None:
    """Print a user-input error without a traceback and exit with code 2."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)


def _register_subcommands() -> None:
    from aiops import daemon_cli
    from aiops.detect import cli as detect_cli
    from aiops.forecast import cli as forecast_cli
    from aiops.report import cli as report_cli
    from aiops.sim import cli as sim_cli
    from aiops.sim import profile_cli
    from aiops.train import cli as train_cli

    for mod in (daemon_cli, sim_cli, report_cli, train_cli, forecast_cli, detect_cli,
                profile_cli):
        mod.register(app)


_register_subcommands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except InputError as err:  # raised outside a command's own handler
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
