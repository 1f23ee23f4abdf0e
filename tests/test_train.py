"""`aiops train` for the PPO agent: artifact contents, the workload mix, the command line, and
the checks that the shipped policy still belongs to this checkout.

Training runs are few and small: the session's ``tiny_policy`` (conftest.py) is one run of
``aiops train`` that most tests read; the rest train only what they must compare with it.
All are marked ``slow``. Bit-for-bit reproduction of a training run holds on one machine
only (torch's matrix kernels differ by CPU model, and a last-bit difference grows into another
policy), so the shipped policy is checked on what does hold on any machine: the digest of the
training inputs, the baseline rows (no torch involved), and the shipped model's own
evaluation (inference, which the kernels change by rounding only).
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from fakes.training import TrainedPolicy, run_train_cli, train_command, write_rate_series
from importcheck import heavy_imports
from typer.testing import CliRunner

from aiops.errors import InputError
from aiops.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from aiops.policy.ppo import DEFAULT_FACTORS, load_ppo_artifact, sha256_file
from aiops.sim.workloads import SYNTHETIC
from aiops.train.cli import register
from aiops.train.digest import (
    NOT_INPUTS,
    PACKAGE_DIR,
    changed_inputs,
    input_files,
    training_inputs,
)
from aiops.train.mix import MixConfig, WorkloadMix
from aiops.train.ppo import (
    MissPrice,
    PpoHyper,
    RewardConfig,
    TrainConfig,
    parse_range,
    reference_scores,
    selection_key,
    train_ppo,
    weights_sha256,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "policies" / "default"


def tiny_config(out: Path, eval_csv: Path, **overrides: object) -> TrainConfig:
    """A training run of a few seconds: two short environments, one baseline."""
    base: dict[str, object] = {
        "workloads": ("synthetic:steady", "synthetic:flash-crowd"),
        "eval_workloads": (str(eval_csv),),
        "timesteps": 512,
        "output": out,
        "seed": 3,
        "mix": MixConfig(episode_s=900.0),
        "n_envs": 2,
        "eval_every": 256,
        "hyper": PpoHyper(n_steps=128, batch_size=64, n_epochs=2),
        "baselines": ("hpa",),
    }
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.slow
def test_short_training_writes_a_loadable_policy_with_full_meta(
        tiny_policy: TrainedPolicy) -> None:
    out = tiny_policy.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta == tiny_policy.meta
    assert meta["sha256"] == sha256_file(out / "model.zip")
    assert meta["weights_sha256"] == weights_sha256(out / "model.zip")
    assert (out / "model.zip").stat().st_size < 1_000_000
    assert meta["feature_schema_version"] == FEATURE_SCHEMA_VERSION
    assert meta["feature_names"] == list(FEATURE_NAMES)
    assert meta["action_space"]["factors"] == list(DEFAULT_FACTORS)
    assert meta["action_space"]["replica_action"] == "residual"
    assert meta["observation"]["forecast_in_observation"] is True
    assert meta["action_space"]["batch_sizes"] == [16, 32, 64, 128, 256]
    assert meta["network"]["net_arch"] == [16, 16]
    assert meta["profile"]["name"] == "llama3-8b-a100"
    assert meta["training"]["workloads"] == ["synthetic:steady", "synthetic:flash-crowd"]
    assert meta["training"]["seed"] == 3
    assert meta["training"]["timesteps"] >= 512
    assert meta["training"]["steps_per_s"] > 0
    assert [w["spec"] for w in meta["evaluation"]["workloads"]] == [str(tiny_policy.eval_csv)]
    for lib in ("torch", "stable-baselines3", "gymnasium", "numpy", "python"):
        assert meta["libraries"][lib]
    assert meta["training_inputs"] == training_inputs()  # trained on this checkout
    rng = meta["training_range"]
    assert len(rng["min"]) == len(FEATURE_NAMES) == len(rng["max"])
    assert all(lo <= hi for lo, hi in zip(rng["min"], rng["max"], strict=True))
    assert rng["max_arrival_rate"] > 0
    # The evaluation table has the agent and every baseline on every evaluation workload.
    table = meta["evaluation"]["table"]
    for rows in table.values():
        assert set(rows) == {"ppo", "hpa", "keda", "predictive", "oracle"}
        for row in rows.values():
            assert 0.0 <= row["slo_attainment"] <= 1.0 and row["gpu_hours"] > 0
    assert len(meta["evaluation"]["history"]) >= 2
    model, loaded = load_ppo_artifact(out)
    assert loaded.sha256 == meta["sha256"]
    assert model.act(np.zeros(len(FEATURE_NAMES), dtype=np.float32))[1] in range(5)


@pytest.mark.slow
def test_training_gives_torch_its_threads_back(tiny_policy: TrainedPolicy) -> None:
    before, after = tiny_policy.threads
    assert before != 1 and after == before  # training itself runs on one thread


@pytest.mark.slow
def test_meta_records_the_command_that_reproduces_the_run(tiny_policy: TrainedPolicy) -> None:
    args = shlex.split(str(tiny_policy.meta["command"]))
    assert args[:2] == ["aiops", "train"]
    value = dict(zip(args[2::2], args[3::2], strict=False))
    assert value["--timesteps"] == "512" and value["--seed"] == "3"
    assert value["--output"] == str(tiny_policy.output)
    assert value["--net-arch"] == "16,16" and value["--select"] == "relative"
    assert args.count("--workload") == 2 and "synthetic:flash-crowd" in args


@pytest.mark.slow
def test_same_command_same_weights_on_one_machine(tiny_policy: TrainedPolicy,
                                                  tmp_path: Path) -> None:
    """Same-machine determinism: the recorded command, run again, gives the same network
    (its digest; the file's sha256 carries sb3's wall-clock fields). Another seed does not,
    so the equality is not a digest that ignores the weights."""
    again = run_train_cli(train_command(tmp_path / "again", tiny_policy.eval_csv))
    meta = json.loads((tmp_path / "again" / "meta.json").read_text())
    assert meta["weights_sha256"] == tiny_policy.meta["weights_sha256"]
    assert again["sha256"] == meta["sha256"] == sha256_file(tmp_path / "again" / "model.zip")
    ma, _ = load_ppo_artifact(tiny_policy.output)
    mb, _ = load_ppo_artifact(tmp_path / "again")
    obs = np.random.default_rng(0).uniform(0, 1, (50, len(FEATURE_NAMES))).astype(np.float32)
    assert [ma.act(o) for o in obs] == [mb.act(o) for o in obs]
    run_train_cli(train_command(tmp_path / "other", tiny_policy.eval_csv, seed=4))
    other = json.loads((tmp_path / "other" / "meta.json").read_text())
    assert other["weights_sha256"] != tiny_policy.meta["weights_sha256"]


@pytest.mark.slow
def test_cli_trains_and_prints_a_summary(tiny_policy: TrainedPolicy) -> None:
    summary, meta = tiny_policy.summary, tiny_policy.meta
    assert summary["output"] == str(tiny_policy.output)
    assert summary["sha256"] == meta["sha256"] == sha256_file(tiny_policy.output / "model.zip")
    assert summary["timesteps"] == meta["training"]["timesteps"]
    assert summary["steps_per_s"] > 0 and summary["wall_s"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--rate-scale", "4:1"], "LOW <= HIGH"),
    (["--rate-scale", "x"], "LOW:HIGH"),
    (["--workload", "synthetic:nope"], "unknown synthetic workload"),
    (["--net-arch", "a,b"], "not a list of integers"),
    (["--timesteps", "0"], "must be >= 1"),
])
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    app = typer.Typer()
    register(app)
    app.command(name="noop")(lambda: None)
    base = {"--timesteps": "256", "--output": str(tmp_path / "x")}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    flat = [x for kv in base.items() for x in kv]
    res = CliRunner().invoke(app, ["train", *flat])
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_training_options_are_recorded_in_the_command(tmp_path: Path) -> None:
    csv = write_rate_series(tmp_path / "series.csv")
    cfg = tiny_config(tmp_path / "o", csv, fixed_batch=True,
                      more_profiles=("llama3-8b-a100-pull",))
    args = shlex.split(cfg.to_command())
    assert "--fixed-batch" in args
    assert [args[i + 1] for i, a in enumerate(args) if a == "--profile"] == [
        "llama3-8b-a100", "llama3-8b-a100-pull"]
    assert "--fixed-batch" not in tiny_config(tmp_path / "p", csv).to_command()


def test_fixed_batch_trains_without_the_batch_head(tmp_path: Path) -> None:
    """The ablation's agent: the same environments, with one batch size to choose."""
    from aiops.sim.profiles import load_profile
    from aiops.train.ppo import make_vec_env

    csv = write_rate_series(tmp_path / "series.csv")
    profile = load_profile("llama3-8b-a100")
    for fixed, sizes in ((True, [64]), (False, [16, 32, 64, 128, 256])):
        venv = make_vec_env(tiny_config(tmp_path / "o", csv, fixed_batch=fixed), [profile])
        assert venv.action_space.nvec.tolist() == [len(DEFAULT_FACTORS), len(sizes)]
        assert list(venv.envs[0].unwrapped.batch_sizes) == sizes


def test_start_bias_makes_the_untrained_agent_the_base_policy(tmp_path: Path) -> None:
    """With --start-bias the network's first deterministic action is "factor 1, default
    batch" on any observation (the base policy's plan unchanged), and the option is
    recorded in the command; without it sb3's tiny initial logits decide nothing useful."""
    import torch
    from stable_baselines3 import PPO

    from aiops.features import HIGH, LOW
    from aiops.sim.profiles import load_profile
    from aiops.train.ppo import make_vec_env, start_as_base

    csv = write_rate_series(tmp_path / "series.csv")
    profile = load_profile("llama3-8b-a100")
    cfg = tiny_config(tmp_path / "o", csv, hyper=PpoHyper(start_bias=3.0))
    assert shlex.split(cfg.to_command())[-2:] == ["--start-bias", "3"]
    assert "--start-bias" not in tiny_config(tmp_path / "p", csv).to_command()
    venv = make_vec_env(cfg, [profile])
    model = PPO("MlpPolicy", venv, n_steps=128, seed=0, device="cpu",
                policy_kwargs={"activation_fn": torch.nn.Tanh})
    sizes = list(venv.envs[0].unwrapped.batch_sizes)
    start_as_base(model.policy, DEFAULT_FACTORS, sizes, profile.default_batch_size, 3.0)
    rng = np.random.default_rng(0)
    obs = rng.uniform(LOW, HIGH, size=(64, len(LOW))).astype(np.float32)
    actions, _ = model.policy.predict(obs, deterministic=True)
    assert {tuple(a) for a in np.asarray(actions).tolist()} == {
        (DEFAULT_FACTORS.index(1.0), sizes.index(profile.default_batch_size))}
    with pytest.raises(InputError, match="--start-bias"):
        tiny_config(tmp_path / "q", csv, hyper=PpoHyper(start_bias=-1.0))


def test_the_naive_forecast_is_the_forecasters_bit_for_bit() -> None:
    """Evaluation and the training environment use a fast path of the naive forecast; it
    must give exactly what NaiveForecaster(residual_window=240) gives (the forecast the
    baseline rows of every recorded evaluation were made with), across history lengths
    around the residual window and horizons of both cold starts."""
    from aiops.forecast.naive import NaiveForecaster
    from aiops.train.evaluate import naive_forecast

    rng = np.random.default_rng(1)
    for n in (7, 8, 9, 21, 22, 239, 240, 241, 246, 247, 261, 262, 500):
        for horizon in (1, 7, 21):
            for kind in range(4):
                y = rng.gamma(2.0, 10.0, n)
                y = (y, np.round(y), y * 1e-3, np.where(rng.random(n) < 0.5, 0.0, y))[kind]
                end = 15.0 * (n + int(rng.integers(0, 100_000))) + float(rng.random())
                got = naive_forecast(end, 15.0, y, horizon)
                if n < 8:
                    assert got is None
                    continue
                ts = end - 15.0 * np.arange(n - 1, -1, -1, dtype=np.float64)
                want = NaiveForecaster(residual_window=240).fit(ts, y).predict(horizon)
                assert got is not None and (got.start, got.step) == (want.start, want.step)
                np.testing.assert_array_equal(got.mean, want.mean)
                for level, q in want.quantiles.items():
                    np.testing.assert_array_equal(got.quantiles[level], q)


def test_evaluation_specs_take_a_cv_and_a_profile() -> None:
    from aiops.sim.profiles import load_profile
    from aiops.train.evaluate import EvalSetup, load_eval_workloads, parse_eval_options

    parts = parse_eval_options("synthetic:step@0.5,cv=3,profile=llama3-8b-a100-pull")
    assert (parts.source, parts.rate_scale, parts.cv, parts.profile) == (
        "synthetic:step", 0.5, 3.0, "llama3-8b-a100-pull")
    for bad in ("synthetic:step,cv=0", "synthetic:step,cv=x", "synthetic:step,seed=1",
                "synthetic:step@x"):
        with pytest.raises(InputError, match="evaluation workload"):
            parse_eval_options(bad)
    plain, bursty = load_eval_workloads(["synthetic:step@0.5",
                                         "synthetic:step@0.5,cv=3,profile=llama3-8b-a100-pull"])
    assert plain.profile is None and bursty.profile is not None
    assert bursty.profile.cold_start_s == 300.0
    setup = EvalSetup(load_profile("llama3-8b-a100"))
    assert setup.for_workload(bursty).profile.name == "llama3-8b-a100-pull"
    assert setup.for_workload(plain) is setup
    assert isinstance(bursty.workload, type(plain.workload))
    assert bursty.workload.meta["arrival_cv"] == 3.0


def test_clustered_arrivals_keep_the_rate_and_raise_the_dispersion() -> None:
    from aiops.sim.workloads import synthetic
    from aiops.train.mix import cluster_arrivals

    w = synthetic("step", seed=0, duration=3600.0)
    for cv in (1.0, 2.0, 4.0):
        c = cluster_arrivals(w, cv, np.random.default_rng(0))
        assert c.duration == w.duration and np.all(np.diff(c.arrivals) >= 0)
        assert len(c) == pytest.approx(len(w), rel=0.05)
        # The level follows the original within each 10 minutes: the step survives.
        np.testing.assert_allclose(c.rate(600.0), w.rate(600.0), rtol=0.15)
        gaps = np.diff(c.arrivals)
        assert gaps.std() / gaps.mean() == pytest.approx(max(cv, 1.3), rel=0.25)
        assert set(np.unique(c.generated_tokens)) <= set(np.unique(w.generated_tokens))


def test_evaluation_workload_must_not_be_a_training_file(tmp_path: Path) -> None:
    csv = write_rate_series(tmp_path / "series.csv")
    with pytest.raises(InputError, match="kept apart"):
        tiny_config(tmp_path / "o", csv, workloads=(str(csv),),
                    eval_workloads=(f"{csv}@2",))


def test_parse_range() -> None:
    assert parse_range("0.5:2", "x") == (0.5, 2.0)
    assert parse_range("3", "x") == (3.0, 3.0)
    for bad in ("0:1", "2:1", "a:b", "1:inf"):
        with pytest.raises(InputError):
            parse_range(bad, "x")


def test_mix_varies_episodes_reproducibly(tmp_path: Path) -> None:
    csv = write_rate_series(tmp_path / "series.csv", minutes=120)
    mix = WorkloadMix((*(f"synthetic:{n}" for n in SYNTHETIC), str(csv)),
                      MixConfig(episode_s=1200.0))
    first = [mix(np.random.default_rng(s)) for s in range(12)]
    again = [mix(np.random.default_rng(s)) for s in range(12)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.arrivals, b.arrivals)
        np.testing.assert_array_equal(a.context_tokens, b.context_tokens)
    assert all(w.duration == pytest.approx(1200.0) for w in first)
    rates = [len(w) / w.duration for w in first]
    assert max(rates) > 3 * min(rates)  # rate scaling and sources really vary the level
    assert len({w.meta["tokens"] for w in first}) > 1
    assert {w.meta["source"] for w in first} > {str(csv)}


def test_mix_replays_a_trace_with_its_own_tokens(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    lines += [f"2023-11-16 18:{i // 60:02d}:{i % 60:02d}.0,{100 + i},7" for i in range(600)]
    trace.write_text("\n".join(lines) + "\n")
    w = WorkloadMix((str(trace),), MixConfig(episode_s=300.0))(np.random.default_rng(1))
    assert w.duration <= 600.0
    assert set(np.unique(w.generated_tokens)) == {7}


def test_help_does_not_import_torch() -> None:
    assert heavy_imports("import aiops.train.cli, aiops.policy",
                         ("torch", "stable_baselines3")) == []


def test_miss_price_rises_below_the_target_and_falls_above_it() -> None:
    price = MissPrice(0.01, target=0.99, lr=0.1, bounds=(0.001, 0.1))
    price.observe(1000, 50)  # 95 %: five times the allowance
    up = price.update()
    assert up > 0.01
    price.observe(1000, 0)  # 100 %
    down = price.update()
    assert down < up
    price.update()  # nothing finished since: no information, no move
    assert price.price == down
    for _ in range(200):
        price.observe(100, 100)
        price.update()
    assert price.price == 0.1  # clipped at the upper bound


def test_selection_prefers_the_cheapest_checkpoint_that_meets_the_target() -> None:
    def rows(*pairs: tuple[float, float]) -> dict[str, dict[str, float]]:
        return {f"w{i}": {"gpu_hours": g, "slo_attainment": a, "score_usd": g * 2 + (1 - a)}
                for i, (g, a) in enumerate(pairs)}
    cheap_miss = rows((5.0, 0.995), (5.0, 0.97))
    dear_meet = rows((9.0, 0.995), (8.0, 0.991))
    cheaper_meet = rows((8.0, 0.999), (8.0, 0.99))
    closest_miss = rows((20.0, 0.989), (20.0, 0.999))  # 0.1 points short in total
    ranked = sorted([cheap_miss, dear_meet, cheaper_meet, closest_miss],
                    key=lambda r: selection_key(r, 0.99))
    assert ranked == [cheaper_meet, dear_meet, closest_miss, cheap_miss]
    # Without a target the score decides, cheap-and-missing included.
    assert min([cheap_miss, dear_meet], key=lambda r: selection_key(r, None)) is cheap_miss


def test_relative_selection_weighs_every_workload_alike() -> None:
    """A checkpoint that saves $20 on a large fleet but doubles a small one's bill wins
    on dollars and loses on the mean ratio to each workload's oracle."""
    table = {"big": {"oracle": {"score_usd": 100.0}, "hpa": {"score_usd": 150.0}},
             "small": {"oracle": {"score_usd": 10.0}, "hpa": {"score_usd": 12.0}},
             "no-oracle": {"hpa": {"score_usd": 8.0}, "keda": {"score_usd": 4.0},
                           "ppo": {"score_usd": 1.0}}}
    ref = reference_scores(table)
    assert ref == {"big": 100.0, "small": 10.0, "no-oracle": 4.0}  # never ppo's own row
    lean = {"big": {"score_usd": 120.0}, "small": {"score_usd": 11.0}}
    spends_small = {"big": {"score_usd": 100.0}, "small": {"score_usd": 25.0}}
    assert min([lean, spends_small], key=lambda r: selection_key(r, None)) is spends_small
    assert min([lean, spends_small], key=lambda r: selection_key(r, None, ref)) is lean
    assert selection_key(lean, None, ref)[1] == pytest.approx((1.2 + 1.1) / 2)


@pytest.mark.slow
def test_relative_selection_is_recorded_and_reproduced(tiny_policy: TrainedPolicy,
                                                       tmp_path: Path) -> None:
    meta = tiny_policy.meta
    assert "--select relative" in meta["command"]
    assert meta["evaluation"]["selection"] == "relative"
    history = meta["evaluation"]["history"]
    assert len(history) >= 2 and all(h["relative_score"] > 0 for h in history)
    best = min(history, key=lambda h: h["relative_score"])
    assert meta["training"]["best_checkpoint_timesteps"] == best["timesteps"]
    # The kept checkpoint's table row is the best history entry's evaluation.
    (spec,) = meta["evaluation"]["table"]
    assert meta["evaluation"]["table"][spec]["ppo"]["gpu_hours"] == best["gpu_hours"][spec]
    csv = tiny_policy.eval_csv
    with pytest.raises(InputError, match="--select"):
        tiny_config(tmp_path / "x", csv, selection="median")
    with pytest.raises(InputError, match="no baseline scored"):
        train_ppo(tiny_config(tmp_path / "y", csv, selection="relative", baselines=()))


@pytest.mark.slow
def test_training_with_an_slo_target_raises_the_price_while_it_misses(tmp_path: Path) -> None:
    """A tiny agent misses far more than 1 % of requests: the price of a miss must rise from
    where it started (and stay within its bounds), not merely differ from it."""
    csv = write_rate_series(tmp_path / "eval.csv", minutes=10)
    cfg = tiny_config(tmp_path / "p", csv, timesteps=512, eval_every=256,
                      reward=RewardConfig(slo_miss_usd=0.005, slo_target=0.99,
                                          price_bounds=(0.0005, 0.1)))
    report = train_ppo(cfg)
    reward = report.meta["training"]["reward"]
    history = report.meta["evaluation"]["history"]
    assert reward["slo_target"] == 0.99
    assert all(min(h["slo_attainment"].values()) < 0.99 for h in history)  # it does miss
    assert 0.005 < reward["final_slo_miss_usd"] <= 0.1
    assert [h["slo_miss_usd"] for h in history] == sorted(h["slo_miss_usd"] for h in history)
    assert "--slo-target 0.99" in report.meta["command"]


@pytest.mark.slow
def test_training_leaves_nothing_in_the_temporary_directory_even_when_interrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The best checkpoint waits in a scratch directory and stable-baselines3 makes a log
    directory per run unless given a logger: a run stopped by Ctrl-C must leave neither
    behind, or every training and every test session adds to the machine's /tmp."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    csv = write_rate_series(tmp_path / "eval.csv", minutes=10)
    seen: list[int] = []

    def interrupt(step: int, _stats: dict[str, Any]) -> None:
        seen.append(step)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_ppo(tiny_config(tmp_path / "o", csv), progress=interrupt)
    assert seen  # it was stopped inside learn(), not before
    # torch keeps one compile cache per user there (torchinductor_<user>), reused by every
    # run: not a run's leftovers.
    left = sorted(p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_"))
    assert left == []
    assert not (tmp_path / "o" / "model.zip").exists()


def test_slo_target_out_of_range_is_an_input_error() -> None:
    with pytest.raises(InputError, match="--slo-target"):
        RewardConfig(slo_target=1.0)


def test_evaluation_runs_above_the_setups_floor() -> None:
    """EvalSetup.min_replicas is the floor of every run: the HPA on a light load would
    shrink to one replica, and with a floor of 5 pays for five the whole hour."""
    from aiops.policy.hpa import HpaPolicy
    from aiops.sim.profiles import load_profile
    from aiops.sim.workloads import rate_scale, synthetic
    from aiops.train.evaluate import EvalSetup, EvalWorkload, run_on

    ew = EvalWorkload("synthetic:steady", rate_scale(synthetic("steady", seed=0,
                                                               duration=1800.0), 0.1, seed=0))
    profile = load_profile("llama3-8b-a100")
    free = run_on(HpaPolicy(), ew, EvalSetup(profile, with_forecast=False))
    floored = run_on(HpaPolicy(), ew, EvalSetup(profile, with_forecast=False, min_replicas=5))
    assert free.gpu_hours < 1.5 * 0.5  # a replica or so for half an hour
    assert floored.gpu_hours >= 5 * 0.5 - 1e-9
    with pytest.raises(InputError, match="min_replicas"):
        EvalSetup(profile, min_replicas=65)


# --------------------------------------------------------------------------- training inputs
def test_the_digest_follows_the_inputs_and_only_them(tmp_path: Path) -> None:
    copy = tmp_path / "aiops"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    base = training_inputs(copy)
    assert base == training_inputs()
    assert {"sim/cluster.py", "sim/kernel.py", "features.py", "train/ppo.py",
            "profiles/llama3-8b-a100.yaml", "policy/ppo.py"} <= set(base["files"])
    cluster = copy / "sim" / "cluster.py"
    text = cluster.read_bytes()
    cluster.write_bytes(text.replace(b"\n", b"\r\n"))  # a Windows checkout: same digest
    assert training_inputs(copy) == base
    cluster.write_bytes(text + b"# any edit counts\n")
    edited = training_inputs(copy)
    assert changed_inputs(base, edited) == ["sim/cluster.py"]
    assert edited["sha256"] != base["sha256"]
    cluster.write_bytes(text)
    (copy / "sim" / "cli.py").write_text("# printing only\n")  # not an input
    (copy / "sim" / "newmodel.py").write_text("X = 1\n")  # a new simulator module is
    assert changed_inputs(base, training_inputs(copy)) == ["sim/newmodel.py"]


@pytest.mark.slow
def test_every_module_training_runs_is_an_input(tmp_path: Path) -> None:
    """The modules a training run imports (in a fresh interpreter) are inputs, or listed as
    not being inputs with the reason, or interface code (CLI modules, errors): a new module
    the simulator starts to use cannot slip past the digest."""
    csv = write_rate_series(tmp_path / "eval.csv", minutes=10)
    script = f"""
import sys
from pathlib import Path
from aiops.train.mix import MixConfig
from aiops.train.ppo import PpoHyper, TrainConfig, train_ppo
train_ppo(TrainConfig(workloads=("synthetic:steady",), eval_workloads=({str(csv)!r},),
                      timesteps=128, output=Path({str(tmp_path / "p")!r}), seed=0,
                      mix=MixConfig(episode_s=600.0), n_envs=1, eval_every=128,
                      hyper=PpoHyper(n_steps=128, batch_size=128, n_epochs=1)))
root = Path(sys.modules["aiops"].__file__).parent
for name, mod in sorted(sys.modules.items()):
    if name.startswith("aiops") and getattr(mod, "__file__", None):
        print(Path(mod.__file__).relative_to(root).as_posix())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    used = set(out.stdout.split())
    interface = {"__init__.py", "errors.py", "cli.py"}  # version, messages, argument parsing
    uncovered = sorted(u for u in used - set(input_files())
                       if u not in NOT_INPUTS and Path(u).name not in interface)
    assert "sim/cluster.py" in used and uncovered == []


def test_the_digest_command_checks_and_records(tmp_path: Path) -> None:
    from aiops.train.digest import main

    (tmp_path / "meta.json").write_text(json.dumps({"command": "aiops train ..."}))
    assert main(["--check", str(tmp_path)]) == 1  # nothing recorded
    assert main(["--record", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["command"] == "aiops train ..."
    assert meta["training_inputs"] == training_inputs()
    assert main(["--check", str(tmp_path)]) == 0
    meta["training_inputs"]["files"]["sim/kernel.py"] = "0" * 64
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert main(["--check", str(tmp_path)]) == 1
    assert main(["--check", str(tmp_path / "missing")]) == 2


# --------------------------------------------------------------------------- shipped policy
def shipped_meta() -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((SHIPPED / "meta.json").read_text())
    return meta


def shipped_setup(meta: dict[str, Any]) -> Any:
    """The evaluation set-up ``aiops train`` used, read back from ``meta.json``."""
    from aiops.sim.cluster import SloSpec
    from aiops.sim.profiles import load_profile
    from aiops.train.evaluate import EvalSetup, load_eval_workloads

    reward = meta["training"]["reward"]
    setup = EvalSetup(load_profile(meta["profile"]["name"]),
                      max_replicas=meta["evaluation"]["max_replicas"],
                      interval_s=meta["training"]["interval_s"], slo=SloSpec(),
                      slo_miss_usd=reward["slo_miss_usd"],
                      slo_budget=reward.get("slo_budget", 0.0))
    evals = load_eval_workloads([w["spec"] for w in meta["evaluation"]["workloads"]])
    return setup, evals


RETRAIN = ("retrain policies/default with the command in its meta.json (policies/README.md): "
           "aiops train records the digest of its inputs")


def test_shipped_policy_was_trained_on_this_checkouts_inputs() -> None:
    """The simulator, features, training code and profiles the policy was trained on are
    the ones in this checkout (aiops/train/digest.py); on a mismatch the changed files are
    named. Not tied to the machine: file contents only."""
    recorded = shipped_meta().get("training_inputs")
    assert recorded, f"policies/default/meta.json records no training_inputs: {RETRAIN}"
    current = training_inputs()
    changed = changed_inputs(recorded, current)
    assert changed == [], f"changed since policies/default was trained: {changed}; {RETRAIN}"
    assert recorded["sha256"] == current["sha256"]


@pytest.mark.slow
def test_shipped_baselines_reproduce_exactly() -> None:
    """The baseline rows of the shipped evaluation table, rerun: no torch in them, so they
    are the same on every machine, to the last recorded digit."""
    from aiops.train.evaluate import baseline_table

    meta = shipped_meta()
    setup, evals = shipped_setup(meta)
    recorded = meta["evaluation"]["table"]
    names = [n for n in next(iter(recorded.values())) if n != "ppo"]
    assert names, "the shipped table has no baseline rows"
    table, _ = baseline_table(evals, setup, names)
    for spec, rows in table.items():
        for name, row in rows.items():
            assert row == recorded[spec][name], (spec, name)


# How far the shipped model's evaluation may move on another machine: the argmax of a
# network output flips only where two actions tie to the last bits, and over five kernel
# variants (MKL_CBWR=COMPATIBLE, MKL_ENABLE_INSTRUCTIONS=AVX2 and SSE4_2, ATEN_CPU_CAPABILITY
# default and avx2) on the development machine no decision flipped: every row matched to
# the last digit. The tolerance leaves room for a few flipped decisions, not for another
# policy: attainment within 0.002, GPU-hours within 1 %.
EVAL_ATTAINMENT_TOL = 0.002
EVAL_GPU_HOURS_REL_TOL = 0.01


@pytest.mark.slow
def test_shipped_model_reproduces_its_evaluation() -> None:
    """policies/default/model.zip holds the network meta.json describes (its weights
    digest) and, re-evaluated, scores what meta.json recorded for it."""
    from aiops.policy.ppo import PpoPolicy, build_fallback
    from aiops.train.evaluate import result_row, run_on

    meta = shipped_meta()
    assert weights_sha256(SHIPPED / "model.zip") == meta["weights_sha256"]
    model, pmeta = load_ppo_artifact(SHIPPED)  # also checks the file's own sha256
    setup, evals = shipped_setup(meta)
    for ew in evals:
        fallback, name = build_fallback(setup.context(ew.workload))
        agent = PpoPolicy(model, pmeta, fallback=fallback, fallback_name=name)
        row = result_row(run_on(agent, ew, setup), setup.profile, setup.slo_miss_usd,
                         setup.slo_budget)
        want = meta["evaluation"]["table"][ew.spec]["ppo"]
        assert row["requests"] == want["requests"], ew.spec
        assert abs(row["slo_attainment"] - want["slo_attainment"]) <= EVAL_ATTAINMENT_TOL, (
            ew.spec, row, want)
        assert math.isclose(row["gpu_hours"], want["gpu_hours"],
                            rel_tol=EVAL_GPU_HOURS_REL_TOL), (ew.spec, row, want)


# How far a rerun of the first evaluation period may land from meta.json on another
# machine: torch's kernels change the weights' last bits, and 50,000 steps of training grow
# that into a somewhat different network. Measured on the development machine, against the
# recorded entry, over four kernel variants (default, MKL_CBWR=COMPATIBLE,
# MKL_ENABLE_INSTRUCTIONS=AVX2 and SSE4_2): the score moved by up to 1.7 %, an attainment
# by up to 0.004, the total GPU-hours by up to 4.5 %. The tolerance is three times that:
# wide enough for another CPU, narrow enough that a different reward, simulator or library
# behaviour (which moves these figures by tens of percent) fails.
FIRST_PERIOD_SCORE_REL_TOL = 0.05
FIRST_PERIOD_ATTAINMENT_TOL = 0.012
FIRST_PERIOD_GPU_HOURS_REL_TOL = 0.15


@pytest.mark.slow
def test_first_evaluation_period_reproduces_within_tolerance(tmp_path: Path) -> None:
    """Rerun the shipped command up to its first evaluation (the libraries included, which
    the input digest does not cover) and compare with the recorded history entry."""
    meta = shipped_meta()
    args = shlex.split(meta["command"])
    assert args[:2] == ["aiops", "train"]
    opts = args[2:]
    every = opts[opts.index("--eval-every") + 1]
    opts[opts.index("--timesteps") + 1] = every
    opts[opts.index("--output") + 1] = str(tmp_path / "rerun")
    run_train_cli(["train", *opts])
    rerun = json.loads((tmp_path / "rerun" / "meta.json").read_text())
    first, again = meta["evaluation"]["history"][0], rerun["evaluation"]["history"][0]
    assert first["timesteps"] == again["timesteps"] == int(every)
    assert math.isclose(again["score_usd"], first["score_usd"],
                        rel_tol=FIRST_PERIOD_SCORE_REL_TOL), (again, first)
    for spec, want in first["slo_attainment"].items():
        assert abs(again["slo_attainment"][spec] - want) <= FIRST_PERIOD_ATTAINMENT_TOL, spec
    assert math.isclose(sum(again["gpu_hours"].values()), sum(first["gpu_hours"].values()),
                        rel_tol=FIRST_PERIOD_GPU_HOURS_REL_TOL), (again, first)


def test_the_evaluation_score_spends_the_error_budget_like_the_reward() -> None:
    """With a budget, only feasible misses beyond it are priced; without one the score is
    unchanged (every miss, infeasible ones included), so earlier meta.json still hold."""
    from types import SimpleNamespace

    from aiops.sim.profiles import load_profile
    from aiops.train.evaluate import score_usd

    profile = load_profile("llama3-8b-a100")
    res = SimpleNamespace(gpu_hours=2.0, requests=10_100, infeasible_requests=100,
                          slo_attainment=0.98, slo_attainment_feasible=0.99)
    gpu = 2.0 * profile.gpu_hour_usd
    assert score_usd(res, profile, 0.01) == pytest.approx(gpu + 0.01 * 0.02 * 10_100)  # type: ignore[arg-type]
    # 100 feasible misses, a budget of 50 of 10,000: 50 priced.
    assert score_usd(res, profile, 0.01, 0.005) == pytest.approx(gpu + 0.01 * 50)  # type: ignore[arg-type]
    assert score_usd(res, profile, 0.01, 0.02) == pytest.approx(gpu)  # type: ignore[arg-type]


def test_error_budget_options_are_checked_and_reproduced(tmp_path: Path) -> None:
    csv = write_rate_series(tmp_path / "eval.csv", minutes=10)
    cfg = tiny_config(tmp_path / "b", csv, reward=RewardConfig(slo_budget=0.005))
    assert "--slo-budget 0.005" in cfg.to_command()
    assert "--slo-budget" not in tiny_config(tmp_path / "c", csv).to_command()
    with pytest.raises(InputError, match="--slo-budget"):
        RewardConfig(slo_budget=0.6)
    with pytest.raises(InputError, match="give one"):
        RewardConfig(slo_budget=0.01, slo_target=0.99)
