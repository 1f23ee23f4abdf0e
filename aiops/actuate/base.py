"""The ``Actuator`` protocol: how a Decision reaches the target, and what the target says.

Kubernetes in production (scale subresource, pod-template patch, annotations), the
simulated cluster in ``backend: sim``. State that must survive a restart of the daemon lives
in annotations on the target (DESIGN principle 2), so the daemon itself is stateless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from aiops.config import TargetConfig
from aiops.types import Decision

PAUSE_ANNOTATION = "aiops.io/paused"
STATE_ANNOTATION = "aiops.io/state"  # JSON: policy and guardrail state that must survive restarts
LAST_DECISION_ANNOTATION = "aiops.io/last-decision"  # JSON: the last change, for operators
LAST_SCALE_TIME_ANNOTATION = "aiops.io/last-scale-time"  # RFC 3339 time of the last change


@dataclass(frozen=True)
class TargetState:
    """What the API server says about a target right now."""

    replicas: int  # spec.replicas
    ready_replicas: int
    batch_size: int | None  # parsed from the pod template; None if not set there
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""

    @property
    def paused(self) -> bool:
        return self.annotations.get(PAUSE_ANNOTATION, "").strip().lower() == "true"


@dataclass(frozen=True)
class ApplyResult:
    applied: bool  # False in dry-run or when nothing changed
    dry_run: bool
    message: str = ""


class Actuator(Protocol):
    def read(self, target: TargetConfig) -> TargetState: ...

    def apply(self, target: TargetConfig, decision: Decision, *, dry_run: bool) -> ApplyResult:
        """Set replicas (and the batch size, if it changed); dry-run validates server-side."""
        ...

    def save_state(self, target: TargetConfig, state: Mapping[str, str]) -> None:
        """Write annotations on the target (merge patch)."""
        ...
