"""bench/schedule.py: the cheapest fleet schedule in hindsight, found from miss curves."""

from __future__ import annotations

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
    lagged = bench["lagged_schedule"](c, 0.99, 90.0)
    # the hard bucket is seen only after it: 2 replicas there miss 200 of 1,000, more than
    # the run's budget, so only a price that holds a larger fleet everywhere reaches 99 %
    assert lagged.fleet[3] == 8 and lagged.attainment >= 0.99
    assert lagged.gpu_hours > bench["cheapest_schedule"](c, 0.99, 90.0).gpu_hours
    # with a budget for one hard bucket at 2 replicas, it is late by one bucket both ways
    c2 = curves(bench, [easy, easy, hard, hard, hard, easy], (2, 4, 8))
    assert bench["lagged_schedule"](c2, 0.96, 90.0).fleet == (2, 2, 2, 8, 8, 8)


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
])
def test_bad_input_is_one_error_line_and_exit_2(bench: dict[str, Any],
                                                 capsys: pytest.CaptureFixture[str],
                                                 args: list[str], named: str) -> None:
    argv = ["--workload", "synthetic:steady", *args] if args[0] != "--workload" else args
    with pytest.raises(SystemExit) as exc:
        bench["main"](argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {named}")
