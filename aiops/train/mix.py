"""Training workloads: every episode a fresh variation of the sources given.

An agent trained on one trace learns that trace's minutes by heart; the daemon will meet
other load. So each episode the mixer picks a source and changes it at random (all draws
from the environment's seeded generator, so a training run is reproducible):

* **offset** — a random window of ``episode_s`` seconds of the source;
* **time stretch** (log-uniform, default 0.5-2×) — the load *shape* plays slower or faster
  while its level stays: a burst that rose in 60 s rises in 30 s or 120 s;
* **rate scale** (log-uniform, default 0.1-4×) — the level: from 1-2 req/s (a fleet of
  one that must not be scaled blind) to a few hundred, fleets of 1 to ~60 replicas;
* **bursts** (half the episodes) — multiplicative lognormal noise on a 5-30 s scale: the
  synthetic generators are smooth at that scale, real traffic is not;
* **spikes** (a third of the episodes) — heavy-tailed lognormal noise (sigma 1-2) on a
  2-20 s scale: mostly quiet, with rare 10-15× spikes, as in real LLM request traces (the
  Azure code trace's 10-second counts swing from 0 to 327 around a mean of 26). Chasing
  such spikes with 90 s cold starts only churns; the agent must learn to hold through
  the dips instead;
* **clustered arrivals** (half the synthetic and rate-series episodes) — requests drawn as
  a renewal process whose inter-arrival times have a coefficient of variation of 1-6
  (Gamma, log-uniform CV) instead of Poisson's 1, following the same rate curve
  (:func:`cluster_arrivals`). This is how ServeGen describes production LLM traffic (per
  client and 10-minute window, a fitted Gamma or Weibull law: request-weighted median CV
  1.5, upper quartile 4.3) and what makes the Azure code trace hard: bursts of seconds a
  15-second average hides. Trained on it, the agent can learn what the dispersion feature
  says about the standing capacity a fleet needs;
* **token mix** (synthetic and rate series) — chat, code completion or RAG-like prompt and
  answer lengths, which change what one replica can carry (long prompts are prefill-bound).

Sources are ``synthetic:NAME`` generators, request traces (replayed, their own tokens),
rate series (normalised to ``series_mean_rps`` before rate scaling, since their units —
taxi rides, bytes, CPU % — say nothing about requests/s) and ServeGen folders
(``servegen:DIR``: a random window, normalised like a rate series, each client with its own
inter-arrival law and token lengths; see :func:`aiops.sim.servegen.servegen_episode`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aiops.errors import InputError
from aiops.ingest.traces import RateSeries, load_rate_series, sniff_csv_kind
from aiops.sim.servegen import ServeGenStream, is_servegen, servegen_episode, servegen_stream
from aiops.sim.workloads import (
    SYNTHETIC,
    SYNTHETIC_PREFIX,
    SyntheticGenerator,
    TokenDistribution,
    Workload,
    rate_scale,
    resolve_workload,
    time_scale,
)
from aiops.types import FloatArray

TOKEN_MIXES: dict[str, TokenDistribution] = {
    # Chat: the generators' default (prompts ~600 tokens, answers ~150).
    "chat": TokenDistribution(),
    # Code completion: long prompts (file context), very short answers; prefill-bound.
    "code": TokenDistribution(context_median=1500.0, context_sigma=0.9,
                              generated_median=15.0, generated_sigma=1.2),
    # Retrieval-augmented answers: long prompts and long answers; KV-cache-bound.
    "rag": TokenDistribution(context_median=2500.0, context_sigma=0.6,
                             generated_median=250.0, generated_sigma=0.7),
}


@dataclass(frozen=True)
class MixConfig:
    """Ranges of the random changes; the defaults are documented in the module docstring."""

    episode_s: float = 3600.0
    rate_scale: tuple[float, float] = (0.1, 4.0)
    time_stretch: tuple[float, float] = (0.5, 2.0)
    burst_prob: float = 0.5
    burst_sigma: tuple[float, float] = (0.3, 1.0)
    burst_step_s: tuple[float, float] = (5.0, 30.0)
    spike_prob: float = 0.3
    spike_sigma: tuple[float, float] = (1.0, 2.0)
    spike_step_s: tuple[float, float] = (2.0, 20.0)
    series_mean_rps: float = 20.0
    series_row_s: tuple[float, float] = (15.0, 120.0)  # seconds one rate-series row lasts
    token_mixes: tuple[str, ...] = ("chat", "code", "rag")
    cluster_prob: float = 0.5
    cluster_cv: tuple[float, float] = (1.0, 6.0)

    def __post_init__(self) -> None:
        for name in ("rate_scale", "time_stretch", "burst_sigma", "burst_step_s",
                     "spike_sigma", "spike_step_s", "series_row_s", "cluster_cv"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi and math.isfinite(hi)):
                raise InputError(f"{name} range {lo}:{hi} needs 0 < low <= high")
        for name in ("burst_prob", "spike_prob", "cluster_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} {getattr(self, name)} is outside [0, 1]")
        if self.episode_s <= 0:
            raise InputError(f"episode_s {self.episode_s} must be > 0")
        unknown = sorted(set(self.token_mixes) - set(TOKEN_MIXES))
        if unknown or not self.token_mixes:
            raise InputError(f"token mixes {unknown or '(none)'}: known {sorted(TOKEN_MIXES)}")


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else lo


@dataclass(frozen=True)
class _Source:
    spec: str
    generator: SyntheticGenerator | None = None
    trace: Workload | None = None
    series: RateSeries | None = None
    servegen: ServeGenStream | None = None


@dataclass
class WorkloadMix:
    """``rng -> Workload``: the callable workload source of :class:`AutoscaleEnv`."""

    specs: tuple[str, ...]
    config: MixConfig = field(default_factory=MixConfig)
    _sources: list[_Source] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.specs:
            raise InputError("training needs at least one --workload")
        for spec in self.specs:
            self._sources.append(_load_source(spec))

    def __call__(self, rng: np.random.Generator) -> Workload:
        src = self._sources[int(rng.integers(len(self._sources)))]
        cfg = self.config
        stretch = _log_uniform(rng, cfg.time_stretch)
        level = _log_uniform(rng, cfg.rate_scale)
        if src.trace is not None:
            return self._from_trace(src.trace, rng, stretch, level)
        if src.servegen is not None:
            return servegen_episode(src.servegen, rng, episode_s=cfg.episode_s,
                                    stretch=stretch, mean_rps=level * cfg.series_mean_rps)
        if src.generator is not None:
            gen = src.generator
            raw_s = math.ceil(max(gen.duration, cfg.episode_s / stretch))
            raw = gen.rate_curve(rng.spawn(1)[0], raw_s)
            span = min(raw_s, math.ceil(cfg.episode_s / stretch))
            start = int(rng.integers(0, raw_s - span + 1))
            curve = _stretch(raw[start:start + span], stretch, cfg.episode_s)
        else:
            assert src.series is not None
            curve = self._series_curve(src.series, rng)
        curve = curve * level
        if rng.random() < cfg.burst_prob:
            curve = curve * _burst_noise(rng, len(curve), _log_uniform(rng, cfg.burst_sigma),
                                         _log_uniform(rng, cfg.burst_step_s))
        if rng.random() < cfg.spike_prob:
            curve = curve * _burst_noise(rng, len(curve), _log_uniform(rng, cfg.spike_sigma),
                                         _log_uniform(rng, cfg.spike_step_s))
        mix = cfg.token_mixes[int(rng.integers(len(cfg.token_mixes)))]
        w = _curve_workload(src.spec, curve, TOKEN_MIXES[mix], rng,
                            meta={"source": src.spec, "time_stretch": stretch,
                                  "rate_scale": level, "tokens": mix})
        if rng.random() < cfg.cluster_prob:
            w = cluster_arrivals(w, _log_uniform(rng, cfg.cluster_cv), rng)
        return w

    def _from_trace(self, w: Workload, rng: np.random.Generator, stretch: float,
                    level: float) -> Workload:
        """Stretch, window, then scale: the trace keeps its own tokens and burstiness.
        Stretching a trace lowers its rate by the same factor; the rate scale makes up for
        it so that, as for the other sources, stretch changes the shape and not the level."""
        w = time_scale(w, stretch)
        if w.duration > self.config.episode_s:
            w = w.window(float(rng.uniform(0.0, w.duration - self.config.episode_s)),
                         self.config.episode_s)
        return rate_scale(w, level * stretch, int(rng.integers(2**31)))

    def _series_curve(self, series: RateSeries, rng: np.random.Generator) -> FloatArray:
        """Per-second rates of a random window of a rate series, mean-normalised."""
        mean = float(np.mean(series.values))
        values = series.values / mean * self.config.series_mean_rps if mean > 0 else \
            np.zeros(len(series))
        row_s = _log_uniform(rng, self.config.series_row_s)
        rows = min(len(values), math.ceil(self.config.episode_s / row_s) + 1)
        start = int(rng.integers(0, len(values) - rows + 1))
        per_s = np.repeat(values[start:start + rows], math.ceil(row_s))
        seconds = math.ceil(self.config.episode_s)
        if len(per_s) < seconds:
            per_s = np.resize(per_s, seconds)
        return np.asarray(per_s[:seconds], dtype=np.float64)


def _load_source(spec: str) -> _Source:
    if is_servegen(spec):
        return _Source(spec, servegen=servegen_stream(spec))
    if spec.startswith(SYNTHETIC_PREFIX):
        name = spec[len(SYNTHETIC_PREFIX):]
        gen = SYNTHETIC.get(name)
        if gen is None:
            raise InputError(f"unknown synthetic workload {name!r}; known: "
                             f"{', '.join(sorted(SYNTHETIC))}")
        return _Source(spec, generator=gen)
    path = Path(spec)
    if not path.exists():
        raise InputError("no such file; give a CSV path or synthetic:NAME", path=spec)
    if sniff_csv_kind(path) == "rate_series":
        series = load_rate_series(path)
        if len(series) < 2:
            raise InputError("a rate series needs at least two rows", path=spec)
        return _Source(spec, series=series)
    return _Source(spec, trace=resolve_workload(spec))


def _stretch(curve: FloatArray, factor: float, episode_s: float) -> FloatArray:
    """Resample a per-second curve so it plays ``factor`` times slower, same level."""
    seconds = math.ceil(episode_s)
    idx = np.minimum((np.arange(seconds) / factor).astype(np.int64), len(curve) - 1)
    out: FloatArray = curve[idx]
    return out


def _burst_noise(rng: np.random.Generator, seconds: int, sigma: float,
                 step_s: float) -> FloatArray:
    """Mean-1 lognormal noise, piecewise constant over ``step_s`` seconds."""
    knots = int(seconds // step_s) + 1
    z = np.exp(sigma * rng.standard_normal(knots) - sigma**2 / 2)
    out: FloatArray = z[(np.arange(seconds) // step_s).astype(np.int64)]
    return out


def _curve_workload(name: str, curve: FloatArray, tokens: TokenDistribution,
                    rng: np.random.Generator, *, meta: dict[str, object]) -> Workload:
    """Poisson arrivals over a per-second rate curve, tokens from ``tokens``."""
    counts = rng.poisson(np.maximum(curve, 0.0))
    total = int(counts.sum())
    times = np.repeat(np.arange(len(curve), dtype=np.float64), counts) + rng.random(total)
    times.sort()
    ctx, gen = tokens.sample(rng, total)
    return Workload(name, times, ctx, gen, float(len(curve)), meta)


def cluster_arrivals(w: Workload, cv: float, rng: np.random.Generator) -> Workload:
    """``w`` with its arrivals redrawn as a renewal process of inter-arrival CV ``cv``.

    The gaps are Gamma(shape 1/cv^2, mean 1) in the workload's own *operational time* —
    request i of ``w`` sits at operational time i — mapped back to seconds by interpolation,
    so the rate over any stretch longer than a few gaps is ``w``'s, while requests come in
    clusters (cv > 1) or evenly (cv < 1). Each new request takes the token lengths of the
    original request at its position. ``cv`` = 1 is a (time-changed) Poisson process."""
    n = len(w)
    if n < 2 or not cv > 0:
        return w
    shape = 1.0 / (cv * cv)
    gaps = rng.gamma(shape, 1.0 / shape, size=int(n * 1.2) + 64)
    u = np.cumsum(gaps) - gaps[0] * rng.random()  # a random phase, not a request at 0
    u = u[(u >= 0) & (u < n)]
    knots = np.arange(n + 1, dtype=np.float64)
    times = np.concatenate([w.arrivals, [w.duration]])
    arrivals = np.interp(u, knots, times)
    idx = np.minimum(u.astype(np.int64), n - 1)
    meta = {**w.meta, "arrival_cv": round(cv, 3)}
    return Workload(w.name, arrivals, w.context_tokens[idx], w.generated_tokens[idx],
                    w.duration, meta)
