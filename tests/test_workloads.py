"""Workloads: CSV loaders, the Workload value, transformations, generators, spec resolution.

Every file is written to tmp_path: nothing here reads ../shared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from importcheck import heavy_imports

from aiops.errors import InputError
from aiops.ingest.traces import (
    load_rate_series,
    load_request_trace,
    sniff_csv_kind,
)
from aiops.sim.workloads import (
    MAX_REQUESTS,
    SYNTHETIC,
    TokenDistribution,
    Workload,
    describe_synthetic,
    rate_scale,
    resolve_workload,
    synthetic,
    time_scale,
    workload_from_rate_series,
    workload_from_trace,
)

TRACE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def trace_csv(tmp_path: Path, rows: list[str], name: str = "trace.csv") -> Path:
    return write(tmp_path, name, "\n".join([TRACE_HEADER, *rows]) + "\n")


def series_csv(tmp_path: Path, rows: list[str], name: str = "series.csv") -> Path:
    return write(tmp_path, name, "\n".join(["timestamp,value", *rows]) + "\n")


def workload(arrivals: list[float], duration: float, name: str = "w") -> Workload:
    n = len(arrivals)
    return Workload(
        name=name,
        arrivals=np.array(arrivals, dtype=np.float64),
        context_tokens=np.arange(1, n + 1, dtype=np.int64) * 10,
        generated_tokens=np.arange(1, n + 1, dtype=np.int64),
        duration=duration,
        meta={},
    )


# --------------------------------------------------------------------------- loaders


def test_request_trace_is_rebased_with_seven_fractional_digits(tmp_path: Path) -> None:
    path = trace_csv(
        tmp_path,
        [
            "2023-11-16 18:17:03.9799600,4808,10",
            "2023-11-16 18:17:04.0319600,3180,0",
            "2023-11-16 18:17:04.0319600,0,8",
            "2023-11-16 18:17:06.0000001,12,3",
        ],
    )
    trace = load_request_trace(path)
    # Naive times are UTC: 2023-11-16 18:17:03 UTC is Unix 1700158623.
    assert trace.timestamps[0] == pytest.approx(1700158623.97996, abs=1e-6)
    assert trace.context_tokens.tolist() == [4808, 3180, 0, 12]
    assert trace.generated_tokens.tolist() == [10, 0, 8, 3]
    assert trace.context_tokens.dtype == np.int64

    w = workload_from_trace(trace)
    assert w.name == "trace"
    np.testing.assert_allclose(w.arrivals, [0.0, 0.052, 0.052, 2.0200401], atol=1e-6)
    # Zero tokens are loaded as 0 but simulated as 1.
    assert w.context_tokens.tolist() == [4808, 3180, 1, 12]
    assert w.generated_tokens.tolist() == [10, 1, 8, 3]
    # Tail = median positive gap (gaps 0.052 and 1.968 -> 1.01).
    assert w.duration == pytest.approx(2.0200401 + 1.0100201, abs=1e-6)
    assert w.meta["kind"] == "request_trace"
    assert w.meta["start_unix"] == pytest.approx(1700158623.97996, abs=1e-6)


def test_timestamps_offsets_numeric_and_case_insensitive_header(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.csv",
        "timestamp,contexttokens,GENERATEDTOKENS,extra\n"
        "2023-11-16T19:00:00+01:00,5,6,x\n"
        "2023-11-16T18:00:01Z,5,6,y\n",
    )
    assert load_request_trace(path).timestamps[1] - load_request_trace(path).timestamps[0] == 1.0
    numeric = trace_csv(tmp_path, ["1700000000.5,1,1", "1700000002,1,1"], name="n.csv")
    assert load_request_trace(numeric).timestamps.tolist() == [1700000000.5, 1700000002.0]
    # A number in the first row means seconds, even when it could pass for an ISO year.
    seconds = trace_csv(tmp_path, ["2023,1,1", "2024,1,1"], name="s.csv")
    assert load_request_trace(seconds).timestamps.tolist() == [2023.0, 2024.0]


def test_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "win.csv"
    path.write_bytes(
        b"\xef\xbb\xbfTIMESTAMP,ContextTokens,GeneratedTokens\r\n"
        b"2023-11-16 18:17:03,48,10\r\n\r\n2023-11-16 18:17:04,31,5\r\n"
    )
    assert sniff_csv_kind(path) == "request_trace"
    assert load_request_trace(path).context_tokens.tolist() == [48, 31]


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = trace_csv(tmp_path, ["2023-11-16 18:00:00,1,1", "", "2023-11-16 18:00:01,1,1", ""])
    assert len(load_request_trace(path)) == 2
    bad = trace_csv(tmp_path, ["2023-11-16 18:00:00,1,1", "", "2023-11-16 18:00:01,-4,1"], "b.csv")
    with pytest.raises(InputError) as err:
        load_request_trace(bad)
    assert err.value.line == 4


def test_rate_series_interval_and_repeated_stamps(tmp_path: Path) -> None:
    path = series_csv(
        tmp_path,
        [
            "2014-07-01 00:00:00,10",
            "2014-07-01 00:30:00,20.5",
            "2014-07-01 00:30:00,21",  # NAB has daylight-saving repeats: accepted
            "2014-07-01 01:00:00,0",
            "2014-07-01 01:30:00,7",
        ],
    )
    series = load_rate_series(path)
    assert series.interval == 1800.0
    assert series.values.tolist() == [10.0, 20.5, 21.0, 0.0, 7.0]
    assert series.timestamps[0] == 1404172800.0


def test_sniff_csv_kind(tmp_path: Path) -> None:
    assert sniff_csv_kind(trace_csv(tmp_path, ["1,1,1"])) == "request_trace"
    assert sniff_csv_kind(series_csv(tmp_path, ["1,1"])) == "rate_series"
    other = write(tmp_path, "other.csv", "time,load\n1,2\n")
    with pytest.raises(InputError, match=r"other\.csv, line 1: unrecognised header.*'load'"):
        sniff_csv_kind(other)


T0 = "2023-11-16 18:00:00"
T1 = "2023-11-16 18:00:01"
T2 = "2023-11-16 18:00:02"

BAD_FILES: list[tuple[str, str, int, str]] = [
    # (kind, file text, line, part of the message)
    (
        "trace",
        "TIMESTAMP,ContextTokens\n" + T0 + ",1\n",
        1,
        "missing column 'GeneratedTokens'; found columns: 'TIMESTAMP', 'ContextTokens'",
    ),
    ("trace", f"{TRACE_HEADER}\n{T0},1,1\n{T1},12x,1\n", 3, "ContextTokens is not a number: '12x'"),
    ("trace", f"{TRACE_HEADER}\n{T0},1,1\n{T1},1\n", 3, "GeneratedTokens is missing or empty"),
    ("trace", f"{TRACE_HEADER}\n{T0},1,1\nyesterday,1,1\n", 3, "'yesterday'"),
    ("trace", f"{TRACE_HEADER}\n1700000000,1,1\n{T1},1,1\n", 3, "not a number of Unix seconds"),
    (
        "trace",
        f"{TRACE_HEADER}\n{T0},1,1\n{T2},1,1\n{T1},1,1\n",
        4,
        f"timestamps out of order: '{T1}' comes after '{T2}' on line 3",
    ),
    ("trace", f"{TRACE_HEADER}\n{T0},-3,1\n", 2, "ContextTokens is negative: -3"),
    ("trace", f"{TRACE_HEADER}\n{T0},1,2.5\n", 2, "GeneratedTokens is not a whole number: 2.5"),
    ("trace", f"{TRACE_HEADER}\n{T0},1,1\n{T1},1,1,9\n", 3, "malformed CSV row"),
    ("trace", "", 1, "empty file"),
    ("trace", f"{TRACE_HEADER}\n", 2, "header but no data rows"),
    ("series", f"timestamp,value\n{T0},1\n{T1},nan\n", 3, "value is not finite: nan"),
    ("series", f"timestamp,value\n{T0},inf\n{T1},1\n", 2, "value is not finite: inf"),
    ("series", f"timestamp,value\n{T0},1\n{T1},-2\n", 3, "value is negative: -2"),
    ("series", f"timestamp,value\n{T0},1\n{T1},abc\n", 3, "value is not a number: 'abc'"),
    ("series", f"timestamp,value\n{T0},1\n", 2, "at least 2 rows"),
    ("series", "timestamp,count\n" + T0 + ",1\n", 1, "missing column 'value'"),
]


@pytest.mark.parametrize(("kind", "text", "line", "problem"), BAD_FILES)
def test_bad_files_name_file_line_and_problem(
    tmp_path: Path, kind: str, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path, "input-file.csv", text)
    loader = load_request_trace if kind == "trace" else load_rate_series
    with pytest.raises(InputError) as err:
        loader(path)
    message = str(err.value)
    assert "input-file.csv" in message
    assert f"line {line}:" in message
    assert problem in message
    assert err.value.line == line
    assert err.value.path == str(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.csv: no such file"):
        load_request_trace(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a directory"):
        load_rate_series(tmp_path)


# --------------------------------------------------------------------------- Workload


def test_workload_validates_and_is_read_only() -> None:
    with pytest.raises(ValueError, match="sorted"):
        workload([2.0, 1.0], 3.0)
    with pytest.raises(ValueError, match="duration"):
        workload([0.0, 5.0], 4.0)
    source = np.array([0.0, 1.0])
    w = Workload("w", source, np.ones(2, np.int64), np.ones(2, np.int64), 2.0, {})
    source[0] = 0.5  # the caller's array is copied, not shared
    assert w.arrivals[0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        w.arrivals[0] = 1.0
    with pytest.raises(ValueError, match="token counts"):
        Workload("w", [0.0], [0], [1], 1.0, {})  # type: ignore[arg-type]


def test_rate_bins_and_partial_last_bin() -> None:
    w = workload([0.0, 0.5, 1.0, 1.5, 2.5, 2.9], 2.9)
    # Bins [0,1) [1,2) [2,2.9): the last one is 0.9 s wide.
    np.testing.assert_allclose(w.rate(1.0), [2.0, 2.0, 2.0 / 0.9])
    assert len(workload([], 0.0).rate(1.0)) == 0


def test_window_rebases_to_zero() -> None:
    w = workload([0.0, 1.0, 2.0, 3.0, 4.0], 5.0)
    sub = w.window(1.5, 2.0)
    assert sub.arrivals.tolist() == [0.5, 1.5]
    assert sub.context_tokens.tolist() == [30, 40]
    assert sub.generated_tokens.tolist() == [3, 4]
    assert sub.duration == 2.0
    assert sub.meta["offset_s"] == 1.5
    assert sub.window(0.5, 10.0).meta["offset_s"] == 2.0
    # Clipped to what the workload covers.
    assert w.window(4.0, 10.0).duration == 1.0
    assert len(w.window(9.0, 1.0)) == 0


def test_summary_is_json_safe() -> None:
    w = synthetic("steady", seed=0, duration=120)
    summary = json.loads(json.dumps(w.summary()))
    assert summary["name"] == "steady"
    assert summary["requests"] == len(w)
    assert summary["duration_s"] == 120.0
    assert 15 < summary["mean_rate"] < 25
    assert summary["peak_rate"] >= summary["mean_rate"] * 0.95
    assert summary["mean_context_tokens"] > 1
    empty = json.loads(json.dumps(workload([], 10.0).summary()))
    assert empty["requests"] == 0 and empty["mean_context_tokens"] is None
    json.dumps(dict(w.meta))


# --------------------------------------------------------------------------- transformations


def test_time_scale_halves_duration_and_doubles_rate() -> None:
    w = synthetic("steady", seed=1, duration=300)
    fast = time_scale(w, 0.5)
    assert fast.duration == 150.0
    assert len(fast) == len(w)
    np.testing.assert_allclose(fast.arrivals, w.arrivals / 2)
    assert fast.summary()["mean_rate"] == pytest.approx(2 * w.summary()["mean_rate"])  # type: ignore[operator]
    assert fast.meta["time_scale"] == 0.5
    assert time_scale(fast, 4.0).meta["time_scale"] == 2.0
    with pytest.raises(InputError, match="time_scale must be > 0"):
        time_scale(w, 0)


def test_rate_scale_five_times_heavier_keeps_shape_and_tokens() -> None:
    w = synthetic("flash-crowd", seed=2, duration=1800)
    heavy = rate_scale(w, 5.0, seed=7)
    assert len(heavy) == 5 * len(w)  # an integer factor copies every request exactly k times
    assert heavy.duration == w.duration
    assert (np.diff(heavy.arrivals) >= 0).all()
    assert heavy.arrivals[0] >= 0 and heavy.arrivals[-1] <= heavy.duration
    originals = set(zip(w.context_tokens.tolist(), w.generated_tokens.tolist(), strict=True))
    pairs = set(zip(heavy.context_tokens.tolist(), heavy.generated_tokens.tolist(), strict=True))
    assert pairs <= originals
    # The flash crowd is still where it was, five times higher.
    ratio = heavy.rate(60.0) / np.maximum(w.rate(60.0), 1e-9)
    assert np.median(ratio) == pytest.approx(5.0, rel=0.05)
    assert int(np.argmax(heavy.rate(60.0))) == int(np.argmax(w.rate(60.0)))
    assert heavy.meta["rate_scale"] == 5.0


def test_rate_scale_fractional_and_thinning() -> None:
    w = synthetic("steady", seed=3, duration=600)
    n = len(w)
    assert len(rate_scale(w, 2.5, seed=1)) == pytest.approx(2.5 * n, rel=0.03)
    thin = rate_scale(w, 0.3, seed=1)
    assert len(thin) == pytest.approx(0.3 * n, rel=0.08)
    assert np.isin(thin.arrivals, w.arrivals).all()  # thinning moves nobody
    assert rate_scale(w, 1.0, seed=1) is w
    same = rate_scale(w, 2.5, seed=9)
    np.testing.assert_array_equal(same.arrivals, rate_scale(w, 2.5, seed=9).arrivals)
    with pytest.raises(InputError, match="limit"):
        rate_scale(w, MAX_REQUESTS / n * 2, seed=0)


@settings(max_examples=60, deadline=None)
@given(
    arrivals=st.lists(st.floats(0.0, 1000.0, allow_nan=False), min_size=1, max_size=40),
    tail=st.floats(0.0, 50.0),
    factor=st.floats(0.05, 12.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_rate_scale_keeps_arrivals_sorted_and_in_span(
    arrivals: list[float], tail: float, factor: float, seed: int
) -> None:
    times = sorted(arrivals)
    w = workload(times, times[-1] + tail)
    scaled = rate_scale(w, factor, seed=seed)
    assert (np.diff(scaled.arrivals) >= 0).all()
    if len(scaled):
        assert scaled.arrivals[0] >= 0.0
        assert scaled.arrivals[-1] <= w.duration
    assert set(scaled.context_tokens.tolist()) <= set(w.context_tokens.tolist())
    assert np.floor(factor) * len(w) <= len(scaled) <= np.ceil(factor) * len(w)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_registry() -> None:
    assert {"diurnal-bursty", "steady", "flash-crowd", "step", "weekly"} <= set(SYNTHETIC)
    assert all(describe_synthetic().values())
    with pytest.raises(InputError, match=r"unknown synthetic workload 'nope'.*diurnal-bursty"):
        synthetic("nope", seed=0)


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_is_seeded(name: str) -> None:
    a = synthetic(name, seed=5, duration=240)
    b = synthetic(name, seed=5, duration=240)
    c = synthetic(name, seed=6, duration=240)
    np.testing.assert_array_equal(a.arrivals, b.arrivals)
    np.testing.assert_array_equal(a.context_tokens, b.context_tokens)
    np.testing.assert_array_equal(a.generated_tokens, b.generated_tokens)
    assert len(a) != len(c) or not np.array_equal(a.arrivals, c.arrivals)
    assert a.duration == 240.0 and len(a) > 0
    assert a.meta["generator"] == name and a.meta["seed"] == 5


def test_synthetic_is_prefix_consistent() -> None:
    full = synthetic("diurnal-bursty", seed=4)
    head = synthetic("diurnal-bursty", seed=4, duration=900)
    cut = full.window(0.0, 900.0)
    np.testing.assert_array_equal(head.arrivals, cut.arrivals)
    np.testing.assert_array_equal(head.context_tokens, cut.context_tokens)
    np.testing.assert_array_equal(head.generated_tokens, cut.generated_tokens)


def test_diurnal_bursty_default_matches_its_description() -> None:
    w = synthetic("diurnal-bursty", seed=0)
    assert 3600 <= w.duration <= 7200
    summary = w.summary()
    assert 17 <= summary["mean_rate"] <= 26  # type: ignore[operator]
    assert 38 <= summary["peak_rate"] <= 65  # type: ignore[operator]
    per_minute = w.rate(60.0)
    # Diurnal: the busiest quarter-day is well above the quietest.
    quarters = per_minute[: len(per_minute) // 4 * 4].reshape(4, -1).mean(axis=1)
    assert quarters.max() > 1.8 * quarters.min()


def test_flash_crowd_and_step_shapes() -> None:
    crowd = synthetic("flash-crowd", seed=0).rate(60.0)
    assert crowd[15:17].max() > 3.5 * np.median(crowd[:14])  # the crowd arrives at 15 min
    step = synthetic("step", seed=0).rate(60.0)
    assert step[25:39].mean() > 2.5 * step[1:19].mean()
    assert step[45:].mean() < 0.7 * step[25:39].mean()


def test_weekly_has_weekend_dip_and_trend() -> None:
    w = synthetic("weekly", seed=0)
    days = w.rate(1800.0)  # one bin per compressed day
    assert len(days) == 7
    assert days[5:].mean() < 0.75 * days[:5].mean()
    assert days[4] > days[0]  # growth trend


def test_token_distribution() -> None:
    tokens = TokenDistribution(max_generated=300)
    ctx, gen = tokens.sample(np.random.default_rng(0), 20_000)
    assert ctx.dtype == np.int64 and gen.dtype == np.int64
    assert np.median(ctx) == pytest.approx(600, rel=0.05)
    assert np.median(gen) == pytest.approx(150, rel=0.05)
    assert ctx.min() >= 1 and ctx.max() <= 8192 and gen.max() == 300
    with pytest.raises(ValueError, match="context_median"):
        TokenDistribution(context_median=0)


# --------------------------------------------------------------------------- rate series, resolve


def test_rate_series_gives_poisson_arrivals_with_the_right_mean(tmp_path: Path) -> None:
    path = series_csv(
        tmp_path, ["2014-07-01 00:00:00,10", "2014-07-01 00:01:00,0", "2014-07-01 00:02:00,30"]
    )
    series = load_rate_series(path)
    w = workload_from_rate_series(series, seed=0, rate_scale=2.0)
    expected = 2.0 * (10 * 60 + 0 * 60 + 30 * 60)  # the last row covers one median interval
    assert abs(len(w) - expected) < 5 * np.sqrt(expected)
    assert w.duration == 180.0
    assert not ((w.arrivals >= 60) & (w.arrivals < 120)).any()
    assert (np.diff(w.arrivals) >= 0).all() and w.arrivals[-1] <= w.duration
    assert w.meta["kind"] == "rate_series" and w.meta["rate_scale"] == 2.0
    again = workload_from_rate_series(series, seed=0, rate_scale=2.0)
    np.testing.assert_array_equal(w.arrivals, again.arrivals)


def test_resolve_dispatches_on_spec(tmp_path: Path) -> None:
    trace = trace_csv(tmp_path, [f"2023-11-16 18:00:{s:02d},100,10" for s in range(0, 60, 2)])
    series = series_csv(
        tmp_path, [f"2014-07-01 00:{m:02d}:00,{v}" for m, v in [(0, 5), (10, 5), (20, 5)]]
    )
    syn = resolve_workload("synthetic:step", seed=1, duration=600)
    assert syn.meta["kind"] == "synthetic" and syn.duration == 600.0

    replay = resolve_workload(str(trace))
    assert len(replay) == 30 and replay.meta["kind"] == "request_trace"
    heavy = resolve_workload(str(trace), rate_scale=3.0, seed=2)
    assert len(heavy) == 90  # a trace is resampled, not re-drawn
    fast = resolve_workload(str(trace), time_scale=0.5, duration=20.0)
    assert fast.duration == 20.0 and len(fast) == 20  # compressed to 1 request/s, then cut

    rates = resolve_workload(str(series), rate_scale=0.5, seed=3)
    assert rates.meta["kind"] == "rate_series"
    assert abs(len(rates) - 0.5 * 5 * 1800) < 5 * np.sqrt(4500)
    # A rate series keeps its rate under time scaling: half the span, half the requests.
    shorter = resolve_workload(str(series), rate_scale=0.5, time_scale=0.5, seed=3)
    assert shorter.duration == 900.0
    assert abs(len(shorter) - 0.5 * 5 * 900) < 5 * np.sqrt(2250)
    tokens = TokenDistribution(context_median=50, max_context=60)
    assert resolve_workload(str(series), tokens=tokens).context_tokens.max() <= 60


def test_synthetic_duration_after_time_scale() -> None:
    # --duration counts simulated seconds: compressed twice, 600 s hold 1200 s of the pattern.
    w = resolve_workload("synthetic:steady", time_scale=0.5, duration=600, seed=0)
    assert w.duration == 600.0
    assert w.summary()["mean_rate"] == pytest.approx(40, rel=0.1)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"rate_scale": 0.0}, "rate_scale must be > 0"),
        ({"time_scale": float("nan")}, "time_scale must be a finite number"),
        ({"duration": -5.0}, "duration must be"),
        ({"seed": -1}, "seed must be an integer"),
    ],
)
def test_resolve_rejects_bad_arguments(kwargs: dict[str, float], problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        resolve_workload("synthetic:steady", **kwargs)  # type: ignore[arg-type]


def test_resolve_rejects_unknown_specs_and_huge_workloads(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.csv: no such file.*synthetic:NAME"):
        resolve_workload(str(tmp_path / "missing.csv"))
    with pytest.raises(InputError, match="unknown synthetic workload 'bogus'"):
        resolve_workload("synthetic:bogus")
    big = series_csv(tmp_path, ["2014-07-01 00:00:00,10000", "2014-07-02 00:00:00,10000"])
    with pytest.raises(InputError, match=r"more than the limit of 20,000,000.*--rate-scale"):
        resolve_workload(str(big))


def test_loaders_do_not_import_the_simulator() -> None:
    # traces.py is shared with the training code, which must not pull in aiops.sim.
    assert heavy_imports("import aiops.ingest.traces", ("aiops.sim",)) == []
