"""`aiops simulate` and the oracle bound, end to end on small workloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from importcheck import heavy_imports
from typer.testing import CliRunner

from aiops.cli import app
from aiops.sim.profiles import load_profile
from aiops.sim.runner import compare_policies
from aiops.sim.workloads import synthetic

PROFILE = load_profile()


@pytest.mark.parametrize("name", ["flash-crowd", "step"])
def test_oracle_is_never_costlier_at_equal_or_better_slo(name: str) -> None:
    w = synthetic(name, seed=2, duration=2400.0)
    specs = ["oracle", "hpa", "hpa:target=0.5", "keda", "keda:threshold=2", "static",
             "static:replicas=2", "static:replicas=4", "static:replicas=8",
             "static:replicas=12", "static:replicas=16"]
    results = {k: v.result for k, v in compare_policies(w, PROFILE, specs).outputs.items()}
    oracle = results.pop("oracle")
    assert oracle.unfinished == 0
    compared = [s for s, r in results.items()
                if r.slo_attainment_feasible >= oracle.slo_attainment_feasible]
    assert compared  # the bound is tested against at least one policy
    for spec in compared:
        assert oracle.gpu_hours <= results[spec].gpu_hours + 1e-9, spec


def test_simulate_cli_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["simulate", "--workload", "synthetic:steady",
                                   "--duration", "10m", "--policy", "hpa",
                                   "--policy", "keda:threshold=5", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "keda:threshold=5" in res.output and "GPU-hours" in res.output
    data = json.loads(out.read_text())
    assert data["profile"] == "llama3-8b-a100"
    assert set(data["results"]) == {"hpa", "keda:threshold=5"}
    keys = {"gpu_hours", "slo_attainment", "ttft_p50_s", "ttft_p99_s", "tpot_p99_s",
            "scale_ups", "scale_downs", "max_replicas", "requests"}
    for r in data["results"].values():
        assert keys <= set(r)
        assert r["requests"] == data["workload"]["requests"]


def test_same_seed_same_figures() -> None:
    a = compare_policies(synthetic("flash-crowd", seed=5, duration=900.0), PROFILE, ["hpa"])
    b = compare_policies(synthetic("flash-crowd", seed=5, duration=900.0), PROFILE, ["hpa"])
    c = compare_policies(synthetic("flash-crowd", seed=6, duration=900.0), PROFILE, ["hpa"])
    assert a.as_json() == b.as_json()
    assert a.as_json()["results"] != c.as_json()["results"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workload", "synthetic:nope"], "unknown synthetic workload"),
        (["--policy", "nope"], "unknown policy"),
        (["--policy", "hpa:target=abc"], "not a number"),
        (["--profile", "nope"], "unknown profile"),
        (["--duration", "soon"], "not a duration"),
        (["--workload", "/no/such/file.csv"], "file.csv"),
        (["--routing", "random"], "--routing must be one of least-outstanding"),
        (["--forecast-model", "crystal-ball"], "--forecast-model: unknown forecaster"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["simulate", "--duration", "5m", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_bad_trace_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "trace.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                   "2023-11-16 18:00:00.0,10,5\n2023-11-16 18:00:01.0,-3,5\n")
    res = CliRunner().invoke(app, ["simulate", "--workload", str(bad)])
    assert res.exit_code == 2
    assert "trace.csv" in res.output and "line 3" in res.output


def test_help_does_not_import_heavy_libraries() -> None:

    statement = ("from aiops.cli import app\nfrom typer.testing import CliRunner\n"
                 "CliRunner().invoke(app, ['--help'])")
    assert heavy_imports(statement,
                         ("torch", "prophet", "stable_baselines3", "numba", "pyod")) == []


def test_simulate_reports_attainment_over_feasible_requests(tmp_path: Path) -> None:
    # Two of 60 prompts (9k tokens) cannot be prefilled within TTFT 0.5 s on any fleet.
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(60):
        ctx = 9000 if i in (10, 40) else 400
        rows.append(f"2023-11-16 18:{i // 60:02d}:{i % 60:02d}.0,{ctx},50")
    trace = tmp_path / "trace.csv"
    trace.write_text("\n".join(rows) + "\n")
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["simulate", "--workload", str(trace), "--policy",
                                   "static:replicas=2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "SLO feas. %" in res.output
    assert "2 of 60 could not" in " ".join(res.output.split())
    r = json.loads(out.read_text())["results"]["static:replicas=2"]
    assert r["infeasible_requests"] == 2
    assert r["slo_attainment_feasible"] == 1.0
    assert r["slo_attainment"] == pytest.approx(58 / 60, abs=1e-5)


def test_routing_changes_only_how_requests_are_spread(tmp_path: Path) -> None:
    """Vidur's router (least waiting, ties to the first replica) leaves the light load on one
    replica; the default least-outstanding router spreads it, so per-request latency differs
    on the same fixed fleet while the requests and the GPU-hours do not."""
    rows = {}
    for routing in ("least-outstanding", "least-waiting"):
        out = tmp_path / f"{routing}.json"
        res = CliRunner().invoke(app, ["simulate", "--workload", "synthetic:steady",
                                       "--duration", "10m", "--policy", "static:replicas=4",
                                       "--routing", routing, "--json", str(out)])
        assert res.exit_code == 0, res.output
        rows[routing] = json.loads(out.read_text())["results"]["static:replicas=4"]
    a, b = rows["least-outstanding"], rows["least-waiting"]
    assert a["requests"] == b["requests"] and a["gpu_hours"] == b["gpu_hours"]
    assert a["tpot_p99_s"] != b["tpot_p99_s"]


def test_a_fixed_fleet_is_ready_from_the_start() -> None:
    """A fixed fleet never waits for a cold start: its replicas serve from the first
    decision, and no scale-up is counted."""
    wl = synthetic("steady", seed=1, duration=1800.0)
    out = compare_policies(wl, PROFILE, ["static:replicas=5"]).outputs["static:replicas=5"]
    assert out.result.scale_ups == 0
    assert out.timeline.ready[0] == 5 and (out.timeline.ready == 5).all()
