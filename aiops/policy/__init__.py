"""Autoscaling policies and the registry that builds one from a ``name:key=value`` spec.

Every policy implements :class:`~aiops.policy.base.Policy`. :func:`make_policy` is the one
place the CLI, the simulator and the daemon turn a spec into a policy, so a new policy is
available everywhere once it is registered in ``_BUILDERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiops.errors import InputError
from aiops.policy.base import Policy, PolicyContext, PolicySpec
from aiops.policy.hpa import HpaPolicy
from aiops.policy.keda import KedaPolicy
from aiops.policy.static import StaticPolicy

__all__ = ["PolicyBuilder", "known_policies", "make_policy"]

PolicyBuilder = Callable[[PolicySpec, PolicyContext, Mapping[str, Any]], Policy[Any]]
"""``(spec, context, extras) -> policy``.

``extras`` are inputs the caller *offers* beyond the spec (a benchmark offers
``peak_replicas``, a hindsight plan, a model path...). A builder takes the ones it needs
and ignores the others, so one call site can build any policy."""


def _build_hpa(spec: PolicySpec, context: PolicyContext, extras: Mapping[str, Any]) -> HpaPolicy:
    return HpaPolicy.from_spec(spec, context)


def _build_keda(spec: PolicySpec, context: PolicyContext,
                extras: Mapping[str, Any]) -> KedaPolicy:
    return KedaPolicy.from_spec(spec, context)


def _build_static(spec: PolicySpec, context: PolicyContext,
                  extras: Mapping[str, Any]) -> StaticPolicy:
    return StaticPolicy.from_spec(spec, context, peak_replicas=extras.get("peak_replicas"))


def _build_predictive(spec: PolicySpec, context: PolicyContext,
                      extras: Mapping[str, Any]) -> Policy[Any]:
    from aiops.policy.predictive import PredictivePolicy

    return PredictivePolicy.from_spec(spec, context)


def _build_oracle(spec: PolicySpec, context: PolicyContext,
                  extras: Mapping[str, Any]) -> Policy[Any]:
    from aiops.policy.oracle import OraclePolicy

    if "workload" not in extras or "profile" not in extras:
        raise InputError(f"policy {spec.text or spec.name!r}: the oracle needs the future "
                         "workload; it exists only in the simulator, for benchmarks")
    return OraclePolicy.from_spec(spec, context, extras["workload"], extras["profile"],
                                  slo=extras.get("slo"))


def _build_ppo(spec: PolicySpec, context: PolicyContext,
               extras: Mapping[str, Any]) -> Policy[Any]:
    """The shielded PPO agent from ``policies/default`` or ``ppo:path=DIR``.

    Optional extras: ``ppo_default_dir`` (where ``ppo`` without ``path=`` looks) and
    ``ppo_fallback`` (the policy the shield hands over to; default ``predictive``). The
    forecast the shield's floor reads comes per decision in ``PolicyInput.forecast``.
    Imported here, not at the top, so the registry does not pull in torch."""
    from aiops.policy.ppo import PpoPolicy

    return PpoPolicy.from_spec(spec, context, default_dir=extras.get("ppo_default_dir"),
                               fallback=extras.get("ppo_fallback"))


_BUILDERS: dict[str, PolicyBuilder] = {
    "hpa": _build_hpa,
    "keda": _build_keda,
    "static": _build_static,
    "oracle": _build_oracle,
    "predictive": _build_predictive,
    "ppo": _build_ppo,
}


def known_policies() -> tuple[str, ...]:
    """The names :func:`make_policy` accepts, sorted."""
    return tuple(sorted(_BUILDERS))


def make_policy(spec: PolicySpec, context: PolicyContext, **extras: Any) -> Policy[Any]:
    """Build the policy a spec names; InputError for an unknown name or a bad parameter."""
    builder = _BUILDERS.get(spec.name)
    if builder is None:
        shown = spec.text or spec.name
        raise InputError(f"policy {shown!r}: unknown policy {spec.name!r}; known: "
                         f"{', '.join(known_policies())}")
    return builder(spec, context, extras)
