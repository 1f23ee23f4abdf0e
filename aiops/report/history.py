"""A target's history from Prometheus (or anything that answers like it), judged for the report.

The report needs, per target: the arrival rate (the load to replay), the replicas that ran
(the "what ran" row), and for context the observed TTFT/TPOT p99, KV-cache usage and token
rates (the request mix). Only the arrival rate is required; every other series that fails
becomes a note in the target's section, and the report goes on without it.

Errors name what to do next, as everywhere in aiops (principles 5 and 6 of
docs/architecture.md): Prometheus not answering is ``unavailable``, no series at all is
``no_data``, an answer that cannot be trusted is ``bad_data``; each fails this one target
and never the report.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from aiops.config import TargetConfig
from aiops.errors import AiopsError, DataQualityError, PermanentError, TransientError
from aiops.report.model import (
    STATUS_BAD_DATA,
    STATUS_ERROR,
    STATUS_NO_DATA,
    STATUS_UNAVAILABLE,
)
from aiops.types import FloatArray

MIN_POINTS = 3
"""Fewer points than this is not a history: two points cannot even show a trend."""

OPTIONAL_SERIES: tuple[str, ...] = ("replicas", "ttft_p99", "tpot_p99", "kv_cache_usage",
                                    "prompt_tokens_rate", "generation_tokens_rate")
"""Named queries (``aiops.ingest.queries``) read besides the arrival rate."""


class RangeLike(Protocol):
    """What ``PrometheusSource.load_range`` returns (``RangeSeries``), as far as used here."""

    @property
    def times(self) -> FloatArray: ...

    @property
    def values(self) -> FloatArray: ...


class HistorySource(Protocol):
    """The two ``PrometheusSource`` methods the report reads history with."""

    def load_history(self, target: TargetConfig, start: float, end: float,
                     step: float) -> tuple[FloatArray, FloatArray]: ...

    def load_range(self, target: TargetConfig, name: str, start: float, end: float,
                   step: float) -> RangeLike: ...


class HistoryError(Exception):
    """This target has no usable history; ``status`` is one of the report's statuses."""

    def __init__(self, status: str, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, eq=False)
class History:
    """A target's history on one grid of ``step`` seconds (Unix ``times``).

    ``rate`` is requests/s with gaps filled by linear interpolation (``missing`` counts the
    filled points); optional series are None when they could not be read, and keep NaN in
    their gaps (they are shown, not replayed) except ``replicas``, whose gaps hold the last
    known count: a scrape gap does not mean the Deployment had no pods.
    """

    target: TargetConfig
    times: FloatArray
    rate: FloatArray
    step: float
    missing: int
    series: dict[str, FloatArray]
    notes: tuple[str, ...]

    @property
    def replicas(self) -> FloatArray | None:
        return self.series.get("replicas")

    def mean_tokens(self) -> tuple[float | None, float | None]:
        """Mean prompt and output tokens per request: token rates over the request rate."""
        out: list[float | None] = []
        for name in ("prompt_tokens_rate", "generation_tokens_rate"):
            tok = self.series.get(name)
            if tok is None:
                out.append(None)
                continue
            ok = np.isfinite(tok) & np.isfinite(self.rate)
            req = float(self.rate[ok].sum())
            out.append(float(tok[ok].sum()) / req if req > 0 else None)
        return out[0], out[1]


def classify(exc: BaseException) -> str:
    """The report status of an error from a history read."""
    if isinstance(exc, TransientError):
        return STATUS_UNAVAILABLE
    if isinstance(exc, DataQualityError):
        return STATUS_NO_DATA if getattr(exc, "kind", "") == "empty" else STATUS_BAD_DATA
    if isinstance(exc, PermanentError):
        return STATUS_ERROR
    return STATUS_ERROR


_QUERY_URL = re.compile(r"(?:with url: )?/api/v1/\S*")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\"')]+)")
MAX_MESSAGE = 300


def brief(exc: BaseException) -> str:
    """An error as a reader wants it in a report: what failed and why, without the URL-encoded
    query and the connection pool's repr that the HTTP library wraps around it."""
    text = str(exc)
    if getattr(exc, "kind", "") in ("connection", "timeout") and "HTTPConnectionPool" in text:
        reason = _ERRNO.search(text)
        head = text.split("HTTPConnectionPool", 1)[0].rstrip(" :")
        text = f"{head} ({reason.group(1).strip() if reason else exc.__class__.__name__})"
    text = _QUERY_URL.sub("", text)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


def fill_linear(values: FloatArray) -> tuple[FloatArray, int]:
    """NaN/Inf replaced by linear interpolation between the nearest known points (the ends
    hold the nearest known value); the count of replaced points. All-missing is an error
    for the caller to handle (returned unchanged)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    missing = int((~ok).sum())
    if missing == 0 or not ok.any():
        return v.copy(), missing
    idx = np.arange(len(v))
    out = v.copy()
    out[~ok] = np.interp(idx[~ok], idx[ok], v[ok])
    return out, missing


def fill_hold(values: FloatArray) -> FloatArray:
    """NaN replaced by the last known value (the first known one before it)."""
    v = np.asarray(values, dtype=np.float64).copy()
    ok = np.isfinite(v)
    if not ok.any():
        return v
    idx = np.where(ok, np.arange(len(v)), -1)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.flatnonzero(ok)[0])
    idx[idx < 0] = first
    return v[idx]


def read_history(source: HistorySource, target: TargetConfig, start: float, end: float,
                 step: float) -> History:
    """Read and judge one target's history; :class:`HistoryError` when it cannot be used."""
    try:
        times, raw = source.load_history(target, start, end, step)
    except AiopsError as exc:
        raise HistoryError(classify(exc), f"arrival rate: {brief(exc)}") from None
    times = np.asarray(times, dtype=np.float64)
    raw = np.asarray(raw, dtype=np.float64)
    if len(times) != len(raw):
        raise HistoryError(STATUS_BAD_DATA,
                           f"arrival rate: {len(times)} timestamps but {len(raw)} values")
    known = int(np.isfinite(raw).sum())
    if known == 0:
        raise HistoryError(STATUS_NO_DATA, "arrival rate: no sample in the whole range")
    if known < MIN_POINTS:
        raise HistoryError(STATUS_NO_DATA,
                           f"arrival rate: only {known} sample(s) in the range, too little "
                           f"history to replay (need at least {MIN_POINTS})")
    if (raw[np.isfinite(raw)] < 0).any():
        raise HistoryError(STATUS_BAD_DATA, "arrival rate: negative requests/s in the history")
    notes: list[str] = []
    # The history is where the data is: a target deployed three days ago has three days of
    # history, not seven with four invented. Only gaps inside it are filled.
    known_idx = np.flatnonzero(np.isfinite(raw))
    first, last = int(known_idx[0]), int(known_idx[-1])
    if first > 0 or last < len(raw) - 1:
        notes.append(f"arrival rate: samples only from {_iso(times[first])} to "
                     f"{_iso(times[last])}; the replay covers that span")
        times, raw = times[first:last + 1], raw[first:last + 1]
        start, end = float(times[0]), float(times[-1])
    rate, missing = fill_linear(raw)
    if missing:
        notes.append(f"arrival rate: {missing} of {len(raw)} points missing "
                     f"({100 * missing / len(raw):.1f}%), filled by linear interpolation "
                     "for the replay")
    series: dict[str, FloatArray] = {}
    for name in OPTIONAL_SERIES:
        try:
            got = source.load_range(target, name, start, end, step)
        except AiopsError as exc:
            notes.append(f"{name} history unavailable ({classify(exc)}): {brief(exc)}")
            continue
        vals = _on_grid(times, np.asarray(got.times, dtype=np.float64),
                        np.asarray(got.values, dtype=np.float64))
        if not np.isfinite(vals).any():
            notes.append(f"{name} history unavailable: no sample in the range")
            continue
        if name == "replicas":
            vals = fill_hold(vals)
        series[name] = vals
    return History(target, times, rate, float(step), missing, series, tuple(notes))


def _on_grid(grid: FloatArray, times: FloatArray, values: FloatArray) -> FloatArray:
    """``values`` placed on ``grid`` by nearest timestamp within half a step; NaN elsewhere."""
    out = np.full(len(grid), np.nan)
    if len(times) == 0 or len(grid) == 0:
        return out
    if len(times) == len(grid) and np.allclose(times, grid):
        return values.copy()
    step = float(np.median(np.diff(grid))) if len(grid) > 1 else math.inf
    pos = np.clip(np.searchsorted(grid, times), 0, len(grid) - 1)
    for cand in (pos, np.maximum(pos - 1, 0)):
        close = np.abs(grid[cand] - times) <= step / 2
        out[cand[close]] = values[close]
    return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(float(t), tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
