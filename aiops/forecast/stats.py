"""Statistical comparators from statsforecast: AutoETS, AutoTheta and MSTL.

They answer "is our model better than a strong, well-kept classical one?" in the benchmark,
and ``auto`` may use them when they win its backtest. ``update`` is cheap: the fitted
parameters are applied to the extended series with statsforecast's ``forward`` (filtering,
no re-estimation). Intervals are the library's own (80% level -> p10/p90), the median is
the point forecast.

Seasons: AutoETS's seasonal search grows with the season length (a 288-step season takes
tens of seconds per fit), so seasons above ``MAX_ETS_SEASON`` fall back to a non-seasonal
ETS; MSTL handles the long daily and weekly seasons by decomposition. statsforecast is an
optional dependency: importing this module without it raises ImportError, which the
registry turns into an ``InputError`` naming the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from statsforecast.models import MSTL, AutoETS, AutoTheta

from aiops.errors import DataQualityError
from aiops.forecast.base import BaseForecaster, check_param
from aiops.forecast.season import calendar_periods, detect_season
from aiops.types import FloatArray

MAX_ETS_SEASON = 48
"""Longest season AutoETS is asked to model; beyond it the fit is too slow to refit daily."""

DEFAULT_MAX_TRAIN = 4032
"""Points the parameters are estimated on: two weeks at 5-min sampling covers the weekly
cycle twice; older data mostly slows the fit."""

TRAIN_FILE = "train.npy"


class _StatsForecaster(BaseForecaster):
    libraries = ("statsforecast",)

    season_: int
    train_start_: int
    train_: FloatArray
    model_: Any

    def __init__(self, season: int | None = None, max_train: int = DEFAULT_MAX_TRAIN) -> None:
        check_param(season is None or (isinstance(season, int) and season >= 1), self.name,
                    f"season must be a positive number of steps or None, got {season!r}")
        check_param(isinstance(max_train, int) and max_train >= 16, self.name,
                    f"max_train must be an integer >= 16, got {max_train!r}")
        self.season = season
        self.max_train = max_train

    def get_params(self) -> dict[str, Any]:
        return {"season": self.season, "max_train": self.max_train}

    def min_length(self) -> int:
        return 16

    def _build(self) -> Any:
        raise NotImplementedError

    def _context(self) -> int:
        """Points handed to ``forward``: enough for the state to settle on each season."""
        return max(self.max_train // 2, 4 * self.season_, 64)

    def _fit(self, timestamps: FloatArray, values: FloatArray) -> None:
        train = values[-self.max_train:]
        self.train_start_ = len(values) - len(train)  # index counted from the first fit point
        if self.season is not None:
            self.season_ = self.season
        else:
            self.season_ = detect_season(train, self.interval_).season
        self._fit_on(train)

    def _fit_on(self, train: FloatArray) -> None:
        self.train_ = np.asarray(train, dtype=np.float64).copy()
        model = self._build()
        try:
            model.fit(self.train_)
        except (ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
            raise DataQualityError(f"{self.name}: statsforecast could not fit: {exc}") from None
        self.model_ = model

    def _context_slice(self) -> FloatArray:
        """The recent history handed to ``forward``, starting in the same seasonal phase as
        the training slice: the fitted initial seasonal states are indexed from the first
        training point, so a context starting mid-season would shift the whole pattern."""
        m = max(self.season_, 1)
        want = min(self._context(), len(self.history_))
        behind = (self.n_seen_ - want - self.train_start_) % m  # steps past a season start
        length = want - (m - behind) % m
        return self.history_[-length:] if length >= min(want, m) else self.history_[-want:]

    def _predict(self, horizon: int) -> tuple[FloatArray, Mapping[float, FloatArray]]:
        y = self._context_slice()
        try:
            out = self.model_.forward(y=y, h=horizon, level=[80])
        except (ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
            raise DataQualityError(f"{self.name}: statsforecast could not forecast: {exc}") \
                from None
        mean = np.asarray(out["mean"], dtype=np.float64)
        lo = np.asarray(out.get("lo-80", mean), dtype=np.float64)
        hi = np.asarray(out.get("hi-80", mean), dtype=np.float64)
        return mean, {0.1: lo, 0.5: mean.copy(), 0.9: hi}

    def _save_state(self, directory: Path) -> dict[str, Any]:
        # The fitted objects are not saved (that would need pickle); the estimation is
        # deterministic, so re-estimating on the saved training slice reproduces them.
        np.save(directory / TRAIN_FILE, self.train_, allow_pickle=False)
        return {"season": self.season_, "train_start": self.train_start_}

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        self.season_ = int(state["season"])
        self.train_start_ = int(state["train_start"])
        self._fit_on(np.load(directory / TRAIN_FILE, allow_pickle=False))


class EtsForecaster(_StatsForecaster):
    """AutoETS: exponential smoothing with error/trend/season chosen by AICc."""

    name = "ets"

    def _build(self) -> Any:
        m = self.season_ if 1 < self.season_ <= MAX_ETS_SEASON else 1
        if m > 1 and len(self.train_) < 2 * m + 2:
            m = 1
        return AutoETS(season_length=m)


class ThetaForecaster(_StatsForecaster):
    """AutoTheta: the M3 winner family, with a seasonality test and decomposition."""

    name = "theta"

    def _build(self) -> Any:
        m = self.season_ if len(self.train_) >= 2 * self.season_ + 2 else 1
        return AutoTheta(season_length=m)

    def _context(self) -> int:
        # Theta's forward re-runs its seasonality test and decomposition on the context
        # itself, so it needs as many seasons as the fit had.
        return max(self.max_train, 4 * self.season_)


class MstlForecaster(_StatsForecaster):
    """MSTL: daily and weekly STL components (those the history covers twice) + ETS trend."""

    name = "mstl"

    def _seasons(self) -> list[int]:
        n = len(self.train_)
        periods = [p for p in calendar_periods(self.interval_).values() if n >= 2 * p + 2]
        if not periods and self.season_ > 1 and n >= 2 * self.season_ + 2:
            periods = [self.season_]
        return periods

    def _context(self) -> int:
        seasons = self._seasons()
        return max(3 * max(seasons, default=1), 256)

    def _build(self) -> Any:
        seasons = self._seasons()
        if not seasons:
            return AutoETS(model="ZZN")
        return MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))
