"""Raw scorers: how unusual each new point is, before calibration.

A raw scorer sees accepted points only (finite, strictly increasing time) and returns one
non-negative raw score per point, NaN while it cannot judge yet. Raw scores are unitless
("how many times the typical training outlier score"), so one calibration layer fits all.

Both scorers refit on a trailing window at a fixed cadence counted in accepted points, not
per ``update`` call: that keeps scores independent of how a stream is cut into batches, and
it bounds the cost of a point to one model query plus 1/``refit_every`` of a fit.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from aiops.detect.base import DetectorState, FloatArray

MAD_TO_STD = 1.4826  # MAD of a normal sample times this is its standard deviation


class RawScorer(Protocol):
    """What :class:`aiops.detect.detectors.LikelihoodDetector` needs from a raw scorer."""

    @property
    def warmup(self) -> int: ...

    def raw(self, t: FloatArray, x: FloatArray) -> FloatArray: ...

    def state(self) -> DetectorState: ...

    def load(self, st: DetectorState) -> None: ...


def robust_center_scale(v: FloatArray) -> tuple[float, float]:
    """Median and a robust spread of ``v`` that is never 0.

    MAD first (one spike cannot inflate it); the standard deviation when more than half the
    values are equal (MAD 0 on a mostly-flat metric); 1.0 when ``v`` is constant, so that the
    first move away from a flat line is measured in the metric's own units.
    """
    if len(v) == 0:
        return 0.0, 1.0
    center = float(np.median(v))
    scale = MAD_TO_STD * float(np.median(np.abs(v - center)))
    if not scale > 0:
        scale = float(np.std(v))
    if not scale > 0 or not math.isfinite(scale):
        scale = 1.0
    return center, scale


def lag_matrix(v: FloatArray, lag: int) -> FloatArray:
    """Rows of ``lag`` consecutive values ending at each position; the start is padded with
    the first value so every position has a row (the padding only affects warm-up)."""
    if lag <= 1:
        return v.reshape(-1, 1)
    padded = np.concatenate([np.full(lag - 1, v[0]), v])
    out: FloatArray = sliding_window_view(padded, lag)
    return out


# --- pyod ---------------------------------------------------------------------------------

PYOD_MODELS = ("knn", "iforest", "hbos", "ecod", "copod", "lof")
"""pyod models usable as raw scorers. ECOD and COPOD recompute their empirical distributions
over training *and* query rows, so a batch query would let points see each other; they are
queried one row at a time (slower, still causal)."""

_ROWWISE = {"ecod", "copod"}


def make_pyod_model(name: str, n_neighbors: int, n_estimators: int, seed: int,
                    n_rows: int = 256) -> Any:
    """A fresh pyod estimator for ``n_rows`` training rows (imported here: pyod pulls in
    scikit-learn, which ``aiops --help`` should not pay for)."""
    if name == "knn":
        from pyod.models.knn import KNN

        return KNN(n_neighbors=n_neighbors)
    if name == "iforest":
        from pyod.models.iforest import IForest

        # 256 samples per tree is the isolation-forest paper's default
        return IForest(n_estimators=n_estimators, max_samples=min(256, n_rows),
                       random_state=seed)
    if name == "hbos":
        from pyod.models.hbos import HBOS

        # "auto" bins (Birge-Rozenblac) take the pure-numpy path; the fixed-bin path is
        # numba-compiled on first use, which costs seconds in every new process
        return HBOS(n_bins="auto")
    if name == "ecod":
        from pyod.models.ecod import ECOD

        return ECOD()
    if name == "copod":
        from pyod.models.copod import COPOD

        return COPOD()
    if name == "lof":
        from pyod.models.lof import LOF

        return LOF(n_neighbors=max(n_neighbors, 10), novelty=True)
    raise ValueError(f"unknown pyod model {name!r}; known: {', '.join(PYOD_MODELS)}")


class PyodRaw:
    """A pyod model over lag vectors of the robustly scaled series.

    Each point becomes the vector of its last ``lag`` values, centred and scaled by the
    median/MAD of the training window, so the model judges the *shape* of the recent path
    (a spike, a step, a change of rhythm), not only the level. The raw score is the model's
    outlier score in units of the training window's typical score above its minimum:
    2.0 means "twice as unusual as the median training point".

    Parameters:
        lag: points per vector (6: half an hour at 5-minute scrapes, enough to see a step
            and a spike apart, short enough that a 2000-point window covers the shapes).
        train: trailing points the model is fitted on (2000: about a week at 5 minutes).
        refit_every: points between refits (100; fitting KNN on 2000 rows costs ~10 ms).
        min_train: points before the first fit (150: a fit on fewer is mostly noise).
        spread: add the log spread of the lag vector as a feature (see ``_rows``); on NAB
            it lifts the standard score from 64.47 to 66.35 and it is what makes flatlines
            visible at all.
        n_neighbors: KNN's k (5: pyod's default; the distance to the 5th neighbour does not
            let one earlier look-alike hide a repeated anomaly).
    """

    def __init__(self, model: str = "knn", lag: int = 6, train: int = 2000,
                 refit_every: int = 100, min_train: int = 150, n_neighbors: int = 5,
                 n_estimators: int = 50, seed: int = 0, spread: bool = True) -> None:
        if model not in PYOD_MODELS:
            raise ValueError(f"unknown pyod model {model!r}; known: {', '.join(PYOD_MODELS)}")
        if not (1 <= lag <= 100 and refit_every >= 1 and min_train >= max(10, lag)
                and train >= min_train):
            raise ValueError("need 1 <= lag <= 100, refit_every >= 1, "
                             "min_train >= max(10, lag), train >= min_train")
        self.model_name = model
        self.lag, self.train, self.refit_every, self.min_train = lag, train, refit_every, min_train
        self.n_neighbors, self.n_estimators, self.seed = n_neighbors, n_estimators, seed
        self.spread = spread
        self.flat = False
        self.sp_center, self.sp_scale = 0.0, 1.0
        self.values = np.zeros(0)  # trailing accepted values (enough for the next fit)
        self.n = 0  # accepted points so far
        self.last_fit = -1  # index of the first point scored by the current model
        self.fit_values = np.zeros(0)  # what the current model was fitted on
        self.model: Any = None
        self.kdtree: Any = None
        self.fitted = False
        self.center, self.scale, self.q0, self.base = 0.0, 1.0, 0.0, 1.0

    @property
    def warmup(self) -> int:
        return self.min_train

    def _fit(self, v: FloatArray) -> None:
        v = v[-(self.train + self.lag - 1):]
        self.fit_values = v.copy()
        self.fitted = True
        self.center, self.scale = robust_center_scale(v)
        lagm = lag_matrix(v, self.lag)
        if len(lagm) - (self.lag - 1) >= 2:
            lagm = lagm[self.lag - 1:]  # drop padded rows unless nothing else is left
        rows = self._rows(lagm, fit=True)
        self.flat = bool(np.all(v == v[0]))
        if self.flat:  # nothing to learn; _query measures the distance from the flat line
            self.model, self.q0, self.base = None, 0.0, 1e-3
            return
        model = make_pyod_model(self.model_name, self.n_neighbors, self.n_estimators, self.seed,
                                len(rows))
        model.fit(rows)
        self.kdtree = None
        if self.model_name == "knn":
            from scipy.spatial import cKDTree

            self.kdtree = cKDTree(rows)
        s = np.asarray(model.decision_scores_, dtype=np.float64)
        self.q0 = float(np.min(s))
        # 1e-3 floor: on a window that is almost all one value the median excess is 0
        self.base = max(float(np.median(s)) - self.q0, 1e-3)
        self.model = model

    def _rows(self, lagm: FloatArray, fit: bool) -> FloatArray:
        """Model inputs from lag vectors in the metric's units.

        The lag vector is centred and scaled by the training window's median/MAD. With
        ``spread``, one more column: the log of the vector's own standard deviation, in
        robust z units of the training window. A flatline or a burst of noise changes the
        spread far more than the level, and Euclidean distance on the lag vector alone
        barely sees a flat stretch near the mean (it sits in the densest region).
        """
        rows = (lagm - self.center) / self.scale
        if not self.spread or self.lag < 3:
            return rows
        spread = np.log(np.std(rows, axis=1) + 1e-3)
        if fit:
            self.sp_center, self.sp_scale = robust_center_scale(spread)
        extra = (spread - self.sp_center) / self.sp_scale
        out: FloatArray = np.column_stack([rows, extra])
        return out

    def _query(self, rows: FloatArray) -> FloatArray:
        if self.flat:
            # a constant training window: 0 on the line, and any departure, however small,
            # is far outside what was seen (models fitted on one point are undefined)
            dev: FloatArray = np.max(np.abs(rows[:, :self.lag]), axis=1) / self.base
            return dev
        if self.kdtree is not None:
            # pyod's KNN score ("largest" method) is the distance to the k-th training row;
            # a scipy KD-tree over the same rows gives it without scikit-learn's per-call
            # input validation, which was most of the cost of scoring one point per tick
            dist, _ = self.kdtree.query(rows, k=self.n_neighbors)
            s = np.asarray(dist, dtype=np.float64).reshape(len(rows), -1)[:, -1]
        elif self.model_name in _ROWWISE:
            s = np.array([self.model.decision_function(rows[k:k + 1])[0]
                          for k in range(len(rows))], dtype=np.float64)
        else:
            s = np.asarray(self.model.decision_function(rows), dtype=np.float64)
        out: FloatArray = np.maximum(s - self.q0, 0.0) / self.base
        return out

    def raw(self, t: FloatArray, x: FloatArray) -> FloatArray:
        m = len(x)
        out = np.full(m, np.nan)
        buf = np.concatenate([self.values, x])
        off = len(self.values)
        i = 0
        while i < m:
            idx = self.n + i  # global index of batch point i
            if not self.fitted and idx < self.min_train:
                i = min(m, i + self.min_train - idx)
                continue
            if not self.fitted or idx - self.last_fit >= self.refit_every:
                self._fit(buf[:off + i])
                self.last_fit = idx
            j = min(m, i + self.last_fit + self.refit_every - idx)
            lo = off + i - (self.lag - 1)
            seg = buf[max(lo, 0):off + j]
            if lo < 0:  # series start: pad like lag_matrix does
                seg = np.concatenate([np.full(-lo, buf[0]), seg])
            out[i:j] = self._query(self._rows(sliding_window_view(seg, self.lag), fit=False))
            i = j
        keep = self.train + self.lag - 1
        self.values = buf[-keep:]
        self.n += m
        return out

    def state(self) -> DetectorState:
        return DetectorState(
            name="pyod", params={},
            meta={"n": self.n, "last_fit": self.last_fit, "fitted": self.fitted},
            arrays={"values": self.values.copy(), "fit_values": self.fit_values.copy()},
        )

    def load(self, st: DetectorState) -> None:
        self.n = int(st.meta["n"] or 0)
        self.values = st.arrays["values"]
        self.model, self.fitted = None, False
        if st.meta["fitted"]:
            self._fit(st.arrays["fit_values"])  # deterministic: same data, same seed
        self.last_fit = int(st.meta["last_fit"] or 0)


# --- seasonal -----------------------------------------------------------------------------

class SeasonalRaw:
    """Robust seasonal baseline: |value - median of the same time in past cycles| / MAD.

    The expected value at time t is the median of the values at t - period, t - 2 period,
    ... (``cycles`` of them, matched by timestamp within half a sampling step, so gaps do not
    shift the phase). The median ignores one odd past day; the MAD of recent residuals sets
    the scale, so a noisy hour of the day is not held to a quiet one's standard. Until two
    past cycles exist (and for series whose timestamps never line up with the period) the
    baseline is the median of the previous ``recent`` points.

    Parameters:
        period: seconds per cycle (86400: traffic follows the day).
        cycles: past cycles in the median (7: a week, so one odd weekday is outvoted).
        scale_window: residuals the MAD is computed on (2000).
        refit_every: points between scale updates (100).
        recent: points in the non-seasonal fallback median (12).
    """

    def __init__(self, period: float = 86400.0, cycles: int = 7, scale_window: int = 2000,
                 refit_every: int = 100, recent: int = 12, min_cycles: int = 2,
                 max_points: int = 50_000) -> None:
        if not (period > 0 and cycles >= 1 and 1 <= min_cycles <= cycles and recent >= 1
                and scale_window >= 20 and refit_every >= 1 and max_points > recent):
            raise ValueError("need period > 0, 1 <= min_cycles <= cycles, recent >= 1, "
                             "scale_window >= 20, refit_every >= 1")
        self.period, self.cycles, self.min_cycles = period, cycles, min_cycles
        self.scale_window, self.refit_every, self.recent = scale_window, refit_every, recent
        self.max_points = max_points
        self.tb = np.zeros(0)
        self.xb = np.zeros(0)
        self.resid = np.zeros(0)  # trailing |residual|
        self.n = 0
        self.last_fit = -1
        self.scale = math.nan

    @property
    def warmup(self) -> int:
        return self.recent + 20

    def _baseline(self, t_all: FloatArray, x_all: FloatArray, off: int) -> FloatArray:
        """Expected value for points ``off..`` of the concatenated buffer, from earlier ones."""
        t = t_all[off:]
        m = len(t)
        diffs = np.diff(t_all[-200:])  # the recent sampling step is what matters
        step = float(np.median(diffs)) if len(diffs) else self.period
        cand = np.full((self.cycles, m), np.nan)
        last = len(t_all) - 1
        for k in range(1, self.cycles + 1):
            target = t - k * self.period
            right = np.minimum(np.searchsorted(t_all, target), last)
            left = np.maximum(right - 1, 0)
            near = np.where(np.abs(t_all[left] - target) <= np.abs(t_all[right] - target),
                            left, right)
            ok = np.abs(t_all[near] - target) <= step / 2
            cand[k - 1] = np.where(ok, x_all[near], np.nan)
        count = np.sum(~np.isnan(cand), axis=0)
        enough = count >= self.min_cycles
        seasonal = np.full(m, np.nan)
        if enough.any():
            # median of the matched values per column: NaN sorts last, so the valid values
            # are the first `count` of each sorted column (np.nanmedian is ~20x slower here)
            srt = np.sort(cand[:, enough], axis=0)
            c = count[enough]
            cols = np.arange(len(c))
            seasonal[enough] = 0.5 * (srt[(c - 1) // 2, cols] + srt[c // 2, cols])
        # fallback: median of the previous `recent` points
        pos = np.arange(off, off + m)
        fallback = np.full(m, np.nan)
        has = ~enough & (pos >= self.recent)
        if has.any():
            win = sliding_window_view(x_all, self.recent)  # win[p] = x_all[p : p+recent]
            fallback[has] = np.median(win[pos[has] - self.recent], axis=1)
        return np.where(enough, seasonal, fallback)

    def raw(self, t: FloatArray, x: FloatArray) -> FloatArray:
        m = len(x)
        t_all = np.concatenate([self.tb, t])
        x_all = np.concatenate([self.xb, x])
        off = len(self.tb)
        resid = np.abs(x - self._baseline(t_all, x_all, off))
        out = np.full(m, np.nan)
        i = 0
        while i < m:
            idx = self.n + i
            j = m
            if math.isnan(resid[i]):
                j = i + 1
            else:
                if idx - self.last_fit >= self.refit_every or math.isnan(self.scale):
                    known = self.resid
                    if len(known) >= 20:  # fewer residuals give no usable MAD
                        _, self.scale = robust_center_scale(np.concatenate([-known, known]))
                        self.last_fit = idx
                    else:
                        self.scale = math.nan
                if math.isnan(self.scale):
                    j = i + 1
                else:
                    j = min(m, i + self.last_fit + self.refit_every - idx)
                    seg = resid[i:j]
                    out[i:j] = np.where(np.isnan(seg), np.nan, seg / self.scale)
            fin = resid[i:j][~np.isnan(resid[i:j])]
            self.resid = np.concatenate([self.resid, fin])[-self.scale_window:]
            i = j
        # keep enough past for `cycles` periods (and the fallback), bounded in points
        horizon = t_all[-1] - self.cycles * self.period - self.period / 2
        start = max(int(np.searchsorted(t_all, horizon)), len(t_all) - self.max_points)
        start = min(start, max(len(t_all) - self.recent, 0))
        self.tb, self.xb = t_all[start:], x_all[start:]
        self.n += m
        return out

    def state(self) -> DetectorState:
        return DetectorState(
            name="seasonal", params={},
            meta={"n": self.n, "last_fit": self.last_fit, "scale": self.scale},
            arrays={"t": self.tb.copy(), "x": self.xb.copy(), "resid": self.resid.copy()},
        )

    def load(self, st: DetectorState) -> None:
        self.n = int(st.meta["n"] or 0)
        self.last_fit = int(st.meta["last_fit"] or 0)
        s = st.meta["scale"]
        self.scale = math.nan if s is None else float(s)
        self.tb, self.xb, self.resid = st.arrays["t"], st.arrays["x"], st.arrays["resid"]
