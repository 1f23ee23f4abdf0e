"""Hardware/model profiles: the numbers that make the simulated cluster behave like a real one.

Profiles are data (YAML files shipped in ``aiops/profiles/``), each with the sources of its
numbers, so a platform engineer can check them and replace them with their own measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from aiops.errors import InputError

DEFAULT_PROFILE = "llama3-8b-a100"


@dataclass(frozen=True)
class Profile:
    """One model on one replica shape.

    Decode step time is ``decode_t0_s + decode_k_s * n`` for ``n`` running sequences
    (continuous batching); prefill runs at ``prefill_tokens_per_s`` per replica.
    """

    name: str
    model: str
    gpu: str
    gpus_per_replica: int
    gpu_hour_usd: float
    decode_t0_s: float
    decode_k_s: float
    prefill_tokens_per_s: float
    ttft_overhead_s: float
    kv_cache_tokens: float
    cold_start_s: float
    batch_sizes: tuple[int, ...]
    default_batch_size: int
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        positive = {
            "gpus_per_replica": self.gpus_per_replica,
            "decode_t0_s": self.decode_t0_s,
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "kv_cache_tokens": self.kv_cache_tokens,
        }
        for key, value in positive.items():
            if not value > 0:
                raise InputError(f"profile {self.name!r}: {key} must be > 0, got {value}")
        for key, value in {"decode_k_s": self.decode_k_s, "cold_start_s": self.cold_start_s,
                           "ttft_overhead_s": self.ttft_overhead_s,
                           "gpu_hour_usd": self.gpu_hour_usd}.items():
            if value < 0:
                raise InputError(f"profile {self.name!r}: {key} must be >= 0, got {value}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise InputError(f"profile {self.name!r}: batch_sizes must be positive integers")
        if self.default_batch_size not in self.batch_sizes:
            raise InputError(
                f"profile {self.name!r}: default_batch_size {self.default_batch_size} "
                f"is not one of batch_sizes {list(self.batch_sizes)}"
            )

    def step_time(self, running: float) -> float:
        """Seconds per decode step with ``running`` sequences in the batch."""
        return self.decode_t0_s + self.decode_k_s * running

    def max_batch_for_tpot(self, tpot_slo: float) -> int:
        """The largest offered batch size whose full decode step meets ``tpot_slo`` (the
        smallest offered one if none does): above it, a full batch misses the TPOT objective
        for every sequence in it, so the extra slots only ever trade TTFT for TPOT misses."""
        ok = [b for b in self.batch_sizes if self.step_time(b) <= tpot_slo]
        return max(ok) if ok else min(self.batch_sizes)

    def decode_tokens_per_s(self, batch: int) -> float:
        """Output tokens/s of one replica with a full batch."""
        return batch / self.step_time(batch)

    def replica_capacity_rps(
        self,
        batch: int,
        mean_context: float,
        mean_generated: float,
        *,
        tpot_slo: float = 0.05,
        prefill_utilization: float = 0.6,
        tpot_margin: float = 0.8,
    ) -> float:
        """Requests/s one replica sustains within the SLO, for a request mix.

        The same model as the simulator, solved for the steady state: at a rate ``lam``
        prefill takes a share ``s = lam * ctx / P`` of the GPU and slows decode steps by
        ``1 + s``; the running sequences ``n`` then follow Little's law,
        ``n = lam * (ttft + gen * (t0 + k n)(1 + s))``. The capacity is the largest ``lam``
        that keeps ``n`` within the batch and the KV cache, the TPOT under
        ``tpot_margin * tpot_slo``, and prefill below ``prefill_utilization`` (0.6 keeps the
        queueing wait for prefill shorter than the prefill itself on bursty traffic).
        Policies and the oracle plan with it; the simulator itself does not use it.
        """
        ctx = max(mean_context, 1.0)
        gen = max(mean_generated, 1.0)
        n_max = min(float(batch), self.kv_cache_tokens / (ctx + gen))
        ttft = self.ttft_overhead_s + ctx / self.prefill_tokens_per_s

        def feasible(lam: float) -> bool:
            slow = 1.0 + lam * ctx / self.prefill_tokens_per_s
            den = 1.0 - lam * gen * self.decode_k_s * slow
            if den <= 0:
                return False
            n = lam * (ttft + gen * self.decode_t0_s * slow) / den
            return n <= n_max and self.step_time(n) * slow <= tpot_margin * tpot_slo

        hi = prefill_utilization * self.prefill_tokens_per_s / ctx
        if feasible(hi):
            return hi
        lo = 0.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if feasible(mid):
                lo = mid
            else:
                hi = mid
        return max(lo, 1e-6)

    def replicas_for(self, rate_rps: float, capacity_rps: float) -> int:
        return max(1, math.ceil(rate_rps / capacity_rps - 1e-9))


def _builtin_dir() -> Path:
    return Path(str(resources.files("aiops") / "profiles"))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in _builtin_dir().glob("*.yaml"))


def load_profile(name_or_path: str = DEFAULT_PROFILE) -> Profile:
    """Load a shipped profile by name, or a YAML file by path."""
    path = Path(name_or_path)
    if not (path.suffix in {".yaml", ".yml"} and path.exists()):
        path = _builtin_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            raise InputError(
                f"unknown profile {name_or_path!r}; shipped profiles: "
                f"{', '.join(available_profiles())} (or give a path to a YAML file)"
            )
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", path=str(path)) from None
    if not isinstance(raw, dict):
        raise InputError("a profile must be a mapping of keys to values", path=str(path))
    fields = set(Profile.__dataclass_fields__)
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise InputError(f"unknown profile key(s): {', '.join(unknown)}", path=str(path))
    missing = sorted(f for f in fields - set(raw) if f != "sources")
    if missing:
        raise InputError(f"missing profile key(s): {', '.join(missing)}", path=str(path))
    try:
        raw["batch_sizes"] = tuple(int(b) for b in raw["batch_sizes"])
        raw["sources"] = tuple(str(s) for s in raw.get("sources", ()))
        return Profile(**raw)
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad profile value: {exc}", path=str(path)) from None
