"""bench/autoscale.py: the selection of the cheapest setting, the fixed-fleet bisection,
the floor searches, the best no-foresight reference, the verdicts, and the CLI."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "autoscale.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_autoscale_under_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load()
FEAS = "slo_attainment_feasible"


def point(spec: str, gpu: float, feas: float, att: float | None = None) -> dict[str, Any]:
    return {"spec": spec, "gpu_hours": gpu, FEAS: feas,
            "slo_attainment": feas if att is None else att}


def test_cheapest_is_the_fewest_gpu_hours_among_points_reaching_the_goal() -> None:
    points = [
        point("hpa:target=0.1", 26.4, 0.9999),
        point("hpa:target=0.2", 16.4, 0.9950),
        point("hpa:target=0.3", 13.7, 0.9740),  # cheaper, but below the goal
        point("hpa:target=0.5", 16.1, 0.9900),  # exactly the goal counts
        point("hpa:target=0.7", 10.5, 0.9100),
    ]
    best = bench.cheapest_meeting(points, FEAS, 0.99)
    assert best is not None and best["spec"] == "hpa:target=0.5"
    # The metric decides: over all requests only target=0.1 reaches 99%.
    points[0]["slo_attainment"] = 0.992
    for p in points[1:]:
        p["slo_attainment"] = p[FEAS] - 0.01
    assert bench.cheapest_meeting(points, "slo_attainment", 0.99)["spec"] == "hpa:target=0.1"


def test_cheapest_is_none_when_no_point_reaches_the_goal() -> None:
    points = [point("keda:threshold=1", 15.5, 0.66), point("keda:threshold=5", 6.3, 0.68),
              {"spec": "keda:threshold=9", "error": "boom"}]
    assert bench.cheapest_meeting(points, FEAS, 0.99) is None
    assert bench.cheapest_meeting([], FEAS, 0.99) is None


def test_cheapest_breaks_ties_on_attainment_and_skips_failed_runs() -> None:
    points = [{"spec": "hpa:target=0.2", "error": "boom"},
              point("hpa:target=0.3", 5.0, 0.991), point("hpa:target=0.4", 5.0, 0.995)]
    assert bench.cheapest_meeting(points, FEAS, 0.99)["spec"] == "hpa:target=0.4"


@pytest.mark.parametrize(
    ("mine", "ref", "ok"),
    [
        ((5.0, 0.995), (6.0, 0.999), True),   # both meet the goal: cost decides
        ((7.0, 0.999), (6.0, 0.995), False),
        ((9.0, 0.995), (6.0, 0.950), True),   # only ppo meets the goal
        ((5.0, 0.950), (6.0, 0.995), False),  # only predictive does
        ((5.0, 0.900), (6.0, 0.950), True),   # neither: cheaper, so not dominated
        ((7.0, 0.900), (6.0, 0.950), False),  # neither: costlier and worse
    ],
)
def test_not_worse_puts_the_goal_before_the_cost(
        mine: tuple[float, float], ref: tuple[float, float], ok: bool) -> None:
    assert bench.not_worse(mine[0], mine[1], ref[0], ref[1], 0.99)[0] is ok


def test_summary_reports_cheapest_defaults_savings_and_the_goal() -> None:
    rows = {
        "hpa:target=0.3": point("hpa:target=0.3", 12.0, 0.995),
        "hpa:target=0.7": point("hpa:target=0.7", 10.0, 0.93),
        "keda:threshold=2": point("keda:threshold=2", 30.0, 0.70),
        "keda": point("keda", 40.0, 0.68),
        "predictive": point("predictive", 11.0, 0.991),
        "ppo": point("ppo", 10.5, 0.992),
        "oracle": point("oracle", 9.5, 0.992),
    }
    out = bench.summarise_workload(
        rows, sweeps={"hpa": [(0.3, "hpa:target=0.3"), (0.7, "hpa:target=0.7")],
                      "keda": [(2.0, "keda:threshold=2")]},
        defaults={"hpa": "hpa:target=0.7", "keda": "keda"},
        metric=FEAS, goal=0.99, oracle_margin=0.15)
    assert out["cheapest"]["hpa"]["spec"] == "hpa:target=0.3"
    assert out["cheapest"]["hpa"]["value"] == 0.3
    assert out["cheapest"]["keda"] is None
    assert out["default"]["keda"]["spec"] == "keda"
    vs = out["versus"]["ppo"]
    assert vs["hpa cheapest"]["gpu_hours_saved_pct"] == pytest.approx(12.5)
    assert vs["keda cheapest"] is None
    assert vs["keda default"]["gpu_hours_saved_pct"] == pytest.approx(73.8)
    assert vs["predictive"]["slo_diff_pts"] == pytest.approx(0.1)
    assert "predictive" not in out["versus"]["predictive"]
    goal = out["goal"]["ppo"]
    assert goal["holds"]
    assert set(goal["checks"]) == {"meets_slo", "cheaper_than_reactive", "near_oracle",
                                   "not_worse_than_predictive"}
    # 10.5 GPU-h is within 15% of the oracle's 9.5; at 5% it would not be.
    strict = bench.goal_checks(rows["ppo"], reactive_points=rows.values(),
                               oracle=rows["oracle"], predictive=rows["predictive"],
                               metric=FEAS, goal=0.99, oracle_margin=0.05)
    assert strict["checks"]["near_oracle"]["pass"] is False and not strict["holds"]
    # Cheaper than every reactive setting reaching the goal, or vacuous when none does.
    none_reach = bench.goal_checks(rows["ppo"], reactive_points=[rows["hpa:target=0.7"]],
                                   oracle=None, predictive=None, metric=FEAS, goal=0.99,
                                   oracle_margin=0.15)
    assert none_reach["checks"]["cheaper_than_reactive"]["pass"] is True
    assert none_reach["checks"]["near_oracle"]["pass"] is None
    assert not none_reach["holds"]


def test_a_ppo_variant_is_judged_like_ppo() -> None:
    """``--ppo-variant ppo:slo_miss_usd=0.05`` gets its own row, savings (predictive among
    them) and the four checks, without changing ppo's."""
    variant = "ppo:slo_miss_usd=0.05"
    rows = {
        "hpa:target=0.3": point("hpa:target=0.3", 12.0, 0.995),
        "keda": point("keda", 40.0, 0.68),
        "predictive": point("predictive", 11.0, 0.991),
        "ppo": point("ppo", 8.0, 0.95),
        variant: point(variant, 11.5, 0.996),
        "oracle": point("oracle", 9.5, 0.992),
    }
    kw: dict[str, Any] = {"sweeps": {"hpa": [(0.3, "hpa:target=0.3")], "keda": []},
                          "defaults": {"hpa": "hpa:target=0.3", "keda": "keda"},
                          "metric": FEAS, "goal": 0.99, "oracle_margin": 0.15}
    out = bench.summarise_workload(rows, planners=(*bench.PLANNERS, variant), **kw)
    assert out["results"][variant]["gpu_hours"] == 11.5
    assert out["versus"][variant]["predictive"]["gpu_hours_saved_pct"] == pytest.approx(-4.5)
    checks = out["goal"][variant]["checks"]
    assert checks["meets_slo"]["pass"] and checks["cheaper_than_reactive"]["pass"]
    assert checks["not_worse_than_predictive"]["pass"] is False  # both reach it; dearer
    assert out["goal"]["ppo"]["checks"]["meets_slo"]["pass"] is False
    assert variant not in bench.summarise_workload(rows, **kw)["results"]


def fleet(passes_from: int | None,
          calls: list[int] | None = None) -> Callable[[int], dict[str, Any]]:
    """A fake fixed fleet: monotone GPU-hours, attainment >= 99% from ``passes_from`` up."""
    def attainment_of(n: int) -> dict[str, Any]:
        if calls is not None:
            calls.append(n)
        ok = passes_from is not None and n >= passes_from
        return point(f"static:replicas={n}", float(n), 0.995 if ok else 0.9 - 1.0 / (n + 1))
    return attainment_of


@pytest.mark.parametrize(("max_n", "answer"),
                         [(64, 1), (64, 2), (64, 10), (64, 33), (64, 63), (64, 64),
                          (64, None), (1, 1), (1, None), (5, 5), (100, 37)])
def test_bisection_finds_the_smallest_fleet_reaching_the_goal(max_n: int,
                                                              answer: int | None) -> None:
    calls: list[int] = []
    found, probes = bench.smallest_meeting(fleet(answer, calls), max_n, FEAS, 0.99)
    if answer is None:
        assert found is None
        assert max_n in calls  # "none" is only said after running the largest fleet
    else:
        assert found is not None and found["replicas"] == answer
        assert found["spec"] == f"static:replicas={answer}"
        assert answer in calls and (answer == 1 or answer - 1 in calls)  # both sides seen
    assert len(calls) == len(set(calls)) <= math.ceil(math.log2(max_n)) + 1
    assert [p["replicas"] for p in probes] == calls
    assert all(p["replicas"] == int(p["spec"].split("=")[1]) for p in probes)


def test_bisection_is_exact_for_every_threshold_and_within_the_probe_bound() -> None:
    for max_n in range(1, 40):
        assert bench.probe_bound(max_n) == math.ceil(math.log2(max_n)) + 1
        for answer in [*range(1, max_n + 1), None]:
            calls: list[int] = []
            found, _ = bench.smallest_meeting(fleet(answer, calls), max_n, FEAS, 0.99)
            assert (None if found is None else found["replicas"]) == answer, (max_n, answer)
            assert len(calls) <= bench.probe_bound(max_n)
    # 64 replicas: 7 runs at most, not 64.
    assert bench.probe_bound(64) == 7


def test_bisection_treats_a_failed_run_as_missing_the_goal() -> None:
    def attainment_of(n: int) -> dict[str, Any]:
        if n == 32:
            return {"spec": f"static:replicas={n}", "error": "boom"}
        return point(f"static:replicas={n}", float(n), 0.995 if n >= 40 else 0.5)
    found, probes = bench.smallest_meeting(attainment_of, 64, FEAS, 0.99)
    assert found is not None and found["replicas"] == 40
    assert probes[0] == {"replicas": 32, "spec": "static:replicas=32", "error": "boom"}
    with pytest.raises(bench.InputError):
        bench.smallest_meeting(attainment_of, 0, FEAS, 0.99)


def test_best_reference_is_the_cheapest_hindsight_setting_reaching_the_goal() -> None:
    oracle = point("oracle", 5.85, 0.9915)
    hpa = [{"value": 0.3, **point("hpa:target=0.3", 9.0, 0.995)},
           {"value": 0.7, **point("hpa:target=0.7", 4.0, 0.93)}]  # cheapest, but misses
    keda = [{"value": 5.0, **point("keda:threshold=5", 12.0, 0.999)}]
    static = [{"replicas": 10, **point("static:replicas=10", 9.55, 0.9926)}]
    kw: dict[str, Any] = {"metric": FEAS, "goal": 0.99, "oracle_margin": 0.15}
    best = bench.best_reference({"hpa": hpa, "keda": keda, "static": static}, oracle, **kw)
    assert (best["kind"], best["spec"]) == ("hpa", "hpa:target=0.3")
    assert best["over_oracle_pct"] == pytest.approx(53.8)
    assert best["oracle_gap_reachable"] is False
    # The fixed fleet wins once it is the cheapest; KEDA when it is the only one left.
    static[0]["gpu_hours"] = 6.5
    best = bench.best_reference({"hpa": hpa, "keda": keda, "static": static}, oracle, **kw)
    assert (best["kind"], best["spec"]) == ("static", "static:replicas=10")
    assert best["oracle_gap_reachable"] is True  # 6.5 <= 1.15 x 5.85
    assert bench.best_reference({"hpa": hpa[1:], "keda": keda}, oracle, **kw)["kind"] == "keda"
    none = bench.best_reference({"hpa": hpa[1:], "keda": [], "static": []}, oracle, **kw)
    assert none["row"] is None and none["spec"] is None and none["kind"] is None
    assert none["over_oracle_pct"] is None and none["oracle_gap_reachable"] is None


@pytest.mark.parametrize(("best_gpu", "oracle_gpu", "expected"),
                         [(6.5, 5.85, True), (5.0, 4.0, True), (6.8, 5.85, False),
                          (None, 5.85, None), (6.5, None, None)])
def test_oracle_gap_reachable(best_gpu: float | None, oracle_gpu: float | None,
                              expected: bool | None) -> None:
    best = None if best_gpu is None else point("static:replicas=7", best_gpu, 0.995)
    oracle = None if oracle_gpu is None else point("oracle", oracle_gpu, 0.992)
    # A margin of 25% so that the limit of 4.0 (5.0: exactly at it, counts) is exact in
    # binary; 6.5 vs 5.85 is within it, 6.8 vs 5.85 is not (+16.2% > 15%, checked below).
    margin = 0.25 if oracle_gpu == 4.0 else 0.15
    assert bench.oracle_gap_reachable(best, oracle, margin) is expected


def test_summary_adds_the_static_reference_without_changing_the_checks() -> None:
    rows = {
        "hpa:target=0.3": point("hpa:target=0.3", 20.0, 0.97),
        "keda:threshold=2": point("keda:threshold=2", 30.0, 0.70),
        "predictive": point("predictive", 8.0, 0.991),
        "ppo": point("ppo", 6.0, 0.992),
        "oracle": point("oracle", 5.85, 0.9915),
    }
    probes = [{"replicas": n, **point(f"static:replicas={n}", n * 0.955, att)}
              for n, att in ((32, 0.999), (16, 0.995), (8, 0.978), (12, 0.9938),
                             (10, 0.9926), (9, 0.985))]
    kw: dict[str, Any] = {
        "sweeps": {"hpa": [(0.3, "hpa:target=0.3")], "keda": [(2.0, "keda:threshold=2")]},
        "defaults": {"hpa": "hpa:target=0.3", "keda": "keda:threshold=2"},
        "metric": FEAS, "goal": 0.99, "oracle_margin": 0.15}
    out = bench.summarise_workload(
        rows, static={"found": probes[4], "probes": probes, "max_replicas": 64}, **kw)
    assert out["static"]["spec"] == "static:replicas=10" and out["static"]["replicas"] == 10
    assert [p["replicas"] for p in out["static"]["probes"]] == [32, 16, 8, 12, 10, 9]
    best = out["best_reference"]
    assert best["spec"] == "static:replicas=10" and best["over_oracle_pct"] == pytest.approx(63.2)
    assert out["versus"]["ppo"]["static cheapest"]["gpu_hours_saved_pct"] == pytest.approx(37.2)
    assert "static cheapest" in out["versus"]["predictive"]
    for name in ("ppo", "predictive"):
        goal = out["goal"][name]
        assert set(goal["checks"]) >= {"meets_slo", "cheaper_than_reactive", "near_oracle"}
        assert "oracle_gap_reachable" not in goal["checks"]
        assert goal["oracle_gap_reachable"] is False and "+63.2%" in goal["oracle_gap_detail"]
    # ppo holds (6.0 <= 1.15 x 5.85) although no no-foresight reference comes that close:
    # the information does not enter the verdict.
    assert out["goal"]["ppo"]["holds"]
    plain = bench.summarise_workload(rows, **kw)
    assert plain["goal"]["ppo"]["checks"] == out["goal"]["ppo"]["checks"]
    assert plain["static"] is None and "static cheapest" not in plain["versus"]["ppo"]
    # Without the fixed fleet nothing reaches the goal here.
    assert plain["best_reference"]["row"] is None
    assert plain["goal"]["ppo"]["oracle_gap_reachable"] is None


def test_run_all_interleaves_the_static_searches_with_the_jobs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler, with the simulation faked: every job's row comes back, each
    workload's search ends on its own answer, and probes never land among the rows."""
    passes_from = {0: 3, 1: None}

    def fake_run(job: Any) -> dict[str, Any]:
        index = int(job.workload.spec[1:])
        if job.spec.startswith("static:"):
            return fleet(passes_from[index])(int(job.spec.split("=")[1]))
        return point(job.spec, 1.0, 0.99)

    monkeypatch.setattr(bench, "_cost", lambda job: 1.0)
    setup = bench.EvalSetup(bench.load_profile("llama3-8b-a100"), max_replicas=16)
    jobs = [bench.Job(i, f"w{i}", spec, setup, "") for i in (0, 1) for spec in ("hpa", "ppo")]
    searches = [bench.Search(i, f"w{i}", setup, "", 16, FEAS, 0.99) for i in (0, 1)]
    rows, searched = bench.run_all(jobs, 1, searches, fn=fake_run)
    assert set(rows) == {(i, s) for i in (0, 1) for s in ("hpa", "ppo")}
    assert set(searched) == {(0, "static"), (1, "static")}
    static = {i: searched[(i, "static")] for i in (0, 1)}
    assert static[0]["found"]["replicas"] == 3 and static[1]["found"] is None
    assert all(len(s["probes"]) <= bench.probe_bound(16) for s in static.values())
    assert static[1]["probes"][-1]["replicas"] == 16
    assert bench.run_all(jobs, 1, fn=fake_run)[1] == {}


def floored(passes_from: int | None, spec: str = "ppo",
            calls: list[int] | None = None) -> Callable[[int], dict[str, Any]]:
    """A fake policy above floor n: GPU-hours grow with the floor, attainment >= 99% from
    ``passes_from`` up."""
    def run(n: int) -> dict[str, Any]:
        if calls is not None:
            calls.append(n)
        ok = passes_from is not None and n >= passes_from
        return point(spec, 5.0 + n, 0.995 if ok else 0.95)
    return run


def test_floor_search_probes_nothing_when_the_plain_run_meets_the_goal() -> None:
    calls: list[int] = []
    found, probes = bench.drive(bench.floor_steps(point("ppo", 6.0, 0.992), 9, FEAS, 0.99),
                                floored(2, calls=calls))
    assert calls == [] and probes == []
    assert found == {"min_replicas": 1, **point("ppo", 6.0, 0.992)}


@pytest.mark.parametrize("answer", [2, 3, 4, 5, 6, None])
def test_floor_search_is_bounded_by_the_smallest_fixed_fleet(answer: int | None) -> None:
    """Floors 2..N_static: floor 1 is the plain run (it missed), and a floor at the fixed
    fleet's size costs at least that fleet."""
    static = {"found": {"replicas": 6, **point("static:replicas=6", 6.0, 0.995)}}
    hi = bench.floor_ceiling(static, 64)
    assert hi == 6
    calls: list[int] = []
    found, probes = bench.drive(bench.floor_steps(point("ppo", 5.0, 0.95), hi, FEAS, 0.99),
                                floored(answer, calls=calls))
    assert calls and all(2 <= n <= 6 for n in calls)
    assert len(calls) <= bench.probe_bound(6, 2) == 4
    assert [p["min_replicas"] for p in probes] == calls
    if answer is None:
        assert found is None and calls[-1] == 6  # "none" only after the ceiling ran
    else:
        assert found is not None and found["min_replicas"] == answer
        assert answer == 2 or answer - 1 in calls  # both sides seen


def test_floor_search_goes_up_to_max_replicas_without_a_fixed_fleet_answer() -> None:
    assert bench.floor_ceiling({"found": None, "probes": []}, 16) == 16  # none reached it
    assert bench.floor_ceiling(None, 16) == 16  # --no-static
    calls: list[int] = []
    found, _ = bench.drive(bench.floor_steps(None, 16, FEAS, 0.99), floored(13, calls=calls))
    assert found is not None and found["min_replicas"] == 13 and max(calls) <= 16
    calls.clear()
    found, _ = bench.drive(bench.floor_steps(None, 16, FEAS, 0.99), floored(None, calls=calls))
    assert found is None and calls[-1] == 16
    # A fixed fleet of 1 reaches the goal: no floor above the plain run is worth a probe.
    assert bench.drive(bench.floor_steps(None, 1, FEAS, 0.99), floored(2)) == (None, [])


def test_a_floor_job_runs_its_policy_above_the_floor() -> None:
    setup = bench.EvalSetup(bench.load_profile("llama3-8b-a100"), max_replicas=16)
    search = bench.Search(0, "synthetic:steady,duration=120", setup, "", 16, FEAS, 0.99,
                          policy="hpa", runs="hpa:target=0.7")
    job = search.job(5)
    assert (job.spec, job.key) == ("hpa:target=0.7", "hpa:target=0.7@floor=5")
    assert job.setup.min_replicas == 5 and job.setup.max_replicas == 16
    assert setup.min_replicas == 1  # the base setup is left alone
    static = bench.Search(0, job.workload, setup, "", 16, FEAS, 0.99).job(5)
    assert (static.spec, static.key, static.setup.min_replicas) == (
        "static:replicas=5", "static:replicas=5", 1)
    # The floor reaches the simulation: the fleet never drops below it.
    _, row = bench.run_job(bench.Search(0, job.workload, setup, "", 16, FEAS, 0.99,
                                        policy="hpa:target=1").job(6))
    assert "error" not in row and row["max_replicas"] >= 6


def test_run_all_starts_a_floor_search_after_its_static_search_and_plain_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Workload 0: a fleet of 6 reaches the goal, hpa needs floor 4, ppo reaches it
    plainly; workload 1: no fleet up to 16 does, hpa needs floor 13."""
    static_from = {0: 6, 1: None}
    hpa_floor = {0: 4, 1: 13}
    order: list[tuple[int, str]] = []

    def fake_run(job: Any) -> dict[str, Any]:
        index, floor = int(job.workload.spec[1:]), job.setup.min_replicas
        order.append((index, job.spec + (f"@floor={floor}" if floor > 1 else "")))
        if job.spec.startswith("static:"):
            return fleet(static_from[index])(int(job.spec.split("=")[1]))
        if job.spec == "ppo":
            return point("ppo", 3.0, 0.995)
        return floored(hpa_floor[index], job.spec)(floor)

    monkeypatch.setattr(bench, "_cost", lambda job: 1.0)
    setup = bench.EvalSetup(bench.load_profile("llama3-8b-a100"), max_replicas=16)
    jobs = [bench.Job(i, f"w{i}", spec, setup, "") for i in (0, 1)
            for spec in ("hpa:target=0.7", "ppo", "oracle")]
    searches = [bench.Search(i, f"w{i}", setup, "", 16, FEAS, 0.99) for i in (0, 1)]
    searches += [bench.Search(i, f"w{i}", setup, "", 16, FEAS, 0.99, policy=p, runs=r)
                 for i in (0, 1) for p, r in (("hpa", "hpa:target=0.7"), ("ppo", "ppo"))]
    rows, searched = bench.run_all(jobs, 1, searches, fn=fake_run)
    assert set(rows) == {(j.index, j.spec) for j in jobs}  # probes never among the rows
    for i, ceiling in ((0, 6), (1, 16)):
        hpa = searched[(i, "hpa")]
        assert hpa["spec"] == "hpa:target=0.7" and hpa["max_floor"] == ceiling
        assert hpa["found"]["min_replicas"] == hpa_floor[i]
        assert all(2 <= p["min_replicas"] <= ceiling for p in hpa["probes"])
        first = order.index((i, f"hpa:target=0.7@floor={hpa['probes'][0]['min_replicas']}"))
        last_static = max(k for k, (j, key) in enumerate(order)
                          if j == i and key.startswith("static:"))
        assert first > last_static and first > order.index((i, "hpa:target=0.7"))
        assert searched[(i, "ppo")]["found"]["min_replicas"] == 1
        assert searched[(i, "ppo")]["probes"] == []
    with pytest.raises(ValueError, match="plain run"):
        bench.run_all(jobs[:1], 1, searches[3:4], fn=fake_run)  # ppo on w0, not run


def floor_rows() -> dict[str, Any]:
    return {
        "hpa:target=0.7": point("hpa:target=0.7", 7.0, 0.95),
        "keda:threshold=2": point("keda:threshold=2", 30.0, 0.70),
        "predictive": point("predictive", 9.7, 0.972),
        "ppo": point("ppo", 7.9, 0.978),
        "oracle": point("oracle", 6.94, 0.9991),
    }


FLOOR_KW: dict[str, Any] = {
    "sweeps": {"hpa": [(0.7, "hpa:target=0.7")], "keda": [(2.0, "keda:threshold=2")]},
    "defaults": {"hpa": "hpa:target=0.7", "keda": "keda:threshold=2"},
    "metric": FEAS, "goal": 0.99, "oracle_margin": 0.15}


def floor_result(spec: str, n: int, gpu: float, feas: float) -> dict[str, Any]:
    found = {"min_replicas": n, **point(spec, gpu, feas)}
    return {"spec": spec, "found": found, "probes": [found], "max_floor": 6}


@pytest.mark.parametrize(("ppo_gpu", "cheaper"), [(8.56, True), (9.5, False)])
def test_a_floor_tuned_hpa_is_a_reference_a_floor_tuned_ppo_must_beat(
        ppo_gpu: float, cheaper: bool) -> None:
    """diurnal-bursty-like numbers: hpa+floor reaches 99% at 9.0 GPU-h, under the fixed
    fleet's 9.01; ppo+floor at 8.56 beats it, at 9.5 it does not."""
    floors = {"hpa": floor_result("hpa:target=0.7", 6, 9.0, 0.9950),
              "predictive": floor_result("predictive", 5, 9.39, 0.9994),
              "ppo": floor_result("ppo", 5, ppo_gpu, 0.9991)}
    static = {"found": {"replicas": 6, **point("static:replicas=6", 9.01, 0.9995)},
              "probes": [], "max_replicas": 64}
    out = bench.summarise_workload(floor_rows(), static=static, floors=floors, **FLOOR_KW)
    assert out["floors"]["hpa"]["min_replicas"] == 6
    assert out["floors"]["ppo"]["found"]["gpu_hours"] == ppo_gpu
    best = out["best_reference"]
    assert (best["kind"], best["spec"]) == ("hpa+floor", "hpa:target=0.7")
    assert best["row"]["min_replicas"] == 6
    assert "hpa+floor" in out["versus"]["ppo"] and "hpa+floor" in out["versus"]["ppo+floor"]
    assert set(out["results"]) >= {"ppo+floor", "predictive+floor"}
    assert "hpa+floor" not in out["results"]  # a reference, not a planner
    goal = out["goal"]["ppo+floor"]
    assert goal["checks"]["meets_slo"]["pass"]
    check = goal["checks"]["cheaper_than_reactive"]
    assert check["pass"] is cheaper and "hpa:target=0.7 + floor 6" in check["detail"]
    # Judged against predictive with its tuned floor (9.39 GPU-h), not plain predictive.
    assert "vs 9.39 GPU-h" in goal["checks"]["not_worse_than_predictive"]["detail"]
    assert goal["checks"]["not_worse_than_predictive"]["pass"] is cheaper
    # 8.56 > 1.15 x 6.94: not near the oracle, as measured on diurnal-bursty.
    assert goal["checks"]["near_oracle"]["pass"] is False and not goal["holds"]
    assert out["versus"]["ppo+floor"]["predictive+floor"] is not None
    # Plain ppo keeps plain predictive as its reference; every planner's reactive points
    # now include the floor-tuned HPA (it reaches the goal where plain HPA does not).
    plain = out["goal"]["ppo"]["checks"]
    assert "vs 9.70 GPU-h" in plain["not_worse_than_predictive"]["detail"]
    assert plain["cheaper_than_reactive"]["pass"] is True  # 7.9 < 9.0, though it misses
    without = bench.summarise_workload(floor_rows(), static=static, **FLOOR_KW)
    assert "vacuous" in without["goal"]["ppo"]["checks"]["cheaper_than_reactive"]["detail"]
    assert without["best_reference"]["kind"] == "static" and without["floors"] == {}
    assert "ppo+floor" not in without["goal"]


def test_a_floor_search_finding_nothing_adds_no_planner_row() -> None:
    floors = {"ppo": {"spec": "ppo", "found": None, "max_floor": 64,
                      "probes": [{"min_replicas": 64, **point("ppo", 50.0, 0.97)}]},
              "hpa": {"spec": "hpa:target=0.7", "found": None, "probes": [],
                      "max_floor": 64}}
    out = bench.summarise_workload(floor_rows(), floors=floors, **FLOOR_KW)
    assert out["floors"]["ppo"]["min_replicas"] is None and "ppo+floor" not in out["goal"]
    assert out["versus"]["ppo"]["hpa+floor"] is None
    assert out["best_reference"]["row"] is None


def test_floor_search_takes_only_autoscalers(capsys: pytest.CaptureFixture[str]) -> None:
    for spec in ("oracle", "static:replicas=3", ""):
        with pytest.raises(SystemExit) as exit_:
            bench.main(["--floor-search", spec])
        assert exit_.value.code == 2
    assert "--floor-search takes" in capsys.readouterr().err
    assert all(bench.floor_searchable(s) for s in ("hpa:target=0.5", "keda", "predictive",
                                                    "ppo:slo_miss_usd=0.05"))


def test_sweep_specs_extend_the_base_spec() -> None:
    assert bench.with_param("hpa", "target", 0.5) == "hpa:target=0.5"
    assert bench.with_param("hpa:metric=kv", "target", 0.5) == "hpa:metric=kv,target=0.5"
    with pytest.raises(bench.InputError, match="sets target"):
        bench.with_param("hpa:target=0.4", "target", 0.5)


@pytest.mark.slow
def test_cli_runs_a_tiny_sweep_and_writes_valid_json(tmp_path: Path) -> None:
    out = tmp_path / "autoscale.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--workload", "synthetic:steady,duration=300",
         "--hpa-targets", "0.3,0.7", "--keda-thresholds", "2", "--jobs", "2",
         "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0  # the frontier, next to the JSON
    assert report["benchmark"] == "autoscale" and report["slo_metric"] == "feasible"
    # 2 HPA targets (the default 0.7 among them) + 1 KEDA threshold + the KEDA default
    # + predictive, ppo and the oracle, + the fixed-fleet probes (at most 7 up to 64),
    # + the floor probes of hpa, predictive and ppo (none for a plain run reaching 99%).
    assert 1 <= report["static_runs"] <= 7
    assert report["runs"] == 7 + report["static_runs"] + report["floor_runs"]
    assert report["floor_search"] == ["hpa", "predictive", "ppo"]
    (w,) = report["workloads"].values()
    assert [p["value"] for p in w["sweep"]["hpa"]] == [0.3, 0.7]
    assert w["default"]["hpa"]["spec"] == "hpa:target=0.7"
    assert w["default"]["keda"]["spec"] == "keda"
    assert {k for k in w["results"] if not k.endswith("+floor")} == {
        "predictive", "ppo", "oracle"}
    for name in ("hpa", "keda"):
        expected = bench.cheapest_meeting(w["sweep"][name], FEAS, 0.99)
        assert w["cheapest"][name] == expected
        if expected is None:
            assert f"{name}: none reaches 99%" in proc.stdout
    static = w["static"]
    assert len(static["probes"]) == report["static_runs"]
    found = static["found"]
    passing = [p for p in static["probes"] if p[FEAS] >= 0.99]
    if found is None:
        assert not passing and "static: no fleet up to 64" in proc.stdout
    else:
        assert found == min(passing, key=lambda p: p["replicas"])
        assert static["spec"] == f"static:replicas={found['replicas']}"
        assert all(p[FEAS] < 0.99 for p in static["probes"] if p["replicas"] < found["replicas"])
        assert "static ≥99% (hindsight)" in proc.stdout
        assert w["best_reference"]["row"] is not None
    assert set(w["best_reference"]) >= {"kind", "spec", "row", "over_oracle_pct",
                                        "oracle_gap_reachable"}
    assert "oracle_gap_reachable" in w["goal"]["predictive"]
    assert "best no-foresight" in proc.stdout
    for row in (*w["sweep"]["hpa"], *w["results"].values(), *static["probes"]):
        assert "error" not in row, row
        assert row["requests"] == w["workload"]["requests"]
        assert row["infeasible_requests"] == w["infeasible_requests"]
        assert 0.0 <= row["slo_attainment"] <= row[FEAS] <= 1.0
    assert set(w["goal"]["ppo"]["checks"]) >= {"meets_slo", "near_oracle"}
    # rich wraps titles to the table's width: compare with the line breaks undone.
    assert "GPU-hours saved" in " ".join(proc.stdout.split())
    floors = w["floors"]
    assert set(floors) == {"hpa", "predictive", "ppo"}
    assert floors["hpa"]["spec"] == "hpa:target=0.7"  # the HPA default's run, not a new one
    assert report["floor_runs"] == sum(len(f["probes"]) for f in floors.values())
    ceiling = 64 if found is None else found["replicas"]
    for policy, floor in floors.items():
        plain = (w["default"]["hpa"] if policy == "hpa" else w["results"][policy])
        assert floor["max_floor"] == ceiling
        assert all(2 <= p["min_replicas"] <= ceiling and p["spec"] == floor["spec"]
                   for p in floor["probes"])
        if plain[FEAS] >= 0.99:  # floor 1 is the plain run: nothing to probe
            assert floor["probes"] == [] and floor["min_replicas"] == 1
            assert floor["found"] == {"min_replicas": 1, **plain}
        elif floor["found"] is not None:
            n = floor["min_replicas"]
            assert floor["found"][FEAS] >= 0.99 and floor["found"] in floor["probes"]
            assert all(p[FEAS] < 0.99 for p in floor["probes"] if p["min_replicas"] < n)
            assert "floor ≥99% (hindsight)" in proc.stdout
        if policy != "hpa" and floor["found"] is not None:
            assert f"{policy}+floor" in w["goal"]
            assert w["results"][f"{policy}+floor"] == floor["found"]
    assert "hpa+floor" in w["versus"]["ppo"] and "hpa+floor" not in w["results"]
    assert "ppo + floor [N]" in proc.stdout


def test_no_floor_search_runs_every_autoscaler_above_a_floor_of_one(tmp_path: Path) -> None:
    out = tmp_path / "autoscale.json"
    assert bench.main(["--workload", "synthetic:steady,duration=60", "--hpa-targets", "0.7",
                       "--keda-thresholds", "2", "--no-static", "--no-floor-search",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (w,) = report["workloads"].values()
    assert report["floor_search"] == [] and report["floor_runs"] == 0 and w["floors"] == {}
    assert set(w["goal"]) == {"predictive", "ppo"}


def test_no_static_skips_the_fixed_fleet(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "autoscale.json"
    assert bench.main(["--workload", "synthetic:steady,duration=120", "--hpa-targets", "0.7",
                       "--keda-thresholds", "2", "--no-static", "--floor-search", "hpa",
                       "--max-replicas", "8", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (w,) = report["workloads"].values()
    assert report["static_runs"] == 0 and w["static"] is None
    # Without a fixed-fleet answer the floors go up to --max-replicas.
    assert set(w["floors"]) == {"hpa"} and w["floors"]["hpa"]["max_floor"] == 8
    assert report["floor_runs"] == len(w["floors"]["hpa"]["probes"])
    assert "static cheapest" not in w["versus"]["predictive"]
    assert "static:replicas" not in capsys.readouterr().out


def test_a_workloads_seed_option_reruns_one_row_of_the_default_table() -> None:
    """Synthetic workloads are seeded by position; seed=N takes position N's realisation,
    so the default run's diurnal day (fourth) can be rerun alone."""
    import numpy as np

    from aiops.errors import InputError

    parse = bench._load_sibling("ppo").parse_workload
    alone = parse("synthetic:diurnal-bursty,seed=3,duration=1800", 0).workload
    fourth = parse("synthetic:diurnal-bursty,duration=1800", 3).workload
    first = parse("synthetic:diurnal-bursty,duration=1800", 0).workload
    np.testing.assert_array_equal(alone.arrivals, fourth.arrivals)
    assert len(first) != len(fourth) or not np.array_equal(first.arrivals, fourth.arrivals)
    for bad, message in (("synthetic:steady,seed=-1", "whole number"),
                         ("synthetic:steady,seed=1.5", "whole number"),
                         ("synthetic:steady,seed=x", "not a number"),
                         ("synthetic:steady,colour=red", "unknown option 'colour'")):
        with pytest.raises(InputError, match=message):
            parse(bad, 0)


# --------------------------------------------------------------------------- the frontier


def test_the_frontier_keeps_the_settings_nothing_beats_on_both_axes() -> None:
    pts = [point("a", 5.0, 0.90), point("b", 6.0, 0.99), point("c", 6.5, 0.95),
           point("d", 4.0, 0.80), point("e", 8.0, 0.999), point("f", 8.0, 0.99),
           point("g", 7.0, 0.99)]  # as good as b, dearer: not on the frontier
    assert [p["spec"] for p in bench.pareto_frontier(pts, FEAS)] == ["d", "a", "b", "e"]
    assert bench.pareto_frontier([], FEAS) == []


def test_a_policy_is_behind_or_beyond_the_frontier() -> None:
    frontier = bench.pareto_frontier([point("hpa:target=0.3", 5.0, 0.90),
                                      point("static:replicas=6", 6.0, 0.99),
                                      point("static:replicas=8", 8.0, 0.999)], FEAS)
    behind = bench.frontier_position(point("ppo", 7.0, 0.98), frontier, FEAS)
    assert behind["position"] == "behind" and behind["reference"] == "static:replicas=6"
    assert behind["gpu_hours_vs_reference_pct"] == pytest.approx(100 * (7 / 6 - 1), abs=0.1)
    beyond = bench.frontier_position(point("ppo", 5.5, 0.99), frontier, FEAS)
    assert beyond["position"] == "beyond" and beyond["reference"] == "static:replicas=6"
    assert beyond["gpu_hours_vs_reference_pct"] == pytest.approx(-8.3, abs=0.1)
    top = bench.frontier_position(point("oracle", 9.0, 0.9999), frontier, FEAS)
    assert top["position"] == "beyond" and top["reference"] is None


def test_reactive_points_take_every_reactive_setting_and_no_planner() -> None:
    w = {"sweep": {"hpa": [{"value": 0.5, **point("hpa:target=0.5", 5.0, 0.9)}],
                   "keda": [{"value": 2.0, "spec": "keda:threshold=2", "error": "x"}]},
         "default": {"hpa": point("hpa:target=0.5", 5.0, 0.9), "keda": point("keda", 9.0, 0.8)},
         "static": {"probes": [{"replicas": 4, **point("static:replicas=4", 4.0, 0.95)}]},
         "floors": {"hpa": {"probes": [{"min_replicas": 3, **point("hpa:target=0.5", 6.0,
                                                                   0.99)}], "found": None},
                    "ppo": {"probes": [{"min_replicas": 2, **point("ppo", 3.0, 0.99)}],
                            "found": None}},
         "results": {"ppo": point("ppo", 3.0, 0.9)}}
    kinds = sorted((p["kind"], p["spec"]) for p in bench.reactive_points(w, FEAS))
    assert kinds == [("hpa", "hpa:target=0.5"), ("hpa+floor", "hpa:target=0.5"),
                     ("keda", "keda"), ("static", "static:replicas=4")]


def servegen_folder(root: Path) -> Path:
    """Two clients, six 10-minute windows, one of them idle (a service gap)."""
    folder = root / "language" / "m-tiny"
    folder.mkdir(parents=True)
    for client, rate in ((0, 3.0), (1, 1.5)):
        lines = [f"{i * 600},{0 if i == 2 else rate},1.5,{'' if i == 2 else 'Gamma'},"
                 f"{0 if i == 2 else 0.45},{0 if i == 2 else 0.1}" for i in range(6)]
        (folder / f"chunk-{client}-trace.csv").write_text("\n".join(lines) + "\n")
    (folder / "chunk-0-dataset.json").write_text(json.dumps(
        {"0": {"input_tokens": "{200: 0.5, 900: 0.5}", "output_tokens": "{40: 1.0}"}}))
    return folder


def test_a_servegen_week_and_an_unbuildable_workload(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A ServeGen folder is a column like any other; a workload that cannot be built is
    reported as not run and the others still run; the frontier is drawn next to the JSON."""
    out = tmp_path / "autoscale.json"
    spec = f"servegen:{servegen_folder(tmp_path)}:start=10m,rate=2"
    assert bench.main(["--workload", spec, "--workload", str(tmp_path / "absent.csv"),
                       "--hpa-targets", "0.5,0.9", "--keda-thresholds", "2",
                       "--floor-search", "hpa", "--max-replicas", "8", "--jobs", "1",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["workloads"]) == [spec]
    assert "no such file" in report["not_run"][str(tmp_path / "absent.csv")]
    w = report["workloads"][spec]
    assert w["workload"]["duration_s"] == 3000.0
    assert w["workload"]["servegen"]["windows_without_traffic"] == 1
    assert w["workload"]["servegen"]["clients_without_dataset"] == 1
    assert set(w["frontier"]["policies"]) >= {"predictive", "ppo", "oracle"}
    assert all(p["position"] in ("beyond", "behind") for p in w["frontier"]["policies"].values())
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    printed = capsys.readouterr().out
    assert "not run:" in printed and "Against the cost-vs-SLO frontier" in printed


def test_nothing_to_run_is_an_input_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--workload", str(tmp_path / "absent.csv")]) == 2
    assert "no workload could be built" in capsys.readouterr().err
