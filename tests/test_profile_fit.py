"""``aiops profile fit``: the shipped profiles come from their recorded command, and a
user's own timings give a profile that predicts their server."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from aiops.cli import app
from aiops.sim.profile_fit import fit_timings
from aiops.sim.profiles import available_profiles, load_profile, profile_path

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _invoke(args: list[str]) -> tuple[int, str]:
    cwd = os.getcwd()
    os.chdir(ROOT)  # the recorded commands name files relative to the repository
    try:
        res = runner.invoke(app, args)
    finally:
        os.chdir(cwd)
    return res.exit_code, res.output


@pytest.mark.parametrize("name", available_profiles())
def test_every_shipped_profile_is_what_its_recorded_command_writes(name: str,
                                                                   tmp_path: Path) -> None:
    shipped = load_profile(name)
    command = shlex.split(str(shipped.fit["command"]))
    assert command[:3] == ["aiops", "profile", "fit"]
    args = command[1:]
    out = tmp_path / f"{name}.yaml"
    args[args.index("--output") + 1] = str(out)
    # The base is the shipped file itself: only the timing part is refitted.
    code, output = _invoke(args)
    assert code == 0, output
    refit = load_profile(str(out))
    assert refit.iteration == shipped.iteration
    assert refit == shipped  # every other field too (provenance aside)
    raw_shipped = yaml.safe_load(profile_path(name).read_text())
    raw_refit = yaml.safe_load(out.read_text())
    assert raw_refit["fit"]["inputs"] == raw_shipped["fit"]["inputs"]  # same data, same digest


def _timings(rng: np.random.Generator, n: int = 400, noise: float = 0.02) -> str:
    """Iterations of a server timed by the shipped 8B model, with measurement noise."""
    it = load_profile("llama3-8b-a100").iteration
    batch = rng.integers(0, 129, n)
    ctx = rng.integers(100, 4000, n)
    prefill = np.where(rng.random(n) < 0.4, rng.integers(16, 2049, n), 0)
    batch = np.where((batch == 0) & (prefill == 0), 1, batch)
    kv = batch * ctx
    t = (it.overhead_s + it.per_sequence_s * batch + it.linear(batch + prefill)
         + np.where(batch > 0, it.decode_fixed_s + it.decode_per_sequence_s * batch
                    + it.decode_per_kv_token_s * kv, 0.0)
         + np.where(prefill > 0, it.chunk_attention(prefill, 0.0), 0.0))
    t = t * (1.0 + noise * rng.standard_normal(n))
    rows = ["batch,kv_tokens,prefill_tokens,iteration_s"]
    rows += [f"{b},{k},{p},{x:.6g}" for b, k, p, x in zip(batch, kv, prefill, t, strict=True)]
    return "\n".join(rows) + "\n"


def test_a_plain_timing_csv_gives_a_profile_that_predicts_the_server(tmp_path: Path) -> None:
    csv = tmp_path / "iterations.csv"
    csv.write_text(_timings(np.random.default_rng(0)))
    out = tmp_path / "mine.yaml"
    code, output = _invoke(["profile", "fit", "--timings", str(csv), "--name", "mine",
                            "--cold-start", "2m", "--output", str(out)])
    assert code == 0, output
    assert "wrote" in output and "decode step" in output
    mine = load_profile(str(out))
    assert mine.name == "mine" and mine.cold_start_s == 120.0
    truth = load_profile("llama3-8b-a100").iteration
    for n, ctx in ((1, 500), (16, 1000), (64, 2000), (128, 3000)):
        assert float(mine.iteration.decode_step(n, n * ctx)) == pytest.approx(
            float(truth.decode_step(n, n * ctx)), rel=0.08), (n, ctx)
    for c in (256, 1024, 2048):
        assert float(mine.iteration.prefill_step(c, 0.0)) == pytest.approx(
            float(truth.prefill_step(c, 0.0)), rel=0.08), c
    assert mine.fit["inputs"] == {str(csv): mine.fit["inputs"][str(csv)]}


def test_the_fit_reports_how_well_it_reproduces_the_measurements(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(_timings(np.random.default_rng(1), noise=0.0))
    _, report = fit_timings(csv)
    assert report.median_rel_error["iteration"] < 0.02
    csv.write_text(_timings(np.random.default_rng(1), noise=0.2))
    _, noisy = fit_timings(csv)
    assert noisy.median_rel_error["iteration"] > 0.05


@pytest.mark.parametrize(("content", "words"), [
    ("batch,kv_tokens,iteration_s\n1,100,0.01\n", ["missing column", "prefill_tokens"]),
    ("batch,kv_tokens,prefill_tokens,iteration_s\n" + "4,4000,0,0.012\n" * 10
     + "4,4000,0,-0.012\n", ["line 12", "negative", "iteration_s"]),
    ("batch,kv_tokens,prefill_tokens,iteration_s\n" + "4,4000,0,0.012\n" * 5,
     ["only 5 rows", "at least 20"]),
    ("batch,kv_tokens,prefill_tokens,iteration_s\n" + "4,4000,0,0.012\n" * 3
     + "4,4000,x,0.012\n", ["line 5", "prefill_tokens", "not a finite number"]),
    ("batch,kv_tokens,prefill_tokens,iteration_s\n" + "4,4000,0,0.012\n" * 30,
     ["too few distinct token counts"]),
])
def test_bad_timing_files_get_one_clear_error(tmp_path: Path, content: str,
                                              words: list[str]) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    code, output = _invoke(["profile", "fit", "--timings", str(csv),
                            "--output", str(tmp_path / "o.yaml")])
    assert code == 2, output
    assert output.startswith("error: ") and output.count("\n") == 1
    assert str(csv) in output
    for w in words:
        assert w in output
    assert not (tmp_path / "o.yaml").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--output", "OUT"], ["--timings", "--vidur-mlp"]),
    (["--timings", "T", "--vidur-mlp", "M", "--output", "OUT"], ["not both"]),
    (["--timings", "/no/such.csv", "--output", "OUT"], ["/no/such.csv", "no such file"]),
    (["--timings", "T", "--output", "/no/such/dir/o.yaml"], ["no such directory"]),
    (["--timings", "T", "--base", "nope", "--output", "OUT"], ["unknown profile 'nope'"]),
    (["--vidur-mlp", "data/calibration/vidur-a100-llama3-8b-mlp-tp1.csv",
      "--vidur-decode-attention", "data/calibration/vidur-a100-llama3-8b-attention-decode-rows.csv",
      "--vidur-prefill-attention",
      "data/calibration/vidur-a100-llama3-8b-attention-prefill-rows.csv", "--output", "OUT"],
     ["--layers"]),
])
def test_bad_options_are_named(tmp_path: Path, args: list[str], words: list[str]) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(_timings(np.random.default_rng(2), n=40))
    args = [str(csv) if a == "T" else str(tmp_path / "o.yaml") if a == "OUT" else a
            for a in args]
    code, output = _invoke(["profile", "fit", *args])
    assert code == 2, output
    assert output.startswith("error: ")
    for w in words:
        assert w in output


def test_an_existing_output_is_kept_unless_forced(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(_timings(np.random.default_rng(3), n=60))
    out = tmp_path / "o.yaml"
    out.write_text("keep me\n")
    code, output = _invoke(["profile", "fit", "--timings", str(csv), "--output", str(out)])
    assert code == 2 and "--force" in output
    assert out.read_text() == "keep me\n"
    code, _ = _invoke(["profile", "fit", "--timings", str(csv), "--output", str(out),
                       "--force"])
    assert code == 0 and load_profile(str(out)).fit["command"]
