"""``aiops train``: train the PPO agent and write ``policies/NAME/{model.zip,meta.json}``.

Imports nothing heavy at module level: ``aiops --help`` loads this module, and torch plus
stable-baselines3 take seconds to import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

# Literal copies of aiops.train.ppo's defaults, so `aiops --help` imports no numpy.
DEFAULT_TRAIN = ["synthetic:diurnal-bursty", "synthetic:flash-crowd", "synthetic:step",
                 "synthetic:steady", "synthetic:weekly"]
DEFAULT_EVAL = ["synthetic:diurnal-bursty", "synthetic:flash-crowd@3", "synthetic:step@0.5"]


EXAMPLES = """Examples:

  aiops train --timesteps 200000 --output policies/mine

  aiops train --workload trace.csv --timesteps 500000 --output policies/trace
"""


def register(app: typer.Typer) -> None:
    app.command(name="train", epilog=EXAMPLES)(train)


def train(
    timesteps: Annotated[int, typer.Option(help="Environment steps (15 s decisions) to train.")],
    output: Annotated[Path, typer.Option(help="Directory for model.zip and meta.json, "
                                               "e.g. policies/NAME.")],
    workload: Annotated[list[str] | None, typer.Option(
        help="Training workload: a request trace or rate-series CSV, synthetic:NAME or "
             "servegen:DIR (repeatable). Default: every synthetic generator.")] = None,
    eval_workload: Annotated[list[str] | None, typer.Option(
        help="Evaluation workload, SPEC[@RATE_SCALE][,cv=C][,profile=NAME] (repeatable; cv "
             "redraws the arrivals with that inter-arrival CV, profile runs it on another "
             "profile); never one of the training files. Default: held-out synthetic "
             "realisations.")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of everything random in training.", show_default="0")] = None,
    seeds: Annotated[str | None, typer.Option(
        help="Train once per seed instead (0-3, or 1,4,7), each into OUTPUT/seed-N, and copy "
             "the best by the held-out rule (--select, --slo-target) to OUTPUT.")] = None,
    jobs: Annotated[int | None, typer.Option(
        help="With --seeds: seeds trained at once in local processes.",
        show_default="one per CPU")] = None,
    ray: Annotated[str | None, typer.Option(
        help="With --seeds: train on a Ray cluster instead (auto, HOST:PORT or "
             "ray://HOST:PORT; pip install 'aiops-autoscaler[ray]').")] = None,
    profile: Annotated[list[str] | None, typer.Option(
        help="Model/hardware profile name or YAML path (repeatable: each training episode "
             "draws one, e.g. a 90 s and a 300 s cold start; evaluation runs on the first).",
        show_default="llama3-8b-a100")] = None,
    rate_scale: Annotated[str, typer.Option(
        help="Multiply the load by this factor, as in simulate and recommend; a range "
             "LOW:HIGH draws one factor per episode (log-uniform).")] = "0.1:4",
    time_stretch: Annotated[str, typer.Option(
        help="Per-episode time stretch range LOW:HIGH (log-uniform; level unchanged).")]
    = "0.5:2",
    n_envs: Annotated[int, typer.Option(help="Environments stepped together.")] = 8,
    eval_every: Annotated[int, typer.Option(
        help="Evaluate every this many steps (>= 1).")] = 50_000,
    net_arch: Annotated[str, typer.Option(help="Hidden layer widths, e.g. 64,64.")] = "64,64",
    slo_miss_usd: Annotated[float, typer.Option(
        help="Price of one request that misses its SLO, in the reward and the score.")]
    = 0.005,
    slo_target: Annotated[float | None, typer.Option(
        help="SLO attainment to train for (e.g. 0.99): the miss price then adapts until the "
             "training episodes reach it, and the cheapest checkpoint reaching it on every "
             "evaluation workload is kept.")] = None,
    slo_miss_usd_max: Annotated[float, typer.Option(
        help="With --slo-target: the highest the adapted miss price may go.")] = 0.1,
    fixed_batch: Annotated[bool, typer.Option(
        help="Train without the batch head: the profile's default batch size throughout "
             "(the ablation of batch tuning).")] = False,
    slo_budget: Annotated[float, typer.Option(
        help="Error budget: this share of each episode's requests may miss the SLO for "
             "free; only misses beyond it cost --slo-miss-usd (0.01 = '99 % at the least "
             "cost').")] = 0.0,
    select: Annotated[str, typer.Option(
        help="Checkpoint kept (without --slo-target): 'usd', the lowest total score in "
             "dollars, or 'relative', the lowest mean of each evaluation workload's score "
             "over the oracle's, so every workload counts alike.")] = "usd",
    ent_coef: Annotated[float, typer.Option(
        help="PPO entropy bonus: higher keeps exploring, lower lets the agent commit.")]
    = 0.01,
    n_steps: Annotated[int, typer.Option(
        help="Steps each environment collects per PPO update (x --n-envs per update).")]
    = 256,
    learning_rate: Annotated[float, typer.Option(help="Adam step size of PPO's updates.")]
    = 3e-4,
    lr_decay: Annotated[bool, typer.Option(
        help="Lower the step size linearly to a tenth of --learning-rate over the run.")]
    = False,
    start_bias: Annotated[float, typer.Option(
        help="Logit added at the start to 'factor 1' and the default batch size, so the "
             "agent starts as the base policy (0: every action equally likely).")] = 0.0,
) -> None:
    """Train a PPO autoscaling agent in the simulator; keep the best evaluated checkpoint."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from aiops.cli import check_output_dir, fail_input
    from aiops.errors import InputError
    from aiops.train.mix import MixConfig
    from aiops.train.ppo import PpoHyper, RewardConfig, TrainConfig, parse_range, train_ppo

    console = Console(stderr=True)
    try:
        arch = tuple(int(x) for x in net_arch.split(",") if x.strip())
    except ValueError:
        fail_input(InputError(f"--net-arch {net_arch!r} is not a list of integers"))
    try:
        _check_arguments(eval_every=eval_every, slo_miss_usd_max=slo_miss_usd_max,
                         slo_miss_usd=slo_miss_usd)
        check_output_dir(output, "--output")
        seed_list = _seed_list(seed, seeds, jobs, ray)
        cfg = TrainConfig(
            workloads=tuple(workload or DEFAULT_TRAIN),
            eval_workloads=tuple(eval_workload or DEFAULT_EVAL),
            timesteps=timesteps, output=output, seed=seed_list[0],
            profile=(profile or ["llama3-8b-a100"])[0],
            more_profiles=tuple((profile or [])[1:]),
            mix=MixConfig(rate_scale=parse_range(rate_scale, "--rate-scale"),
                          time_stretch=parse_range(time_stretch, "--time-stretch")),
            n_envs=n_envs, eval_every=eval_every, net_arch=arch,
            reward=RewardConfig(slo_miss_usd=slo_miss_usd, slo_target=slo_target,
                                price_bounds=(min(0.0005, slo_miss_usd), slo_miss_usd_max),
                                slo_budget=slo_budget),
            fixed_batch=fixed_batch, selection=select,
            hyper=PpoHyper(ent_coef=ent_coef, n_steps=n_steps, learning_rate=learning_rate,
                           lr_decay=lr_decay, start_bias=start_bias),
        )
        if seeds is not None:
            _train_seeds(console, cfg, seed_list, jobs=jobs, ray=ray)
            return
        with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[sps]} steps/s"),
                      TextColumn("best ${task.fields[best]}"),
                      TextColumn("miss ${task.fields[price]}"),
                      TimeElapsedColumn(), TimeRemainingColumn(),
                      console=console) as bar:
            task = bar.add_task("train", total=timesteps, sps="-", best="-", price="-")

            def on_progress(n: int, fields: dict[str, Any]) -> None:
                best = fields.get("best_usd")
                price = fields.get("slo_miss_usd")
                bar.update(task, completed=min(n, timesteps),
                           sps=f"{fields['steps_per_s']:.0f}",
                           best="-" if best is None else f"{best:.2f}",
                           price=f"{slo_miss_usd:g}" if price is None else f"{price:.4f}")

            report = train_ppo(cfg, progress=on_progress, log=console.print)
    except InputError as err:
        fail_input(err)
        return
    _print_table(console, report.meta)
    console.print(f"wrote {report.output}/model.zip and meta.json "
                  f"({report.wall_s:.0f} s, {report.steps_per_s:.0f} steps/s)")
    typer.echo(json.dumps({"output": str(report.output), "sha256": report.meta["sha256"],
                           "timesteps": report.meta["training"]["timesteps"],
                           "steps_per_s": round(report.steps_per_s, 1),
                           "wall_s": round(report.wall_s, 1)}))


def _seed_list(seed: int | None, seeds: str | None, jobs: int | None,
               ray: str | None) -> list[int]:
    from aiops.errors import InputError
    from aiops.sweep import parse_seeds

    if seeds is None:
        if jobs is not None or ray is not None:
            raise InputError("--jobs and --ray spread the runs of --seeds; give --seeds")
        return [0 if seed is None else seed]
    if seed is not None:
        raise InputError("give --seed N for one run or --seeds 0-3 for several, not both")
    return parse_seeds(seeds)


def _train_seeds(console: Any, cfg: Any, seeds: list[int], *, jobs: int | None,
                 ray: str | None) -> None:
    """``--seeds``: one training per seed as a sweep (:func:`aiops.sweep.train_seeds`)."""
    from rich.table import Table

    from aiops.sweep import train_seeds

    sweep = train_seeds(cfg, seeds, processes=jobs, ray=ray)
    _print_table(console, sweep.metas[sweep.kept])
    rule = "--slo-target" if cfg.reward.slo_target is not None else f"--select {cfg.selection}"
    table = Table(title=f"seeds (kept: the lowest held-out key by {rule})")
    for col in ("seed", "kept step", "held-out score", "kept"):
        table.add_column(col, justify="right")
    for s in seeds:
        if s in sweep.failed:
            table.add_row(str(s), "", "failed: " + sweep.failed[s].splitlines()[0][:60], "")
            continue
        step = sweep.metas[s]["training"]["best_checkpoint_timesteps"]
        table.add_row(str(s), f"{step:,}", _key_text(sweep.keys[s], cfg),
                      "✓" if s == sweep.kept else "")
    console.print(table)
    console.print(f"wrote {cfg.output}/seed-N for each seed and copied seed {sweep.kept} to "
                  f"{cfg.output} (seeds.json says why)")
    typer.echo(json.dumps({"output": str(cfg.output), "kept_seed": sweep.kept,
                           "sha256": sweep.metas[sweep.kept]["sha256"],
                           "failed_seeds": sorted(sweep.failed)}))


def _key_text(key: tuple[float, float, float], cfg: Any) -> str:
    """A seed's held-out key (aiops.train.ppo.selection_key) in words."""
    if cfg.reward.slo_target is not None:
        return (f"reaches it, {key[1]:.2f} GPU-h" if key[0] == 0
                else f"short by {key[1]:.4f}, {key[2]:.2f} GPU-h")
    return f"{key[1]:.3f}x the reference" if cfg.selection == "relative" else f"${key[1]:.2f}"


def _check_arguments(*, eval_every: int, slo_miss_usd: float,
                     slo_miss_usd_max: float) -> None:
    """What the training configuration does not check itself: values that would make it
    loop forever or fail only at the end."""
    import math

    from aiops.errors import InputError

    if eval_every < 1:
        # 0 would evaluate after every step: a run that never ends.
        raise InputError(f"--eval-every must be >= 1 step, got {eval_every}")
    if not math.isfinite(slo_miss_usd):
        raise InputError(f"--slo-miss-usd must be a finite number >= 0, got {slo_miss_usd}")
    if not (math.isfinite(slo_miss_usd_max) and slo_miss_usd_max > 0):
        raise InputError(f"--slo-miss-usd-max must be a number > 0, got {slo_miss_usd_max}")


def _print_table(console: Any, meta: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="evaluation (held-out workloads; best checkpoint)")
    for col in ("workload", "policy", "GPU-hours", "SLO %", "score $"):
        table.add_column(col, justify="left" if col in ("workload", "policy") else "right")
    for spec, rows in meta["evaluation"]["table"].items():
        for name, row in rows.items():
            table.add_row(spec, name, f"{row['gpu_hours']:.2f}",
                          f"{100 * row['slo_attainment']:.2f}", f"{row['score_usd']:.2f}")
    console.print(table)
    for note in meta["evaluation"]["notes"]:
        console.print(f"note: {note}")
