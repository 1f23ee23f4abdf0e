"""Workloads for the simulator: request arrivals with token lengths, from files or generators.

A :class:`Workload` is the one input the simulated cluster needs: when each request arrives
(seconds from the workload start) and how many prompt and output tokens it has. It comes
from one of four places, all reached through :func:`resolve_stream` (any length, as a
:class:`~aiops.sim.stream.RequestStream` read window by window) or :func:`resolve_workload`
(every request in memory, refused above :data:`MAX_REQUESTS`):

* a **request trace** CSV, replayed request by request (the Azure LLM inference trace);
* a **rate series** CSV read as requests/s per interval, turned into Poisson arrivals with
  token lengths drawn from a :class:`TokenDistribution` (NAB series, any load shape);
* a **synthetic generator** from :data:`SYNTHETIC`, each a small frozen dataclass of
  documented parameters that builds a per-second rate curve;
* a **ServeGen model folder**, ``servegen:DIR[:start=D][:end=D]``: days of production
  traffic rebuilt per client and 10-minute window (:mod:`aiops.sim.servegen`).

Two transformations change a workload's speed and weight: :func:`time_scale` compresses
or stretches time (same requests, so the rate changes inversely) and :func:`rate_scale`
makes it k times heavier or lighter (more or fewer requests, same time span).

Everything random is seeded and vectorised: the same seed gives the same arrays, and no
Python loop runs per request. Synthetic workloads are also prefix-consistent: generating
600 s gives exactly the first 600 s of the full-length workload with the same seed, so a
short test run sees the start of the same traffic a long run sees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from aiops.errors import InputError
from aiops.ingest.traces import (
    RateSeries,
    RequestTrace,
    load_rate_series,
    load_request_trace,
    sniff_csv_kind,
)
from aiops.types import FloatArray, IntArray

if TYPE_CHECKING:
    from aiops.sim.stream import RequestStream

MAX_REQUESTS = 20_000_000
"""Refuse to build workloads bigger than this: 20M requests is ~500 MB of arrays and hours
of simulation; a bigger number almost always means a forgotten --rate-scale."""

MAX_SYNTHETIC_SECONDS = 10_000_000
"""Longest synthetic span (~116 days): the per-second rate curve alone is 80 MB there."""

SYNTHETIC_PREFIX = "synthetic:"
SERVEGEN_PREFIX = "servegen:"  # aiops.sim.servegen's, kept here so no import is needed

SUMMARY_META_KEYS = ("servegen",)
"""Provenance in ``meta`` that :meth:`Workload.summary` repeats: for a ServeGen range, how
many clients' token lengths were filled in from the pooled distribution, and the like."""

_Scalar = TypeVar("_Scalar", bound=np.generic)

PEAK_BIN_S = 60.0
"""Bin of the peak rate in :meth:`Workload.summary`: a minute is what a scaler reacts to;
per-second peaks are mostly Poisson noise."""


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class TokenDistribution:
    """Independent lognormal prompt and output lengths, rounded and clipped to [1, max].

    The defaults resemble chat traffic: prompts of a few hundred tokens with a long tail
    (sigma 1.0 puts ~16 % above 1,600 tokens) and answers of ~150 tokens. Lognormal because
    token lengths are positive and right-skewed in every published LLM trace. The caps are
    a common 8k-context deployment with a 2k output limit. (The Azure *code* trace is
    different again: median prompt ~1,470 tokens, median output ~13; replay it for that.)
    """

    context_median: float = 600.0
    context_sigma: float = 1.0
    generated_median: float = 150.0
    generated_sigma: float = 0.8
    max_context: int = 8192
    max_generated: int = 2048

    def __post_init__(self) -> None:
        for name in ("context_median", "generated_median"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("context_sigma", "generated_sigma"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_context", "max_generated"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def sample(self, rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray]:
        """``n`` (context, generated) pairs as int64 arrays.

        Draws an (n, 2) block so request i always uses the same two normals whatever n is:
        this keeps synthetic workloads prefix-consistent.
        """
        # Work on two contiguous rows in place: ~7x faster than on the strided (n, 2) block.
        x = rng.standard_normal((n, 2)).T.copy()
        x *= np.array([[self.context_sigma], [self.generated_sigma]])
        x += np.log([[self.context_median], [self.generated_median]])
        np.exp(x, out=x)
        np.rint(x, out=x)
        np.maximum(x, 1.0, out=x)
        np.minimum(x, np.array([[self.max_context], [self.max_generated]], dtype=float), out=x)
        tokens = x.astype(np.int64)
        return tokens[0], tokens[1]


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True, eq=False)
class Workload:
    """Requests to replay: arrival times in seconds from the start, and token counts.

    Invariants (checked on construction, ValueError otherwise): the three arrays have one
    entry per request; ``arrivals`` are finite, sorted, in ``[0, duration]``; token counts
    are >= 1. The arrays are copied and made read-only, so a Workload can be shared between
    simulations without one changing another's input. Equality is identity (comparing
    arrays elementwise has no single truth value); compare the arrays in tests.

    ``duration`` is the span the workload covers, which can be longer than the last
    arrival (a rate series' quiet last interval, a trace's tail): the simulator runs that
    long. ``meta`` holds JSON-safe provenance: source, seed, rate_scale, time_scale...
    """

    name: str
    arrivals: FloatArray
    context_tokens: IntArray
    generated_tokens: IntArray
    duration: float
    meta: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arrivals = _frozen_copy(self.arrivals, np.float64)
        ctx = _frozen_copy(self.context_tokens, np.int64)
        gen = _frozen_copy(self.generated_tokens, np.int64)
        duration = float(self.duration)
        if arrivals.ndim != 1 or ctx.shape != arrivals.shape or gen.shape != arrivals.shape:
            raise ValueError(
                f"arrivals, context_tokens and generated_tokens must be 1-D of one length, "
                f"got shapes {arrivals.shape}, {ctx.shape}, {gen.shape}"
            )
        if not (math.isfinite(duration) and duration >= 0):
            raise ValueError(f"duration must be finite and >= 0, got {duration}")
        if len(arrivals):
            if not np.isfinite(arrivals).all():
                raise ValueError("arrivals must be finite")
            if (arrivals[1:] < arrivals[:-1]).any():
                raise ValueError("arrivals must be sorted ascending")
            if arrivals[0] < 0 or arrivals[-1] > duration:
                raise ValueError(
                    f"arrivals must lie in [0, duration={duration}], "
                    f"got [{arrivals[0]}, {arrivals[-1]}]"
                )
            if ctx.min() < 1 or gen.min() < 1:
                raise ValueError("token counts must be >= 1")
        object.__setattr__(self, "arrivals", arrivals)
        object.__setattr__(self, "context_tokens", ctx)
        object.__setattr__(self, "generated_tokens", gen)
        object.__setattr__(self, "duration", duration)
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def __len__(self) -> int:
        return len(self.arrivals)

    def rate(self, bin_s: float) -> FloatArray:
        """Requests/s in consecutive bins of ``bin_s`` seconds over ``[0, duration)``.

        The last bin may be shorter than ``bin_s``; it is divided by its own width so every
        entry is a true rate (an arrival exactly at ``duration`` counts in the last bin).
        """
        widths = rate_bins(self.duration, bin_s)
        n_bins = len(widths)
        if n_bins == 0:
            return np.zeros(0, dtype=np.float64)
        index = np.minimum((self.arrivals // bin_s).astype(np.int64), n_bins - 1)
        counts = np.bincount(index, minlength=n_bins).astype(np.float64)
        rates: FloatArray = counts / widths
        return rates

    def window(self, start: float, length: float) -> Workload:
        """The requests in ``[start, start + length)``, re-based so ``start`` becomes 0.

        The window's duration is ``length`` clipped to what this workload covers. The
        offset within the source accumulates in ``meta["offset_s"]``.
        """
        if not (math.isfinite(start) and start >= 0):
            raise ValueError(f"window start must be finite and >= 0, got {start}")
        if not (math.isfinite(length) and length > 0):
            raise ValueError(f"window length must be finite and > 0, got {length}")
        lo = int(np.searchsorted(self.arrivals, start, side="left"))
        hi = int(np.searchsorted(self.arrivals, start + length, side="left"))
        duration = max(0.0, min(length, self.duration - start))
        arrivals = np.minimum(self.arrivals[lo:hi] - start, duration)
        offset = _meta_float(self.meta, "offset_s", 0.0) + start
        return Workload(
            name=self.name,
            arrivals=arrivals,
            context_tokens=self.context_tokens[lo:hi],
            generated_tokens=self.generated_tokens[lo:hi],
            duration=duration,
            meta={**self.meta, "offset_s": offset},
        )

    def summary(self) -> dict[str, object]:
        """JSON-safe overview: rates in requests/s, the peak over one-minute bins.

        Means are None (JSON null) for an empty workload rather than NaN, which is not JSON.
        """
        n = len(self)
        mean_rate = n / self.duration if self.duration > 0 else None
        full_bins = math.floor(self.duration / PEAK_BIN_S)
        if full_bins >= 1:
            peak: float | None = float(self.rate(PEAK_BIN_S)[:full_bins].max())
        else:
            peak = mean_rate
        return {
            "name": self.name,
            "requests": n,
            "duration_s": self.duration,
            "mean_rate": mean_rate,
            "peak_rate": peak,
            "peak_bin_s": PEAK_BIN_S,
            "mean_context_tokens": float(self.context_tokens.mean()) if n else None,
            "mean_generated_tokens": float(self.generated_tokens.mean()) if n else None,
            **{k: self.meta[k] for k in SUMMARY_META_KEYS if k in self.meta},
        }


def rate_bins(duration: float, bin_s: float) -> FloatArray:
    """Widths of the bins :meth:`Workload.rate` counts in over ``[0, duration)``: ``bin_s``
    each, the last one shorter (a residue of float division is merged into the one before).
    Empty for an empty span."""
    if not (math.isfinite(bin_s) and bin_s > 0):
        raise ValueError(f"bin_s must be finite and > 0, got {bin_s}")
    if duration <= 0:
        return np.zeros(0, dtype=np.float64)
    n_bins = max(1, math.ceil(duration / bin_s))
    edges = np.minimum(np.arange(n_bins + 1, dtype=np.float64) * bin_s, duration)
    widths: FloatArray = np.diff(edges)
    if n_bins > 1 and widths[-1] < 1e-9 * bin_s:  # float residue of duration / bin_s
        widths = widths[:-1]
        widths[-1] += float(edges[-1] - edges[-2])
    return widths


def _frozen_copy(values: object, dtype: type[_Scalar]) -> npt.NDArray[_Scalar]:
    out = np.array(values, dtype=dtype)
    out.flags.writeable = False
    return out


def _meta_float(meta: Mapping[str, object], key: str, default: float) -> float:
    value = meta.get(key, default)
    return float(value) if isinstance(value, int | float) else default


# --------------------------------------------------------------------------- transformations


def time_scale(w: Workload, factor: float) -> Workload:
    """Multiply every time by ``factor``: 0.5 plays the workload twice as fast (same
    requests in half the time, so twice the rate), 2 stretches it to half the rate."""
    _check_factor("time_scale", factor)
    if factor == 1.0:
        return w
    meta = {**w.meta, "time_scale": _meta_float(w.meta, "time_scale", 1.0) * factor}
    if "offset_s" in w.meta:
        meta["offset_s"] = _meta_float(w.meta, "offset_s", 0.0) * factor
    return Workload(
        name=w.name,
        arrivals=w.arrivals * factor,
        context_tokens=w.context_tokens,
        generated_tokens=w.generated_tokens,
        duration=w.duration * factor,
        meta=meta,
    )


def rate_scale(w: Workload, factor: float, seed: int) -> Workload:
    """A ``factor`` times heavier (> 1) or lighter (< 1) version of ``w`` over the same span.

    Each request is kept ``floor(factor)`` times plus once more with probability
    ``factor - floor(factor)``, so the count is ``factor * len(w)`` on average with little
    spread. The first instance keeps the original time; further copies land uniformly in
    the request's own slot, the span between the midpoints to its neighbours. Slots are
    narrow inside a burst and wide in a lull, so the scaled workload keeps the original
    shape — bursts stay bursts — without a smoothing window to tune. Copies carry their
    source request's tokens, so the token distribution (and its drift over time) is the
    original's. Below 1 this is plain random thinning, which keeps a Poisson process
    Poisson.
    """
    _check_factor("rate_scale", factor)
    _check_seed(seed)
    if factor == 1.0 or len(w) == 0:
        return w
    n = len(w)
    _check_size(
        n * factor,
        f"rate scaling {n:,} requests by {factor:g}",
        "lower the rate scale or cut the workload shorter (--rate-scale, --duration)",
    )
    rng = np.random.default_rng(seed)
    whole = math.floor(factor)
    instances = whole + (rng.random(n) < factor - whole).astype(np.int64)
    originals = np.flatnonzero(instances >= 1)
    sources = np.repeat(np.arange(n), np.maximum(instances - 1, 0))
    lo, hi = _slots(w.arrivals, w.duration)
    jittered = lo[sources] + rng.random(len(sources)) * (hi - lo)[sources]
    times = np.concatenate([w.arrivals[originals], np.clip(jittered, 0.0, w.duration)])
    index = np.concatenate([originals, sources])
    order = np.argsort(times, kind="stable")
    index = index[order]
    meta = {
        **w.meta,
        "rate_scale": _meta_float(w.meta, "rate_scale", 1.0) * factor,
        "rate_scale_seed": seed,
    }
    return Workload(
        name=w.name,
        arrivals=times[order],
        context_tokens=w.context_tokens[index],
        generated_tokens=w.generated_tokens[index],
        duration=w.duration,
        meta=meta,
    )


# resolve_workload's keyword arguments shadow the two functions above; these names reach them.
_apply_time_scale = time_scale
_apply_rate_scale = rate_scale


def _slots(arrivals: FloatArray, duration: float) -> tuple[FloatArray, FloatArray]:
    """Per request, the span nearer to it than to its neighbours (ends mirrored, clipped)."""
    if len(arrivals) == 1:
        return np.zeros(1), np.full(1, duration)
    mid = (arrivals[:-1] + arrivals[1:]) / 2
    first = max(0.0, 2 * float(arrivals[0]) - float(mid[0]))
    last = min(duration, 2 * float(arrivals[-1]) - float(mid[-1]))
    lo = np.concatenate([[first], mid])
    hi = np.concatenate([mid, [last]])
    return lo, hi


# --------------------------------------------------------------------------- synthetic


class SyntheticGenerator(Protocol):
    """A named load shape: documented parameters and a per-second rate curve."""

    @property
    def duration(self) -> float:
        """Default span in seconds when the caller gives none."""
        ...

    @property
    def tokens(self) -> TokenDistribution: ...

    def rate_curve(self, rng: np.random.Generator, seconds: int) -> FloatArray:
        """Requests/s for each second ``[i, i+1)``, i < seconds, all >= 0.

        Must be causal in its randomness (the first k values may not depend on
        ``seconds``) so generated workloads are prefix-consistent.
        """
        ...


def _noise(rng: np.random.Generator, seconds: int, sigma: float, step_s: float) -> FloatArray:
    """Slow multiplicative noise with mean ~1: lognormal knots every ``step_s`` seconds,
    log-linearly interpolated. Real load wanders over minutes, not seconds; per-second
    jitter comes from the Poisson draw anyway."""
    if sigma == 0 or seconds == 0:
        return np.ones(seconds)
    n_knots = int(seconds // step_s) + 2
    knots = sigma * rng.standard_normal(n_knots) - sigma**2 / 2
    t = np.arange(seconds, dtype=np.float64) + 0.5
    factor: FloatArray = np.exp(np.interp(t, np.arange(n_knots) * step_s, knots))
    return factor


def _add_flash(
    curve: FloatArray, at_s: float, height: float, rise_s: float, decay_s: float
) -> None:
    """Add a flash crowd in place: a linear ramp over ``rise_s`` to ``height`` req/s, then
    exponential decay with time constant ``decay_s`` (cut after 10 time constants)."""
    begin = max(0, int(at_s))
    end = min(len(curve), int(at_s + rise_s + 10 * decay_s) + 1)
    if begin >= end:
        return
    t = np.arange(begin, end) + 0.5 - at_s
    ramp = np.clip(t / rise_s, 0.0, 1.0) if rise_s > 0 else (t >= 0).astype(np.float64)
    decay = np.exp(-np.maximum(t - rise_s, 0.0) / decay_s)
    curve[begin:end] += height * ramp * decay


def _day_shape(
    t: FloatArray, day_s: float, peak_at: float, amplitude: float, amplitude2: float
) -> FloatArray:
    """Mean-1 daily cycle: a first harmonic peaking at ``peak_at`` (fraction of the day)
    plus a second that sharpens the afternoon peak and flattens the night."""
    phase = 2 * np.pi * (t / day_s - peak_at)
    shape: FloatArray = 1.0 + amplitude * np.cos(phase) + amplitude2 * np.cos(2 * phase)
    return shape


@dataclass(frozen=True)
class Steady:
    """Constant ~20 req/s with 5 % slow noise for 1 h: the control case every policy
    should handle; differences here are pure over-provisioning cost."""

    rate: float = 20.0
    noise_sigma: float = 0.05
    noise_step_s: float = 60.0
    duration: float = 3600.0
    tokens: TokenDistribution = TokenDistribution()

    def rate_curve(self, rng: np.random.Generator, seconds: int) -> FloatArray:
        return self.rate * _noise(rng, seconds, self.noise_sigma, self.noise_step_s)


@dataclass(frozen=True)
class FlashCrowd:
    """10 req/s base; at 15 min a crowd ramps in over 10 s to 5x (50 req/s) and decays with
    a 5 min time constant. Tests how fast a policy reacts, and whether it scales back down.
    The time is fixed, not random, so policies are compared on the same event."""

    base_rate: float = 10.0
    at_s: float = 900.0
    height: float = 4.0  # added rate at the crest, in multiples of base_rate
    rise_s: float = 10.0
    decay_s: float = 300.0
    noise_sigma: float = 0.05
    noise_step_s: float = 60.0
    duration: float = 3600.0
    tokens: TokenDistribution = TokenDistribution()

    def rate_curve(self, rng: np.random.Generator, seconds: int) -> FloatArray:
        curve = self.base_rate * _noise(rng, seconds, self.noise_sigma, self.noise_step_s)
        _add_flash(curve, self.at_s, self.height * self.base_rate, self.rise_s, self.decay_s)
        return curve


@dataclass(frozen=True)
class Step:
    """Level shifts: 10 req/s, 30 from 20 min, 15 from 40 min. A step up tests reaction
    time; a step down tests that stabilisation windows release capacity."""

    levels: tuple[tuple[float, float], ...] = ((0.0, 10.0), (1200.0, 30.0), (2400.0, 15.0))
    noise_sigma: float = 0.05
    noise_step_s: float = 60.0
    duration: float = 3600.0
    tokens: TokenDistribution = TokenDistribution()

    def __post_init__(self) -> None:
        times = [t for t, _ in self.levels]
        if not self.levels or times[0] != 0.0 or times != sorted(times):
            raise ValueError(f"levels must start at 0 s and be sorted by time: {self.levels}")

    def rate_curve(self, rng: np.random.Generator, seconds: int) -> FloatArray:
        t = np.arange(seconds, dtype=np.float64) + 0.5
        times = np.array([s for s, _ in self.levels])
        rates = np.array([r for _, r in self.levels])
        level = rates[np.searchsorted(times, t, side="right") - 1]
        curve: FloatArray = level * _noise(rng, seconds, self.noise_sigma, self.noise_step_s)
        return curve


@dataclass(frozen=True)
class DiurnalBursty:
    """The bundled default: a 24 h day compressed 16x into 1.5 h. A daily cycle between
    ~11 and ~35 req/s (peak in the afternoon), slow 12 % noise, and two flash crowds a
    day at random times that add 20-30 req/s within 15 s and decay over 2-5 min. Mean
    ~21 req/s, one-minute peak typically 40-60 req/s."""

    mean_rate: float = 20.0
    day_s: float = 5400.0
    peak_at: float = 0.6  # fraction of the day: ~14:24
    amplitude: float = 0.55
    amplitude2: float = 0.15
    noise_sigma: float = 0.12
    noise_step_s: float = 60.0
    flash_crowds_per_day: int = 2
    flash_height: tuple[float, float] = (1.0, 1.5)  # added rate, multiples of mean_rate
    flash_rise_s: float = 15.0
    flash_decay_s: tuple[float, float] = (120.0, 300.0)
    flash_window: tuple[float, float] = (0.1, 0.9)  # part of each day crowds may start in
    duration: float = 5400.0
    tokens: TokenDistribution = TokenDistribution()

    def rate_curve(self, rng: np.random.Generator, seconds: int) -> FloatArray:
        noise_rng, event_rng = rng.spawn(2)
        t = np.arange(seconds, dtype=np.float64) + 0.5
        shape = _day_shape(t, self.day_s, self.peak_at, self.amplitude, self.amplitude2)
        noise = _noise(noise_rng, seconds, self.noise_sigma, self.noise_step_s)
        curve: FloatArray = self.mean_rate * np.maximum(shape, 0.0) * noise
        days = math.ceil(seconds / self.day_s)
        # One (days, crowds, 3) block, row-major, so day d's crowds never depend on `days`.
        u = event_rng.random((days, self.flash_crowds_per_day, 3))
        for day in range(days):
            for when, height, decay in u[day]:
                at = self.day_s * (day + _lerp(self.flash_window, when))
                _add_flash(
                    curve,
                    at,
                    self.mean_rate * _lerp(self.flash_height, height),
                    self.flash_rise_s,
                    _lerp(self.flash_decay_s, decay),
                )
        return curve


@dataclass(frozen=True)
class Weekly:
    """A week compressed 48x into 3.5 h (a day is 30 min): a daily cycle, weekends at 60 %
    of weekday load, a +20 %/week linear growth trend and slow 10 % noise. Mean ~15 req/s.
    For forecasters: the weekly and daily seasonality are there to be learnt."""

    base_rate: float = 15.0  # weekday daily mean at the start of the week
    day_s: float = 1800.0
    peak_at: float = 0.6
    amplitude: float = 0.5
    amplitude2: float = 0.1
    weekend_days: tuple[int, ...] = (5, 6)  # day index mod 7; the week starts on a Monday
    weekend_factor: float = 0.6
    trend_per_week: float = 0.2
    noise_sigma: float = 0.1
    noise_step_s: float = 60.0
    duration: float = 7 * 1800.0
    tokens: TokenDistribution = TokenDistribution()

    def rate_curve(self, rng: np.random.Generator, seconds: int) -> FloatArray:
        t = np.arange(seconds, dtype=np.float64) + 0.5
        shape = _day_shape(t, self.day_s, self.peak_at, self.amplitude, self.amplitude2)
        weekday = (t // self.day_s).astype(np.int64) % 7
        week_factor = np.where(np.isin(weekday, self.weekend_days), self.weekend_factor, 1.0)
        trend = 1.0 + self.trend_per_week * t / (7 * self.day_s)
        noise = _noise(rng, seconds, self.noise_sigma, self.noise_step_s)
        curve: FloatArray = (
            self.base_rate * np.maximum(shape, 0.0) * week_factor * np.maximum(trend, 0) * noise
        )
        return curve


def _lerp(bounds: tuple[float, float], u: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * float(u)


SYNTHETIC: dict[str, SyntheticGenerator] = {
    "diurnal-bursty": DiurnalBursty(),
    "steady": Steady(),
    "flash-crowd": FlashCrowd(),
    "step": Step(),
    "weekly": Weekly(),
}
"""Named generators for ``synthetic:NAME``; "diurnal-bursty" is the bundled default."""

DEFAULT_WORKLOAD = SYNTHETIC_PREFIX + "diurnal-bursty"


def describe_synthetic() -> dict[str, str]:
    """Name -> one-paragraph description, for ``--help`` and listings."""
    return {name: " ".join((type(gen).__doc__ or "").split()) for name, gen in SYNTHETIC.items()}


def synthetic(
    name: str,
    *,
    seed: int,
    duration: float | None = None,
    tokens: TokenDistribution | None = None,
) -> Workload:
    """Generate the named synthetic workload; ``duration`` in seconds (default: the
    generator's), ``tokens`` overrides the generator's token distribution.

    Arrivals are a non-homogeneous Poisson process over the per-second rate curve. The
    curve, the arrivals and the tokens use separate child streams of ``default_rng(seed)``
    and the curve is built over whole seconds and then cut, so a shorter duration yields
    exactly a prefix of a longer one.
    """
    gen = SYNTHETIC.get(name)
    if gen is None:
        raise InputError(
            f"unknown synthetic workload {name!r}; known: {', '.join(sorted(SYNTHETIC))}"
        )
    _check_seed(seed)
    span = gen.duration if duration is None else duration
    _check_duration(span)
    seconds = math.ceil(span)
    if seconds > MAX_SYNTHETIC_SECONDS:
        raise InputError(
            f"synthetic duration {span:g} s is longer than the {MAX_SYNTHETIC_SECONDS:,} s "
            "limit; use --duration or --time-scale"
        )
    curve_rng, arrival_rng, token_rng = np.random.default_rng(seed).spawn(3)
    curve = gen.rate_curve(curve_rng, seconds)
    _check_size(
        float(curve.sum()),
        f"synthetic:{name} over {span:g} s",
        "use --duration, --time-scale or --rate-scale",
    )
    starts = np.arange(seconds, dtype=np.float64)
    arrivals = _poisson_arrivals(curve, starts, np.ones(seconds), arrival_rng)
    arrivals = arrivals[arrivals < span]
    ctx, out = (tokens if tokens is not None else gen.tokens).sample(token_rng, len(arrivals))
    meta: dict[str, object] = {
        "source": SYNTHETIC_PREFIX + name,
        "kind": "synthetic",
        "generator": name,
        "seed": seed,
        "rate_scale": 1.0,
        "time_scale": 1.0,
        "params": _params(gen),
    }
    return Workload(name, arrivals, ctx, out, span, meta)


def _params(gen: SyntheticGenerator) -> dict[str, object]:
    """The generator's parameters as a JSON-safe dict, for the workload's provenance."""
    if is_dataclass(gen) and not isinstance(gen, type):
        return asdict(gen)
    return {}


def _poisson_arrivals(
    rates: FloatArray, starts: FloatArray, widths: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """Sorted Poisson arrivals with rate ``rates[i]`` req/s on ``[starts[i], +widths[i])``:
    a Poisson count per interval, then that many uniform times in it. Vectorised: one
    ``poisson`` call, one ``random`` call and one sort, whatever the request count. Counts
    and times use separate child streams so the times of the first intervals do not
    depend on how many intervals follow (prefix consistency)."""
    count_rng, time_rng = rng.spawn(2)
    counts = count_rng.poisson(rates * widths)
    total = int(counts.sum())
    times = np.repeat(starts, counts) + time_rng.random(total) * np.repeat(widths, counts)
    times.sort()
    return times


# --------------------------------------------------------------------------- files


def workload_from_trace(trace: RequestTrace, *, name: str | None = None) -> Workload:
    """Replay a request trace: arrivals re-based to the first request.

    ``duration`` adds a tail of one median gap between requests after the last one (1 s
    if the gap is unknown), so the last request is not at the very edge of the run. Token
    counts of 0 become 1: the simulator needs at least one token to schedule a request.
    """
    arrivals = trace.timestamps - trace.timestamps[0]
    gaps = np.diff(arrivals)
    positive = gaps[gaps > 0]
    tail = float(np.median(positive)) if len(positive) else 1.0
    meta: dict[str, object] = {
        "source": trace.path,
        "kind": "request_trace",
        "start_unix": float(trace.timestamps[0]),
        "rate_scale": 1.0,
        "time_scale": 1.0,
    }
    return Workload(
        name=name or Path(trace.path).stem,
        arrivals=arrivals,
        context_tokens=np.maximum(trace.context_tokens, 1),
        generated_tokens=np.maximum(trace.generated_tokens, 1),
        duration=float(arrivals[-1]) + tail,
        meta=meta,
    )


def workload_from_rate_series(
    series: RateSeries,
    *,
    seed: int,
    rate_scale: float = 1.0,
    time_scale: float = 1.0,
    duration: float | None = None,
    tokens: TokenDistribution | None = None,
    name: str | None = None,
) -> Workload:
    """Poisson arrivals at ``value * rate_scale`` requests/s in each row's interval.

    Row i covers ``[t_i, t_{i+1})`` and the last row one median interval. The values are
    read as rates, so ``time_scale`` changes how long each interval lasts and leaves the
    rate alone: 1/48 turns a 30-minute-step week into a 3.5 h run at the same load level,
    which is how a long series becomes a simulation. ``duration`` cuts to the first
    ``duration`` seconds (after time scaling) before anything is drawn.
    """
    _check_factor("rate_scale", rate_scale)
    _check_factor("time_scale", time_scale)
    _check_seed(seed)
    if duration is not None:
        _check_duration(duration)
    ts = series.timestamps
    starts = (ts - ts[0]) * time_scale
    widths = np.append(np.diff(ts), series.interval) * time_scale
    rates = series.values * rate_scale
    span = float(starts[-1] + widths[-1])
    if duration is not None and duration < span:
        keep = starts < duration
        starts, widths, rates = starts[keep], widths[keep], rates[keep]
        widths = np.minimum(widths, duration - starts)
        span = duration
    _check_size(
        float(np.sum(rates * widths)),
        f"{series.path} at rate scale {rate_scale:g} over {span:,.0f} s",
        "lower --rate-scale, shorten with --time-scale, or cut with --duration",
    )
    arrival_rng, token_rng = np.random.default_rng(seed).spawn(2)
    arrivals = np.minimum(_poisson_arrivals(rates, starts, widths, arrival_rng), span)
    ctx, out = (tokens if tokens is not None else TokenDistribution()).sample(
        token_rng, len(arrivals)
    )
    meta: dict[str, object] = {
        "source": series.path,
        "kind": "rate_series",
        "start_unix": float(ts[0]),
        "interval_s": series.interval * time_scale,
        "seed": seed,
        "rate_scale": rate_scale,
        "time_scale": time_scale,
    }
    return Workload(
        name=name or Path(series.path).stem,
        arrivals=arrivals,
        context_tokens=ctx,
        generated_tokens=out,
        duration=span,
        meta=meta,
    )


def resolve_workload(
    spec: str,
    *,
    rate_scale: float = 1.0,
    time_scale: float = 1.0,
    seed: int = 0,
    duration: float | None = None,
    tokens: TokenDistribution | None = None,
) -> Workload:
    """Build the workload a ``--workload`` argument names.

    ``spec`` is ``synthetic:NAME``, ``servegen:DIR[...]`` or a CSV path (kind told by its
    header). A ServeGen range is drawn in full (:func:`materialise`): give it a
    ``duration``, a time range or a rate scale that fits in memory, or use
    :func:`resolve_stream`. Order of work for the others:
    load or generate, time-scale, cut to ``duration``, then rate-scale — cutting before
    resampling keeps a heavy rate scale of a long trace cheap. A synthetic workload is
    generated just long enough for ``duration``, so ``--duration`` may also extend it.
    For a rate series ``rate_scale`` multiplies the rates directly (see
    :func:`workload_from_rate_series`). ``tokens`` applies to rate series and synthetic
    workloads; a trace brings its own token counts. Every bad argument or file raises
    InputError.
    """
    _check_factor("rate_scale", rate_scale)
    _check_factor("time_scale", time_scale)
    _check_seed(seed)
    if duration is not None:
        _check_duration(duration)

    w: Workload
    if spec.startswith(SERVEGEN_PREFIX):
        return materialise(resolve_stream(spec, rate_scale=rate_scale, time_scale=time_scale,
                                          seed=seed, duration=duration))
    if spec.startswith(SYNTHETIC_PREFIX):
        name = spec[len(SYNTHETIC_PREFIX) :]
        raw = None if duration is None else duration / time_scale
        w = _apply_time_scale(synthetic(name, seed=seed, duration=raw, tokens=tokens), time_scale)
    else:
        path = Path(spec)
        if not path.exists():
            raise InputError(
                "no such file; give a CSV path, servegen:DIR or synthetic:NAME with NAME one "
                "of " + ", ".join(sorted(SYNTHETIC)),
                path=spec,
            )
        if sniff_csv_kind(path) == "rate_series":
            return workload_from_rate_series(
                load_rate_series(path),
                seed=seed,
                rate_scale=rate_scale,
                time_scale=time_scale,
                duration=duration,
                tokens=tokens,
            )
        w = _apply_time_scale(workload_from_trace(load_request_trace(path)), time_scale)
    if duration is not None and duration < w.duration:
        w = w.window(0.0, duration)
    return _apply_rate_scale(w, rate_scale, _child_seed(seed, 1))


def resolve_stream(
    spec: str,
    *,
    rate_scale: float = 1.0,
    time_scale: float = 1.0,
    seed: int = 0,
    duration: float | None = None,
    tokens: TokenDistribution | None = None,
) -> RequestStream:
    """The workload a ``--workload`` argument names, as a stream read window by window.

    A ServeGen folder becomes a :class:`~aiops.sim.servegen.ServeGenStream` that makes its
    requests window by window, so any length and rate scale can be replayed (every file is
    read and checked here, before anything is replayed). Every other kind is built in
    memory by :func:`resolve_workload` (with its size limit) and wrapped. Arguments as
    there; ``tokens`` does not apply to ServeGen, which brings its own distributions."""
    from aiops.sim.stream import as_stream

    if not spec.startswith(SERVEGEN_PREFIX):
        return as_stream(resolve_workload(spec, rate_scale=rate_scale, time_scale=time_scale,
                                          seed=seed, duration=duration, tokens=tokens))
    from aiops.sim.servegen import servegen_stream

    _check_factor("rate_scale", rate_scale)
    _check_factor("time_scale", time_scale)
    _check_seed(seed)
    if duration is not None:
        _check_duration(duration)
    return servegen_stream(spec, seed=int(seed), rate_scale=float(rate_scale),
                           time_scale=float(time_scale), duration=duration)


def resolve_source(
    spec: str,
    *,
    rate_scale: float = 1.0,
    time_scale: float = 1.0,
    seed: int = 0,
    duration: float | None = None,
    tokens: TokenDistribution | None = None,
) -> Workload | RequestStream:
    """What the simulator replays for a ``--workload`` argument: a ServeGen folder as a
    stream (any length, bounded memory), every other kind in memory (exact percentiles,
    per-request results). Arguments as :func:`resolve_workload`."""
    if spec.startswith(SERVEGEN_PREFIX):
        return resolve_stream(spec, rate_scale=rate_scale, time_scale=time_scale, seed=seed,
                              duration=duration, tokens=tokens)
    return resolve_workload(spec, rate_scale=rate_scale, time_scale=time_scale, seed=seed,
                            duration=duration, tokens=tokens)


def materialise(stream: RequestStream) -> Workload:
    """Every request of ``stream`` in memory, for callers that need arrays (the simulator
    until it reads streams, the oracle's plan, reports). Refused with an InputError when the
    stream holds more than :data:`MAX_REQUESTS` requests: cut it shorter or lighter."""
    from aiops.sim.stream import WorkloadStream

    if isinstance(stream, WorkloadStream):
        return stream.workload
    requests = stream.summary().get("requests")
    _check_size(
        float(requests) if isinstance(requests, int | float) else 0.0,
        f"{stream.meta.get('source', stream.name)} over {stream.duration:,.0f} s at rate scale "
        f"{_meta_float(stream.meta, 'rate_scale', 1.0):g}",
        "an in-memory replay holds every request: cut it with --duration or a time range "
        "(servegen:DIR:start=2d:end=3d), or lower --rate-scale",
    )
    return stream.window(0.0, stream.duration) if stream.duration > 0 else Workload(
        stream.name, np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), 0.0,
        dict(stream.meta))


def _child_seed(seed: int, stream: int) -> int:
    """An independent seed derived from ``seed``: rate-scale resampling must not reuse the
    generator's random stream, or the copies would be correlated with the originals."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


# --------------------------------------------------------------------------- checks


def _check_factor(name: str, value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value)):
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    if value <= 0:
        raise InputError(f"{name} must be > 0, got {value:g}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")


def _check_duration(duration: float) -> None:
    if not (isinstance(duration, int | float) and math.isfinite(duration) and duration > 0):
        raise InputError(f"duration must be a finite number of seconds > 0, got {duration!r}")


def _check_size(expected: float, what: str, advice: str) -> None:
    if expected > MAX_REQUESTS:
        raise InputError(
            f"{what} gives about {expected:,.0f} requests, more than the limit of "
            f"{MAX_REQUESTS:,}; {advice}"
        )
