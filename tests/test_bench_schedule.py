"""bench/schedule.py: the cheapest fleet schedule in hindsight, found from miss curves."""

from __future__ import annotations

import dataclasses
import json
import runpy
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "schedule.py"


@pytest.fixture(scope="module")
def bench() -> dict[str, Any]:
    """The benchmark's functions (its ``main`` does not run: not loaded as ``__main__``)."""
    return runpy.run_path(str(BENCH))


def curves(bench: dict[str, Any], misses: list[list[float]], sizes: tuple[int, ...],
           per_bucket: float = 1000.0) -> Any:
    return bench["Curves"](sizes, tuple(per_bucket for _ in misses),
                           tuple(tuple(row) for row in misses), tuple(300.0 for _ in misses))


def test_a_schedule_buys_a_large_fleet_only_for_the_bucket_that_needs_it(
        bench: dict[str, Any]) -> None:
    easy, hard = [5.0, 2.0, 1.0], [200.0, 60.0, 8.0]
    c = curves(bench, [easy, easy, easy, hard, easy, easy], (2, 4, 8))
    # 99 % of 6,000 requests leaves 60 misses: 4 replicas in the hard bucket miss too many
    # (25 + 60), 8 do not (25 + 8); the rise to 8 is asked for a cold start early.
    sched = bench["cheapest_schedule"](c, 0.99, 90.0)
    assert sched.fleet == (2, 2, 2, 8, 2, 2)
    assert sched.gpu_hours == pytest.approx(((5 * 2 + 8) * 300 + 6 * 90) / 3600)
    assert sched.attainment == pytest.approx(1 - 33 / 6000)
    # the fixed fleet that reaches 99 % must hold 8 throughout
    assert bench["cheapest_fixed"](c, 0.99) == pytest.approx((8, 4.0, 1 - 13 / 6000))


def test_a_dip_shorter_than_the_way_back_up_keeps_the_fleet(bench: dict[str, Any]) -> None:
    hard, easy = [500.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    c = curves(bench, [hard, easy, hard], (2, 8, 16))
    # dropping to 2 for the easy bucket saves 6 replicas x 300 s; coming back costs 6 cold
    # starts: worth it at 90 s each, not at 600 s
    assert bench["cheapest_schedule"](c, 0.99, 90.0).fleet == (8, 2, 8)
    assert bench["cheapest_schedule"](c, 0.99, 600.0).fleet == (8, 8, 8)


def test_sized_on_the_last_bucket_a_schedule_is_late_for_a_change(bench: dict[str, Any]) -> None:
    easy, hard = [5.0, 2.0, 1.0], [200.0, 60.0, 8.0]
    c = curves(bench, [easy, easy, easy, hard, easy, easy], (2, 4, 8))
    lagged, half_life = bench["reacting_schedule"](c, 0.99, 90.0, 1, (0.0,))
    assert half_life == 0.0
    # the hard bucket is seen only after it: 2 replicas there miss 200 of 1,000, more than
    # the run's budget, so only a price that holds a larger fleet everywhere reaches 99 %
    assert lagged.fleet[3] == 8 and lagged.attainment >= 0.99
    assert lagged.gpu_hours > bench["cheapest_schedule"](c, 0.99, 90.0).gpu_hours
    # with a budget for one hard bucket at 2 replicas, it is late by one bucket both ways
    c2 = curves(bench, [easy, easy, hard, hard, hard, easy], (2, 4, 8))
    late = bench["reacting_schedule"](c2, 0.96, 90.0, 1, (0.0,))[0]
    assert late.fleet == (2, 2, 2, 8, 8, 8)
    assert bench["information_lag"](300.0, 90.0) == 2
    assert bench["information_lag"](15.0, 90.0) == 7
    assert bench["information_lag"](45.0, 90.0) == 3
    # waiting a cold start for what it sees, a rise of three buckets is missed for two of
    # them: 400 of the 450 misses a 95 % target allows, so it must rise further (to 8, not 4)
    c3 = curves(bench, [easy] * 3 + [hard] * 3 + [easy] * 3, (2, 4, 8))
    once = bench["reacting_schedule"](c3, 0.95, 90.0, 1, (0.0,))[0]
    later = bench["reacting_schedule"](c3, 0.95, 90.0, 2, (0.0,))[0]
    assert once.fleet == (2, 2, 2, 2, 4, 4, 4, 2, 2)
    # (it lets the replicas go as soon as it has seen the load fall: no cold start there)
    assert later.fleet[4:8] == (2, 8, 8, 2) and later.gpu_hours > once.gpu_hours


def test_before_it_has_seen_a_bucket_a_reacting_schedule_holds_the_starting_fleet(
        bench: dict[str, Any]) -> None:
    easy, hard = [5.0, 2.0, 1.0], [200.0, 60.0, 8.0]
    c = dataclasses.replace(curves(bench, [hard, hard, easy, easy, easy, easy], (2, 4, 8)),
                            start=3)
    # it starts with 3 replicas, which is 4 among the sizes offered; the first hard bucket
    # is seen only once it has ended, and replicas asked for then are ready two buckets
    # later: no price buys more than 4 for the first two, where foresight buys 8
    sched = bench["reacting_schedule"](c, 0.95, 90.0, 2)[0]
    assert sched.fleet[0] == 4 and sched.fleet[1] <= 4 and sched.attainment >= 0.95
    # 98.5 % of 6,000 allows 90 misses: 4 replicas in both hard buckets miss 120
    assert bench["reacting_schedule"](c, 0.985, 90.0, 2) is None
    assert bench["reacting_schedule"](c, 0.985, 90.0, 1)[0].fleet[:2] == (4, 8)
    assert bench["cheapest_schedule"](c, 0.985, 90.0) is not None


def test_smoothed_misses_hold_a_fleet_through_alternating_buckets(
        bench: dict[str, Any]) -> None:
    easy, hard = [5.0, 2.0, 1.0], [60.0, 15.0, 1.0]
    c = curves(bench, [easy, hard] * 6, (2, 4, 8))
    # 4 replicas throughout miss 105 of the 120 that 99 % of 12,000 allows. Sized on the last
    # bucket alone a schedule is wrong every time (large after a hard bucket, for an easy
    # one, and small before the next hard one); on the misses smoothed it holds 4
    alone = bench["reacting_schedule"](c, 0.99, 90.0, 1, (0.0,))
    smoothed, half_life = bench["reacting_schedule"](c, 0.99, 90.0, 1)
    assert half_life > 0.0
    assert alone is None or smoothed.gpu_hours < alone[0].gpu_hours
    assert set(smoothed.fleet[1:]) == {4}


def test_seeing_only_its_own_fleet_a_schedule_with_the_true_elasticity_loses_nothing(
        bench: dict[str, Any]) -> None:
    # misses fall as size^-2 in every bucket: from its own fleet's misses the schedule
    # knows every other size's exactly, so it sizes as the one told all of them does
    loads = [20.0, 400.0, 400.0, 20.0, 20.0, 400.0, 400.0, 400.0, 20.0, 20.0]
    c = dataclasses.replace(
        curves(bench, [[a * (2 / s) ** 2 for s in (2, 4, 8)] for a in loads], (2, 4, 8)),
        start=2)
    told = bench["reacting_schedule"](c, 0.9, 90.0, 2, (0.0,))[0]
    own, half_life, elasticity = bench["own_fleet_schedule"](c, 0.9, 90.0, 2, (0.0,), (2.0,))
    assert own == told and (half_life, elasticity) == (0.0, 2.0)
    assert len(set(own.fleet)) > 1  # it does move
    # taking misses to fall as size^-1, it reads a hard bucket seen at 8 replicas as twice
    # their misses at 4 where it is four times: only a higher price keeps it from coming
    # down too early, and that price costs more elsewhere
    wrong = bench["own_fleet_schedule"](c, 0.9, 90.0, 2, (0.0,), (1.0,))
    assert wrong is None or wrong[0].gpu_hours > own.gpu_hours


def test_day_by_day_a_fleet_sized_for_the_run_borrows_from_its_easy_days(
        bench: dict[str, Any]) -> None:
    # two days of two half-day buckets, 1,000 requests each: the hard day misses 30 per
    # bucket at 4 replicas (97 %), the easy one none; over the run 4 replicas reach 98.5 %
    hard, easy = [100.0, 30.0, 5.0], [20.0, 0.0, 0.0]
    c = bench["Curves"]((2, 4, 8), (1000.0,) * 4, (tuple(hard),) * 2 + (tuple(easy),) * 2,
                        (43_200.0,) * 4)
    assert bench["cheapest_fixed"](c, 0.985)[0] == 4
    days = bench["by_day"](c, 43_200.0, 0.985, 4)
    assert [d["requests"] for d in days] == [2000.0, 2000.0]
    assert [d["fixed_attainment"] for d in days] == pytest.approx([0.97, 1.0])
    # on its own, the hard day needs 8 replicas and the easy one 4
    assert [d["smallest_fixed"] for d in days] == [8, 4]
    # a run shorter than two days has no days to show
    assert bench["by_day"](curves(bench, [hard, easy], (2, 4, 8)), 300.0, 0.985, 4) == []


def test_curves_read_again_merge_whole_buckets(bench: dict[str, Any], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    easy, hard = [5.0, 2.0, 1.0], [200.0, 60.0, 8.0]
    c = curves(bench, [easy, hard, easy, easy, easy], (2, 4, 8))
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps([bench["_row"]("w", c, 90.0, 300.0, 0.99)]))
    [(text, merged, cold, bucket)] = bench["read_curves"](saved, 600.0)
    assert (text, cold, bucket) == ("w", 90.0, 600.0)
    assert merged.misses == ((205.0, 62.0, 9.0), (10.0, 4.0, 2.0), (5.0, 2.0, 1.0))
    assert merged.requests == (2000.0, 2000.0, 1000.0)
    assert merged.seconds == (600.0, 600.0, 300.0)
    out = tmp_path / "again.json"
    assert bench["main"](["--curves", str(saved), "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["schedule"] == json.loads(
        saved.read_text())[0]["schedule"]
    assert "w: schedule" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        bench["main"](["--curves", str(saved), "--bucket", "450"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: --bucket 450: expected a whole multiple")


def test_no_schedule_when_the_largest_fleet_misses_the_target(bench: dict[str, Any]) -> None:
    c = curves(bench, [[400.0, 100.0], [400.0, 100.0]], (2, 4))
    assert bench["cheapest_schedule"](c, 0.99, 90.0) is None
    assert bench["cheapest_fixed"](c, 0.99) is None


@pytest.mark.parametrize(("args", "named"), [
    (["--sizes", "0,4"], "--sizes"),
    (["--sizes", "four"], "--sizes"),
    (["--target", "99"], "--target"),
    (["--bucket", "0"], "--bucket"),
    (["--workload", "synthetic:no-such-thing"], "--workload"),
    (["--profile", "no-such-profile"], "--profile"),
    (["--curves", "no-such-file.json"], "--curves"),
    (["--workload", "synthetic:steady", "--curves", "run.json"], "--workload or --curves"),
])
def test_bad_input_is_one_error_line_and_exit_2(bench: dict[str, Any],
                                                 capsys: pytest.CaptureFixture[str],
                                                 args: list[str], named: str) -> None:
    argv = (["--workload", "synthetic:steady", *args] if args[0] not in ("--workload", "--curves")
            else args)
    with pytest.raises(SystemExit) as exc:
        bench["main"](argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {named}")
