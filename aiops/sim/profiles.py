"""Hardware/model profiles: the numbers that make the simulated server behave like a real one.

Profiles are data (YAML files shipped in ``aiops/profiles/``), each naming the sources of its
numbers, so a platform engineer can check them and replace them with their own measurements.
The timing part (:class:`IterationModel`) is not typed in by hand: ``aiops profile fit`` derives
it from measured iteration timings (Vidur's per-operation profiles, or a plain CSV measured on
one's own vLLM server), and the YAML records the command that did.

What a profile describes is one replica's *iteration*: the time of one forward pass as a
function of what it carries. :mod:`aiops.sim.kernel` runs the scheduler over it; everything
here that answers a planning question (capacity per replica, the largest TPOT-safe batch,
which requests could meet the SLO at all) uses the same timing function.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from aiops.errors import InputError
from aiops.types import FloatArray

DEFAULT_PROFILE = "llama3-8b-a100"

SCHEDULERS = ("chunked-prefill", "prefill-first")
"""``chunked-prefill``: vLLM's default (V1 engine): decodes and prompt chunks share every
iteration under the token budget. ``prefill-first``: vLLM without chunking: an iteration
prefills whole prompts while decodes wait."""

ROUTINGS = ("least-outstanding", "least-waiting", "round-robin")
"""How the gateway in front of the replicas spreads requests: ``least-outstanding`` (fewest
waiting plus running, what a least-request load balancer such as Envoy's does),
``least-waiting`` (fewest queued; ties to the first replica, as Vidur's LOR scheduler does,
which piles light load onto one replica) or ``round-robin`` (each ready replica in turn).
On a bursty trace the choice alone moves SLO attainment by several points: set it to what
your gateway does."""


@dataclass(frozen=True)
class IterationModel:
    """Seconds one iteration of a replica takes, from what it carries.

    ``time = overhead_s + per_sequence_s * emitting
           + linear(tokens)                                     # projections, MLP, norms
           + decode_fixed_s + decode_per_sequence_s * n + decode_per_kv_token_s * kv
           + sum over prompt chunks c after k earlier tokens of the same request of
             prefill_fixed_s + prefill_per_token_s * c + prefill_per_token_kv_s * c * k
             + prefill_per_token_sq_s * c**2``

    where ``tokens`` is all tokens in the iteration (one per decoding sequence plus the chunk
    tokens), ``n`` the decoding sequences and ``kv`` the KV tokens they hold, ``emitting`` the
    sequences that produce a token. ``linear`` interpolates ``linear_tokens`` (pairs of
    tokens and seconds), linearly beyond the last pair: the linear layers are flat while
    memory-bound (small batches) and proportional to tokens once compute-bound.
    """

    linear_tokens: tuple[tuple[float, float], ...]
    overhead_s: float = 0.0
    per_sequence_s: float = 0.0
    decode_fixed_s: float = 0.0
    decode_per_sequence_s: float = 0.0
    decode_per_kv_token_s: float = 0.0
    prefill_fixed_s: float = 0.0
    prefill_per_token_s: float = 0.0
    prefill_per_token_kv_s: float = 0.0
    prefill_per_token_sq_s: float = 0.0

    def __post_init__(self) -> None:
        pts = self.linear_tokens
        if len(pts) < 2:
            raise InputError("iteration.linear_tokens needs at least two [tokens, seconds] pairs")
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        if any(not (math.isfinite(x) and x > 0) for x in xs) or any(
                b <= a for a, b in pairwise(xs)):
            raise InputError("iteration.linear_tokens: token counts must be > 0 and increasing")
        if any(not (math.isfinite(y) and y > 0) for y in ys) or any(
                b < a for a, b in pairwise(ys)):
            raise InputError("iteration.linear_tokens: seconds must be > 0 and non-decreasing")
        for key in ("overhead_s", "per_sequence_s", "decode_fixed_s", "decode_per_sequence_s",
                    "decode_per_kv_token_s", "prefill_fixed_s", "prefill_per_token_s",
                    "prefill_per_token_kv_s", "prefill_per_token_sq_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"iteration.{key} must be a finite number >= 0, got {value}")

    # ------------------------------------------------------------------ evaluation
    @property
    def table(self) -> tuple[FloatArray, FloatArray]:
        xs = np.array([p[0] for p in self.linear_tokens], dtype=np.float64)
        ys = np.array([p[1] for p in self.linear_tokens], dtype=np.float64)
        return xs, ys

    def linear(self, tokens: npt.ArrayLike) -> FloatArray:
        """Seconds of the linear layers for ``tokens`` tokens in one iteration."""
        xs, ys = self.table
        t = np.asarray(tokens, dtype=np.float64)
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        out = np.interp(t, xs, ys)
        out = np.where(t > xs[-1], ys[-1] + slope * (t - xs[-1]), out)
        result: FloatArray = np.asarray(out, dtype=np.float64)
        return result

    def decode_step(self, n: npt.ArrayLike, kv: npt.ArrayLike) -> FloatArray:
        """A decode-only iteration of ``n`` sequences holding ``kv`` KV tokens in all."""
        n_ = np.asarray(n, dtype=np.float64)
        out = (self.overhead_s + self.per_sequence_s * n_ + self.linear(n_)
               + self.decode_fixed_s + self.decode_per_sequence_s * n_
               + self.decode_per_kv_token_s * np.asarray(kv, dtype=np.float64))
        result: FloatArray = np.asarray(out, dtype=np.float64)
        return result

    def chunk_attention(self, chunk: npt.ArrayLike, earlier: npt.ArrayLike) -> FloatArray:
        c = np.asarray(chunk, dtype=np.float64)
        k = np.asarray(earlier, dtype=np.float64)
        out = (self.prefill_fixed_s + self.prefill_per_token_s * c
               + self.prefill_per_token_kv_s * c * k + self.prefill_per_token_sq_s * c * c)
        result: FloatArray = np.asarray(out, dtype=np.float64)
        return result

    def prefill_step(self, chunk: npt.ArrayLike, earlier: npt.ArrayLike = 0.0, *,
                     emitting: float = 1.0) -> FloatArray:
        """An iteration carrying only one prompt chunk (no decodes)."""
        c = np.asarray(chunk, dtype=np.float64)
        out = (self.overhead_s + self.per_sequence_s * emitting + self.linear(c)
               + self.chunk_attention(c, earlier))
        result: FloatArray = np.asarray(out, dtype=np.float64)
        return result

    def as_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "linear_tokens": [[_num(x), _num(y)] for x, y in self.linear_tokens]}
        for key in ("overhead_s", "per_sequence_s", "decode_fixed_s", "decode_per_sequence_s",
                    "decode_per_kv_token_s", "prefill_fixed_s", "prefill_per_token_s",
                    "prefill_per_token_kv_s", "prefill_per_token_sq_s"):
            out[key] = _num(getattr(self, key))
        return out


def _num(x: float) -> float | int:
    """A float written with 6 significant digits (integers as integers) for readable YAML."""
    if float(x).is_integer() and abs(x) < 1e15:
        return int(x)
    return float(f"{x:.6g}")


@dataclass(frozen=True)
class Profile:
    """One model on one replica shape, served by a vLLM-style engine.

    ``kv_cache_tokens`` is what the engine can hold after weights and activations;
    ``max_num_batched_tokens`` the per-iteration token budget; ``batch_sizes`` the
    ``--max-num-seqs`` values a policy may choose; ``cold_start_s`` pod creation to ready;
    ``api_overhead_s`` what the HTTP server and tokenizer add before the engine sees a request.
    """

    name: str
    model: str
    gpu: str
    gpus_per_replica: int
    gpu_hour_usd: float
    kv_cache_tokens: float
    cold_start_s: float
    batch_sizes: tuple[int, ...]
    default_batch_size: int
    iteration: IterationModel
    scheduler: str = "chunked-prefill"
    routing: str = "least-outstanding"
    max_num_batched_tokens: int = 2048
    api_overhead_s: float = 0.005
    watermark: float = 0.01
    sources: tuple[str, ...] = ()
    # Provenance only: two profiles that time iterations alike are alike.
    fit: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for key, value in {"gpus_per_replica": self.gpus_per_replica,
                           "kv_cache_tokens": self.kv_cache_tokens,
                           "max_num_batched_tokens": self.max_num_batched_tokens}.items():
            if not value > 0:
                raise InputError(f"profile {self.name!r}: {key} must be > 0, got {value}")
        for key, value in {"cold_start_s": self.cold_start_s,
                           "api_overhead_s": self.api_overhead_s,
                           "gpu_hour_usd": self.gpu_hour_usd}.items():
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"profile {self.name!r}: {key} must be >= 0, got {value}")
        if not 0 <= self.watermark < 0.5:
            raise InputError(f"profile {self.name!r}: watermark must be in [0, 0.5), "
                             f"got {self.watermark}")
        if self.scheduler not in SCHEDULERS:
            raise InputError(f"profile {self.name!r}: scheduler must be one of "
                             f"{', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.routing not in ROUTINGS:
            raise InputError(f"profile {self.name!r}: routing must be one of "
                             f"{', '.join(ROUTINGS)}, got {self.routing!r}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise InputError(f"profile {self.name!r}: batch_sizes must be positive integers")
        if self.default_batch_size not in self.batch_sizes:
            raise InputError(
                f"profile {self.name!r}: default_batch_size {self.default_batch_size} "
                f"is not one of batch_sizes {list(self.batch_sizes)}"
            )

    # ------------------------------------------------------------ planning answers
    def step_time(self, running: float, context: float = 1024.0) -> float:
        """Seconds per decode step with ``running`` sequences of ``context`` tokens each."""
        n = max(running, 1.0)
        return float(self.iteration.decode_step(n, n * context))

    def max_batch_for_tpot(self, tpot_slo: float, context: float = 1024.0) -> int:
        """The largest offered batch size whose full decode step meets ``tpot_slo`` (the
        smallest offered one if none does): above it, a full batch misses the TPOT objective
        for every sequence in it, so the extra slots only ever trade TTFT for TPOT misses."""
        ok = [b for b in self.batch_sizes if self.step_time(b, context) <= tpot_slo]
        return max(ok) if ok else min(self.batch_sizes)

    def decode_tokens_per_s(self, batch: int, context: float = 1024.0) -> float:
        """Output tokens/s of one replica with a full batch decoding."""
        return batch / self.step_time(batch, context)

    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens/s of one replica prefilling back to back at the token budget."""
        c = float(self.max_num_batched_tokens)
        return c / float(self.iteration.prefill_step(c, 0.0))

    def idle_ttft(self, context_tokens: npt.ArrayLike) -> FloatArray:
        """TTFT of each prompt served alone on an idle replica: the API overhead plus its
        prefill, in chunks of the token budget under chunked prefill."""
        ctx = np.asarray(context_tokens, dtype=np.float64)
        if self.scheduler == "prefill-first":
            out = self.api_overhead_s + self.iteration.prefill_step(ctx, 0.0)
            result: FloatArray = np.asarray(out, dtype=np.float64)
            return result
        budget = float(self.max_num_batched_tokens)
        total = np.full(ctx.shape, self.api_overhead_s)
        chunks = int(np.ceil(ctx.max() / budget)) if ctx.size else 0
        for j in range(chunks):
            done = j * budget
            c = np.clip(ctx - done, 0.0, budget)
            last = (ctx - done <= budget).astype(np.float64)
            step = self.iteration.prefill_step(c, done, emitting=1.0)
            step = step - self.iteration.per_sequence_s * (1.0 - last)
            total = total + np.where(c > 0, step, 0.0)
        return total

    def feasible_limits(self, ttft_s: float, tpot_s: float) -> tuple[float, float]:
        """The longest prompt an idle replica prefills within ``ttft_s``, and the most KV
        tokens a lone decoding sequence may hold within ``tpot_s`` (tokens; both found by
        bisection on whole tokens, both functions being monotone). They define which
        requests could meet the SLO at all (``aiops.sim.cluster.feasible_mask``)."""
        return _feasible_limits(self, float(ttft_s), float(tpot_s))

    def replica_capacity_rps(
        self,
        batch: int,
        mean_context: float,
        mean_generated: float,
        *,
        ttft_slo: float = 0.5,
        tpot_slo: float = 0.05,
    ) -> float:
        """Requests/s one replica sustains with 99 % of requests within the SLO, for a
        request mix: measured on the simulated server (see :mod:`aiops.sim.capacity`).
        Policies and the oracle plan with it."""
        from aiops.sim.capacity import replica_capacity_rps

        return replica_capacity_rps(self, batch, mean_context, mean_generated,
                                    ttft_slo=ttft_slo, tpot_slo=tpot_slo)

    def capacity_fn(self, batch: int, *, ttft_slo: float = 0.5,
                    tpot_slo: float = 0.05) -> Callable[[float, float], float]:
        """:meth:`replica_capacity_rps` at this batch and SLO as a function of the mix
        (mean prompt tokens, mean generated tokens): what a planner that watches the live
        token mix asks (``PolicyContext.capacity_for``). Picklable, cached per mix."""
        return functools.partial(self.replica_capacity_rps, batch, ttft_slo=ttft_slo,
                                 tpot_slo=tpot_slo)

    def replicas_for(self, rate_rps: float, capacity_rps: float) -> int:
        return max(1, math.ceil(rate_rps / capacity_rps - 1e-9))

    def with_changes(self, **changes: Any) -> Profile:
        """A copy with some fields replaced (validated again)."""
        values = {k: getattr(self, k) for k in self.__dataclass_fields__}
        values.update(changes)
        return Profile(**values)

    def as_yaml(self) -> dict[str, Any]:
        """The profile as the mapping :func:`load_profile` reads."""
        return {
            "name": self.name, "model": self.model, "gpu": self.gpu,
            "gpus_per_replica": self.gpus_per_replica, "gpu_hour_usd": self.gpu_hour_usd,
            "kv_cache_tokens": _num(self.kv_cache_tokens), "cold_start_s": _num(self.cold_start_s),
            "batch_sizes": list(self.batch_sizes), "default_batch_size": self.default_batch_size,
            "scheduler": self.scheduler, "routing": self.routing,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "api_overhead_s": _num(self.api_overhead_s), "watermark": self.watermark,
            "iteration": self.iteration.as_yaml(),
            "sources": list(self.sources),
            "fit": dict(self.fit),
        }


@lru_cache(maxsize=256)
def _feasible_limits(profile: Profile, ttft_s: float, tpot_s: float) -> tuple[float, float]:
    def largest(ok: Callable[[float], bool]) -> float:
        if not ok(1.0):
            return 0.0
        lo, hi = 1.0, 4.0 * profile.kv_cache_tokens
        while hi - lo > 0.5:
            mid = math.floor(0.5 * (lo + hi))
            if mid <= lo:
                break
            if ok(mid):
                lo = mid
            else:
                hi = mid
        return lo

    max_ctx = largest(lambda c: bool(profile.idle_ttft(c) <= ttft_s))
    max_held = largest(lambda k: bool(profile.iteration.decode_step(1.0, k) <= tpot_s))
    return max_ctx, max_held


def _builtin_dir() -> Path:
    return Path(str(resources.files("aiops") / "profiles"))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in _builtin_dir().glob("*.yaml"))


def profile_path(name_or_path: str) -> Path:
    """The YAML file a ``--profile`` argument names (a shipped name or a path)."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} and path.exists():
        return path
    path = _builtin_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        raise InputError(
            f"unknown profile {name_or_path!r}; shipped profiles: "
            f"{', '.join(available_profiles())} (or give a path to a YAML file)"
        )
    return path


def load_profile(name_or_path: str = DEFAULT_PROFILE) -> Profile:
    """Load a shipped profile by name, or a YAML file by path."""
    path = profile_path(name_or_path)
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid YAML: {exc}", path=str(path)) from None
    if not isinstance(raw, dict):
        raise InputError("a profile must be a mapping of keys to values", path=str(path))
    return profile_from_mapping(raw, path=str(path))


_OPTIONAL = {"sources", "fit", "scheduler", "routing", "max_num_batched_tokens",
             "api_overhead_s", "watermark"}


def profile_from_mapping(raw: Mapping[str, Any], *, path: str = "<profile>") -> Profile:
    """Build a Profile from YAML data; every problem is an InputError naming the key."""
    fields = set(Profile.__dataclass_fields__)
    unknown = sorted(set(raw) - fields)
    if unknown:
        hint = ""
        if {"decode_t0_s", "decode_k_s", "prefill_tokens_per_s"} & set(unknown):
            hint = ("; this is the old profile format: derive an `iteration:` section with "
                    "`aiops profile fit` (see docs/profiles.md)")
        raise InputError(f"unknown profile key(s): {', '.join(unknown)}{hint}", path=path)
    missing = sorted(f for f in fields - set(raw) if f not in _OPTIONAL)
    if missing:
        raise InputError(f"missing profile key(s): {', '.join(missing)}", path=path)
    values = dict(raw)
    try:
        it = values["iteration"]
        if not isinstance(it, Mapping):
            raise InputError("iteration: must be a mapping", path=path)
        it_fields = set(IterationModel.__dataclass_fields__)
        bad = sorted(set(it) - it_fields)
        if bad:
            raise InputError(f"unknown iteration key(s): {', '.join(bad)}", path=path)
        if "linear_tokens" not in it:
            raise InputError("iteration: missing key linear_tokens", path=path)
        pairs = tuple((float(p[0]), float(p[1])) for p in it["linear_tokens"])
        kwargs = {k: float(v) for k, v in it.items() if k != "linear_tokens"}
        values["iteration"] = IterationModel(linear_tokens=pairs, **kwargs)
        values["batch_sizes"] = tuple(int(b) for b in values["batch_sizes"])
        values["sources"] = tuple(str(s) for s in values.get("sources", ()) or ())
        values["fit"] = dict(values.get("fit", {}) or {})
        return Profile(**values)
    except InputError as exc:
        if exc.path is None:
            raise InputError(str(exc), path=path) from None
        raise
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise InputError(f"bad profile value: {exc}", path=path) from None
