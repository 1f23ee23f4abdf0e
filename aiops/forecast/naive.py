"""The two baselines every other model must beat: the last value, and the value one season ago.

Neither learns parameters, so ``update`` is free and no artifact can go stale. Quantiles come
from the empirical distribution of the baseline's own h-step errors over the recent past
(``residual_window`` points): honest for the series at hand, with no distribution assumed,
and they widen with the horizon exactly as the series' own changes do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aiops.errors import DataQualityError
from aiops.forecast.base import QUANTILES, BaseForecaster, check_param, residual_quantiles
from aiops.forecast.season import detect_season
from aiops.forecast.series import MIN_LENGTH
from aiops.types import FloatArray

DEFAULT_RESIDUAL_WINDOW = 2016
"""Recent errors the quantiles are read from: a week at 5-min sampling, so the band has seen
every hour of every weekday, yet forgets a regime that ended long ago."""


def _band(point: FloatArray, resid_q: list[FloatArray]) -> dict[float, FloatArray]:
    q = np.vstack(resid_q) if resid_q else np.zeros((0, len(QUANTILES)))
    return {lv: point + q[:, i] for i, lv in enumerate(QUANTILES)}


class NaiveForecaster(BaseForecaster):
    """Tomorrow equals today: every step repeats the last observed value.

    At short horizons on bursty series this is hard to beat, which is why ``auto`` measures
    every model against it.
    """

    name = "naive"

    def __init__(self, residual_window: int = DEFAULT_RESIDUAL_WINDOW) -> None:
        check_param(isinstance(residual_window, int) and residual_window >= 10, self.name,
                    f"residual_window must be an integer >= 10, got {residual_window!r}")
        self.residual_window = residual_window

    def get_params(self) -> dict[str, Any]:
        return {"residual_window": self.residual_window}

    def _fit(self, timestamps: FloatArray, values: FloatArray) -> None:
        pass

    def _predict(self, horizon: int) -> tuple[FloatArray, Mapping[float, FloatArray]]:
        y = self.history_
        point = np.full(horizon, y[-1])
        resid = []
        for k in range(1, horizon + 1):
            r = y[k:] - y[:-k] if k < len(y) else np.empty(0)
            resid.append(residual_quantiles(r[-self.residual_window:]))
        return point, _band(point, resid)


class SeasonalNaiveForecaster(BaseForecaster):
    """Each step repeats the value one season earlier (``season`` steps; detected if None).

    When no season is found the model degrades to ``naive`` and says so in
    ``season_reason_`` rather than failing: a flat series still deserves a forecast.
    """

    name = "seasonal_naive"

    season_: int
    season_reason_: str

    def __init__(self, season: int | None = None,
                 residual_window: int = DEFAULT_RESIDUAL_WINDOW) -> None:
        check_param(season is None or (isinstance(season, int) and season >= 1), self.name,
                    f"season must be a positive number of steps or None, got {season!r}")
        check_param(isinstance(residual_window, int) and residual_window >= 10, self.name,
                    f"residual_window must be an integer >= 10, got {residual_window!r}")
        self.season = season
        self.residual_window = residual_window

    def get_params(self) -> dict[str, Any]:
        return {"season": self.season, "residual_window": self.residual_window}

    def min_length(self) -> int:
        return MIN_LENGTH if self.season is None else self.season + MIN_LENGTH

    def _fit(self, timestamps: FloatArray, values: FloatArray) -> None:
        if self.season is not None:
            self.season_ = self.season
            self.season_reason_ = f"given ({self.season} steps)"
        else:
            choice = detect_season(values, self.interval_)
            self.season_ = choice.season
            self.season_reason_ = choice.reason

    def _predict(self, horizon: int) -> tuple[FloatArray, Mapping[float, FloatArray]]:
        y = self.history_
        n, m = len(y), self.season_
        point = np.empty(horizon)
        resid = []
        for k in range(1, horizon + 1):
            lag = m * math.ceil(k / m)
            if lag > n:
                raise DataQualityError(
                    f"{self.name}: horizon {horizon} reaches {lag} steps back; "
                    f"history holds {n}"
                )
            point[k - 1] = y[n - lag + k - 1]
            r = y[lag:] - y[:-lag] if lag < n else np.empty(0)
            resid.append(residual_quantiles(r[-self.residual_window:]))
        return point, _band(point, resid)

    def _save_state(self, directory: Path) -> dict[str, Any]:
        return {"season": self.season_, "season_reason": self.season_reason_}

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        self.season_ = int(state["season"])
        self.season_reason_ = str(state["season_reason"])
