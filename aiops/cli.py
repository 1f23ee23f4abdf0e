"""The ``aiops`` command line: thin wrappers around the library.

Every heavy import (numpy-heavy simulator, torch, prophet, stable-baselines3) happens inside
the command that needs it, so ``aiops --help`` stays fast. Subsystems add their own commands
through a ``register(app)`` function that itself imports nothing heavy.

Every command speaks the same language: bad input (an option, a file, a config) is one
``error:`` line on stderr that names the option or the file (and line) and says what is
expected, with exit code 2, found before any long work starts — output paths included. The
helpers below are how commands check the values they share (durations, output paths).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from aiops.errors import InputError

EXIT_INPUT = 2
"""Exit code of every input error (the shell convention for "wrong usage")."""


class _OneLineErrors(TyperGroup):
    """The ``aiops`` group: usage errors (an unknown option, a missing value, a number that
    is not one) become the same single ``error:`` line as every other input error, instead
    of the library's framed box — one format for people and for scripts that grep stderr."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args,
                              **extra)
        except typer.TyperException as exc:  # the command-line library's own errors
            kinds = {c.__name__ for c in type(exc).__mro__}
            if "NoArgsIsHelpError" in kinds:  # the help is printed: that is the answer
                sys.exit(EXIT_INPUT)
            from aiops.config import plain_message

            fmt = getattr(exc, "format_message", None)
            text = plain_message(fmt() if callable(fmt) else str(exc))
            if "UsageError" in kinds:
                ctx = getattr(exc, "ctx", None)
                where = ctx.command_path if ctx is not None else "aiops"
                typer.echo(f"error: {text} (see '{where} --help')", err=True)
                sys.exit(EXIT_INPUT)
            typer.echo(f"error: {text}", err=True)
            sys.exit(int(getattr(exc, "exit_code", 1)))
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        except InputError as err:  # raised outside a command's own handler
            typer.echo(f"error: {err}", err=True)
            sys.exit(EXIT_INPUT)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="aiops",
    cls=_OneLineErrors,
    help="Predictive, explainable autoscaling for LLM inference deployments on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version() -> str:
    """The installed distribution's version ("unknown" when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("aiops-autoscaler")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"aiops {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print the version and exit.")] = False,
) -> None:
    """Predictive, explainable autoscaling for LLM inference deployments on Kubernetes.

    Start with `aiops simulate` (no cluster needed), then `aiops recommend` on your own
    traffic, `aiops validate-config` and `aiops run --dry-run`.
    """


def fail_input(err: InputError) -> NoReturn:
    """Print a user-input error without a traceback and exit with code 2."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=EXIT_INPUT)


# --------------------------------------------------------------------------- shared checks
def duration_option(text: str, option: str) -> float:
    """Seconds in a duration option (``90s``, ``15m``, ``2h``, ``7d`` or a number of seconds);
    InputError naming the option otherwise. The one vocabulary for every time span."""
    from aiops.units import parse_duration

    try:
        return parse_duration(text)
    except InputError as err:
        raise InputError(f"{option}: {err.problem}") from None


def check_output_file(path: Path, option: str, *, create_parents: bool = False) -> None:
    """A file the command will write: not a folder, in a folder that exists (or, with
    ``create_parents``, can be created) and is writable. Checked before the work, so a long
    run never ends in "cannot write" with its result lost."""
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{option} {path}: the file exists and is not writable")
    _check_writable_folder(path.parent, path, option, create_parents)


def check_output_dir(path: Path, option: str) -> None:
    """A folder the command will create or fill: not an existing file, and writable (or
    creatable inside a writable folder)."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: a file of that name exists; give a folder path")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{option} {path}: the folder is not writable")
        return
    _check_writable_folder(path.parent, path, option, True)


def _check_writable_folder(folder: Path, path: Path, option: str, create: bool) -> None:
    folder = folder if str(folder) else Path(".")
    probe = folder
    if create:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
    if not probe.exists():
        raise InputError(f"{option} {path}: the folder {folder} does not exist")
    if not probe.is_dir():
        raise InputError(f"{option} {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot write in the folder {probe}")


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
    app()
