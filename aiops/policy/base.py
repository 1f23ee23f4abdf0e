"""The policy protocol, the context a policy decides in, and ``name:key=value`` specs.

A policy is pure (DESIGN principle 1 and 2): ``decide`` takes what the controller knows and
the policy's own previous state, and returns a recommendation and its new state. It never
reads the clock, never talks to a server and never keeps hidden mutable state, so the same
object can drive the simulator, a replay and the live daemon, and its state can be stored
in an annotation to survive a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiops.errors import InputError
from aiops.types import AnomalyReport, Forecast, Recommendation, Snapshot

S = TypeVar("S")


@dataclass(frozen=True)
class PolicyContext:
    """Limits of the target that every policy must know about.

    Guardrails enforce them again; a policy uses them to plan (an HPA with minReplicas 1
    computes differently from one with minReplicas 3).
    """

    min_replicas: int = 1
    max_replicas: int = 64
    batch_sizes: tuple[int, ...] = (16, 32, 64, 128)
    interval_s: float = 15.0  # seconds between two decisions
    cold_start_s: float = 90.0  # measured time for a new replica to become ready
    replica_capacity_rps: float = 0.0  # requests/s one replica sustains at the SLO (0 = unknown)
    ttft_slo_s: float = 0.5  # time to first token objective, seconds
    tpot_slo_s: float = 0.05  # time per output token objective, seconds
    # The largest batch whose full decode step meets the TPOT objective (0 = unknown).
    max_batch_for_tpot: int = 0
    # Requests/s one replica sustains at the SLO for a request mix given as (mean prompt
    # tokens, mean generated tokens): a replica serves three times as many short chats as
    # long summaries, and a service's mix moves over a week. None when only the fixed
    # ``replica_capacity_rps`` (measured at one mix) is known.
    capacity_for: Callable[[float, float], float] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PolicyInput:
    """Everything a policy may look at for one decision."""

    snapshot: Snapshot
    context: PolicyContext = field(default_factory=PolicyContext)
    forecast: Forecast | None = None
    anomalies: AnomalyReport | None = None


class Policy(Protocol, Generic[S]):
    """``decide`` is a pure function of its input and the previous state."""

    name: str

    def initial_state(self) -> S: ...

    def decide(self, inp: PolicyInput, state: S) -> tuple[Recommendation, S]: ...


@dataclass(frozen=True)
class PolicySpec:
    """A parsed ``name`` or ``name:key=value,key=value`` policy spec."""

    name: str
    params: Mapping[str, str] = field(default_factory=dict)
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        raw = text.strip()
        if not raw:
            raise InputError("empty policy spec; expected NAME or NAME:key=value,...")
        name, _, rest = raw.partition(":")
        params: dict[str, str] = {}
        if rest:
            for item in rest.split(","):
                key, eq, value = item.partition("=")
                if not eq or not key.strip() or not value.strip():
                    raise InputError(
                        f"policy spec {raw!r}: {item!r} is not key=value"
                    )
                params[key.strip()] = value.strip()
        return cls(name=name.strip(), params=params, text=raw)


def param_float(spec: PolicySpec, key: str, default: float, *, lo: float | None = None,
                hi: float | None = None) -> float:
    """Read a float parameter, naming the spec and key when it is wrong."""
    if key not in spec.params:
        return default
    try:
        value = float(spec.params[key])
    except ValueError:
        raise InputError(
            f"policy {spec.text!r}: {key}={spec.params[key]!r} is not a number"
        ) from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(
            f"policy {spec.text!r}: {key}={value} is outside [{lo}, {hi}]"
        )
    return value


def param_int(spec: PolicySpec, key: str, default: int, *, lo: int | None = None,
              hi: int | None = None) -> int:
    value = param_float(spec, key, float(default), lo=lo, hi=hi)
    if value != int(value):
        raise InputError(f"policy {spec.text!r}: {key}={value} is not an integer")
    return int(value)


def check_known_params(spec: PolicySpec, known: set[str]) -> None:
    unknown = sorted(set(spec.params) - known)
    if unknown:
        raise InputError(
            f"policy {spec.text!r}: unknown parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known)) or 'none'}"
        )


AnyPolicy = Policy[Any]
