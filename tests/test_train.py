"""`aiops train` for the PPO agent: artifact contents, the workload mix, the command line."""

from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import typer
from importcheck import heavy_imports
from typer.testing import CliRunner

from aiops.errors import InputError
from aiops.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from aiops.policy.ppo import DEFAULT_HEADROOM, load_ppo_artifact, sha256_file
from aiops.sim.workloads import SYNTHETIC
from aiops.train.cli import register
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


def write_rate_series(path: Path, minutes: int = 20, level: float = 6.0) -> Path:
    """A small rate-series CSV (one row a minute): tests make their own data."""
    rows = ["timestamp,value"]
    for i in range(minutes):
        value = level * (1.0 + 0.5 * np.sin(i / 3.0))
        rows.append(f"2024-01-01 {i // 60:02d}:{i % 60:02d}:00,{value:.3f}")
    path.write_text("\n".join(rows) + "\n")
    return path


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


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("train")
    csv = write_rate_series(root / "eval.csv")
    report = train_ppo(tiny_config(root / "policy", csv))
    return report.output, report.meta


def test_short_training_writes_a_loadable_policy_with_full_meta(
        trained: tuple[Path, dict[str, object]]) -> None:
    out, _ = trained
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sha256"] == sha256_file(out / "model.zip")
    assert (out / "model.zip").stat().st_size < 1_000_000
    assert meta["feature_schema_version"] == FEATURE_SCHEMA_VERSION
    assert meta["feature_names"] == list(FEATURE_NAMES)
    assert meta["action_space"]["headroom"] == list(DEFAULT_HEADROOM)
    assert meta["action_space"]["batch_sizes"] == [16, 32, 64, 128, 256]
    assert meta["profile"]["name"] == "llama3-8b-a100"
    assert meta["training"]["workloads"] == ["synthetic:steady", "synthetic:flash-crowd"]
    assert meta["training"]["seed"] == 3
    assert meta["training"]["timesteps"] >= 512
    assert meta["training"]["steps_per_s"] > 0
    assert [w["spec"] for w in meta["evaluation"]["workloads"]] == \
        [str(out.parent / "eval.csv")]
    for lib in ("torch", "stable-baselines3", "gymnasium", "numpy", "python"):
        assert meta["libraries"][lib]
    rng = meta["training_range"]
    assert len(rng["min"]) == len(FEATURE_NAMES) == len(rng["max"])
    assert all(lo <= hi for lo, hi in zip(rng["min"], rng["max"], strict=True))
    assert rng["max_arrival_rate"] > 0
    # The evaluation table has the agent and the baseline on every evaluation workload.
    table = meta["evaluation"]["table"]
    for rows in table.values():
        assert set(rows) == {"ppo", "hpa"}
        for row in rows.values():
            assert 0.0 <= row["slo_attainment"] <= 1.0 and row["gpu_hours"] > 0
    assert len(meta["evaluation"]["history"]) >= 2
    model, loaded = load_ppo_artifact(out)
    assert loaded.sha256 == meta["sha256"]
    assert model.act(np.zeros(len(FEATURE_NAMES), dtype=np.float32))[1] in range(5)


def test_meta_records_the_command_that_reproduces_the_run(
        trained: tuple[Path, dict[str, object]]) -> None:
    out, meta = trained
    args = shlex.split(str(meta["command"]))
    assert args[:2] == ["aiops", "train"]
    value = {a: b for a, b in itertools.pairwise(args) if a.startswith("--")}
    assert value["--timesteps"] == "512" and value["--seed"] == "3"
    assert value["--output"] == str(out)
    assert args.count("--workload") == 2 and "synthetic:flash-crowd" in args


def test_same_seed_same_model(tmp_path: Path) -> None:
    csv = write_rate_series(tmp_path / "eval.csv", minutes=10)
    kw = {"timesteps": 256, "eval_every": 256, "hyper": PpoHyper(n_steps=128, batch_size=128,
                                                                 n_epochs=1)}
    a = train_ppo(tiny_config(tmp_path / "a", csv, **kw))
    b = train_ppo(tiny_config(tmp_path / "b", csv, **kw))
    assert a.meta["sha256"] != ""
    ma, _ = load_ppo_artifact(a.output)
    mb, _ = load_ppo_artifact(b.output)
    obs = np.random.default_rng(0).uniform(0, 1, (50, len(FEATURE_NAMES))).astype(np.float32)
    assert [ma.act(o) for o in obs] == [mb.act(o) for o in obs]
    # The file's sha256 carries sb3's wall-clock fields; the weights digest is the same.
    assert a.meta["weights_sha256"] == b.meta["weights_sha256"]
    assert a.meta["weights_sha256"] == weights_sha256(b.output / "model.zip")
    c = train_ppo(tiny_config(tmp_path / "c", csv, **{**kw, "seed": 4}))
    assert c.meta["weights_sha256"] != a.meta["weights_sha256"]


def test_cli_trains_and_prints_a_summary(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.command(name="noop")(lambda: None)  # two commands, so `train` is a subcommand
    csv = write_rate_series(tmp_path / "eval.csv", minutes=10)
    out = tmp_path / "cli-policy"
    res = CliRunner().invoke(app, [
        "train", "--workload", "synthetic:steady", "--eval-workload", str(csv),
        "--timesteps", "256", "--output", str(out), "--n-envs", "1", "--eval-every", "256",
        "--net-arch", "16,16"])
    assert res.exit_code == 0, res.output
    assert (out / "model.zip").exists()
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["sha256"] == sha256_file(out / "model.zip")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["network"]["net_arch"] == [16, 16]


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


def test_relative_selection_is_recorded_and_reproduced(tmp_path: Path) -> None:
    csv = write_rate_series(tmp_path / "eval.csv", minutes=10)
    report = train_ppo(tiny_config(tmp_path / "r", csv, selection="relative",
                                   baselines=("hpa", "oracle")))
    meta = report.meta
    assert "--select relative" in meta["command"]
    assert meta["evaluation"]["selection"] == "relative"
    history = meta["evaluation"]["history"]
    assert all(h["relative_score"] > 0 for h in history)
    best = min(history, key=lambda h: h["relative_score"])
    assert meta["training"]["best_checkpoint_timesteps"] == best["timesteps"]
    with pytest.raises(InputError, match="--select"):
        tiny_config(tmp_path / "x", csv, selection="median")
    with pytest.raises(InputError, match="no baseline scored"):
        train_ppo(tiny_config(tmp_path / "y", csv, selection="relative", baselines=()))


def test_training_with_an_slo_target_records_the_adapted_price(tmp_path: Path) -> None:
    csv = write_rate_series(tmp_path / "eval.csv", minutes=10)
    cfg = tiny_config(tmp_path / "p", csv, timesteps=512, eval_every=256,
                      reward=RewardConfig(slo_miss_usd=0.005, slo_target=0.99))
    report = train_ppo(cfg)
    reward = report.meta["training"]["reward"]
    assert reward["slo_target"] == 0.99
    assert reward["final_slo_miss_usd"] is not None
    assert reward["final_slo_miss_usd"] != 0.005  # it adapted
    assert "--slo-target 0.99" in report.meta["command"]
    assert all("slo_miss_usd" in h for h in report.meta["evaluation"]["history"])


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


def test_shipped_default_reproduces_from_its_command(tmp_path: Path) -> None:
    """policies/default must come from the command in its meta.json: rerun the first
    evaluation period of that command and compare what it evaluated. This fails when the
    simulator, the training loop or the evaluation changed after the policy was trained
    (or when it was trained from uncommitted code): retrain it with that command."""
    import torch

    shipped = json.loads((Path(__file__).resolve().parents[1] / "policies" / "default"
                          / "meta.json").read_text())
    trained_on = shipped["libraries"]["torch_cpu_capability"]
    here = torch.backends.cpu.get_cpu_capability()
    if trained_on != here:
        pytest.skip(f"trained with torch's {trained_on} kernels, this CPU runs {here}: "
                    "training reproduces bit for bit only on the same kernels")
    args = shlex.split(shipped["command"])
    assert args[:2] == ["aiops", "train"]
    opts = args[2:]
    every = opts[opts.index("--eval-every") + 1]
    opts[opts.index("--timesteps") + 1] = every
    opts[opts.index("--output") + 1] = str(tmp_path / "rerun")
    app = typer.Typer()
    register(app)
    app.command(name="noop")(lambda: None)
    res = CliRunner().invoke(app, ["train", *opts])
    assert res.exit_code == 0, res.output
    rerun = json.loads((tmp_path / "rerun" / "meta.json").read_text())
    first, again = shipped["evaluation"]["history"][0], rerun["evaluation"]["history"][0]
    assert first["timesteps"] == again["timesteps"] == int(every)
    assert again == first, ("policies/default does not reproduce from its meta.json command: "
                            "retrain it with that command")


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
