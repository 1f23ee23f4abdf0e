"""``auto``: pick, per series, the models that beat the baselines on its own recent past.

This is what the daemon uses by default, because no single model wins everywhere: on a
bursty series smoothing beats everything, on a strongly weekly one the seasonal lags do, and
on some real traffic Prophet loses to the last value. The procedure, on the history given
to ``fit`` only (no look-ahead):

1. Hold out the most recent ``validation`` share (at most ``max_validation`` points). Fit
   every candidate on the rest and walk it over up to ``folds`` origins in the held-out part
   with ``update`` / ``predict`` (a rolling-origin backtest, exactly as it will be used).
2. Errors are compared step by step relative to the better baseline at that step (so
   step 1, with small errors, weighs as much as step ``horizon``). The baseline is the
   better of ``naive`` and ``seasonal_naive``; a candidate is *eligible* only if it beat
   it. A model that lost its own backtest is never used, alone or in a combination.
3. Among the eligible models and the baseline, the equal-weight average of at most
   ``max_members`` models with the least held-out error is chosen per step, the errors
   being averaged over ``SMOOTH_STEPS`` neighbouring steps: one step ahead a smoother often
   wins, further out a seasonal model, and the smoothing keeps the choice from chasing the
   noise of one step. Equal weights, because estimated weights rarely beat them out of
   sample.
4. The combined p10/p90 band is rescaled per step so it covers 80% of the held-out actuals
   (normalised split-conformal calibration, at most halving the band), since averaged
   quantiles are not calibrated quantiles. This holds for whatever was chosen, the baseline
   alone included.
5. With ``adapt`` (the default) the calibration keeps going after ``fit``: every forecast
   ``predict`` makes is kept (once per origin) until its ``horizon`` actuals have arrived
   through ``update``, then its normalised errors join the calibration scores, which cover
   the last ``validation``-span of origins (the held-out ones at first, sliding forward).
   Load drifts between refits (a level shift, a noisier regime), and a band calibrated on
   last week's calm would then cover far less than 80%. Only actuals already observed are
   used, so there is still no look-ahead; the cost is a quantile over at most
   ``MAX_CALIBRATION_ROWS`` scores per step when a forecast completes.

A candidate that cannot run on the series (too short, missing package) is skipped with its
reason; if nothing beats the baseline, or the history is too short to hold any out (then the
better baseline is judged by in-sample error), the forecast is the better naive baseline and
``reason_`` says why. ``update`` forwards the new points to the chosen models (cheap); the
choice is revisited at the next ``fit``. MSTL runs in its ``fast`` mode here (decomposed at
fit and once per longest season, not at every forecast), which keeps ``predict`` at a few
milliseconds.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aiops.errors import DataQualityError, InputError
from aiops.forecast.backtest import ForecastPaths, collect_forecasts, mase_scale
from aiops.forecast.base import (
    QUANTILES,
    BaseForecaster,
    check_param,
    load_forecaster,
    make_forecaster,
)
from aiops.forecast.season import detect_season, seasonal_naive_mae
from aiops.types import FloatArray

DEFAULT_CANDIDATES = ("naive", "seasonal_naive", "ets", "theta", "mstl", "lstm", "prophet")
DEFAULT_MEMBER_PARAMS: dict[str, dict[str, Any]] = {"mstl": {"fast": True}}
"""Defaults ``auto`` gives its candidates (``params`` overrides them): statsforecast's MSTL
re-decomposes the series at every forecast (0.2-5 s a call), its fast mode does not."""

BASELINES = ("naive", "seasonal_naive")
MIN_ORIGINS = 4
SMOOTH_STEPS = 2
"""Per-step subset choice averages the errors of this many steps on each side."""
MIN_BAND_SCALE = 0.5
MAX_BAND_SCALE = 10.0
MIN_TRAIN = 16
MEMBERS_DIR = "members"
MAX_CALIBRATION_ROWS = 4096
"""Forecasts the online calibration keeps at most (a daemon predicting every minute makes
about 2000 in a validation span); the oldest go first."""
CAL_ORIGINS_FILE = "calibration_origins.npy"
CAL_SCORES_FILE = "calibration_scores.npy"
PENDING_ORIGINS_FILE = "pending_origins.npy"
PENDING_BANDS_FILE = "pending_bands.npy"


def band_scores(lower: FloatArray, median: FloatArray, upper: FloatArray,
                actual: FloatArray) -> FloatArray:
    """Normalised conformity scores: by how many half-widths the actual left the band.

    The band ``median -/+ c * half-width`` holds the actual exactly when its score is <= c.
    A zero half-width on the side the actual fell is infinitely wrong (score inf), unless
    the actual sits on the median; NaN actuals give NaN.
    """
    down, up = median - lower, upper - median
    s_lo = np.where(down > 0, (median - actual) / np.where(down > 0, down, 1.0),
                    np.where(actual < median, np.inf, 0.0))
    s_hi = np.where(up > 0, (actual - median) / np.where(up > 0, up, 1.0),
                    np.where(actual > median, np.inf, 0.0))
    out = np.maximum(s_lo, s_hi)
    return np.asarray(np.where(np.isnan(actual), np.nan, out), dtype=np.float64)


def conformal_margin(scores: FloatArray, coverage: float = 0.8) -> FloatArray:
    """Per-step factor on the half-widths from ``scores`` (rows = forecasts, columns = steps).

    The split-conformal quantile: the ceil((m + 1) * coverage)-th smallest of a step's m
    scores (the largest when that exceeds m), which covers at least ``coverage`` of a new
    exchangeable forecast even for small m. Clipped to [``MIN_BAND_SCALE``,
    ``MAX_BAND_SCALE``]; 1 where a step has fewer than ``MIN_ORIGINS`` scores.
    """
    out = np.ones(scores.shape[1])
    for k in range(scores.shape[1]):
        col = np.sort(scores[:, k][~np.isnan(scores[:, k])])
        m = len(col)
        if m < MIN_ORIGINS:
            continue
        rank = min(math.ceil((m + 1) * coverage - 1e-9), m)
        out[k] = float(np.clip(col[rank - 1], MIN_BAND_SCALE, MAX_BAND_SCALE))
    return out


class AutoForecaster(BaseForecaster):
    """Backtest-driven selection and combination; see the module docstring."""

    name = "auto"

    members_: dict[str, BaseForecaster]
    step_members_: list[tuple[str, ...]]
    margin_: FloatArray  # per-step factor on the combined band's half-widths
    cal_origins_: npt.NDArray[np.int64]  # origin (points seen) of each calibration row
    cal_scores_: FloatArray  # (rows, horizon) band_scores of those forecasts
    cal_window_: int  # rows older than this many points before the newest are dropped
    pending_: dict[int, FloatArray]  # origin -> (3, horizon) raw band awaiting actuals
    scores_: dict[str, float]
    mase_: dict[str, float]
    excluded_: dict[str, str]
    baseline_: str
    reason_: str

    def __init__(
        self,
        candidates: str | Sequence[str] = DEFAULT_CANDIDATES,
        horizon: int = 12,
        validation: float = 0.2,
        max_validation: int = 2016,
        folds: int = 100,
        combine: bool = True,
        max_members: int = 3,
        season: int | None = None,
        refit: bool = False,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        adapt: bool = True,
    ) -> None:
        names = candidates.split("+") if isinstance(candidates, str) else list(candidates)
        names = [c.strip() for c in names if c.strip()]
        n = self.name
        check_param(bool(names) and "auto" not in names, n,
                    f"candidates must name other models, got {candidates!r}")
        check_param(len(set(names)) == len(names), n, f"candidates repeat: {candidates!r}")
        check_param(isinstance(horizon, int) and horizon >= 1, n,
                    f"horizon must be a positive integer, got {horizon!r}")
        check_param(isinstance(validation, float) and 0.05 <= validation <= 0.5, n,
                    f"validation must be a fraction in [0.05, 0.5], got {validation!r}")
        check_param(isinstance(max_validation, int) and max_validation >= horizon + MIN_ORIGINS,
                    n, f"max_validation must be >= horizon + {MIN_ORIGINS}")
        check_param(isinstance(folds, int) and folds >= MIN_ORIGINS, n,
                    f"folds must be an integer >= {MIN_ORIGINS}, got {folds!r}")
        check_param(isinstance(combine, bool), n, f"combine must be a bool, got {combine!r}")
        check_param(isinstance(max_members, int) and max_members >= 1, n,
                    f"max_members must be a positive integer, got {max_members!r}")
        check_param(season is None or (isinstance(season, int) and season >= 1), n,
                    f"season must be a positive integer or None, got {season!r}")
        check_param(isinstance(refit, bool), n, f"refit must be a bool, got {refit!r}")
        check_param(isinstance(adapt, bool), n, f"adapt must be a bool, got {adapt!r}")
        self.candidates = tuple(names)
        self.horizon = horizon
        self.validation = validation
        self.max_validation = max_validation
        self.folds = folds
        self.combine = combine
        self.max_members = max_members
        self.season = season
        self.refit = refit
        self.params = {k: dict(v) for k, v in (params or {}).items()}
        self.adapt = adapt

    def get_params(self) -> dict[str, Any]:
        return {"candidates": list(self.candidates), "horizon": self.horizon,
                "validation": self.validation, "max_validation": self.max_validation,
                "folds": self.folds, "combine": self.combine, "max_members": self.max_members,
                "season": self.season, "refit": self.refit, "params": self.params,
                "adapt": self.adapt}

    def max_history(self) -> int:
        return 1024

    def label(self) -> str:
        if not hasattr(self, "members_"):
            return self.name
        return f"auto({'+'.join(sorted(self.members_))})"

    def _make(self, name: str) -> BaseForecaster:
        params = {**DEFAULT_MEMBER_PARAMS.get(name, {}), **self.params.get(name, {})}
        if name == "seasonal_naive" and self.season is not None:
            params.setdefault("season", self.season)
        return make_forecaster(name, **params)

    # ----------------------------------------------------------------------------- fit
    def _fallback(self, ts: FloatArray, ys: FloatArray, reason: str,
                  paths: Mapping[str, ForecastPaths] | None = None,
                  origins: Sequence[int] = ()) -> None:
        """Forecast with the better baseline; calibrate its band on its backtest if any."""
        name = getattr(self, "baseline_", "naive")
        model = self._make(name)
        try:
            model.fit(ts, ys)
        except DataQualityError:
            name, model = "naive", self._make("naive").fit(ts, ys)
        self.baseline_ = name
        self.members_ = {name: model}
        self.step_members_ = [(name,)] * self.horizon
        p = (paths or {}).get(name)
        if p is not None:
            self._start_calibration(origins, band_scores(p.lower, p.median, p.upper, p.actual),
                                    len(ys) - int(origins[0]))
        else:
            # Nothing held out: the band starts as the baseline gives it, and the online
            # calibration (``adapt``) learns over a window as long as this history.
            self._start_calibration([], np.empty((0, self.horizon)), len(ys))
        self.reason_ = f"fell back to {name}: {reason}"

    def _start_calibration(self, origins: Sequence[int], scores: FloatArray,
                           window: int) -> None:
        self.cal_origins_ = np.asarray(origins, dtype=np.int64)
        self.cal_scores_ = np.asarray(scores, dtype=np.float64).reshape(-1, self.horizon)
        self.cal_window_ = int(window)
        self.pending_ = {}
        self.margin_ = conformal_margin(self.cal_scores_)

    def _fit(self, timestamps: FloatArray, values: FloatArray) -> None:
        n, h = len(values), self.horizon
        self.scores_, self.mase_, self.excluded_ = {}, {}, {}
        self.baseline_ = "naive"
        n_val = min(max(round(self.validation * n), h + MIN_ORIGINS), self.max_validation)
        split = n - n_val
        if split < MIN_TRAIN:
            why = (f"{n} points are too few to hold out {n_val} for a backtest and train on "
                   f"at least {MIN_TRAIN}")
            # No held-out test possible: compare the two baselines' in-sample errors.
            per = self.season or detect_season(values, self.interval_).season
            if 1 < per < n - 1:
                mae_s, mae_n = seasonal_naive_mae(values, per), seasonal_naive_mae(values, 1)
                if mae_s < mae_n:
                    self.baseline_ = "seasonal_naive"
                why += (f"; in-sample MAE seasonal_naive ({per} steps) {mae_s:.3g} vs naive "
                        f"{mae_n:.3g}")
            self._fallback(timestamps, values, why)
            return
        last = n - h
        k = min(self.folds, last - split + 1)
        origins = sorted({round(x) for x in np.linspace(split, last, k)})
        season = self.season or detect_season(values[:split], self.interval_).season
        scale = mase_scale(values[:split], season)
        if not (math.isfinite(scale) and scale > 0):
            scale = 1.0
        paths: dict[str, ForecastPaths] = {}
        models: dict[str, BaseForecaster] = {}
        for name in self.candidates:
            try:
                model = self._make(name)
                paths[name] = collect_forecasts(model, timestamps, values, origins, h)
                models[name] = model
            except (DataQualityError, InputError) as exc:
                self.excluded_[name] = str(exc)
        if not any(b in paths for b in BASELINES):
            self._fallback(timestamps, values, "no baseline could be backtested: "
                           + "; ".join(f"{k}: {v}" for k, v in self.excluded_.items()))
            return
        act = next(paths[b].actual for b in BASELINES if b in paths)  # (origins, h)

        def step_mae(point: FloatArray) -> FloatArray:
            return np.asarray(np.mean(np.abs(act - point), axis=0), dtype=np.float64)

        # Per-step reference: the better baseline at that step, so step 1 (small errors)
        # weighs as much as step h (large ones) in every comparison.
        ref = np.min([step_mae(paths[b].point) for b in BASELINES if b in paths], axis=0)
        ref = np.where(ref > 0, ref, 1.0)

        def rel(point: FloatArray) -> float:
            return float(np.mean(step_mae(point) / ref))

        for name, p in paths.items():
            self.scores_[name] = rel(p.point)
            self.mase_[name] = float(np.mean(np.abs(act - p.point))) / scale
        self.baseline_ = min((b for b in BASELINES if b in paths),
                             key=lambda b: self.scores_[b])
        bar = self.scores_[self.baseline_]
        winners = sorted((c for c in self.scores_ if self.scores_[c] < bar
                          and c != self.baseline_), key=lambda c: self.scores_[c])
        if not winners:
            lost = ", ".join(f"{c} {self.mase_[c]:.3f}" for c in self.scores_
                             if c != self.baseline_)
            self._fallback(timestamps, values,
                           f"no candidate beat {self.baseline_} (MASE "
                           f"{self.mase_[self.baseline_]:.3f}) on the last {n_val} points"
                           + (f" ({lost})" if lost else ""), paths, origins)
            return
        pool = [*winners[:5], self.baseline_]
        sizes = range(1, (min(self.max_members, len(pool)) if self.combine else 1) + 1)
        subsets = [s for r in sizes for s in itertools.combinations(pool, r)]

        def combo(s: tuple[str, ...], attr: str) -> FloatArray:
            return np.asarray(np.mean([getattr(paths[m], attr) for m in s], axis=0))

        # Relative error of every subset at every step, smoothed over neighbouring steps so
        # a per-step choice follows a real trend (smoothers early, seasonal models later)
        # rather than the noise of one step's few dozen errors.
        rel_steps = np.array([step_mae(combo(s, "point")) / ref for s in subsets])
        kernel = np.ones(2 * SMOOTH_STEPS + 1)
        num = np.array([np.convolve(r, kernel, mode="same") for r in rel_steps])
        den = np.convolve(np.ones(h), kernel, mode="same")
        smooth = num / den
        sizes_arr = np.array([len(s) for s in subsets])
        self.step_members_ = []
        for step in range(h):
            best = min(range(len(subsets)), key=lambda i: (smooth[i, step], sizes_arr[i]))
            self.step_members_.append(subsets[best])
        used = sorted({m for st in self.step_members_ for m in st})
        # Interval calibration per step (normalised split conformal): the factor c that
        # makes median -/+ c * (lower/upper half-width) of the combined band cover 80% of
        # the held-out actuals. Clipped to [MIN_BAND_SCALE, MAX_BAND_SCALE]: a calm held-out
        # stretch may narrow the band, but never below half of what the members say.
        lo, med, hi = (np.column_stack([combo(st, a)[:, k]
                                        for k, st in enumerate(self.step_members_)])
                       for a in ("lower", "median", "upper"))
        self._start_calibration(origins, band_scores(lo, med, hi, act), n - origins[0])
        self.members_ = {}
        for m in used:
            if self.refit:
                self.members_[m] = self._make(m).fit(timestamps, values)
            else:
                models[m].update(timestamps[origins[-1]:], values[origins[-1]:])
                self.members_[m] = models[m]
        auto_point = np.column_stack([combo(st, "point")[:, k]
                                      for k, st in enumerate(self.step_members_)])
        val_mase = float(np.mean(np.abs(act - auto_point))) / scale
        runs: list[str] = []
        for k, st in enumerate(self.step_members_):
            if k and st == self.step_members_[k - 1]:
                runs[-1] = f"{runs[-1].split(' ')[0].split('-')[0]}-{k + 1} {'+'.join(st)}"
            else:
                runs.append(f"{k + 1} {'+'.join(st)}")
        self.reason_ = (
            f"beat {self.baseline_} (MASE {self.mase_[self.baseline_]:.3f}) on the last "
            f"{n_val} points: " + ", ".join(f"{c} {self.mase_[c]:.3f}" for c in winners)
            + f"; steps {', '.join(runs)} (validation MASE {val_mase:.3f})"
        )

    # ------------------------------------------------------------------ update / predict
    def _update(self, timestamps: FloatArray, values: FloatArray) -> None:
        for m in self.members_.values():
            m.update(timestamps, values)
        if self.adapt:
            self._absorb(values)

    def _absorb(self, values: FloatArray) -> None:
        """Score the pending forecasts whose actuals are all in; recalibrate if any were."""
        end = self.n_seen_ + len(values)  # points seen once this update is applied
        done = sorted(o for o in self.pending_ if o + self.horizon <= end)
        if not done:
            return
        recent = np.concatenate([self.history_, values])
        first = end - len(recent)  # index (in points seen) of recent[0]
        rows, kept = [], []
        for o in done:
            band = self.pending_.pop(o)
            if o < first:  # older than the history kept: cannot be scored, dropped
                continue
            actual = recent[o - first:o - first + self.horizon]
            rows.append(band_scores(band[0], band[1], band[2], actual))
            kept.append(o)
        if not rows:
            return
        origins = np.concatenate([self.cal_origins_, np.asarray(kept, dtype=np.int64)])
        scores = np.vstack([self.cal_scores_, np.array(rows)])
        keep = origins >= end - max(self.cal_window_, self.horizon + MIN_ORIGINS)
        keep[: max(0, len(keep) - MAX_CALIBRATION_ROWS)] = False
        self.cal_origins_, self.cal_scores_ = origins[keep], scores[keep]
        self.margin_ = conformal_margin(self.cal_scores_)

    def _predict(self, horizon: int) -> tuple[FloatArray, Mapping[float, FloatArray]]:
        # Members forecast at least auto's own horizon, so the raw band of every step the
        # calibration scores is recorded whatever horizon the caller asked for.
        h_all = max(horizon, self.horizon)
        fc = {name: m.predict(h_all) for name, m in self.members_.items()}
        mean, lo, med, hi = (np.empty(h_all) for _ in range(4))
        for k in range(h_all):
            s = self.step_members_[min(k, self.horizon - 1)]
            mean[k] = np.mean([fc[m].mean[k] for m in s])
            lo[k] = np.mean([fc[m].quantile(QUANTILES[0])[k] for m in s])
            med[k] = np.mean([fc[m].quantile(QUANTILES[1])[k] for m in s])
            hi[k] = np.mean([fc[m].quantile(QUANTILES[2])[k] for m in s])
        if self.adapt and self.n_seen_ not in self.pending_:
            h = self.horizon
            self.pending_[self.n_seen_] = np.vstack([lo[:h], med[:h], hi[:h]])
        c = self.margin_[np.minimum(np.arange(horizon), self.horizon - 1)]
        lo, med, hi, mean = lo[:horizon], med[:horizon], hi[:horizon], mean[:horizon]
        lo = np.minimum(med - c * (med - lo), med)
        hi = np.maximum(med + c * (hi - med), med)
        return mean, {0.1: lo, 0.5: med, 0.9: hi}

    # ----------------------------------------------------------------------- artifacts
    def selection(self) -> dict[str, Any]:
        """What was chosen and why, for meta.json, the CLI and the decision log."""
        return {"members": sorted(self.members_), "baseline": self.baseline_,
                "step_members": [list(s) for s in self.step_members_],
                "scores": {k: round(v, 6) for k, v in self.scores_.items()},
                "mase": {k: round(v, 6) for k, v in self.mase_.items()},
                "excluded": dict(self.excluded_), "reason": self.reason_}

    def _save_state(self, directory: Path) -> dict[str, Any]:
        for name, m in self.members_.items():
            m.save(directory / MEMBERS_DIR / name)
        np.save(directory / CAL_ORIGINS_FILE, self.cal_origins_, allow_pickle=False)
        np.save(directory / CAL_SCORES_FILE, self.cal_scores_, allow_pickle=False)
        pend = sorted(self.pending_)
        np.save(directory / PENDING_ORIGINS_FILE, np.asarray(pend, dtype=np.int64),
                allow_pickle=False)
        bands = (np.stack([self.pending_[o] for o in pend]) if pend
                 else np.empty((0, 3, self.horizon)))
        np.save(directory / PENDING_BANDS_FILE, bands, allow_pickle=False)
        return {**self.selection(), "margin": [float(x) for x in self.margin_],
                "calibration_window": self.cal_window_,
                "calibration_rows": len(self.cal_origins_)}

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        self.members_ = {str(n): load_forecaster(directory / MEMBERS_DIR / str(n))
                         for n in state["members"]}
        self.step_members_ = [tuple(str(x) for x in s) for s in state["step_members"]]
        self.margin_ = np.asarray(state["margin"], dtype=np.float64)
        self.scores_ = {str(k): float(v) for k, v in dict(state["scores"]).items()}
        self.mase_ = {str(k): float(v) for k, v in dict(state["mase"]).items()}
        self.excluded_ = {str(k): str(v) for k, v in dict(state["excluded"]).items()}
        self.baseline_ = str(state["baseline"])
        self.reason_ = str(state["reason"])
        self.cal_window_ = int(state["calibration_window"])

        def arr(name: str) -> Any:
            return np.load(directory / name, allow_pickle=False)

        self.cal_origins_ = np.asarray(arr(CAL_ORIGINS_FILE), dtype=np.int64)
        self.cal_scores_ = np.asarray(arr(CAL_SCORES_FILE), dtype=np.float64)
        bands = np.asarray(arr(PENDING_BANDS_FILE), dtype=np.float64)
        self.pending_ = {int(o): bands[i].copy()
                         for i, o in enumerate(arr(PENDING_ORIGINS_FILE))}

    def __repr__(self) -> str:
        return f"AutoForecaster({json.dumps(self.get_params())})"
