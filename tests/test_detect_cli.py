"""``aiops detect``: CSV in, scored CSV out; bad input exits 2 and says where."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from importcheck import heavy_imports
from typer.testing import CliRunner

from aiops.detect.cli import register

SMALL = ["--param", "min_train=20", "--param", "reestimate=10", "--param", "learning=10"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keeps "detect" a subcommand, as in the real CLI
        """test app"""

    return app


def write_csv(path: Path, n: int, seed: int = 0, nan_at: int | None = None) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        for k in range(n):
            ts = f"2024-01-01 {k // 60 % 24:02d}:{k % 60:02d}:00"
            value = "" if k == nan_at else f"{50 + 10 * math.sin(k / 10) + rng.normal():.3f}"
            w.writerow([ts, value])


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def invoke(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["detect", *args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def test_round_trip_keeps_rows_order_and_text(app: typer.Typer, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.csv", tmp_path / "out" / "scores.csv"
    write_csv(src, 120, nan_at=70)
    code, out = invoke(app, "--input", str(src), "--output", str(dst), *SMALL)
    assert code == 0, out
    rows_in, rows_out = read_rows(src), read_rows(dst)
    assert rows_out[0] == ["timestamp", "value", "anomaly_score"]
    assert len(rows_out) == len(rows_in)
    assert [r[:2] for r in rows_out[1:]] == rows_in[1:]  # same text, same order
    scores = [float(r[2]) for r in rows_out[1:]]
    assert all(0.0 <= s <= 1.0 for s in scores)  # no NaN (NaN fails both comparisons)
    assert scores[70] == 0.0  # the missing value
    assert max(scores) > 0  # past warm-up, real scores were written
    assert "1 nan" in out  # the skipped row is reported


def test_folder_mode_mirrors_the_tree(app: typer.Typer, tmp_path: Path) -> None:
    src, dst = tmp_path / "data", tmp_path / "results"
    write_csv(src / "a" / "one.csv", 60)
    write_csv(src / "b" / "c" / "two.csv", 40, seed=1)
    (src / "notes.txt").write_text("not a csv")
    code, out = invoke(app, "--input-dir", str(src), "--output-dir", str(dst),
                       "--detector", "seasonal")
    assert code == 0, out
    made = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert made == ["a/one.csv", "b/c/two.csv"]
    assert len(read_rows(dst / "b" / "c" / "two.csv")) == 41


@pytest.mark.parametrize(("content", "needle"), [
    ("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,abc\n",
     "line 3: value 'abc' is not a number"),
    ("timestamp,value\nyesterday,1\n", "line 2: timestamp 'yesterday'"),
    ("time,value\n2024-01-01 00:00:00,1\n", "line 1: header"),
    ("timestamp,value\n2024-01-01 00:00:00,1,7\n", "line 2: 3 fields"),
    ("", "line 1: empty file"),
    ("timestamp,value\n", "line 2: no data rows"),
    ("timestamp,value\n2024-01-01 00:10:00,1\n2024-01-01 00:05:00,2\n",
     "line 3: timestamp '2024-01-01 00:05:00' is earlier than '2024-01-01 00:10:00' on line 2"),
])
def test_bad_csv_exits_2_naming_file_and_line(app: typer.Typer, tmp_path: Path, content: str,
                                              needle: str) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(content)
    code, out = invoke(app, "--input", str(src), "--output", str(tmp_path / "o.csv"))
    assert code == 2
    assert str(src) in out and needle in out
    assert "Traceback" not in out


@pytest.mark.parametrize(("args", "needle"), [
    (["--input", "{tmp}/missing.csv", "--output", "{tmp}/o.csv"], "no such file"),
    (["--input", "{tmp}", "--output", "{tmp}/o.csv"], "is a directory, not a CSV file"),
    (["--input-dir", "{tmp}/ok.csv", "--output-dir", "{tmp}/o"], "is a file, not a folder"),
    (["--input", "{tmp}/ok.csv", "--output", "{tmp}", "--unsorted", "skip"],
     "--output is a directory"),
    (["--input", "{tmp}/ok.csv", "--output", "{tmp}/o.csv", "--unsorted", "sort"],
     "--unsorted 'sort'"),
    (["--input-dir", "{tmp}/nowhere", "--output-dir", "{tmp}/o"], "no such folder"),
    (["--output", "{tmp}/o.csv"], "give either"),
    (["--input", "{tmp}/ok.csv", "--input-dir", "{tmp}", "--output", "{tmp}/o.csv"],
     "give either"),
    (["--input", "{tmp}/ok.csv", "--output-dir", "{tmp}/o"], "needs --output"),
    (["--input", "{tmp}/ok.csv", "--output", "{tmp}/o.csv", "--detector", "nope"],
     "unknown detector 'nope'"),
    (["--input", "{tmp}/ok.csv", "--output", "{tmp}/o.csv", "--param", "lag"],
     "not key=value"),
    (["--input", "{tmp}/ok.csv", "--output", "{tmp}/o.csv", "--param", "lag=0"], "lag"),
])
def test_bad_arguments_exit_2(app: typer.Typer, tmp_path: Path, args: list[str],
                              needle: str) -> None:
    write_csv(tmp_path / "ok.csv", 5)
    code, out = invoke(app, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2, out
    assert needle in out


def test_importing_the_command_imports_nothing_heavy() -> None:
    assert heavy_imports("import aiops.detect.cli",
                         ("numpy", "pandas", "pyod", "scipy", "sklearn")) == []


def test_success_prints_one_summary_line(app: typer.Typer, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(src, 120, nan_at=70)
    result = CliRunner().invoke(app, ["detect", "--input", str(src), "--output", str(dst),
                                      *SMALL])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("scored 120 rows in 1 file with knn-novelty")
    assert "1 nan" in lines[0] and str(dst) in lines[0]


def test_unsorted_rows_can_be_skipped_on_request(app: typer.Typer, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(src, 60)
    rows = read_rows(src)
    rows[30], rows[31] = rows[31], rows[30]  # one row out of order
    with src.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    code, out = invoke(app, "--input", str(src), "--output", str(dst))
    assert code == 2 and "line 32" in out and not dst.exists()
    code, out = invoke(app, "--input", str(src), "--output", str(dst), "--unsorted", "skip")
    assert code == 0, out
    assert len(read_rows(dst)) == 61 and "1 out of order" in out


def test_a_bad_file_stops_the_folder_before_any_output(app: typer.Typer,
                                                       tmp_path: Path) -> None:
    src, dst = tmp_path / "data", tmp_path / "results"
    write_csv(src / "a.csv", 40)
    (src / "b.csv").write_text("timestamp,value\n")  # header only
    code, out = invoke(app, "--input-dir", str(src), "--output-dir", str(dst))
    assert code == 2 and "b.csv" in out and "no data rows" in out
    assert not dst.exists()
