"""Turn what users and the daemon have into the regular series every forecaster expects.

Forecasters assume one value per fixed interval with no holes: seasonal lags, LSTM windows
and MASE scales all count in steps. Real inputs are not like that, so this module is the one
place that decides what is repairable. A gap of a few steps is filled by linear
interpolation and reported in ``RegularSeries.notes`` (a forecaster must not silently learn
from invented points); a long gap, a long NaN run, an infinite value or a history too short
to forecast from is a ``DataQualityError`` naming the place, because no fill is honest there.

Two inputs are understood: a ``timestamp,value`` CSV (the NAB format, one sample per row)
and a request trace (one row per request, e.g. the Azure LLM inference trace) that is
aggregated to a rate in **requests per second** per interval, the unit policies plan in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from aiops.errors import DataQualityError, InputError
from aiops.types import FloatArray

DEFAULT_MAX_GAP_STEPS = 6
"""Gaps up to this many missing steps are interpolated. Six steps is half an hour at 5-min
sampling: long enough to cover a scrape hiccup or a restart, short enough that a straight
line is still a fair guess for load that changes over hours."""

MIN_LENGTH = 8
"""Below this many points no model here (not even naive with empirical quantiles) has enough
residuals to say anything about uncertainty."""

_TIME_TOLERANCE = 0.01  # fraction of the interval a sample may be off the grid


@dataclass(frozen=True)
class RegularSeries:
    """Values on a regular grid: ``timestamps[i] = timestamps[0] + i * interval``.

    Timestamps are Unix seconds (UTC). ``notes`` says what was repaired on the way in;
    ``filled`` counts the invented points.
    """

    name: str
    timestamps: FloatArray
    values: FloatArray
    interval: float
    notes: tuple[str, ...] = field(default=())
    filled: int = 0

    def __post_init__(self) -> None:
        if len(self.timestamps) != len(self.values):
            raise ValueError("timestamps and values differ in length")

    def __len__(self) -> int:
        return len(self.values)

    def head(self, n: int) -> RegularSeries:
        """The first ``n`` points (what was known at the time of point ``n - 1``)."""
        return replace(self, timestamps=self.timestamps[:n], values=self.values[:n])


def parse_interval(text: str) -> float:
    """``"60s"``, ``"5m"``, ``"1h"``, ``"1d"`` or a bare number of seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|min|h|d)?\s*", text)
    if not m:
        raise InputError(f"interval {text!r} is not a duration like 60s, 5m or 1h")
    unit = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
    seconds = float(m.group(1)) * unit[m.group(2)]
    if seconds <= 0:
        raise InputError(f"interval {text!r} must be positive")
    return seconds


def as_float_array(values: npt.ArrayLike, what: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise DataQualityError(f"{what} must be one-dimensional, got shape {arr.shape}")
    return arr


def check_regular(
    timestamps: npt.ArrayLike, values: npt.ArrayLike, *, min_length: int = 1
) -> tuple[FloatArray, FloatArray, float]:
    """Check a series is already regular and finite; return ``(timestamps, values, interval)``.

    This is the gate of ``Forecaster.fit``: it repairs nothing (that is ``regularize``'s job),
    so a model never trains on data nobody looked at.
    """
    ts = as_float_array(timestamps, "timestamps")
    ys = as_float_array(values, "values")
    if len(ts) != len(ys):
        raise DataQualityError(f"{len(ts)} timestamps but {len(ys)} values")
    if len(ys) < max(min_length, 1):
        raise DataQualityError(f"series has {len(ys)} points; at least {min_length} needed")
    bad = ~np.isfinite(ys)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataQualityError(
            f"value at index {i} is {ys[i]}; prepare the series with regularize() first"
        )
    if len(ts) == 1:
        return ts, ys, 0.0
    diffs = np.diff(ts)
    interval = float(np.median(diffs))
    if interval <= 0 or not np.isfinite(interval):
        raise DataQualityError("timestamps are not increasing")
    off = np.abs(diffs - interval) > _TIME_TOLERANCE * interval
    if off.any():
        i = int(np.argmax(off))
        raise DataQualityError(
            f"series is not regular: step {i} -> {i + 1} is {diffs[i]:g} s, "
            f"the interval is {interval:g} s; prepare it with regularize() first"
        )
    return ts, ys, interval


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """``[(start, length), ...]`` of the True runs of ``mask``."""
    if not mask.any():
        return []
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _fmt_time(t: float) -> str:
    return np.datetime_as_string(np.datetime64(round(t), "s"), unit="s") + "Z"


def regularize(
    timestamps: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    name: str = "",
    interval: float | None = None,
    max_gap_steps: int = DEFAULT_MAX_GAP_STEPS,
    min_length: int = MIN_LENGTH,
) -> RegularSeries:
    """Put samples on a regular grid, fill small holes, refuse large ones.

    ``interval`` defaults to the median spacing. Missing grid points and NaN values are
    treated alike: runs of at most ``max_gap_steps`` inside the series are linearly
    interpolated; longer runs raise ``DataQualityError``. Missing points at the end are
    dropped (they cannot be interpolated without inventing the future) and said so.
    """
    ts = as_float_array(timestamps, "timestamps")
    ys = as_float_array(values, "values")
    where = f"series {name!r}: " if name else ""
    if len(ts) != len(ys):
        raise DataQualityError(f"{where}{len(ts)} timestamps but {len(ys)} values")
    if len(ts) < 2:
        raise DataQualityError(f"{where}{len(ts)} points; at least {min_length} needed")
    if np.isinf(ys).any():
        i = int(np.argmax(np.isinf(ys)))
        raise DataQualityError(f"{where}infinite value at {_fmt_time(ts[i])}")
    diffs = np.diff(ts)
    if (diffs <= 0).any():
        i = int(np.argmax(diffs <= 0))
        kind = "duplicate" if diffs[i] == 0 else "decreasing"
        raise DataQualityError(f"{where}{kind} timestamp at {_fmt_time(ts[i + 1])}")
    step = float(np.median(diffs)) if interval is None else float(interval)
    if step <= 0:
        raise DataQualityError(f"{where}interval must be positive")
    pos_f = (ts - ts[0]) / step
    pos = np.rint(pos_f).astype(np.int64)
    off = np.abs(pos_f - pos) > 0.25
    if off.any():
        i = int(np.argmax(off))
        raise DataQualityError(
            f"{where}sample at {_fmt_time(ts[i])} is off the {step:g} s grid; "
            "give --interval or resample"
        )
    if (np.diff(pos) == 0).any():
        i = int(np.argmax(np.diff(pos) == 0))
        raise DataQualityError(
            f"{where}two samples in one {step:g} s interval at {_fmt_time(ts[i + 1])}"
        )
    n = int(pos[-1]) + 1
    grid = ts[0] + step * np.arange(n, dtype=np.float64)
    out = np.full(n, np.nan)
    out[pos] = ys
    notes: list[str] = []
    missing = np.isnan(out)
    runs = _runs(missing)
    # A NaN/missing run touching the end cannot be interpolated: drop it.
    if runs and runs[-1][0] + runs[-1][1] == n:
        start, length = runs.pop()
        if length > max_gap_steps:
            raise DataQualityError(
                f"{where}the last {length} steps (from {_fmt_time(grid[start])}) have no value"
            )
        notes.append(f"dropped {length} trailing step(s) without a value")
        grid, out, n = grid[:start], out[:start], start
    if runs and runs[0][0] == 0:
        start, length = runs.pop(0)
        if length > max_gap_steps:
            raise DataQualityError(f"{where}the first {length} steps have no value")
        notes.append(f"dropped {length} leading step(s) without a value")
        grid, out, n = grid[length:], out[length:], n - length
        runs = [(s - length, ln) for s, ln in runs]
    long_runs = [(s, ln) for s, ln in runs if ln > max_gap_steps]
    if long_runs:
        s, ln = max(long_runs, key=lambda r: r[1])
        raise DataQualityError(
            f"{where}gap of {ln} steps ({ln * step:g} s) from {_fmt_time(grid[s])}; "
            f"at most {max_gap_steps} steps are filled"
        )
    filled = int(sum(ln for _, ln in runs))
    if filled:
        known = ~np.isnan(out)
        idx = np.arange(n)
        out[~known] = np.interp(idx[~known], idx[known], out[known])
        longest = max(ln for _, ln in runs)
        notes.append(
            f"filled {filled} missing point(s) in {len(runs)} gap(s) by linear interpolation "
            f"(longest {longest} step(s))"
        )
    if n < min_length:
        raise DataQualityError(f"{where}{n} points after cleaning; at least {min_length} needed")
    return RegularSeries(name=name, timestamps=grid, values=out, interval=step,
                         notes=tuple(notes), filled=filled)


def aggregate_requests(
    timestamps: npt.ArrayLike,
    *,
    interval: float,
    name: str = "",
    min_length: int = MIN_LENGTH,
) -> RegularSeries:
    """Count requests per ``interval`` and return the rate in requests/s.

    Bins start at the first request; the last, incomplete bin is dropped because a partial
    count would read as a sudden drop in load. Empty bins are real zeros (no request
    arrived), not gaps.
    """
    ts = np.sort(as_float_array(timestamps, "timestamps"))
    where = f"trace {name!r}: " if name else ""
    if len(ts) == 0:
        raise DataQualityError(f"{where}no requests")
    if not np.isfinite(ts).all():
        raise DataQualityError(f"{where}non-finite request time")
    n_bins = int(np.floor((ts[-1] - ts[0]) / interval))
    if n_bins < min_length:
        raise DataQualityError(
            f"{where}spans {ts[-1] - ts[0]:.0f} s = {n_bins} full interval(s) of {interval:g} s; "
            f"at least {min_length} needed"
        )
    idx = np.floor((ts - ts[0]) / interval).astype(np.int64)
    counts = np.bincount(idx[idx < n_bins], minlength=n_bins).astype(np.float64)
    grid = ts[0] + interval * np.arange(n_bins, dtype=np.float64)
    return RegularSeries(
        name=name, timestamps=grid, values=counts / interval, interval=interval,
        notes=(f"aggregated {int(counts.sum())} requests to requests/s per {interval:g} s",),
    )


def load_series(
    path: str,
    *,
    interval: float | None = None,
    max_gap_steps: int = DEFAULT_MAX_GAP_STEPS,
    min_length: int = MIN_LENGTH,
) -> RegularSeries:
    """Read a ``timestamp,value`` CSV or a request trace into a regular series.

    Parsing is ``aiops.ingest.traces`` (shared with the simulator), which tells the two
    kinds apart by the header. A rate series keeps its values (``interval`` defaults to its
    median spacing); a request trace is aggregated to requests/s per ``interval``, which is
    required then: a trace has no natural spacing. Malformed files raise ``InputError``;
    well-formed files whose data cannot be trusted raise ``DataQualityError``.
    """
    from aiops.ingest.traces import load_rate_series, load_request_trace, sniff_csv_kind

    name = Path(path).stem
    if sniff_csv_kind(path) == "rate_series":
        rs = load_rate_series(path)
        return regularize(rs.timestamps, rs.values, name=name, interval=interval,
                          max_gap_steps=max_gap_steps, min_length=min_length)
    if interval is None:
        raise InputError("this is a request trace; give --interval (e.g. 60s) to aggregate it",
                         path=path)
    trace = load_request_trace(path)
    return aggregate_requests(trace.timestamps, interval=interval, name=name,
                              min_length=min_length)
