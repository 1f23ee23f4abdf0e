"""aiops.sweep: independent jobs on a local process pool or a Ray cluster.

The Ray tests start a private local Ray instance (random ports, no dashboard) after the
process-pool runs they are compared with, and stop it at the end of the module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aiops.config import Config, parse_config
from aiops.errors import InputError
from aiops.policy.ppo import sha256_file
from aiops.report.build import Overrides, report_from_prometheus
from aiops.sim.profiles import load_profile
from aiops.sweep import (
    Runner,
    SimJob,
    WorkloadRef,
    parse_seeds,
    recommend_targets,
    run_jobs,
    run_sim_job,
    train_seeds,
)
from aiops.train.evaluate import EvalSetup

ROOT = Path(__file__).resolve().parents[1]
SETUP = EvalSetup(load_profile("llama3-8b-a100"), max_replicas=12, with_forecast=False)
STEADY = WorkloadRef("synthetic:steady", duration=240.0, seed=11)
SPECS = ["hpa:target=0.5", "hpa:target=0.9", "keda:threshold=2", "static:replicas=2"]


def sim_jobs() -> tuple[list[SimJob], list[str]]:
    """A small sweep: four settings, a spec that does not build, a workload that does not
    exist (its job raises where it runs)."""
    jobs = [SimJob(STEADY, s, SETUP) for s in [*SPECS, "nonsense"]]
    jobs.append(SimJob(WorkloadRef("/no/such/trace.csv"), "hpa", SETUP))
    return jobs, [f"{j.workload.spec} {j.spec}" for j in jobs]


def rows(outcomes: list[Any]) -> list[Any]:
    """Results without their wall-clock times (the only field that may differ)."""
    return [None if o.result is None else {k: v for k, v in o.result.items() if k != "wall_s"}
            for o in outcomes]


def load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("_bench_autoscale", ROOT / "bench" /
                                                  "autoscale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_bench_autoscale"] = module
    spec.loader.exec_module(module)
    return module


def bench_sweep(bench: Any, **where: Any) -> tuple[Any, Any]:
    """bench/autoscale.py's scheduler on a real (tiny) sweep: settings and a bisection."""
    text = "synthetic:steady,duration=180"
    jobs = [bench.Job(0, text, s, SETUP, "") for s in SPECS[:2]]
    search = bench.Search(0, text, SETUP, "", 8, "slo_attainment_feasible", 0.99)
    got_rows, searched = bench.run_all(jobs, searches=[search], **where)
    strip = lambda r: {k: v for k, v in r.items() if k != "wall_s"}  # noqa: E731
    return ({k: strip(r) for k, r in got_rows.items()},
            {k: [strip(p) for p in s["probes"]] for k, s in searched.items()})


@pytest.fixture(scope="module")
def pool_runs() -> dict[str, Any]:
    """The process-pool results the Ray runs must equal (run before Ray starts here)."""
    jobs, labels = sim_jobs()
    return {"jobs": run_jobs(run_sim_job, jobs, labels, title="pool", processes=2),
            "bench": bench_sweep(load_bench(), n_procs=2)}


@pytest.fixture(scope="module")
def ray_instance(pool_runs: dict[str, Any]) -> Iterator[str]:
    import ray  # the ray extra: scripts/setup.sh installs it

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
             object_store_memory=100 * 1024 * 1024)
    # Ray's workers cannot import this test module: ship its functions (boom) by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield "local"
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- local runs


def test_a_sweep_runs_every_job_and_reports_the_one_that_fails(
        pool_runs: dict[str, Any]) -> None:
    _, labels = sim_jobs()
    outcomes = pool_runs["jobs"]
    assert [o.label for o in outcomes] == labels  # in the order of the jobs
    assert all(o.ok for o in outcomes[:5]) and outcomes[4].result["error"].startswith(
        "policy 'nonsense'")
    bad = outcomes[5]
    assert not bad.ok and bad.result is None
    assert bad.label == "/no/such/trace.csv hpa" and "InputError" in (bad.error or "")
    assert "/no/such/trace.csv" in (bad.error or "")
    gpu = [o.result["gpu_hours"] for o in outcomes[:4]]
    assert gpu[0] > 0 and len(set(gpu)) == 4  # four settings, four different fleets


def test_the_pool_gives_what_one_process_gives(pool_runs: dict[str, Any]) -> None:
    jobs, labels = sim_jobs()
    inline = run_jobs(run_sim_job, jobs, labels, title="inline", processes=1)
    assert rows(inline) == rows(pool_runs["jobs"])
    assert [o.error is None for o in inline] == [o.error is None for o in pool_runs["jobs"]]


def boom(n: int) -> int:
    if n == 3:
        raise ValueError(f"job {n} cannot")
    return n * n


def die(n: int) -> int:
    if n == 2:
        os._exit(9)  # a worker killed mid-job: the pool breaks
    return n + 100


def test_an_exception_in_a_job_does_not_sink_the_rest() -> None:
    for processes in (1, 2):
        out = run_jobs(boom, list(range(6)), [f"n={n}" for n in range(6)], title="boom",
                       processes=processes)
        assert [o.result for o in out] == [0, 1, 4, None, 16, 25]
        assert out[3].label == "n=3" and out[3].error is not None
        assert out[3].error.startswith("ValueError: job 3 cannot")


def test_a_dead_worker_is_replaced_and_only_its_job_is_reported() -> None:
    out = run_jobs(die, list(range(6)), [f"n={n}" for n in range(6)], title="die",
                   processes=2)
    assert [o.result for o in out] == [100, 101, None, 103, 104, 105]
    assert "worker process died" in (out[2].error or "")


def nap_or_die(n: int) -> int:
    import time

    if n == 2:
        os._exit(9)
    time.sleep(0.3)
    return n


def test_after_a_worker_dies_the_lost_jobs_run_one_at_a_time() -> None:
    with Runner(nap_or_die, processes=2) as runner:
        assert runner.slots == 2
        tickets = {runner.submit(n, f"n={n}"): n for n in (2, 3)}
        ticket, first = runner.next_done()  # both lost; 2 then runs alone and dies again
        assert tickets[ticket] == 2 and "died while it ran" in (first.error or "")
        assert runner.slots == 1 and runner.in_flight == 1  # 3 is still on probation
        ticket, second = runner.next_done()
        assert tickets[ticket] == 3 and second.result == 3
        assert runner.slots == 2 and runner.in_flight == 0


def test_runner_arguments() -> None:
    with pytest.raises(InputError, match="give one of them"):
        Runner(boom, processes=2, ray="auto")
    with pytest.raises(InputError, match="--jobs must be >= 1"):
        Runner(boom, processes=0)


def test_ray_missing_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(InputError, match=r"aiops-autoscaler\[ray\]"), \
            Runner(boom, ray="auto"):
        pass


# --------------------------------------------------------------------------- Ray


def test_ray_gives_the_process_pool_results(pool_runs: dict[str, Any],
                                            ray_instance: str) -> None:
    jobs, labels = sim_jobs()
    on_ray = run_jobs(run_sim_job, jobs, labels, title="ray", ray=ray_instance)
    assert rows(on_ray) == rows(pool_runs["jobs"])
    assert not on_ray[5].ok and "/no/such/trace.csv" in (on_ray[5].error or "")
    assert on_ray[3].result is not None


def test_the_benchmarks_bisection_on_ray_equals_the_pool(pool_runs: dict[str, Any],
                                                         ray_instance: str) -> None:
    assert bench_sweep(load_bench(), n_procs=None, ray=ray_instance) == pool_runs["bench"]
    got_rows, probes = pool_runs["bench"]
    assert set(got_rows) == {(0, s) for s in SPECS[:2]} and probes[(0, "static")]


def test_ray_reports_a_failing_job_with_its_label(ray_instance: str) -> None:
    out = run_jobs(boom, list(range(5)), [f"n={n}" for n in range(5)], title="boom",
                   ray=ray_instance)
    assert [o.result for o in out] == [0, 1, 4, None, 16]
    assert out[3].label == "n=3" and (out[3].error or "").startswith("ValueError: job 3")


# --------------------------------------------------------------------------- recommend


def stub_source(config: Config) -> Any:
    """The report tests' stub Prometheus, built where the job runs (a pool worker)."""
    from test_report import StubPrometheus

    return StubPrometheus()


def test_recommend_over_many_targets_on_the_pool_equals_the_serial_report() -> None:
    from test_report import CONFIG, NOW, SINCE, StubPrometheus

    cfg = parse_config(CONFIG, environ={})
    over = Overrides(seed=2)
    serial = report_from_prometheus(cfg, StubPrometheus(), since_s=SINCE, now=NOW, over=over)
    pooled = recommend_targets(cfg, since_s=SINCE, now=NOW, processes=2, source=stub_source,
                               over=over)
    a, b = serial.as_json(), pooled.as_json()
    for key in ("generated_unix", "generated_at"):
        a.pop(key, None)
        b.pop(key, None)
    assert [t.name for t in pooled.targets] == [t.name for t in cfg.targets]
    assert a == b


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize(("text", "seeds"), [("0-3", [0, 1, 2, 3]), ("5", [5]),
                                             ("1,4,7", [1, 4, 7]), ("0-1,5", [0, 1, 5])])
def test_parse_seeds(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(("text", "problem"), [("3-1", "first <= last"), ("a", "a range"),
                                               ("1,1", "twice"), ("-2", "a range")])
def test_parse_seeds_errors(text: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        parse_seeds(text)


def test_seeds_train_on_the_pool_and_the_best_held_out_is_kept(tmp_path: Path) -> None:
    from test_train import tiny_config, write_rate_series

    from aiops.train.ppo import PpoHyper

    csv = write_rate_series(tmp_path / "eval.csv", minutes=10)
    cfg = tiny_config(tmp_path / "policy", csv, timesteps=256, eval_every=256,
                      hyper=PpoHyper(n_steps=128, batch_size=128, n_epochs=1))
    sweep = train_seeds(cfg, [0, 1], processes=2)
    assert not sweep.failed and set(sweep.keys) == {0, 1}
    assert sweep.kept == min(sweep.keys, key=lambda s: (sweep.keys[s], s))
    out = cfg.output
    for s in (0, 1):
        meta = json.loads((out / f"seed-{s}" / "meta.json").read_text())
        assert f"--seed {s}" in meta["command"] and f"seed-{s}" in meta["command"]
        assert meta["sha256"] == sha256_file(out / f"seed-{s}" / "model.zip")
    kept = json.loads((out / "meta.json").read_text())
    assert kept["sha256"] == sha256_file(out / "model.zip") == sweep.metas[sweep.kept]["sha256"]
    record = json.loads((out / "seeds.json").read_text())
    assert record["kept"] == sweep.kept and set(record["seeds"]) == {"0", "1"}
    # Each seed is the policy its own single run would give.
    single = json.loads((out / f"seed-{sweep.kept}" / "meta.json").read_text())
    assert single["weights_sha256"] == kept["weights_sha256"]


def test_train_cli_seed_options_are_checked(tmp_path: Path) -> None:
    from aiops.cli import app

    base = ["train", "--timesteps", "256", "--output", str(tmp_path / "x")]
    for extra, problem in ((["--seed", "1", "--seeds", "0-1"], "not both"),
                           (["--jobs", "2"], "give --seeds"),
                           (["--seeds", "2-1"], "first <= last")):
        res = CliRunner().invoke(app, [*base, *extra])
        assert res.exit_code == 2, res.output
        assert problem in res.output


def test_train_cli_with_seeds_keeps_one_and_says_which(tmp_path: Path) -> None:
    from aiops.cli import app

    out = tmp_path / "policy"
    res = CliRunner().invoke(app, [
        "train", "--workload", "synthetic:steady", "--eval-workload", "synthetic:step@0.5",
        "--timesteps", "256", "--output", str(out), "--n-envs", "1", "--eval-every", "256",
        "--net-arch", "16,16", "--seeds", "0-1", "--jobs", "2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    record = json.loads((out / "seeds.json").read_text())
    assert summary["kept_seed"] == record["kept"] and summary["failed_seeds"] == []
    assert summary["sha256"] == sha256_file(out / "model.zip") == sha256_file(
        out / f"seed-{record['kept']}" / "model.zip")
    scores = {int(s): r["key"][1] for s, r in record["seeds"].items()}
    assert record["kept"] == min(scores, key=lambda s: (scores[s], s))
