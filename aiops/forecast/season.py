"""Season detection from the sampling interval and the autocorrelation.

Load on a user-facing service repeats daily and weekly, so those two periods (in steps of
the sampling interval) are tried first. Autocorrelation is computed on the series minus its
moving average over the candidate period, so a trend or a level shift does not pass for
seasonality. A candidate counts when that autocorrelation clears ``MIN_ACF``; between daily
and weekly the one whose seasonal-naive forecast erred less on the recent past wins, because
a weekly lag is right about weekends but a week staler. When neither calendar period fits
(a one-hour trace, say), the highest autocorrelation peak at a lag of 2..n/3 is used if it
is strong enough; otherwise there is no season (1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aiops.types import FloatArray

MIN_ACF = 0.3
"""Autocorrelation a period needs to count as a season; about what separates a visible daily
cycle from noise on NAB's CloudWatch series, and far above the ~2/sqrt(n) of white noise."""

MAX_PEAK_LAG = 1000
"""Longest lag the fallback peak search tries; keeps detection linear-ish on long series."""

MIN_CYCLES = 2
"""Full periods the history must hold before a period is even tried."""


@dataclass(frozen=True)
class SeasonChoice:
    season: int  # steps; 1 means none
    acf: float
    reason: str


def seasonal_acf(x: FloatArray, lag: int) -> float:
    """Autocorrelation of ``x`` at ``lag`` after removing its moving average over ``lag``."""
    n = len(x)
    if lag < 1 or n < MIN_CYCLES * lag + 2:
        return float("nan")
    csum = np.concatenate(([0.0], np.cumsum(x)))
    trend = (csum[lag:] - csum[:-lag]) / lag  # length n - lag + 1, aligned to the window end
    resid = x[lag - 1:] - trend
    resid = resid - resid.mean()
    denom = float(np.dot(resid, resid))
    if denom <= 1e-12 * max(1.0, float(np.dot(x, x))):
        return float("nan")
    return float(np.dot(resid[lag:], resid[:-lag]) / denom)


def seasonal_naive_mae(x: FloatArray, season: int, last: int | None = None) -> float:
    """In-sample MAE of the one-season-ago forecast, over the last ``last`` points."""
    if len(x) <= season:
        return float("nan")
    err = np.abs(x[season:] - x[:-season])
    if last is not None:
        err = err[-last:]
    return float(err.mean())


def calendar_periods(interval: float) -> dict[str, int]:
    """Daily and weekly periods in steps, when the interval divides a day."""
    out: dict[str, int] = {}
    if interval <= 0 or interval >= 86400:
        return out
    day = 86400.0 / interval
    if abs(day - round(day)) < 1e-6 * day and round(day) >= 2:
        out["daily"] = round(day)
        out["weekly"] = 7 * round(day)
    return out


def detect_season(values: FloatArray, interval: float, *, max_lag: int | None = None
                  ) -> SeasonChoice:
    """Pick the season of ``values`` sampled every ``interval`` seconds (see module doc)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    found: list[tuple[str, int, float]] = []
    for label, period in calendar_periods(interval).items():
        if n >= MIN_CYCLES * period + 2:
            acf = seasonal_acf(x, period)
            if np.isfinite(acf) and acf >= MIN_ACF:
                found.append((label, period, acf))
    if found:
        recent = min(n // 2, 4 * max(p for _, p, _ in found))
        label, period, acf = min(
            found, key=lambda f: seasonal_naive_mae(x, f[1], last=recent)
        )
        others = ", ".join(f"{lb} acf {a:.2f}" for lb, _, a in found if lb != label)
        more = f"; beat {others} on recent seasonal-naive error" if others else ""
        return SeasonChoice(period, acf, f"{label} ({period} steps), acf {acf:.2f}{more}")
    hi = min(MAX_PEAK_LAG if max_lag is None else max_lag, (n - 2) // 3)
    best_lag, best_acf = 1, float("-inf")
    prev = float("nan")
    acfs = [seasonal_acf(x, lag) for lag in range(2, hi + 1)]
    for i, acf in enumerate(acfs):
        lag = i + 2
        nxt = acfs[i + 1] if i + 1 < len(acfs) else float("-inf")
        is_peak = np.isfinite(acf) and not (acf < prev) and acf >= nxt
        if is_peak and acf > best_acf:
            best_lag, best_acf = lag, acf
        prev = acf
    if best_lag > 1 and best_acf >= MIN_ACF:
        return SeasonChoice(best_lag, best_acf,
                            f"autocorrelation peak at {best_lag} steps, acf {best_acf:.2f}")
    why = "no daily/weekly cycle and no autocorrelation peak"
    if calendar_periods(interval) and n < MIN_CYCLES * calendar_periods(interval)["daily"] + 2:
        why = f"history of {n} steps is shorter than {MIN_CYCLES} days"
    return SeasonChoice(1, float("nan"), f"no season: {why} (acf >= {MIN_ACF} needed)")
