"""Rolling-origin backtests: how a model would have done, forecasting from the past only.

A model is fitted once on everything before the first origin, then walks forward: at each
origin it receives the points since the previous origin through ``update`` (as the daemon
would every tick; ``refit_every`` refits instead) and forecasts the next steps, which are
compared with what happened. Nothing after an origin is visible to the forecast made there,
and the MASE scale and the season are taken from the data before the first origin too.

Metrics, per horizon H (each averaged over steps 1..H of every origin, the M4 convention):

- ``mase``: mean absolute error / in-sample MAE of the seasonal naive forecast (season
  detected or given; 1 = naive when none). Below 1 beats the in-sample seasonal naive.
- ``smape``: symmetric MAPE in percent, 0..200 (0/0 counts as 0).
- ``coverage_80``: share of actual values inside [p10, p90]; 0.8 is calibrated.
- ``pinball``: mean quantile loss over p10/p50/p90, divided by the same scale as MASE so it
  compares across series.
- ``fit_seconds`` (first fit plus refits), ``update_seconds`` and ``predict_seconds`` (mean
  per call).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiops.errors import DataQualityError
from aiops.forecast.base import QUANTILES, BaseForecaster
from aiops.forecast.season import detect_season
from aiops.forecast.series import RegularSeries
from aiops.types import FloatArray, Forecast

DEFAULT_FOLDS = 20
DEFAULT_TEST_FRACTION = 0.2
"""Share of the series the origins are spread over; the rest is the first training set."""


@dataclass(frozen=True)
class Scores:
    mase: float
    smape: float
    coverage_80: float
    pinball: float
    n_forecasts: int

    def as_dict(self) -> dict[str, float | int | None]:
        def clean(x: float) -> float | None:
            return None if not math.isfinite(x) else round(x, 6)

        return {"mase": clean(self.mase), "smape": clean(self.smape),
                "coverage_80": clean(self.coverage_80), "pinball": clean(self.pinball),
                "n_forecasts": self.n_forecasts}


@dataclass(frozen=True)
class ForecastPaths:
    """Forecasts made at each origin: arrays of shape (origins, horizon)."""

    origins: list[int]
    point: FloatArray
    lower: FloatArray  # p10
    median: FloatArray
    upper: FloatArray  # p90
    actual: FloatArray
    labels: list[str]


@dataclass
class BacktestResult:
    model: str
    series: str
    horizons: dict[int, Scores]
    fit_seconds: float = math.nan
    update_seconds: float = math.nan
    predict_seconds: float = math.nan
    folds: int = 0
    refits: int = 0
    scale: float = math.nan
    season: int = 1
    label: str = ""
    error: str | None = None
    forecasts: list[Forecast] = field(default_factory=list)

    def as_dict(self, horizon: int | None = None) -> dict[str, Any]:
        """JSON shape of ``aiops forecast backtest`` (one horizon) or of the bench (all)."""
        timing = {"fit_seconds": round(self.fit_seconds, 4),
                  "update_seconds": round(self.update_seconds, 6),
                  "predict_seconds": round(self.predict_seconds, 6)}
        extra: dict[str, Any] = {"label": self.label, "folds": self.folds,
                                 "refits": self.refits}
        if self.error:
            extra["error"] = self.error
        if horizon is not None:
            sc = self.horizons.get(horizon)
            base = sc.as_dict() if sc else {}
            return {**base, **timing, **extra}
        return {"horizons": {str(h): s.as_dict() for h, s in self.horizons.items()},
                **timing, **extra}


def make_origins(n: int, max_horizon: int, *, folds: int = DEFAULT_FOLDS,
                 test_fraction: float = DEFAULT_TEST_FRACTION, min_train: int = 8) -> list[int]:
    """Origins (index of the first forecast point) spread evenly over the test part."""
    last = n - max_horizon
    first = max(min_train, n - max(round(test_fraction * n), max_horizon))
    if last < first or folds < 1:
        raise DataQualityError(
            f"series of {n} points leaves no room for a backtest at horizon {max_horizon} "
            f"after {min_train} training points"
        )
    k = min(folds, last - first + 1)
    return sorted({round(x) for x in np.linspace(first, last, k)})


def mase_scale(train: FloatArray, season: int) -> float:
    """In-sample MAE of the seasonal naive (naive when the season is 1 or too long)."""
    m = season if len(train) > season + 1 else 1
    if len(train) <= m:
        return math.nan
    return float(np.mean(np.abs(train[m:] - train[:-m])))


def collect_forecasts(
    model: BaseForecaster,
    timestamps: FloatArray,
    values: FloatArray,
    origins: Sequence[int],
    horizon: int,
    *,
    refit_every: int = 0,
    already_fitted: bool = False,
    on_step: Callable[[], None] | None = None,
    timings: dict[str, float] | None = None,
    keep: list[Forecast] | None = None,
) -> ForecastPaths:
    """Walk ``model`` over ``origins`` (fit at the first, update or refit after).

    With ``already_fitted`` the model is taken as fitted on ``values[:origins[0]]``.
    Forecasts run past the end of ``values`` are allowed; their actuals are NaN.
    """
    t_fit = t_upd = t_pred = 0.0
    n_upd = refits = 0
    pts, los, meds, his, acts, labels = [], [], [], [], [], []
    n = len(values)
    prev = origins[0]
    for i, o in enumerate(origins):
        t0 = time.perf_counter()
        if i == 0 and not already_fitted:
            model.fit(timestamps[:o], values[:o])
            t_fit += time.perf_counter() - t0
        elif i > 0 and refit_every > 0 and i % refit_every == 0:
            model.fit(timestamps[:o], values[:o])
            t_fit += time.perf_counter() - t0
            refits += 1
        elif o > prev:
            model.update(timestamps[prev:o], values[prev:o])
            t_upd += time.perf_counter() - t0
            n_upd += 1
        prev = o
        t0 = time.perf_counter()
        fc = model.predict(horizon)
        t_pred += time.perf_counter() - t0
        if keep is not None:
            keep.append(fc)
        pts.append(fc.mean)
        los.append(fc.quantile(QUANTILES[0]))
        meds.append(fc.quantile(QUANTILES[1]))
        his.append(fc.quantile(QUANTILES[2]))
        act = np.full(horizon, np.nan)
        stop = min(n, o + horizon)
        act[: stop - o] = values[o:stop]
        acts.append(act)
        labels.append(fc.model)
        if on_step is not None:
            on_step()
    if timings is not None:
        timings.update(fit=t_fit, update=t_upd / max(n_upd, 1), predict=t_pred / len(origins),
                       refits=refits)
    return ForecastPaths(list(origins), np.array(pts), np.array(los), np.array(meds),
                         np.array(his), np.array(acts), labels)


def score(paths: ForecastPaths, horizon: int, scale: float) -> Scores:
    """Metrics over steps 1..``horizon`` of every origin with known actuals."""
    y = paths.actual[:, :horizon]
    f = paths.point[:, :horizon]
    ok = np.isfinite(y)
    if not ok.any():
        return Scores(math.nan, math.nan, math.nan, math.nan, 0)
    err = np.abs(y - f)[ok]
    denom = (np.abs(y) + np.abs(f))[ok]
    smape = float(np.mean(np.where(denom > 0, 200.0 * err / np.where(denom > 0, denom, 1), 0.0)))
    lo, hi = paths.lower[:, :horizon][ok], paths.upper[:, :horizon][ok]
    yy = y[ok]
    cover = float(np.mean((yy >= lo) & (yy <= hi)))
    pin = 0.0
    for lv, q in zip(QUANTILES, (lo, paths.median[:, :horizon][ok], hi), strict=True):
        d = yy - q
        pin += float(np.mean(np.maximum(lv * d, (lv - 1) * d)))
    pin /= len(QUANTILES)
    good_scale = math.isfinite(scale) and scale > 0
    mase = float(err.mean()) / scale if good_scale else math.nan
    return Scores(mase=mase, smape=smape, coverage_80=cover,
                  pinball=pin / scale if good_scale else math.nan,
                  n_forecasts=int(np.any(ok, axis=1).sum()))


def rolling_origin(
    make: Callable[[], BaseForecaster],
    series: RegularSeries,
    horizons: Sequence[int],
    *,
    folds: int = DEFAULT_FOLDS,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    season: int | None = None,
    refit_every: int = 0,
    keep_forecasts: bool = False,
    on_step: Callable[[], None] | None = None,
) -> BacktestResult:
    """Backtest one model on ``series`` at every horizon in ``horizons`` (one walk)."""
    hs = sorted({int(h) for h in horizons})
    if not hs or hs[0] < 1:
        raise ValueError(f"horizons must be positive, got {list(horizons)}")
    model = make()
    # Origins depend on the series only, so every model is scored on the same forecasts;
    # a model that needs more history than the first origin gives fails with its reason.
    origins = make_origins(len(series), hs[-1], folds=folds, test_fraction=test_fraction)
    train = series.values[: origins[0]]
    m = season if season is not None else detect_season(train, series.interval).season
    scale = mase_scale(train, m)
    result = BacktestResult(model=model.name, series=series.name, horizons={},
                            folds=len(origins), scale=scale, season=m)
    timings: dict[str, float] = {}
    kept: list[Forecast] | None = [] if keep_forecasts else None
    try:
        paths = collect_forecasts(model, series.timestamps, series.values, origins, hs[-1],
                                  refit_every=refit_every, on_step=on_step, timings=timings,
                                  keep=kept)
    except DataQualityError as exc:
        result.error = str(exc)
        result.horizons = {h: Scores(math.nan, math.nan, math.nan, math.nan, 0) for h in hs}
        return result
    result.horizons = {h: score(paths, h, scale) for h in hs}
    result.fit_seconds = timings["fit"]
    result.update_seconds = timings["update"]
    result.predict_seconds = timings["predict"]
    result.refits = int(timings["refits"])
    result.label = paths.labels[-1]
    result.forecasts = kept or []
    return result
