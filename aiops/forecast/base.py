"""The ``Forecaster`` protocol, the shared base class, artifacts and the name registry.

Every model follows one small interface (DESIGN principle 7, after pyod's ``BaseDetector``):
hyperparameters are checked in ``__init__`` and kept as given, everything learnt lives in
attributes ending in ``_``, and ``fit`` / ``update`` / ``predict`` work on regular series
(one value per fixed interval). ``update`` appends observations without a full refit where
the model allows it, because the daemon forecasts every tick but refits rarely.

A forecast carries the mean and the 0.1 / 0.5 / 0.9 quantiles per step: the predictive
policy plans on the 0.9 quantile, and the backtest scores the 80% interval they span.

Artifacts are a directory with ``meta.json`` (model, parameters, training span, library
versions, backtest figures, sha256 of every file) plus model files. Loading refuses an
artifact whose format or key library versions differ from the running ones, since a torch
state dict or a Prophet JSON from another minor version is not guaranteed to mean the same.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import platform
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from aiops.errors import DataQualityError, InputError
from aiops.forecast.series import MIN_LENGTH, as_float_array, check_regular
from aiops.types import FloatArray, Forecast

QUANTILES: tuple[float, float, float] = (0.1, 0.5, 0.9)
"""Levels every forecaster returns: p10 and p90 bound the 80% interval the backtest scores,
p90 is what the predictive policy provisions for."""

FORMAT_VERSION = 2
"""2: auto keeps online calibration scores and pending forecasts; mstl has ``fast``."""
META_FILE = "meta.json"
HISTORY_FILE = "history.npy"
DEFAULT_MAX_HISTORY = 50_000
"""Points a fitted model keeps for ``update``/``predict``: bounded so a daemon that updates
every tick for months does not grow without limit (50k is 6 months at 5-min sampling)."""


@runtime_checkable
class Forecaster(Protocol):
    """What the daemon, the backtest and ``auto`` rely on."""

    name: ClassVar[str]

    def fit(self, timestamps: npt.ArrayLike, values: npt.ArrayLike) -> Self: ...

    def update(self, timestamps: npt.ArrayLike, values: npt.ArrayLike) -> Self: ...

    def predict(self, horizon: int) -> Forecast: ...

    def get_params(self) -> dict[str, Any]: ...

    def save(self, directory: str | Path, *, backtest: Mapping[str, Any] | None = None) -> Path:
        ...


def check_param(ok: bool, model: str, problem: str) -> None:
    """Hyperparameter check for ``__init__``: a bad value is the user's input, named."""
    if not ok:
        raise InputError(f"forecaster {model!r}: {problem}")


def library_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def _major_minor(version: str) -> str:
    return ".".join(version.split("+", maxsplit=1)[0].split(".")[:2])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def residual_quantiles(residuals: FloatArray, levels: Sequence[float] = QUANTILES) -> FloatArray:
    """Empirical quantiles of forecast errors (actual - forecast), one row per level.

    Used by the baselines and as interval calibration elsewhere: when residuals are few
    (< 2) the band collapses to zero width rather than inventing a spread.
    """
    r = residuals[np.isfinite(residuals)]
    if len(r) < 2:
        return np.zeros(len(levels))
    return np.asarray(np.quantile(r, list(levels)), dtype=np.float64)


class BaseForecaster(ABC):
    """Shared plumbing: input checks, history, monotone quantiles, artifacts.

    Subclasses implement ``_fit``, ``_predict`` and, when they keep more than the history,
    ``_update``, ``_save_state`` and ``_load_state``.
    """

    name: ClassVar[str] = "base"
    libraries: ClassVar[tuple[str, ...]] = ()
    """Distributions whose major.minor version must match between save and load."""

    # Fitted state (set by fit/load).
    interval_: float
    start_: float
    end_: float
    n_seen_: int
    nonnegative_: bool
    history_: FloatArray

    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serialisable, so ``cls(**get_params())`` clones."""

    def min_length(self) -> int:
        """Fewest points ``fit`` accepts; models with windows or seasons need more."""
        return MIN_LENGTH

    def max_history(self) -> int:
        return DEFAULT_MAX_HISTORY

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "history_")

    def label(self) -> str:
        """What ``Forecast.model`` says; composite models add what they chose."""
        return self.name

    # ----------------------------------------------------------------- fit / update / predict
    def fit(self, timestamps: npt.ArrayLike, values: npt.ArrayLike) -> Self:
        """Learn from a regular, finite series (see ``series.regularize`` to get one)."""
        need = self.min_length()
        ts, ys, interval = check_regular(timestamps, values, min_length=1)
        if len(ys) < need:
            raise DataQualityError(
                f"{self.name}: series has {len(ys)} points; at least {need} needed"
            )
        self.interval_ = interval
        self.start_ = float(ts[0])
        self.end_ = float(ts[-1])
        self.n_seen_ = len(ys)
        self.nonnegative_ = bool(ys.min() >= 0)
        self._fit(ts, ys)
        self.history_ = ys[-self.max_history():].copy()
        return self

    def update(self, timestamps: npt.ArrayLike, values: npt.ArrayLike) -> Self:
        """Append observations that continue the fitted series; no full refit."""
        self._check_fitted()
        ts = as_float_array(timestamps, "timestamps")
        ys = as_float_array(values, "values")
        if len(ts) != len(ys):
            raise DataQualityError(f"{len(ts)} timestamps but {len(ys)} values")
        if len(ys) == 0:
            return self
        if not np.isfinite(ys).all():
            raise DataQualityError("update has a non-finite value; regularize the series first")
        expected = self.end_ + self.interval_ * np.arange(1, len(ts) + 1)
        if np.abs(ts - expected).max() > 0.01 * self.interval_:
            raise DataQualityError(
                f"update must continue the series every {self.interval_:g} s after "
                f"{self.end_:.0f}; got {ts[0]:.0f}..{ts[-1]:.0f}"
            )
        self._update(ts, ys)
        self.history_ = np.concatenate([self.history_, ys])[-self.max_history():]
        self.end_ = float(ts[-1])
        self.n_seen_ += len(ys)
        return self

    def predict(self, horizon: int) -> Forecast:
        """Forecast the next ``horizon`` steps after the last observation."""
        self._check_fitted()
        if not isinstance(horizon, int | np.integer) or horizon < 1:
            raise InputError(f"horizon must be a positive number of steps, got {horizon!r}")
        mean, quants = self._predict(int(horizon))
        q = np.sort(np.vstack([quants[lv] for lv in QUANTILES]), axis=0)
        mean = np.asarray(mean, dtype=np.float64)
        if self.nonnegative_:
            q = np.maximum(q, 0.0)
            mean = np.maximum(mean, 0.0)
        return Forecast(
            start=self.end_ + self.interval_,
            step=self.interval_,
            mean=mean,
            quantiles={lv: q[i].copy() for i, lv in enumerate(QUANTILES)},
            model=self.label(),
        )

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{self.name}: call fit() before update() or predict()")

    @abstractmethod
    def _fit(self, timestamps: FloatArray, values: FloatArray) -> None: ...

    def _update(self, timestamps: FloatArray, values: FloatArray) -> None:  # noqa: B027
        """Models that only read ``history_`` need nothing here (the base appends)."""

    @abstractmethod
    def _predict(self, horizon: int) -> tuple[FloatArray, Mapping[float, FloatArray]]: ...

    # ----------------------------------------------------------------------------- artifacts
    def _save_state(self, directory: Path) -> dict[str, Any]:
        """Write model files into ``directory``; return JSON-able state for meta.json."""
        return {}

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:  # noqa: B027
        """Inverse of ``_save_state`` (the base fields are already restored)."""

    def save(self, directory: str | Path, *, backtest: Mapping[str, Any] | None = None) -> Path:
        """Write the fitted model to ``directory`` (created) and return the meta.json path."""
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / HISTORY_FILE, self.history_, allow_pickle=False)
        state = self._save_state(d)
        files = sorted(p.name for p in d.iterdir() if p.is_file() and p.name != META_FILE)
        meta: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "model": self.name,
            "label": self.label(),
            "params": self.get_params(),
            "training": {
                "start": self.start_,
                "end": self.end_,
                "interval_s": self.interval_,
                "points_seen": self.n_seen_,
                "nonnegative": self.nonnegative_,
            },
            "versions": self.versions(),
            "backtest": dict(backtest) if backtest is not None else None,
            "state": state,
            "files": {name: _sha256(d / name) for name in files},
        }
        path = d / META_FILE
        path.write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n")
        return path

    @classmethod
    def versions(cls) -> dict[str, str]:
        names = ("aiops-autoscaler", "numpy", *cls.libraries)
        out = {n: library_version(n) for n in names}
        out["python"] = platform.python_version()
        return out


def _json_default(obj: object) -> object:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise InputError("not a forecaster artifact: no meta.json", path=str(directory))
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"meta.json is not JSON: {exc}", path=str(path)) from None
    if not isinstance(meta, dict):
        raise InputError("meta.json is not an object", path=str(path))
    return meta


def check_compatible(meta: Mapping[str, Any], cls: type[BaseForecaster], where: str) -> None:
    """Refuse artifacts written by another format or another major.minor of a key library."""
    if meta.get("format") != FORMAT_VERSION:
        raise InputError(
            f"artifact format {meta.get('format')!r}; this aiops reads format {FORMAT_VERSION}",
            path=where,
        )
    saved = meta.get("versions", {})
    for dist in ("numpy", *cls.libraries):
        have, had = library_version(dist), str(saved.get(dist, "absent"))
        if have == "absent":
            raise InputError(f"model needs {dist} {had}, which is not installed", path=where)
        check = _major_minor if dist != "numpy" else (lambda v: v.split(".")[0])
        if check(have) != check(had):
            raise InputError(
                f"saved with {dist} {had}, running {have}; refit the model", path=where
            )


def load_forecaster(directory: str | Path) -> BaseForecaster:
    """Load an artifact written by ``save``, after the compatibility and checksum checks."""
    d = Path(directory)
    meta = read_meta(d)
    cls = forecaster_class(str(meta.get("model")))
    check_compatible(meta, cls, str(d))
    for name, digest in dict(meta.get("files", {})).items():
        f = d / name
        if not f.is_file() or _sha256(f) != digest:
            raise InputError(f"{name} is missing or does not match its sha256", path=str(d))
    obj = cls(**dict(meta.get("params", {})))
    tr = meta["training"]
    obj.interval_ = float(tr["interval_s"])
    obj.start_ = float(tr["start"])
    obj.end_ = float(tr["end"])
    obj.n_seen_ = int(tr["points_seen"])
    obj.nonnegative_ = bool(tr["nonnegative"])
    obj.history_ = np.asarray(np.load(d / HISTORY_FILE, allow_pickle=False), dtype=np.float64)
    obj._load_state(d, dict(meta.get("state") or {}))
    return obj


# ------------------------------------------------------------------------------- registry
_BUILTIN: dict[str, str] = {
    "naive": "aiops.forecast.naive:NaiveForecaster",
    "seasonal_naive": "aiops.forecast.naive:SeasonalNaiveForecaster",
    "prophet": "aiops.forecast.prophet:ProphetForecaster",
    "lstm": "aiops.forecast.lstm:LstmForecaster",
    "auto": "aiops.forecast.auto:AutoForecaster",
    "ets": "aiops.forecast.stats:EtsForecaster",
    "theta": "aiops.forecast.stats:ThetaForecaster",
    "mstl": "aiops.forecast.stats:MstlForecaster",
}
_REGISTERED: dict[str, type[BaseForecaster]] = {}


def register_forecaster(name: str, cls: type[BaseForecaster]) -> None:
    """Add (or replace) a model under ``name``; tests use this for deliberately bad models."""
    _REGISTERED[name] = cls


def available_forecasters() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def forecaster_class(name: str) -> type[BaseForecaster]:
    """The class registered as ``name``; imports its module only now (torch stays unloaded)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    target = _BUILTIN.get(name)
    if target is None:
        raise InputError(
            f"unknown forecaster {name!r}; known: {', '.join(available_forecasters())}"
        )
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise InputError(f"forecaster {name!r} needs a package that is missing: {exc}") from None
    cls = getattr(mod, attr)
    assert isinstance(cls, type) and issubclass(cls, BaseForecaster)
    return cls


def make_forecaster(name: str, **params: Any) -> BaseForecaster:
    """Build an unfitted model by registry name; bad or unknown parameters are ``InputError``."""
    cls = forecaster_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise InputError(f"forecaster {name!r}: {exc}") from None


def _coerce(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_model_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"lstm:window=96,hidden=64"`` -> ``("lstm", {"window": 96, "hidden": 64})``.

    Values become bool, int, float or None when they read as one, else stay strings; each
    model's ``__init__`` checks them. The same syntax as policy specs, for one habit.
    """
    raw = text.strip()
    name, _, rest = raw.partition(":")
    if not name:
        raise InputError(f"model spec {text!r} has no name")
    params: dict[str, Any] = {}
    if rest:
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise InputError(f"model spec {text!r}: {item!r} is not key=value")
            params[key.strip()] = _coerce(value.strip())
    return name.strip(), params


def make_from_spec(text: str) -> BaseForecaster:
    name, params = parse_model_spec(text)
    return make_forecaster(name, **params)
