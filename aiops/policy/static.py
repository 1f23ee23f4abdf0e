"""A fixed replica count: the "provision for the peak" baseline.

It is what many teams run for LLM serving (GPUs are scarce, cold starts are long), so the
benchmarks show what autoscaling saves against it. It never changes the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiops.errors import InputError
from aiops.policy.base import PolicyContext, PolicyInput, PolicySpec, check_known_params, param_int
from aiops.types import Recommendation

__all__ = ["STATIC_PARAMS", "StaticPolicy", "StaticState"]

STATIC_PARAMS = frozenset({"replicas"})


@dataclass(frozen=True)
class StaticState:
    """Nothing to remember; a dataclass so every policy's state serializes the same way."""


class StaticPolicy:
    """Always ``replicas`` replicas.

    From a spec: ``static:replicas=N``; without it, the caller's ``peak_replicas`` (e.g. the
    benchmark sizes it for the workload's peak), else the context's ``max_replicas`` —
    the count that never runs out of capacity, the honest "no autoscaler" cost.
    """

    name: str = "static"

    def __init__(self, replicas: int) -> None:
        if replicas < 0:
            raise InputError(f"static replicas {replicas} must be >= 0")
        self.replicas = replicas

    @property
    def start_replicas(self) -> int:
        """A fixed fleet is there from the start (replays begin with it ready, as a
        hindsight plan does): sized once, it never waits for a cold start."""
        return self.replicas

    @classmethod
    def from_spec(cls, spec: PolicySpec, context: PolicyContext, *,
                  peak_replicas: int | None = None) -> StaticPolicy:
        check_known_params(spec, set(STATIC_PARAMS))
        if peak_replicas is not None and (
                isinstance(peak_replicas, bool) or not isinstance(peak_replicas, int)
                or peak_replicas < 0):
            raise InputError(f"policy {spec.text!r}: peak_replicas={peak_replicas!r} from the "
                             "caller is not a replica count")
        default = peak_replicas if peak_replicas is not None else context.max_replicas
        return cls(param_int(spec, "replicas", default, lo=0))

    def initial_state(self) -> StaticState:
        return StaticState()

    def decide(self, inp: PolicyInput, state: StaticState) -> tuple[Recommendation, StaticState]:
        n = self.replicas
        current = inp.snapshot.replicas
        move = f"{current} → {n}" if n != current else f"hold at {n}"
        return Recommendation(
            replicas=n,
            batch_size=None,
            reason=f"static: fixed at {n} replicas: {move}",
            details={"replicas": float(n), "current_replicas": float(current)},
        ), state
