"""The report's plots: matplotlib figures rendered to PNG bytes.

Why PNG and not SVG or a JS chart library: the page must open offline and stay small, and
a week of 15-second decisions is 40,000 points per line — as SVG that is megabytes per
plot, as PNG it is tens of kilobytes. Figures are built with ``matplotlib.figure.Figure``
directly (the Agg renderer), never ``pyplot``: no global state, no GUI backend, safe to call
from anywhere.

Long series are downsampled for display only (the figures are computed at full
resolution): replicas and latencies keep each bucket's maximum, so a short spike stays
visible; the load keeps each bucket's mean, which is what its level means.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from aiops.report.build import Line, Series
from aiops.report.model import AnomalyWindow, PolicyFigures
from aiops.types import FloatArray

MAX_POINTS = 1500
"""Points per line on screen: a plot is ~1,000 px wide, so more only adds file size."""

COLORS = {
    "aiops": "#1a9850",
    "ran": "#404040",
    "static": "#8c8c8c",
    "hpa": "#2c7bb6",
    "keda": "#f28e2b",
    "load": "#3b3b98",
    "anomaly": "#d62728",
}
WIDTH_IN = 11.0
DPI = 100


def bucket(n: int, max_points: int = MAX_POINTS) -> int:
    """Points per display bucket for a line of ``n`` points."""
    return max(1, math.ceil(n / max_points))


def downsample(t: FloatArray, v: FloatArray, max_points: int = MAX_POINTS,
               how: str = "mean") -> tuple[FloatArray, FloatArray]:
    """At most ``max_points`` points: each bucket's first time and its mean or max (NaN-safe).

    Display only; a bucket of all-NaN stays NaN (a gap is drawn as a gap).
    """
    n = len(v)
    size = bucket(n, max_points)
    if size == 1:
        return t, v
    pad = (-n) % size
    vv = np.concatenate([v.astype(np.float64), np.full(pad, np.nan)]).reshape(-1, size)
    tt = t[::size]
    ok = np.isfinite(vv)
    count = ok.sum(axis=1)
    if how == "max":
        out = np.where(ok, vv, -np.inf).max(axis=1)
    else:
        out = np.where(ok, vv, 0.0).sum(axis=1) / np.maximum(count, 1)
    out = np.where(count > 0, out, np.nan)
    return tt, out


def _x(t: FloatArray, start_unix: float | None) -> Any:
    """Times for the x axis: UTC datetimes when the source has a clock, else hours."""
    if start_unix is None:
        return t / 3600.0
    ms = np.round((start_unix + t) * 1000.0).astype(np.int64)
    return ms.astype("datetime64[ms]")


def _time_axis(ax: Any, start_unix: float | None) -> None:
    if start_unix is None:
        ax.set_xlabel("hours from the start of the replay")
        return
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    loc = AutoDateLocator()  # type: ignore[no-untyped-call]  # untyped in matplotlib
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(loc))  # type: ignore[no-untyped-call]
    ax.set_xlabel("time (UTC)")


def _finish_timeseries(fig: Figure, ax: Any, start_unix: float | None, title: str, *,
                       ncols: int = 3) -> bytes:
    """Title, time axis, grid and legend shared by every over-time chart; then the PNG."""
    ax.set_title(title)
    _time_axis(ax, start_unix)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncols=ncols, framealpha=0.85)
    return _png(fig)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No bbox_inches="tight": constrained layout already fits the margins, and "tight"
    # draws every figure twice.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _figure(height: float, ncols: int = 1, *, fit: bool = False) -> tuple[Figure, Any]:
    """A figure ``WIDTH_IN`` wide. ``fit`` lays the margins out around the labels (needed
    for the bar charts' long policy names); time charts use fixed margins, which renders in
    about 60% of the time and looks the same for their short tick labels."""
    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained" if fit else None)
    axes = fig.subplots(1, ncols)
    if not fit:
        fig.subplots_adjust(left=0.07, right=0.985, top=0.9, bottom=0.2)
    return fig, axes


def policy_bars(rows: Sequence[PolicyFigures], title: str) -> bytes:
    """GPU-hours and SLO attainment per policy, side by side, values written on the bars."""
    fig, (ax_g, ax_s) = _figure(0.55 * len(rows) + 1.3, ncols=2, fit=True)
    labels = [r.label for r in rows][::-1]
    colors = [COLORS.get(r.role, "#777777") for r in rows][::-1]
    gpu = [r.gpu_hours for r in rows][::-1]
    slo = [100 * r.slo_attainment for r in rows][::-1]
    y = np.arange(len(rows))
    ax_g.barh(y, gpu, color=colors)
    ax_g.set_yticks(y, labels)
    ax_g.set_xlabel("GPU-hours (lower is cheaper)")
    ax_g.set_title("Projected GPU-hours")
    top = max(gpu) if gpu and max(gpu) > 0 else 1.0
    ax_g.set_xlim(0, top * 1.22)
    for yi, g in zip(y, gpu, strict=True):
        ax_g.text(g + top * 0.01, yi, f"{g:,.1f}" if g >= 10 else f"{g:.2f}", va="center",
                  fontsize=9)
    ax_s.barh(y, slo, color=colors)
    ax_s.set_yticks(y, [])
    ax_s.set_xlim(0, 120)  # room for "99.21%" right of a full bar
    ax_s.set_xticks(range(0, 101, 20))
    # Two short lines: one long label does not fit under the narrower subplot.
    ax_s.set_xlabel("% of requests within the SLO\n(TTFT and TPOT; higher is better)")
    ax_s.set_title("SLO attainment")
    for yi, s in zip(y, slo, strict=True):
        ax_s.text(s + 1, yi, f"{s:.2f}%", va="center", fontsize=9)
    fig.suptitle(title, fontsize=12)
    return _png(fig)


def load_chart(series: Series, windows: Sequence[AnomalyWindow], lead_s: float,
               model: str) -> bytes:
    """The replayed arrival rate with the forecast band and the anomalies marked."""
    fig, ax = _figure(3.4)
    su = series.start_unix
    t, v = downsample(series.load.t, series.load.v, how="mean")
    size = bucket(len(series.load.v))
    step = float(np.median(np.diff(series.load.t))) if len(series.load.t) > 1 else 0.0
    per = f"{step * size:.0f} s" if step * size < 120 else f"{step * size / 60:.0f} min"
    label = f"{series.load.label} per {per}" + (" (display mean)" if size > 1 else "")
    ax.plot(_x(t, su), v, color=COLORS["load"], lw=1.0, label=label)
    if len(series.band_t):
        bt, lo = downsample(series.band_t, series.band_p10)
        _, mid = downsample(series.band_t, series.band_p50)
        _, hi = downsample(series.band_t, series.band_p90)
        ax.fill_between(_x(bt, su), lo, hi, color=COLORS["aiops"], alpha=0.25, lw=0,
                        label=f"forecast p10–p90, {lead_s:.0f} s ahead")
        ax.plot(_x(bt, su), mid, color=COLORS["aiops"], lw=1.0, ls="--",
                label=f"forecast median ({model})" if model else "forecast median")
    for i, w in enumerate(windows):
        ax.axvspan(_x(np.array([w.start]), su)[0], _x(np.array([w.end]), su)[0],
                   color=COLORS["anomaly"], alpha=0.18, lw=0,
                   label=f"anomaly (score ≥ {series.threshold:g})" if i == 0 else None)
    if len(series.anomaly_score):
        hot = series.anomaly_score >= series.threshold
        if hot.any():
            ax.scatter(_x(series.anomaly_t[hot], su), series.anomaly_v[hot], s=16,
                       color=COLORS["anomaly"], zorder=3)
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    return _finish_timeseries(fig, ax, su,
                              "Load: arrival rate, the forecast aiops planned on, and anomalies",
                              ncols=2)


def replicas_chart(series: Series) -> bytes:
    """Replicas asked for over time, one step line per policy."""
    fig, ax = _figure(3.4)
    su = series.start_unix
    order = {"ran": 0, "static": 0, "hpa": 1, "keda": 2, "aiops": 3}
    for line in sorted(series.replicas, key=lambda ln: order.get(ln.role, 0)):
        t, v = downsample(line.t, line.v, how="max")
        ax.step(_x(t, su), v, where="post", color=COLORS.get(line.role, "#777777"),
                lw=2.0 if line.role == "aiops" else 1.2, label=line.label,
                alpha=1.0 if line.role == "aiops" else 0.85)
    ax.set_ylabel("replicas (spec.replicas)")
    ax.set_ylim(bottom=0)
    return _finish_timeseries(fig, ax, su,
                              "Replicas over time: what ran vs aiops vs the HPA and KEDA")


def ttft_chart(series: Series) -> bytes:
    """TTFT p99 per decision interval (log scale) against the SLO."""
    fig, ax = _figure(3.4)
    su = series.start_unix
    drawn = False
    for line in series.ttft:
        t, v = downsample(line.t, line.v, how="max")
        v = np.where(v > 0, v, np.nan)
        if not np.isfinite(v).any():
            continue
        ax.plot(_x(t, su), v, color=COLORS.get(line.role, "#777777"), lw=1.0,
                ls="--" if line.dashed else "-", label=line.label,
                alpha=1.0 if line.role == "aiops" else 0.8)
        drawn = True
    ax.axhline(series.ttft_slo_s, color=COLORS["anomaly"], lw=1.0, ls=":",
               label=f"TTFT SLO {series.ttft_slo_s:g} s")
    if drawn:
        ax.set_yscale("log")
    ax.set_ylabel("TTFT p99 (seconds, log scale)")
    return _finish_timeseries(fig, ax, su, "Time to first token, p99 of each decision interval")


def series_of(obj: object) -> Series | None:
    """The target's plot data, when it is the kind these plots draw."""
    return obj if isinstance(obj, Series) else None


__all__ = ["Line", "bucket", "downsample", "load_chart", "policy_bars", "replicas_chart",
           "series_of", "ttft_chart"]
