"""One short PPO training through ``aiops train``, shared by the tests that need a policy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainedPolicy:
    """A policy directory written by ``aiops train`` and what the command printed."""

    output: Path
    meta: dict[str, Any]
    argv: tuple[str, ...]  # the command's arguments after ``train``
    summary: dict[str, Any]  # the JSON line it printed last
    eval_csv: Path
    threads: tuple[int, int]  # torch's thread count before and after the run


def write_rate_series(path: Path, minutes: int = 20, level: float = 6.0) -> Path:
    """A small rate-series CSV (one row a minute): tests make their own data."""
    import numpy as np

    rows = ["timestamp,value"]
    for i in range(minutes):
        value = level * (1.0 + 0.5 * np.sin(i / 3.0))
        rows.append(f"2024-01-01 {i // 60:02d}:{i % 60:02d}:00,{value:.3f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def train_command(output: Path, eval_csv: Path, seed: int = 3) -> list[str]:
    """A training run of a few seconds: two short workloads, a tiny network."""
    return ["train", "--workload", "synthetic:steady", "--workload", "synthetic:flash-crowd",
            "--eval-workload", str(eval_csv), "--timesteps", "512", "--n-envs", "2",
            "--eval-every", "256", "--net-arch", "16,16", "--seed", str(seed),
            "--select", "relative", "--output", str(output)]


def run_train_cli(argv: list[str]) -> dict[str, Any]:
    """``aiops train ARGV`` in-process; the JSON summary it printed."""
    import typer
    from typer.testing import CliRunner

    from aiops.train.cli import register

    app = typer.Typer()
    register(app)
    app.command(name="noop")(lambda: None)  # two commands, so `train` is a subcommand
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    summary: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return summary


