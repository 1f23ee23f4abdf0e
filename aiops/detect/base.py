"""The streaming detector contract, the shared input hygiene, and pickle-free state files.

A detector watches one series. ``update(timestamps, values)`` takes the next points (any batch
size, including one) and returns one score in [0, 1] per point, computed from that point and
the points before it only. Splitting a stream into batches differently never changes a score,
so a daemon that scores one point per tick and a replay that scores a whole file agree.

Why state is a pair of files (JSON + npz) and not a pickle: state survives daemon restarts and
upgrades, is written by one version and read by another, and may come from a volume someone
else can write to. ``np.load(allow_pickle=False)`` and ``json`` cannot execute code; pickle can.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
JSONScalar = str | int | float | bool | None

STATE_FORMAT = 1
"""Bumped when the layout of saved state changes; loading another version is refused."""

IssueKind = Literal["nan", "duplicate", "out_of_order", "gap", "constant", "warmup"]


@dataclass(frozen=True)
class InputIssue:
    """One problem seen in the input of one ``update`` call, and what was done about it.

    ``index`` is the position in that call's batch (first occurrence for counted kinds);
    ``count`` how many points it concerns. Gaps carry the two timestamps around the gap.
    """

    kind: IssueKind
    index: int
    count: int = 1
    detail: str = ""


@dataclass
class DetectorState:
    """Everything needed to rebuild a detector and continue its scores exactly.

    ``params`` are the constructor arguments (JSON); ``meta`` small JSON values; ``arrays``
    numeric buffers. Keys of nested parts are dotted (``"likelihood.block_sum"``).
    """

    name: str
    params: dict[str, Any]
    meta: dict[str, JSONScalar] = field(default_factory=dict)
    arrays: dict[str, FloatArray] = field(default_factory=dict)
    format_version: int = STATE_FORMAT

    def sub(self, prefix: str) -> DetectorState:
        """The part of this state stored under ``prefix.`` (for composed detectors)."""
        p = prefix + "."
        return DetectorState(
            name=str(self.meta.get(p + "name", self.name)),
            params=self.params,
            meta={k[len(p):]: v for k, v in self.meta.items() if k.startswith(p)},
            arrays={k[len(p):]: v for k, v in self.arrays.items() if k.startswith(p)},
        )

    def put(self, prefix: str, part: DetectorState) -> None:
        """Store ``part`` under ``prefix.`` (inverse of :meth:`sub`)."""
        p = prefix + "."
        self.meta[p + "name"] = part.name
        self.meta.update({p + k: v for k, v in part.meta.items()})
        self.arrays.update({p + k: v for k, v in part.arrays.items()})


@runtime_checkable
class Detector(Protocol):
    """A streaming anomaly scorer for one series."""

    name: str

    @property
    def warmup(self) -> int:
        """Accepted points before scores can be non-zero (scores are 0 until then)."""
        ...

    @property
    def issues(self) -> tuple[InputIssue, ...]:
        """Input problems found in the last ``update`` call."""
        ...

    def update(self, timestamps: npt.ArrayLike, values: npt.ArrayLike) -> FloatArray:
        """Score the next points: one float in [0, 1] per point, no look-ahead."""
        ...

    def state_dict(self) -> DetectorState:
        """A copy of the state; the detector may keep running after it."""
        ...

    def load_state_dict(self, state: DetectorState) -> None:
        """Continue from ``state`` as if the points behind it had just been seen."""
        ...


def as_float_array(values: npt.ArrayLike, what: str) -> FloatArray:
    """``values`` as a 1-D float64 array, or ``ValueError`` naming ``what``.

    Non-numeric input fails here with a plain message, not deep inside numpy later.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be numbers: {exc}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    return arr


class StreamDetector(ABC):
    """Input hygiene shared by every detector; subclasses score clean points only.

    Defined behaviour for bad input (the guardrails rely on it, so it is part of the contract):

    - NaN/Inf value or timestamp: the point is skipped (not learnt from), score 0.
    - duplicated timestamp (equal to the last accepted one): skipped, and it gets the score
      already given to that instant, because it is the same instant.
    - timestamp going backwards: skipped, score 0. Streams cannot revise the past.
    - gap (a step longer than ``gap_factor`` times the typical step): nothing is invented
      for the missing points; the gap is reported and scoring continues after it.
    - constant input: the models see no spread and score 0; reported once per batch.
    - fewer accepted points than ``warmup``: score 0, reported.

    Subclasses implement ``_score_clean`` (strictly increasing timestamps, finite values)
    and the ``_state``/``_load`` pair for their own buffers.
    """

    name: str = "base"
    gap_factor: float = 3.0
    """A step over 3x the typical one is a gap: scrape jitter rarely doubles a step."""

    def __init__(self) -> None:
        self._last_t = math.nan
        self._last_score = 0.0
        self._step = math.nan  # running typical step (seconds), for gap detection
        self._seen = 0  # accepted points
        self._issues: tuple[InputIssue, ...] = ()
        self._const_value = math.nan
        self._const = True

    # --- contract -------------------------------------------------------------------------
    @property
    @abstractmethod
    def warmup(self) -> int: ...

    @property
    def issues(self) -> tuple[InputIssue, ...]:
        return self._issues

    @property
    def params(self) -> dict[str, Any]:
        """Constructor arguments, JSON-able (saved with the state)."""
        return {}

    @abstractmethod
    def _score_clean(self, t: FloatArray, x: FloatArray) -> FloatArray:
        """Scores for accepted points (strictly increasing ``t``, finite ``x``)."""

    @abstractmethod
    def _state(self) -> DetectorState: ...

    @abstractmethod
    def _load(self, state: DetectorState) -> None: ...

    # --- the shared part ------------------------------------------------------------------
    def update(self, timestamps: npt.ArrayLike, values: npt.ArrayLike) -> FloatArray:
        t = as_float_array(timestamps, "timestamps")
        x = as_float_array(values, "values")
        if t.shape != x.shape:
            raise ValueError(f"{len(t)} timestamps but {len(x)} values")
        n = len(x)
        out = np.zeros(n, dtype=np.float64)
        if n == 0:
            self._issues = ()
            return out
        issues: list[InputIssue] = []
        accept, dup = self._screen(t, x, issues)
        idx = np.flatnonzero(accept)
        if len(idx):
            before = self._seen
            scores = self._score_clean(t[idx], x[idx])
            scores = np.clip(np.nan_to_num(scores, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
            out[idx] = scores
            self._seen += len(idx)
            if before < self.warmup:
                n_warm = min(len(idx), self.warmup - before)
                issues.append(InputIssue("warmup", int(idx[0]), n_warm,
                                         f"scores are 0 for the first {self.warmup} points"))
            self._track_constant(x[idx], int(idx[0]), issues)
        # a duplicate of an instant takes that instant's score (carried from the left)
        for i in np.flatnonzero(dup):
            j = i - 1
            while j >= 0 and not accept[j] and not dup[j]:
                j -= 1
            out[i] = out[j] if j >= 0 else self._last_score
        scored = np.flatnonzero(accept | dup)
        if len(scored):
            self._last_score = float(out[scored[-1]])
        self._issues = tuple(sorted(issues, key=lambda i: (i.index, i.kind)))
        return out

    def _screen(
        self, t: FloatArray, x: FloatArray, issues: list[InputIssue]
    ) -> tuple[BoolArray, BoolArray]:
        """Which points are accepted, which are duplicates; appends the issues found."""
        n = len(x)
        finite = np.isfinite(t) & np.isfinite(x)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            issues.append(InputIssue("nan", int(bad[0]), len(bad), "skipped, scored 0"))
        accept = np.zeros(n, dtype=bool)
        dup = np.zeros(n, dtype=bool)
        last = self._last_t
        n_back = 0
        first_back = -1
        n_dup = 0
        first_dup = -1
        # sequential on purpose: whether a point is a duplicate depends on what was accepted
        for i in np.flatnonzero(finite):
            ti = float(t[i])
            if math.isnan(last) or ti > last:
                accept[i] = True
                if not math.isnan(last):
                    self._note_step(ti - last, last, ti, int(i), issues)
                last = ti
            elif ti == last:
                dup[i] = True
                n_dup += 1
                first_dup = int(i) if first_dup < 0 else first_dup
            else:
                n_back += 1
                first_back = int(i) if first_back < 0 else first_back
        if n_dup:
            issues.append(InputIssue("duplicate", first_dup, n_dup,
                                     "repeated timestamp skipped, given that instant's score"))
        if n_back:
            issues.append(InputIssue("out_of_order", first_back, n_back,
                                     "timestamp earlier than one already seen: skipped, scored 0"))
        self._last_t = last
        return accept, dup

    def _note_step(self, dt: float, t0: float, t1: float, i: int, issues: list[InputIssue]) -> None:
        """Track the typical sampling step and report steps far longer than it."""
        if math.isnan(self._step):
            self._step = dt
            return
        if dt > self.gap_factor * self._step:
            issues.append(InputIssue("gap", i, 1, f"no points between t={t0:.0f} and t={t1:.0f}"))
            return  # a gap does not change what "typical" is
        # slow exponential tracking: robust to one odd step, follows a changed scrape interval
        self._step += 0.05 * (dt - self._step)

    def _track_constant(self, x: FloatArray, first: int, issues: list[InputIssue]) -> None:
        if not self._const:
            return
        if math.isnan(self._const_value):
            self._const_value = float(x[0])
        if np.all(x == self._const_value):
            issues.append(InputIssue("constant", first, len(x),
                                     f"series has been constant at {self._const_value:g}"))
        else:
            self._const = False

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> DetectorState:
        st = self._state()
        st.name = self.name
        st.params = dict(self.params)
        st.meta.update({
            "stream.last_t": self._last_t, "stream.last_score": self._last_score,
            "stream.step": self._step, "stream.seen": self._seen,
            "stream.const_value": self._const_value, "stream.const": self._const,
        })
        return st

    def load_state_dict(self, state: DetectorState) -> None:
        if state.format_version != STATE_FORMAT:
            raise ValueError(f"state format {state.format_version}, this code reads {STATE_FORMAT}")
        if state.name != self.name:
            raise ValueError(f"state is for detector {state.name!r}, not {self.name!r}")
        m = state.meta
        self._last_t = _float(m["stream.last_t"])
        self._last_score = _float(m["stream.last_score"])
        self._step = _float(m["stream.step"])
        self._seen = int(_float(m["stream.seen"]))
        self._const_value = _float(m["stream.const_value"])
        self._const = bool(m["stream.const"])
        self._load(state)


def _float(v: JSONScalar) -> float:
    """JSON keeps NaN as ``NaN`` with Python's json; be tolerant of ``None`` too."""
    return math.nan if v is None else float(v)


# --- files ----------------------------------------------------------------------------------
def save_state(state: DetectorState, stem: str | Path) -> tuple[Path, Path]:
    """Write ``stem.json`` (name, params, meta) and ``stem.npz`` (arrays); return both paths."""
    stem = Path(stem)
    jpath, npath = stem.with_suffix(".json"), stem.with_suffix(".npz")
    # NaN is not JSON: store it as null (``_float`` reads it back as NaN)
    meta = {k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in state.meta.items()}
    doc = {"format_version": state.format_version, "name": state.name,
           "params": state.params, "meta": meta}
    jpath.write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=False))
    with npath.open("wb") as f:
        arrays: dict[str, Any] = {k: np.asarray(v, dtype=np.float64)
                                  for k, v in state.arrays.items()}
        np.savez(f, allow_pickle=False, **arrays)
    return jpath, npath


def load_state(stem: str | Path) -> DetectorState:
    """Read what :func:`save_state` wrote; never unpickles."""
    stem = Path(stem)
    doc = json.loads(stem.with_suffix(".json").read_text())
    with np.load(stem.with_suffix(".npz"), allow_pickle=False) as z:
        arrays = {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
    return DetectorState(name=str(doc["name"]), params=dict(doc["params"]),
                         meta=dict(doc["meta"]), arrays=arrays,
                         format_version=int(doc["format_version"]))


def check_params(params: Mapping[str, object], allowed: Mapping[str, tuple[float, float]]) -> None:
    """Raise ``ValueError`` naming the parameter when a number is outside its range."""
    for key, (lo, hi) in allowed.items():
        if key in params:
            v = params[key]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"{key}={v!r} must be a number in [{lo}, {hi}]")
