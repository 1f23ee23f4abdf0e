"""An LSTM encoder with attention over its input window, trained to output three quantiles.

Architecture (one series, one model; CPU, ``threads`` torch threads):

- inputs per step of the window: the normalised value plus time-of-day and day-of-week as
  sine/cosine pairs, so the network knows *when* the window is;
- an LSTM encodes the window; for each future step a query (last hidden state + a learnt
  step embedding + that step's calendar features and seasonal lags) attends over all
  encoder states, which lets step k look at "the same time yesterday" inside the window;
- the seasonal lags of each future step (the value one day and one week earlier, the
  seasonal-naive forecasts) are given to the head directly, so a 128-step window still sees
  weekly structure;
- the head outputs the median as a change from the last value (so an untrained network is
  the naive forecast, a sane start) and the p10/p90 as softplus distances below/above it,
  which keeps the quantiles from crossing;
- loss: pinball (quantile) loss over the three levels and all steps. ``mean`` in the
  forecast is the median: the network is not trained for the mean.

Inputs are normalised per series (mean/std of the training values, optionally after
log1p), early stopping uses the most recent ``validation`` share of windows, and the p10/p90
band is then widened per step until it covers 80% of those held-out windows (conformalised
quantile regression, widening only): quantiles learnt in-sample tend to be too narrow.

``update`` only appends history; the network is conditioned on the latest window at each
``predict``, so it follows the load without retraining until the next ``fit``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from aiops.errors import DataQualityError
from aiops.forecast.base import QUANTILES, BaseForecaster, check_param
from aiops.forecast.season import MIN_ACF, calendar_periods, detect_season, seasonal_acf
from aiops.types import FloatArray

WEIGHTS_FILE = "lstm.pt"
MIN_TRAIN_WINDOWS = 64
"""Fewest training windows worth fitting a network on; below, ``fit`` refuses the series."""

_TRANSFORMS = ("none", "log1p", "auto")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads and restore the previous setting (a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def calendar_features(times: FloatArray, interval: float) -> FloatArray:
    """sin/cos of time of day and of day of week (UTC), shape (len(times), 4).

    Zeros where the sampling is too coarse for the cycle to mean anything.
    """
    out = np.zeros((len(times), 4))
    if interval < 6 * 3600:
        a = 2 * np.pi * (np.mod(times, 86400.0) / 86400.0)
        out[:, 0], out[:, 1] = np.sin(a), np.cos(a)
    if interval <= 86400:
        b = 2 * np.pi * (np.mod(times / 86400.0, 7.0) / 7.0)
        out[:, 2], out[:, 3] = np.sin(b), np.cos(b)
    return out


class _Net(nn.Module):
    def __init__(self, n_dec: int, hidden: int, layers: int, horizon: int,
                 dropout: float) -> None:
        super().__init__()
        self.encoder = nn.LSTM(5, hidden, layers, batch_first=True,
                               dropout=dropout if layers > 1 else 0.0)
        self.step = nn.Embedding(horizon, hidden)
        self.dec = nn.Linear(n_dec, hidden)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.head = nn.Sequential(nn.Linear(3 * hidden + n_dec, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, 3))
        self.scale = 1.0 / math.sqrt(hidden)

    def forward(self, x: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        """x: (B, W, 5) window; dec: (B, H, D) per-step features -> (B, H, 3) quantiles."""
        enc, _ = self.encoder(x)
        last = enc[:, -1]
        h = dec.shape[1]
        step = self.step.weight[:h].unsqueeze(0) + self.dec(dec)
        q = self.query(last.unsqueeze(1) + step)
        att = torch.softmax(q @ self.key(enc).transpose(1, 2) * self.scale, dim=-1)
        ctx = att @ enc
        feat = torch.cat([last.unsqueeze(1).expand(-1, h, -1), ctx, step, dec], dim=-1)
        raw = self.head(feat)
        median = x[:, -1, :1] + raw[..., 0]
        lo = median - nn.functional.softplus(raw[..., 1])
        hi = median + nn.functional.softplus(raw[..., 2])
        return torch.stack([lo, median, hi], dim=-1)


def pinball_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean quantile loss; pred (B, H, 3) at QUANTILES, target (B, H)."""
    levels = torch.tensor(QUANTILES, dtype=pred.dtype)
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(levels * diff, (levels - 1) * diff).mean()


class LstmForecaster(BaseForecaster):
    """Attention LSTM with quantile outputs (see the module docstring).

    Defaults are for 1- to 30-minute load series on a shared CPU: a 128-step window (a bit
    over 10 h at 5 min; longer cycles arrive through the seasonal lags; on nyc_taxi it beat
    a 64-step window, MASE 0.80 vs 0.95 one step ahead), 64 hidden units (256 was not tried:
    64 already makes a fit on 6000 windows take minutes on one busy core), 12-step direct
    outputs (an hour at 5 min, longer than any cold start), and at most 6000 training
    windows (the most recent) with early stopping.
    """

    name = "lstm"
    libraries = ("torch",)

    mu_: float
    sd_: float
    log_: bool
    lags_: list[int]
    margin_: FloatArray
    net_: _Net
    epochs_: int
    val_loss_: float
    constant_: bool

    def __init__(
        self,
        window: int = 128,
        hidden: int = 64,
        layers: int = 1,
        horizon: int = 12,
        epochs: int = 40,
        batch_size: int = 128,
        lr: float = 3e-3,
        patience: int = 5,
        max_samples: int = 6000,
        validation: float = 0.15,
        dropout: float = 0.0,
        transform: str = "auto",
        conformal: bool = True,
        seed: int = 0,
        threads: int = 1,
    ) -> None:
        def pos_int(v: object, lo: int = 1) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= lo

        n = self.name
        check_param(pos_int(window, 2), n, f"window must be an integer >= 2, got {window!r}")
        check_param(pos_int(hidden), n, f"hidden must be a positive integer, got {hidden!r}")
        check_param(pos_int(layers), n, f"layers must be a positive integer, got {layers!r}")
        check_param(pos_int(horizon), n, f"horizon must be a positive integer, got {horizon!r}")
        check_param(pos_int(epochs), n, f"epochs must be a positive integer, got {epochs!r}")
        check_param(pos_int(batch_size), n, f"batch_size must be positive, got {batch_size!r}")
        check_param(pos_int(patience), n, f"patience must be positive, got {patience!r}")
        check_param(pos_int(max_samples, MIN_TRAIN_WINDOWS), n,
                    f"max_samples must be >= {MIN_TRAIN_WINDOWS}, got {max_samples!r}")
        check_param(pos_int(threads), n, f"threads must be a positive integer, got {threads!r}")
        check_param(isinstance(seed, int), n, f"seed must be an integer, got {seed!r}")
        check_param(isinstance(lr, int | float) and 0 < lr < 1, n, f"lr must be in (0, 1), "
                    f"got {lr!r}")
        check_param(isinstance(validation, float) and 0.05 <= validation <= 0.5, n,
                    f"validation must be a fraction in [0.05, 0.5], got {validation!r}")
        check_param(isinstance(dropout, int | float) and 0 <= dropout < 1, n,
                    f"dropout must be in [0, 1), got {dropout!r}")
        check_param(transform in _TRANSFORMS, n,
                    f"transform must be one of {', '.join(_TRANSFORMS)}, got {transform!r}")
        check_param(isinstance(conformal, bool), n, f"conformal must be a bool, got {conformal!r}")
        self.window = window
        self.hidden = hidden
        self.layers = layers
        self.horizon = horizon
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = float(lr)
        self.patience = patience
        self.max_samples = max_samples
        self.validation = validation
        self.dropout = float(dropout)
        self.transform = transform
        self.conformal = conformal
        self.seed = seed
        self.threads = threads

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "window", "hidden", "layers", "horizon", "epochs", "batch_size", "lr", "patience",
            "max_samples", "validation", "dropout", "transform", "conformal", "seed",
            "threads")}

    def min_length(self) -> int:
        return self.window + self.horizon + MIN_TRAIN_WINDOWS

    def max_history(self) -> int:
        return self.window + max(self.lags_, default=0) + 8 * self.horizon

    # ------------------------------------------------------------------------ features
    def _to_z(self, y: FloatArray) -> FloatArray:
        g = np.log1p(np.maximum(y, 0.0)) if self.log_ else y
        return (g - self.mu_) / self.sd_

    def _from_z(self, z: FloatArray) -> FloatArray:
        g = z * self.sd_ + self.mu_
        return np.expm1(g) if self.log_ else g

    def _choose_lags(self, values: FloatArray) -> list[int]:
        """Daily/weekly lags the history affords *and* shows (autocorrelation), else a
        detected season, else none: a lag fed to a non-seasonal series is noise the network
        can overfit, and after a level shift it points at the old level."""
        usable = len(values) - self.window - self.horizon - MIN_TRAIN_WINDOWS
        lags = [p for p in calendar_periods(self.interval_).values()
                if p <= usable and seasonal_acf(values, p) >= MIN_ACF]
        if not lags:
            s = detect_season(values, self.interval_).season
            if 1 < s <= usable:
                lags = [s]
        return lags[:2]

    def _arrays(self, z: FloatArray, times: FloatArray, origins: npt.NDArray[np.int64], h: int
                ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], FloatArray]:
        """Encoder windows (N, W, 5), decoder features (N, h, 4 + len(lags)) and offsets (N,).

        Values are taken relative to their window's mean (the offset), so the network learns
        shapes, not levels: after a level shift it does not pull back toward the level it
        was trained on.
        """
        cal = calendar_features(times, self.interval_)
        w = self.window
        idx = origins[:, None] + np.arange(-w, 0)[None, :]
        off = z[idx].mean(axis=1)
        x = np.concatenate([(z[idx] - off[:, None])[..., None], cal[idx]], axis=-1)
        steps = np.arange(h)
        fut_t = times[origins[:, None] - 1] + self.interval_ * (steps[None, :] + 1)
        dec = [calendar_features(fut_t.ravel(), self.interval_).reshape(len(origins), h, 4)]
        for p in self.lags_:
            li = origins[:, None] + steps[None, :] - p * np.ceil((steps[None, :] + 1) / p)
            dec.append((z[li.astype(np.int64)] - off[:, None])[..., None])
        return (x.astype(np.float32), np.concatenate(dec, axis=-1).astype(np.float32),
                np.asarray(off, dtype=np.float64))

    # ----------------------------------------------------------------------------- fit
    def _fit(self, timestamps: FloatArray, values: FloatArray) -> None:
        n = len(values)
        self.log_ = self.transform == "log1p" or (
            self.transform == "auto" and bool(values.min() >= 0)
            and float(np.quantile(values, 0.99)) > 10 * max(float(np.median(values)), 1e-9))
        g = np.log1p(np.maximum(values, 0.0)) if self.log_ else values
        self.mu_ = float(g.mean())
        sd = float(g.std())
        self.constant_ = sd <= 1e-8 * max(1.0, abs(self.mu_))
        self.sd_ = 1.0 if self.constant_ else sd
        self.lags_ = self._choose_lags(values)
        z = self._to_z(values)
        h = self.horizon
        first = max(self.window, max(self.lags_, default=0))
        origins = np.arange(first, n - h + 1, dtype=np.int64)
        if len(origins) < MIN_TRAIN_WINDOWS:
            raise DataQualityError(
                f"lstm: {n} points give {len(origins)} training windows of {self.window}+{h} "
                f"steps; at least {MIN_TRAIN_WINDOWS} needed"
            )
        origins = origins[-self.max_samples:]
        x, dec, off = self._arrays(z, timestamps, origins, h)
        y = (z[origins[:, None] + np.arange(h)[None, :]] - off[:, None]).astype(np.float32)
        n_val = max(round(self.validation * len(origins)), 16)
        # Windows whose targets overlap the validation inputs are dropped from training.
        n_tr = len(origins) - n_val - h
        if n_tr < MIN_TRAIN_WINDOWS // 2:
            raise DataQualityError(f"lstm: too few training windows ({n_tr}) after validation")
        with torch_threads(self.threads):
            torch.manual_seed(self.seed)
            self.net_ = _Net(dec.shape[-1], self.hidden, self.layers, h, self.dropout)
            if self.constant_:
                # Nothing to learn from a flat history: forecast the last value (see
                # _predict_block) instead of trusting a network fitted to zero variance.
                self.margin_, self.epochs_, self.val_loss_ = np.zeros(h), 0, 0.0
                return
            xt, dt, yt = torch.from_numpy(x), torch.from_numpy(dec), torch.from_numpy(y)
            self._train(xt[:n_tr], dt[:n_tr], yt[:n_tr], xt[-n_val:], dt[-n_val:], yt[-n_val:])
            self.net_.eval()
            with torch.no_grad():
                val = self.net_(xt[-n_val:], dt[-n_val:]).numpy().astype(np.float64)
        yv = y[-n_val:].astype(np.float64)
        self.margin_ = np.zeros(h)
        if self.conformal:
            err = np.maximum(val[..., 0] - yv, yv - val[..., 2])  # (n_val, h)
            level = min(1.0, (1 - 0.2) * (1 + 1 / n_val))
            # Only widen (as in auto): a calm validation stretch must not narrow the band.
            self.margin_ = np.maximum(np.quantile(err, level, axis=0), 0.0)

    def _train(self, x: torch.Tensor, dec: torch.Tensor, y: torch.Tensor, xv: torch.Tensor,
               dv: torch.Tensor, yv: torch.Tensor) -> None:
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        best, best_state, bad = math.inf, copy.deepcopy(self.net_.state_dict()), 0
        self.epochs_ = 0
        for _ in range(self.epochs):
            self.net_.train()
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), self.batch_size):
                b = perm[i:i + self.batch_size]
                opt.zero_grad()
                loss = pinball_loss(self.net_(x[b], dec[b]), y[b])
                loss.backward()  # type: ignore[no-untyped-call]
                nn.utils.clip_grad_norm_(self.net_.parameters(), 1.0)
                opt.step()
            self.epochs_ += 1
            self.net_.eval()
            with torch.no_grad():
                v = float(pinball_loss(self.net_(xv, dv), yv))
            if v < best - 1e-5:
                best, best_state, bad = v, copy.deepcopy(self.net_.state_dict()), 0
            else:
                bad += 1
                if bad >= self.patience:
                    break
        self.net_.load_state_dict(best_state)
        self.val_loss_ = best

    # ------------------------------------------------------------------------- predict
    def _predict(self, horizon: int) -> tuple[FloatArray, Mapping[float, FloatArray]]:
        y = self.history_.copy()
        out: list[np.ndarray] = []
        end = self.end_
        while sum(len(o) for o in out) < horizon:
            q = self._predict_block(y, end)
            out.append(q)
            # Beyond the trained horizon, continue from the median path.
            y = np.concatenate([y, q[:, 1]])
            end += self.horizon * self.interval_
        qs = np.concatenate(out)[:horizon]
        med = qs[:, 1]
        return med.copy(), {0.1: qs[:, 0], 0.5: med, 0.9: qs[:, 2]}

    def _predict_block(self, y: FloatArray, end: float) -> np.ndarray:
        n = len(y)
        need = self.window + max(self.lags_, default=0)
        if n < need:
            raise DataQualityError(f"lstm: needs {need} points of history, has {n}")
        if self.constant_:
            return np.full((self.horizon, 3), y[-1])
        times = end - self.interval_ * np.arange(n - 1, -1, -1, dtype=np.float64)
        z = self._to_z(y)
        x, dec, off = self._arrays(z, times, np.array([n], dtype=np.int64), self.horizon)
        with torch_threads(self.threads), torch.no_grad():
            self.net_.eval()
            q = self.net_(torch.from_numpy(x), torch.from_numpy(dec))[0].numpy()
        q = q.astype(np.float64) + off[0]
        q[:, 0] = np.minimum(q[:, 0] - self.margin_, q[:, 1])
        q[:, 2] = np.maximum(q[:, 2] + self.margin_, q[:, 1])
        return np.stack([self._from_z(q[:, i]) for i in range(3)], axis=1)

    # ----------------------------------------------------------------------- artifacts
    def _save_state(self, directory: Path) -> dict[str, Any]:
        torch.save(self.net_.state_dict(), directory / WEIGHTS_FILE)
        return {"mu": self.mu_, "sd": self.sd_, "log": self.log_, "lags": self.lags_,
                "margin": [float(m) for m in self.margin_], "epochs": self.epochs_,
                "val_loss": self.val_loss_, "n_dec": 4 + len(self.lags_),
                "constant": self.constant_}

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        self.mu_ = float(state["mu"])
        self.sd_ = float(state["sd"])
        self.log_ = bool(state["log"])
        self.lags_ = [int(p) for p in state["lags"]]
        self.margin_ = np.asarray(state["margin"], dtype=np.float64)
        self.epochs_ = int(state["epochs"])
        self.val_loss_ = float(state["val_loss"])
        self.constant_ = bool(state["constant"])
        self.net_ = _Net(int(state["n_dec"]), self.hidden, self.layers, self.horizon,
                         self.dropout)
        weights = torch.load(directory / WEIGHTS_FILE, weights_only=True)
        self.net_.load_state_dict(weights)
        self.net_.eval()
