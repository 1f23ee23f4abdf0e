"""Prophet with daily and weekly seasonality, tuned for load series, plus a residual AR(1).

Prophet alone models load as trend + calendar seasonality and ignores where the series is
*right now*: at a horizon of minutes that loses to the last value by a wide margin. So the
forecast adds the current residual (actual - Prophet's fit), decayed by the residuals'
lag-1 autocorrelation ``phi`` per step (``residual_ar=True``, the default): at step 1 it
is nearly the last value's offset, far out it is plain Prophet. That also makes ``update``
cheap and meaningful: it evaluates the fitted curve at the new points and records their
residuals, no refit.

Tuning for load: daily/weekly terms switch on only when the history covers them twice;
``seasonality_mode="auto"`` picks multiplicative when the daily swing grows with the daily
level (typical of request rates), additive otherwise. Prophet's own sampling-based
intervals are switched off (slow, and blind to the AR correction); the p10/p90 come from the
empirical distribution of the corrected h-step errors over the recent past.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aiops.errors import DataQualityError
from aiops.forecast.base import QUANTILES, BaseForecaster, check_param, residual_quantiles
from aiops.types import FloatArray

CURVE_STEPS = 4096
"""Steps of the fitted curve evaluated ahead at each fit (and each time the series runs past
them): days of a minute-grid series, for the price of one Prophet ``predict``."""

MODEL_FILE = "prophet.json"
RESID_FILE = "residuals.npy"
_MODES = ("auto", "additive", "multiplicative")


def _below_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def _not_the_plotly_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Importing plotly failed")


def _before_import() -> None:
    """Prophet logs an ERROR when it is first imported without plotly, which aiops never
    needs (its plots are matplotlib): an operator reading "failed" in the daemon's log would
    look for a fault that is not there. Drop that one record, keep the rest."""
    logger = logging.getLogger("prophet.plot")
    if _not_the_plotly_notice not in logger.filters:
        logger.addFilter(_not_the_plotly_notice)


def _quiet() -> None:
    """Drop Prophet's and cmdstanpy's per-fit INFO chatter (they reset levels themselves)."""
    for name in ("prophet", "cmdstanpy"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        if _below_warning not in logger.filters:
            logger.addFilter(_below_warning)


def _ds(ts: FloatArray) -> pd.DataFrame:
    ns = (np.asarray(ts, dtype=np.float64) * 1e9).round().astype("int64").astype("datetime64[ns]")
    return pd.DataFrame({"ds": ns})


def swing_grows_with_level(values: FloatArray, per_day: int) -> bool:
    """True when days with a higher mean also swing more (Pearson r > 0.5 over >= 4 days)."""
    days = len(values) // per_day
    if per_day < 2 or days < 4 or values.min() <= 0:
        return False
    block = values[-days * per_day:].reshape(days, per_day)
    means, sds = block.mean(axis=1), block.std(axis=1)
    if means.std() == 0 or sds.std() == 0:
        return False
    return bool(np.corrcoef(means, sds)[0, 1] > 0.5)


class ProphetForecaster(BaseForecaster):
    """Prophet + residual AR(1) correction; see the module docstring for the choices."""

    name = "prophet"
    libraries = ("prophet",)

    model_: Any
    mode_: str
    phi_: float
    resid_: FloatArray
    fit_seconds_: float

    def __init__(
        self,
        seasonality_mode: str = "auto",
        changepoint_prior_scale: float = 0.05,
        seasonality_prior_scale: float = 10.0,
        residual_ar: bool = True,
        residual_window: int = 2016,
        max_train: int = 20_000,
    ) -> None:
        n = self.name
        check_param(seasonality_mode in _MODES, n,
                    f"seasonality_mode must be one of {', '.join(_MODES)}, "
                    f"got {seasonality_mode!r}")
        check_param(isinstance(changepoint_prior_scale, int | float)
                    and changepoint_prior_scale > 0, n,
                    f"changepoint_prior_scale must be positive, got {changepoint_prior_scale!r}")
        check_param(isinstance(seasonality_prior_scale, int | float)
                    and seasonality_prior_scale > 0, n,
                    f"seasonality_prior_scale must be positive, got {seasonality_prior_scale!r}")
        check_param(isinstance(residual_ar, bool), n, f"residual_ar must be a bool, "
                    f"got {residual_ar!r}")
        check_param(isinstance(residual_window, int) and residual_window >= 10, n,
                    f"residual_window must be an integer >= 10, got {residual_window!r}")
        check_param(isinstance(max_train, int) and max_train >= 16, n,
                    f"max_train must be an integer >= 16, got {max_train!r}")
        self.seasonality_mode = seasonality_mode
        self.changepoint_prior_scale = float(changepoint_prior_scale)
        self.seasonality_prior_scale = float(seasonality_prior_scale)
        self.residual_ar = residual_ar
        self.residual_window = residual_window
        self.max_train = max_train

    def get_params(self) -> dict[str, Any]:
        return {"seasonality_mode": self.seasonality_mode,
                "changepoint_prior_scale": self.changepoint_prior_scale,
                "seasonality_prior_scale": self.seasonality_prior_scale,
                "residual_ar": self.residual_ar, "residual_window": self.residual_window,
                "max_train": self.max_train}

    def min_length(self) -> int:
        return 16

    curve_: tuple[float, FloatArray] | None = None

    def _yhat(self, ts: FloatArray) -> FloatArray:
        """The fitted curve at ``ts``. Prophet's ``predict`` costs ~10 ms a call whatever
        the rows (a pandas pipeline), and a daemon or a replay asks for one or a dozen
        points every tick; so the curve is evaluated once on the series' grid for
        :data:`CURVE_STEPS` steps ahead and looked up. Points off that grid (or beyond it)
        are evaluated directly, extending the grid when they lie ahead on it."""
        ts = np.asarray(ts, dtype=np.float64)
        grid = getattr(self, "curve_", None)
        if grid is not None and ts.size:
            t0, values = grid
            pos = (ts - t0) / self.interval_
            idx = np.rint(pos).astype(np.int64)
            on = (np.abs(pos - idx) < 1e-6) & (idx >= 0)
            if on.all() and idx.max() < len(values):
                out: FloatArray = values[idx]
                return out
            if on.all() and idx.min() >= 0:
                self._curve(t0, int(idx.max()) + CURVE_STEPS)
                return self._yhat(ts)
        direct = self.model_.predict(_ds(ts))
        return np.asarray(direct["yhat"].to_numpy(), dtype=np.float64)

    def _curve(self, t0: float, steps: int) -> None:
        """Evaluate the fitted curve at ``t0 + i * interval`` for ``i < steps``."""
        grid = t0 + self.interval_ * np.arange(steps, dtype=np.float64)
        values = np.asarray(self.model_.predict(_ds(grid))["yhat"].to_numpy(),
                            dtype=np.float64)
        self.curve_ = (t0, values)

    def _fit(self, timestamps: FloatArray, values: FloatArray) -> None:
        _before_import()
        from prophet import Prophet

        _quiet()
        ts, ys = timestamps[-self.max_train:], values[-self.max_train:]
        span = ts[-1] - ts[0]
        per_day = round(86400 / self.interval_) if self.interval_ < 86400 else 0
        if self.seasonality_mode == "auto":
            mult = swing_grows_with_level(ys, per_day)
            self.mode_ = "multiplicative" if mult else "additive"
        else:
            self.mode_ = self.seasonality_mode
        model = Prophet(
            daily_seasonality=bool(per_day >= 2 and span >= 2 * 86400),
            weekly_seasonality=bool(span >= 14 * 86400 and self.interval_ <= 86400),
            yearly_seasonality=False,
            seasonality_mode="multiplicative" if self.mode_ == "multiplicative" else "additive",
            changepoint_prior_scale=self.changepoint_prior_scale,
            seasonality_prior_scale=self.seasonality_prior_scale,
            uncertainty_samples=0,
        )
        df = _ds(ts)
        df["y"] = ys
        t0 = time.perf_counter()
        try:
            model.fit(df)
        except (RuntimeError, ValueError) as exc:
            raise DataQualityError(f"prophet could not fit: {exc}") from None
        self.fit_seconds_ = time.perf_counter() - t0
        self.model_ = model
        self.curve_ = None
        resid = ys - self._yhat(ts)
        self._curve(float(ts[-1]), CURVE_STEPS)
        self.resid_ = resid[-(self.residual_window + 256):]
        self.phi_ = self._phi(resid)

    def _phi(self, resid: FloatArray) -> float:
        if not self.residual_ar or len(resid) < 3 or resid.std() == 0:
            return 0.0
        r = float(np.corrcoef(resid[1:], resid[:-1])[0, 1])
        return float(np.clip(r if np.isfinite(r) else 0.0, 0.0, 0.99))

    def _update(self, timestamps: FloatArray, values: FloatArray) -> None:
        resid = values - self._yhat(timestamps)
        self.resid_ = np.concatenate([self.resid_, resid])[-(self.residual_window + 256):]

    def _predict(self, horizon: int) -> tuple[FloatArray, Mapping[float, FloatArray]]:
        steps = np.arange(1, horizon + 1)
        future = np.asarray(self.end_ + self.interval_ * steps, dtype=np.float64)
        decay = self.phi_ ** steps
        point = self._yhat(future) + decay * self.resid_[-1]
        e = self.resid_
        rows = []
        for k in steps:
            r = e[k:] - (self.phi_ ** k) * e[:-k] if k < len(e) else np.empty(0)
            rows.append(residual_quantiles(r[-self.residual_window:]))
        q = np.vstack(rows)
        return point, {lv: point + q[:, i] for i, lv in enumerate(QUANTILES)}

    def _save_state(self, directory: Path) -> dict[str, Any]:
        from prophet.serialize import model_to_json

        (directory / MODEL_FILE).write_text(model_to_json(self.model_))
        np.save(directory / RESID_FILE, self.resid_, allow_pickle=False)
        return {"mode": self.mode_, "phi": self.phi_, "fit_seconds": self.fit_seconds_}

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        _before_import()
        from prophet.serialize import model_from_json

        _quiet()
        self.model_ = model_from_json((directory / MODEL_FILE).read_text())
        self.resid_ = np.asarray(np.load(directory / RESID_FILE, allow_pickle=False))
        self.mode_ = str(state["mode"])
        self.phi_ = float(state["phi"])
        self.fit_seconds_ = float(state["fit_seconds"])
        self.curve_ = None
