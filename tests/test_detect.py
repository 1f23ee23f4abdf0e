"""Streaming anomaly detectors: contract, hygiene, state, quality floors (synthetic data only)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiops.detect.base import Detector, StreamDetector, load_state, save_state
from aiops.detect.calibrate import AnomalyLikelihood, SpatialNovelty, tail_to_score
from aiops.detect.detectors import (
    DEFAULT_DETECTOR,
    DETECTORS,
    load_detector,
    make_detector,
    restore_detector,
)

STEP = 300.0  # 5-minute samples, like NAB and most Prometheus recording rules
T0 = 1.6e9

# Small windows so a detector warms up in ~60 points: the behaviour under test does not
# depend on window sizes, and the whole file must stay fast.
SMALL_PYOD = {"min_train": 30, "train": 200, "refit_every": 20, "reestimate": 20,
              "history": 400, "short": 5, "learning": 40}
SMALL: dict[str, dict[str, Any]] = {
    **{name: dict(SMALL_PYOD) for name in ("knn", "knn12", "hbos", "lof")},
    "knn-novelty": {**SMALL_PYOD, "rearm": 5},
    "iforest": {**SMALL_PYOD, "n_estimators": 10},
    "ecod": dict(SMALL_PYOD),
    "copod": dict(SMALL_PYOD),
    "seasonal": {"period": 20 * STEP, "cycles": 3, "scale_window": 100, "refit_every": 20,
                 "reestimate": 20, "history": 400, "short": 5, "learning": 40},
    "ensemble": {"members": ["knn", "knn12"], **SMALL_PYOD},
}
FAST = ["knn", "knn-novelty", "seasonal", "hbos", "ensemble"]  # property tests run on these


def small(name: str) -> StreamDetector:
    return make_detector(name, **SMALL[name])


def walk(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = T0 + STEP * np.arange(n)
    x = 100 + np.cumsum(rng.normal(0, 1, n)) + 5 * np.sin(2 * np.pi * np.arange(n) / 20)
    return t, x


def daily(kind: str, seed: int, n: int = 2400, at: int = 1800) -> tuple[np.ndarray, np.ndarray]:
    """8+ days of a daily cycle (amplitude 10) plus unit noise, with one injected anomaly."""
    rng = np.random.default_rng(seed)
    t = T0 + STEP * np.arange(n)
    x = 50 + 10 * np.sin(2 * np.pi * t / 86400) + rng.normal(0, 1.0, n)
    if kind == "spike":
        x[at] += 10
    elif kind == "shift":
        x[at:] += 6
    elif kind == "flatline":
        x[at:at + 48] = x[at - 1]  # four hours stuck at the last value
    return t, x


# --- registry and contract --------------------------------------------------------------------

def test_registry_lists_every_detector_and_builds_each() -> None:
    assert DEFAULT_DETECTOR in DETECTORS
    assert {"knn", "iforest", "hbos", "ecod", "copod", "seasonal", "ensemble"} <= set(DETECTORS)
    for name in DETECTORS:
        det = make_detector(name, **SMALL[name])
        assert isinstance(det, Detector)
        assert det.name == name
        assert det.warmup > 0


def test_default_alias_and_cli_default_agree() -> None:
    from aiops.detect import cli

    assert make_detector("default").name == DEFAULT_DETECTOR
    assert cli.DEFAULT_DETECTOR == DEFAULT_DETECTOR


@pytest.mark.parametrize(("name", "params", "needle"), [
    ("nope", {}, "unknown detector"),
    ("knn", {"bogus": 1}, "bad parameter"),
    ("knn", {"lag": 0}, "lag"),
    ("knn", {"min_train": 5}, "min_train"),
    ("seasonal", {"period": -1.0}, "period"),
    ("ensemble", {"combine": "median"}, "combine"),
    ("ensemble", {"members": ["ensemble"]}, "member"),
])
def test_bad_names_and_parameters_fail_at_construction(name: str, params: dict[str, Any],
                                                       needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        make_detector(name, **params)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_scores_are_one_per_point_in_unit_interval_and_zero_in_warmup(name: str) -> None:
    det = small(name)
    t, x = walk(160)
    s = det.update(t, x)
    assert s.shape == (160,)
    assert s.dtype == np.float64
    assert np.all(np.isfinite(s))
    assert np.all((s >= 0) & (s <= 1))
    assert np.all(s[:det.warmup] == 0)


# --- no look-ahead, batching, determinism ---------------------------------------------------

@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(FAST), seed=st.integers(0, 10_000), cut=st.integers(1, 139),
       noise=st.lists(st.floats(-1e6, 1e6) | st.just(math.nan), min_size=1, max_size=20))
def test_changing_the_future_never_changes_past_scores(name: str, seed: int, cut: int,
                                                       noise: list[float]) -> None:
    t, x = walk(140, seed)
    base = small(name).update(t, x)
    for c in (cut, (cut + 7) % 139 + 1, (cut + 13) % 139 + 1):  # several cuts per example
        y = x.copy()
        for k, v in enumerate(noise):  # rewrite points from `c` on, including NaN
            if c + k < len(y):
                y[c + k] = v
        y[c:] += 1000.0 * (1 + seed % 3)  # and shift the rest far away
        altered = small(name).update(t, y)
        np.testing.assert_array_equal(base[:c], altered[:c])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(FAST), seed=st.integers(0, 10_000),
       cuts=st.lists(st.integers(1, 149), max_size=8))
def test_scores_do_not_depend_on_how_the_stream_is_batched(name: str, seed: int,
                                                           cuts: list[int]) -> None:
    t, x = walk(150, seed)
    whole = small(name).update(t, x)
    det = small(name)
    bounds = [0, *sorted(set(cuts)), 150]
    parts = [det.update(t[a:b], x[a:b]) for a, b in itertools.pairwise(bounds)]
    np.testing.assert_array_equal(whole, np.concatenate(parts))


@pytest.mark.parametrize("name", ["knn", "iforest", "seasonal", "ensemble"])
def test_same_input_gives_same_scores(name: str) -> None:
    t, x = walk(200, 3)
    np.testing.assert_array_equal(small(name).update(t, x), small(name).update(t, x))


# --- save / restore ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["knn", "iforest", "ecod", "seasonal", "ensemble"])
def test_saved_state_continues_with_identical_scores(name: str, tmp_path: Path) -> None:
    t, x = walk(200, 7)
    x[150] += 80  # an anomaly after the restore point must be scored the same way
    straight = small(name).update(t, x)
    first = small(name)
    head = first.update(t[:120], x[:120])
    jpath, npath = save_state(first.state_dict(), tmp_path / "state")
    # what was written is plain JSON (no NaN tokens) and an npz without pickles
    json.loads(jpath.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    with np.load(npath, allow_pickle=False) as z:
        assert all(z[k].dtype == np.float64 for k in z.files)
    again = load_detector(str(tmp_path / "state"))
    tail = again.update(t[120:], x[120:])
    np.testing.assert_array_equal(straight, np.concatenate([head, tail]))
    assert tail.max() > 0  # the comparison covered real, non-zero scores


def test_state_of_another_detector_or_version_is_refused(tmp_path: Path) -> None:
    det = small("knn")
    det.update(*walk(80))
    state = det.state_dict()
    with pytest.raises(ValueError, match="not 'hbos'"):
        small("hbos").load_state_dict(state)
    save_state(state, tmp_path / "s")
    loaded = load_state(tmp_path / "s")
    loaded.format_version = 99
    with pytest.raises(ValueError, match="format"):
        restore_detector(loaded)


# --- quality floors on injected anomalies ----------------------------------------------------

@pytest.mark.parametrize("kind", ["spike", "shift", "flatline"])
@pytest.mark.parametrize("seed", [0, 1])
def test_default_detector_finds_injected_anomaly(kind: str, seed: int) -> None:
    t, x = daily(kind, seed)
    s = make_detector().update(t, x)
    at = 1800
    found = s[at:at + 24].max()  # within two hours
    before = s[300:at].max()  # everything after warm-up and before the anomaly
    assert found >= 0.55, f"{kind}: best score {found:.3f} in the two hours after onset"
    assert found > before, f"{kind}: {found:.3f} does not stand out of {before:.3f}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_detector_is_quiet_on_normal_data(seed: int) -> None:
    t, x = daily("none", seed)
    s = make_detector().update(t, x)
    assert s.max() < 0.9  # never at the daemon's alarm threshold
    assert np.mean(s >= 0.5) <= 0.002


# --- bad input --------------------------------------------------------------------------------

def kinds(det: StreamDetector) -> set[str]:
    return {i.kind for i in det.issues}


def test_nan_and_inf_values_score_zero_and_are_skipped() -> None:
    t, x = walk(120)
    clean = small("knn").update(np.delete(t, [90, 91, 100]), np.delete(x, [90, 91, 100]))
    y = x.copy()
    y[[90, 91, 100]] = [math.nan, math.inf, -math.inf]
    det = small("knn")
    s = det.update(t, y)
    assert s[[90, 91, 100]].tolist() == [0.0, 0.0, 0.0]
    assert "nan" in kinds(det)
    # skipped means not learnt from: the other points score as if those rows were absent
    np.testing.assert_array_equal(np.delete(s, [90, 91, 100]), clean)


def test_nan_timestamps_are_skipped_too() -> None:
    t, x = walk(100)
    t[50] = math.nan
    det = small("knn")
    s = det.update(t, x)
    assert s[50] == 0 and "nan" in kinds(det)


def test_duplicate_timestamp_gets_that_instants_score_and_is_not_learnt() -> None:
    t, x = walk(120)
    tt = np.insert(t, 101, t[100])
    xx = np.insert(x, 101, x[100] + 500)  # a wild duplicate must not poison the model
    det = small("knn")
    s = det.update(tt, xx)
    assert s[101] == s[100]
    assert "duplicate" in kinds(det)
    np.testing.assert_array_equal(np.delete(s, 101), small("knn").update(t, x))


def test_duplicate_across_batches_repeats_the_last_score() -> None:
    t, x = walk(120)
    det = small("knn")
    s = det.update(t, x)
    again = det.update(t[-1:], x[-1:] + 1)
    assert again[0] == s[-1]
    assert kinds(det) == {"duplicate"}


def test_timestamps_going_backwards_are_skipped_with_score_zero() -> None:
    t, x = walk(120)
    tt = np.insert(t, 101, t[50])
    xx = np.insert(x, 101, 1e9)
    det = small("knn")
    s = det.update(tt, xx)
    assert s[101] == 0
    assert "out_of_order" in kinds(det)
    np.testing.assert_array_equal(np.delete(s, 101), small("knn").update(t, x))


def test_gap_is_reported_and_scoring_continues() -> None:
    t, x = walk(200)
    t[120:] += 50 * STEP  # four hours missing
    det = small("knn")
    s = det.update(t, x)
    gaps = [i for i in det.issues if i.kind == "gap"]
    assert len(gaps) == 1 and gaps[0].index == 120
    assert np.all(np.isfinite(s)) and s[121:].max() >= 0  # still scoring, no exception


@pytest.mark.parametrize("name", sorted(SMALL))
def test_constant_series_scores_zero_and_is_reported(name: str) -> None:
    det = small(name)
    s = det.update(T0 + STEP * np.arange(150), np.full(150, 7.0))
    assert np.all(s == 0)
    assert "constant" in kinds(det)


def test_first_move_after_a_long_flat_start_is_scored_not_crashed() -> None:
    x = np.full(200, 3.0)
    x[180:] = 4.0
    s = small("knn").update(T0 + STEP * np.arange(200), x)
    assert np.all(np.isfinite(s)) and s[180:].max() == 1.0  # a never-seen value


def test_series_shorter_than_warmup_scores_zero_and_says_so() -> None:
    det = make_detector()
    t, x = walk(50)
    s = det.update(t, x)
    assert np.all(s == 0)
    warm = [i for i in det.issues if i.kind == "warmup"]
    assert warm and warm[0].count == 50


def test_empty_and_single_point_updates() -> None:
    det = small("knn")
    assert det.update([], []).shape == (0,)
    assert det.update([T0], [1.0]).tolist() == [0.0]
    assert det.update(T0 + STEP, 2.0).shape == (1,)  # scalars are one point


@pytest.mark.parametrize(("t", "x", "needle"), [
    ([1.0, 2.0], [1.0], "2 timestamps but 1 values"),
    ([1.0, 2.0], ["a", "b"], "values must be numbers"),
    ([[1.0, 2.0]], [[1.0, 2.0]], "one-dimensional"),
])
def test_malformed_arrays_raise_value_error_not_numpy_errors(t: Any, x: Any, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        small("knn").update(t, x)


def test_all_nan_input_is_all_zero() -> None:
    det = small("knn")
    s = det.update(T0 + STEP * np.arange(100), np.full(100, math.nan))
    assert np.all(s == 0) and "nan" in kinds(det)


# --- calibration pieces -----------------------------------------------------------------------

def test_tail_to_score_is_a_log_scale() -> None:
    s = tail_to_score(np.array([1.0, 1e-5, 1e-10, 0.0]))
    np.testing.assert_allclose(s, [0.0, 0.5, 0.9699, 1.0], atol=1e-4)


def test_likelihood_flags_a_jump_once_then_lowers_repeats() -> None:
    lik = AnomalyLikelihood(short=1, history=1000, reestimate=100, learning=0)
    rng = np.random.default_rng(0)
    normal = lik.update(np.abs(rng.normal(1, 0.1, 500)))
    assert normal.max() < 0.5
    burst = lik.update(np.full(5, 50.0))
    assert burst[0] == 1.0 and np.all(burst[1:] < 0.5)  # the onset is the news


def test_spatial_novelty_needs_a_margin_beyond_the_range() -> None:
    sp = SpatialNovelty(tolerance=0.05)
    flags = sp.update(np.array([0.0, 10.0, 10.4, 11.0, -0.6, 5.0]))
    assert flags.tolist() == [False, False, False, True, True, False]


def test_likelihood_split_before_its_window_fills_gives_the_same_scores() -> None:
    # a stream cut after fewer raw scores than the averaging window must keep them all
    from aiops.detect.calibrate import AnomalyLikelihood

    raw = np.abs(np.random.default_rng(0).normal(1.0, 0.5, 120))
    kw = {"short": 5, "history": 400, "reestimate": 20, "learning": 40}
    whole = AnomalyLikelihood(**kw).update(raw)
    split = AnomalyLikelihood(**kw)
    parts = np.concatenate([split.update(raw[:3]), split.update(raw[3:])])
    np.testing.assert_array_equal(whole, parts)


def test_run_novelty_flags_a_record_flat_stretch_once() -> None:
    from aiops.detect.calibrate import RunNovelty

    rule = RunNovelty(min_run=5)
    x = np.array([1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                 dtype=float)
    flags = np.flatnonzero(rule.update(x))
    # the first run of 8 zeros is a record once past min_run (at its 5th zero); the next
    # must beat 8 by more than 5% (8.4, so 9) and is flagged at its 10th zero; each record
    # once, not at every later point
    assert list(flags) == [9, 23]
    rule = RunNovelty(min_run=5)
    assert not rule.update(np.array([0.0, 0.0, 0.0, 0.0])).any()  # shorter than min_run


def test_alarm_gate_reports_an_episode_once() -> None:
    from aiops.detect.calibrate import AlarmGate

    gate = AlarmGate(rearm=3)
    out = gate.apply(np.array([0.9, 0.85, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.7]))
    assert out[0] == 0.9 and out[8] == 0.7  # first alarm, and one after a quiet span
    assert (out[1:4] < 0.5).all()  # capped at a warning while the episode lasts
    assert out[4] == 0.1  # quiet scores are left alone
    # an escalation is information: a weak onset does not hide a sure alarm after it
    assert list(AlarmGate(rearm=3).apply(np.array([0.55, 1.0, 0.9]))[:2]) == [0.55, 1.0]


def test_default_detector_reports_a_series_gone_silent() -> None:
    # bursty activity with idle stretches of up to ~10 points, then 60 points of nothing
    rng = np.random.default_rng(4)
    n = 1500
    x = np.where(rng.random(n) < 0.3, 0.0, rng.lognormal(3, 1, n))
    x[1300:1360] = 0.0
    t = T0 + STEP * np.arange(n)
    scores = make_detector().update(t, x)
    assert scores[1300:1360].max() == 1.0
    # kNN alone sees something, but not at the daemon's threshold
    assert make_detector("knn").update(t, x)[1300:1360].max() < 0.9
