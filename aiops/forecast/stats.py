"""Statistical comparators from statsforecast: AutoETS, AutoTheta and MSTL.

They answer "is our model better than a strong, well-kept classical one?" in the benchmark,
and ``auto`` may use them when they win its backtest. ``update`` is cheap: the fitted
parameters are applied to the extended series with statsforecast's ``forward`` (filtering,
no re-estimation). Intervals are the library's own (80% level -> p10/p90), the median is
the point forecast.

MSTL's ``forward`` re-decomposes the series at every forecast (0.2-7 s a call, growing with
the season length); ``mstl:fast=true``, which ``auto`` uses, decomposes once per longest
season instead (see ``MstlForecaster``). The plain ``mstl`` stays the library's own
procedure, since it is the benchmark's comparator.

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
from statsforecast.mstl import mstl

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
FAST_SA_FILE = "mstl_sa.npy"
FAST_TAILS_FILE = "mstl_tails.npy"


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
    """MSTL: daily and weekly STL components (those the history covers twice) + ETS trend.

    statsforecast's ``forward`` re-runs the STL decomposition of the recent context at every
    forecast: faithful to the library (the benchmark's comparator), but 0.2-5 s per call
    depending on the season length. ``fast=True`` (what ``auto`` uses) decomposes at ``fit``
    and then once per longest season of new points; in between, each seasonal component
    repeats its last cycle (its own seasonal-naive forecast, as MSTL forecasts it anyway)
    and only the seasonally adjusted values go through the fitted ETS (milliseconds).
    Updates split at the refresh points, so the state does not depend on how the new points
    were batched.
    """

    name = "mstl"

    seasons_: list[int]
    tails_: list[FloatArray]  # fast: the last cycle of each seasonal component
    sa_: FloatArray  # fast: recent seasonally adjusted values (trend + remainder)
    since_: int  # fast: points since the end of the last decomposition

    def __init__(self, season: int | None = None, max_train: int = DEFAULT_MAX_TRAIN,
                 fast: bool = False) -> None:
        super().__init__(season=season, max_train=max_train)
        check_param(isinstance(fast, bool), self.name, f"fast must be a bool, got {fast!r}")
        self.fast = fast

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "fast": self.fast}

    def _seasons(self) -> list[int]:
        n = len(self.train_)
        periods = [p for p in calendar_periods(self.interval_).values() if n >= 2 * p + 2]
        if not periods and self.season_ > 1 and n >= 2 * self.season_ + 2:
            periods = [self.season_]
        return sorted(periods)

    def _context(self) -> int:
        seasons = self._seasons()
        return max(3 * max(seasons, default=1), 256)

    def _build(self) -> Any:
        seasons = self._seasons()
        if not seasons:
            return AutoETS(model="ZZN")
        return MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))

    # ------------------------------------------------------------------- fast path
    def _fit_on(self, train: FloatArray) -> None:
        super()._fit_on(train)
        if not self.fast:
            return
        self.seasons_ = self._seasons()
        if self.seasons_:
            self._take_decomposition(self.model_.model_, self.train_)
        else:
            self.tails_, self.sa_ = [], self.train_[-self._context():].copy()
        self.since_ = 0

    def _take_decomposition(self, frame: Any, values: FloatArray) -> None:
        cols = (["seasonal"] if len(self.seasons_) == 1
                else [f"seasonal{p}" for p in self.seasons_])
        comps = [np.asarray(frame[c].to_numpy(), dtype=np.float64) for c in cols]
        self.tails_ = [c[-p:].copy() for c, p in zip(comps, self.seasons_, strict=True)]
        self.sa_ = (values - np.sum(comps, axis=0))[-self._context():].copy()
        self.since_ = 0

    def _seasonal_ahead(self, start: int, count: int) -> FloatArray:
        """The seasonal part ``start + 1 .. start + count`` points after the decomposition."""
        out = np.zeros(count)
        j = start + np.arange(count)
        for tail, p in zip(self.tails_, self.seasons_, strict=True):
            out += tail[j % p]
        return out

    def _redecompose(self, recent: FloatArray) -> None:
        try:
            frame = mstl(x=recent, period=self.seasons_)
        except (ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
            raise DataQualityError(f"{self.name}: STL decomposition failed: {exc}") from None
        self._take_decomposition(frame, recent)

    def _update(self, timestamps: FloatArray, values: FloatArray) -> None:
        if not self.fast:
            return
        ctx = self._context()
        every = max(self.seasons_, default=0)
        seen = self.history_
        i = 0
        while i < len(values):
            take = len(values) - i if not every else min(len(values) - i, every - self.since_)
            part = values[i:i + take]
            adj = part - self._seasonal_ahead(self.since_, take) if every else part
            self.sa_ = np.concatenate([self.sa_, adj])[-ctx:]
            self.since_ += take
            seen = np.concatenate([seen[-ctx:], part])
            i += take
            if every and self.since_ >= every:
                self._redecompose(seen[-ctx:])

    def _predict(self, horizon: int) -> tuple[FloatArray, Mapping[float, FloatArray]]:
        if not self.fast:
            return super()._predict(horizon)
        ets = self.model_.trend_forecaster if self.seasons_ else self.model_
        try:
            out = ets.forward(y=self.sa_, h=horizon, level=[80])
        except (ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
            raise DataQualityError(f"{self.name}: statsforecast could not forecast: {exc}") \
                from None
        seas = self._seasonal_ahead(self.since_, horizon) if self.seasons_ else 0.0
        mean = np.asarray(out["mean"], dtype=np.float64) + seas
        lo = np.asarray(out.get("lo-80", out["mean"]), dtype=np.float64) + seas
        hi = np.asarray(out.get("hi-80", out["mean"]), dtype=np.float64) + seas
        return mean, {0.1: lo, 0.5: mean.copy(), 0.9: hi}

    def _save_state(self, directory: Path) -> dict[str, Any]:
        state = super()._save_state(directory)
        if self.fast:
            np.save(directory / FAST_SA_FILE, self.sa_, allow_pickle=False)
            tails = np.concatenate(self.tails_) if self.tails_ else np.zeros(0)
            np.save(directory / FAST_TAILS_FILE, tails, allow_pickle=False)
            state["fast"] = {"seasons": list(self.seasons_), "since": self.since_}
        return state

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        super()._load_state(directory, state)
        if self.fast:
            fast = dict(state["fast"])
            self.seasons_ = [int(p) for p in fast["seasons"]]
            self.since_ = int(fast["since"])
            self.sa_ = np.asarray(np.load(directory / FAST_SA_FILE, allow_pickle=False))
            tails = np.asarray(np.load(directory / FAST_TAILS_FILE, allow_pickle=False))
            cuts = np.cumsum(self.seasons_)[:-1]
            self.tails_ = [t.copy() for t in np.split(tails, cuts)] if self.seasons_ else []
