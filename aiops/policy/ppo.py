"""The ``ppo`` policy: a PPO agent trained in the simulator, behind a safety shield.

A policy file is a directory (``policies/<name>/``) holding ``model.zip`` (stable-baselines3
format) and ``meta.json`` (what it was trained on, with the sha256 of ``model.zip``). Loading
refuses anything it cannot vouch for, each with its own :class:`PpoLoadError` subclass:

* :class:`PpoPolicyMissingError` — the directory, ``model.zip`` or ``meta.json`` is not there;
* :class:`PpoChecksumError` — ``model.zip`` is not the file ``meta.json`` describes;
* :class:`PpoSchemaError` — trained on another observation schema (features.py changed);
* :class:`PpoPolicyCorruptError` — the files are there and match, but cannot be read.

Weights are read with ``torch.load(weights_only=True)`` and the network is rebuilt from the
architecture in ``meta.json``: sb3's ``PPO.load`` would unpickle arbitrary objects from the
zip, which a policy directory must never be able to make us do. Model files are only read
from the directory configured (``ppo`` → ``policies/default``, ``ppo:path=DIR``).

The daemon never crashes and never decides blind because of a policy file: it calls
:func:`load_ppo_or_fallback`, which returns ``predictive`` and the reason when the agent
cannot be loaded.

The agent adjusts a base plan: every tick the base policy (``predictive``, through its
public ``decide``) proposes replicas, and the network's action is (factor, batch size):
``replicas = ceil(factor × base)``, a residual over the base's plan (:data:`DEFAULT_FACTORS`,
:func:`residual_target`). A lowered factor takes effect no faster than one cold start
(:func:`stabilize_factor`): the base scales down at its own pace and the residual does not
add flapping to it. So the agent starts from what the default policy knows (the forecast,
the HPA) and learns only what to add or take away — more before bursts its features see
coming, less where the base over-provisions — and improves when the base does (after a
retrain). Training runs this very code (:meth:`PpoPolicy.observe` then
:meth:`PpoPolicy.act_on`, see :mod:`aiops.sim.env`), shield included, so the environment
and the daemon cannot drift apart. The shield sits between the network and the common
guardrails, and every override it makes is named in the recommendation's reason and details:

1. **out of distribution** — an observation the agent never saw in training (a feature
   outside its training range, a load far beyond the heaviest trained on, non-finite
   inputs, an unknown per-replica capacity): the base policy's decision goes through
   unchanged for this tick, with the reason;
2. **replica floor** — never fewer replicas than the median forecast needs over the next
   cold start (times ``1 + floor_margin``); without a forecast, never fewer than the
   reactive HPA answer. A network can be confidently wrong; the floor bounds how wrong;
3. **batch size** — a change is a rolling restart of every pod, so it needs at least two
   ready replicas (one keeps serving while the other restarts) and at most one per
   ``batch_cooldown`` seconds; and the agent may not grow the batch past the largest one
   whose full decode step meets the TPOT objective (``context.max_batch_for_tpot``): a full
   batch beyond it misses TPOT for every sequence in it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from aiops.errors import InputError
from aiops.features import (
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    HIGH,
    LOW,
    N_FEATURES,
    FeatureState,
    build_features,
)
from aiops.policy.base import (
    Policy,
    PolicyContext,
    PolicyInput,
    PolicySpec,
    check_known_params,
    param_float,
)
from aiops.policy.hpa import HpaPolicy
from aiops.types import Forecast, Recommendation, Snapshot

__all__ = [
    "ARTIFACT_FORMAT",
    "DEFAULT_FACTORS",
    "DEFAULT_POLICY_DIR",
    "META_FILE",
    "MODEL_FILE",
    "PPO_PARAMS",
    "ActionModel",
    "Observed",
    "PpoChecksumError",
    "PpoLoadError",
    "PpoMeta",
    "PpoPolicy",
    "PpoPolicyCorruptError",
    "PpoPolicyMissingError",
    "PpoSchemaError",
    "PpoState",
    "SbActor",
    "ShieldConfig",
    "load_ppo_artifact",
    "load_ppo_or_fallback",
    "residual_target",
    "sha256_file",
    "stabilize_factor",
]

MODEL_FILE = "model.zip"
META_FILE = "meta.json"
ARTIFACT_FORMAT = "aiops-ppo-policy"
ARTIFACT_FORMAT_VERSION = 2
"""2: the action is a residual factor over the base policy's plan (1: headroom over the load)."""

DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[2] / "policies" / "default"
"""``policies/default`` of the checkout: what ``ppo`` without ``path=`` loads."""

PPO_PARAMS = frozenset({"path", "floor_margin", "batch_cooldown", "ood_load_factor",
                        "ood_tolerance"})

ACTIVATIONS = ("tanh", "relu")


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


class PpoLoadError(InputError):
    """A policy directory that cannot be used. The daemon falls back to ``predictive``.

    An :class:`~aiops.errors.InputError` (so a :class:`~aiops.errors.PermanentError`):
    retrying will not help until someone fixes or replaces the files, and the command
    line reports it as a bad input (exit code 2) with the path."""

    kind = "unusable"

    def __init__(self, problem: str, *, path: str | Path) -> None:
        super().__init__(problem, path=str(path))


class PpoPolicyMissingError(PpoLoadError):
    """The directory, ``model.zip`` or ``meta.json`` does not exist."""

    kind = "missing"


class PpoPolicyCorruptError(PpoLoadError):
    """``meta.json`` or ``model.zip`` exists but cannot be read as a policy."""

    kind = "corrupt"


class PpoChecksumError(PpoLoadError):
    """``model.zip`` is not the file whose sha256 ``meta.json`` records."""

    kind = "checksum"


class PpoSchemaError(PpoLoadError):
    """The policy was trained on another observation schema than ``aiops.features``'s."""

    kind = "schema"


# --------------------------------------------------------------------------------------
# the artifact
# --------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ActionModel(Protocol):
    """What the policy needs from a trained network: a deterministic action per observation."""

    def act(self, obs: npt.NDArray[np.float32]) -> tuple[int, int]:
        """(factor index, batch-size index) for one observation."""
        ...


class SbActor:
    """An sb3 ``ActorCriticPolicy`` as an :class:`ActionModel` (the mode of the policy).

    Used both for a loaded file and, during training, for the live model being evaluated.
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def act(self, obs: npt.NDArray[np.float32]) -> tuple[int, int]:
        action, _ = self.policy.predict(obs, deterministic=True)
        a = np.asarray(action).reshape(-1)
        return int(a[0]), int(a[1])


DEFAULT_FACTORS: tuple[float, ...] = (0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
"""Replica actions: ``factor ×`` the base policy's plan.

Below 1 the agent trims a plan it finds generous (down to the shield's floor, the median
forecast's need); above 1 it adds standing capacity the base does not see a reason for —
bursts shorter than a cold start, an uncertain forecast, a long cold start. Ratios, not
replica counts, so one action means the same on a fleet of 2 and of 60 (the observation is
all ratios too). Up to 3x: within one cold start of a burst only capacity already standing
serves it, and clustered arrivals at 3-4x the mean rate for tens of seconds are common in
LLM traffic."""


def residual_target(base: int, factor: float) -> int:
    """Replicas the action ``factor`` asks for over a base plan of ``base`` (before bounds).

    Rounded up: a fraction of a replica is a replica's worth of load without one."""
    return max(0, math.ceil(factor * max(base, 0) - 1e-9))


def stabilize_factor(factor: float, now: float, recent: tuple[tuple[float, float], ...],
                     window_s: float) -> tuple[float, tuple[tuple[float, float], ...]]:
    """The factor in force: the highest asked for in the last ``window_s`` seconds.

    A raised factor applies at once; a lowered one only once the higher ones have aged out
    of one cold start (HPA-style scale-down stabilization, applied to the residual alone: the
    base keeps its own pace). Without it a network that alternates between two factors
    would remove replicas still starting and ask for them again. Returns the factor and the
    recent factors to remember."""
    kept = tuple((t, f) for t, f in recent if now - t < window_s)
    held = max((f for _, f in kept), default=factor)
    return max(factor, held), (*kept, (now, factor))


@dataclass(frozen=True)
class PpoMeta:
    """The parts of ``meta.json`` inference depends on (the rest is provenance)."""

    factors: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    feature_min: npt.NDArray[np.float32]
    feature_max: npt.NDArray[np.float32]
    max_arrival_rate: float  # heaviest load (requests/s) seen in training
    forecast_in_observation: bool = True
    net_arch: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    sha256: str = ""
    source: str = ""  # where it was loaded from, for reasons and logs
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "") -> PpoMeta:
        """Parse the inference fields; KeyError/TypeError/ValueError when malformed."""
        action = data["action_space"]
        rng = data["training_range"]
        net = data["network"]
        fmin = np.asarray(rng["min"], dtype=np.float32)
        fmax = np.asarray(rng["max"], dtype=np.float32)
        if fmin.shape != (N_FEATURES,) or fmax.shape != (N_FEATURES,):
            raise ValueError(f"training_range needs {N_FEATURES} values per bound")
        if action.get("replica_action") != "residual":
            raise ValueError(f"replica_action {action.get('replica_action')!r}: this aiops "
                             "reads 'residual'")
        factors = tuple(float(f) for f in action["factors"])
        batches = tuple(int(b) for b in action["batch_sizes"])
        if not factors or min(factors) <= 0 or not batches or min(batches) < 1:
            raise ValueError("action_space needs factors > 0 and positive batch sizes")
        activation = str(net.get("activation", "tanh"))
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        return cls(
            factors=factors,
            batch_sizes=batches,
            feature_min=fmin,
            feature_max=fmax,
            max_arrival_rate=float(rng["max_arrival_rate"]),
            forecast_in_observation=bool(data["observation"]["forecast_in_observation"]),
            net_arch=tuple(int(n) for n in net["net_arch"]),
            activation=activation,
            sha256=str(data["sha256"]),
            source=source,
            raw=data,
        )


def build_actor_critic(meta: PpoMeta) -> Any:
    """A fresh sb3 ``ActorCriticPolicy`` with the architecture ``meta`` describes."""
    import gymnasium as gym
    import torch
    from stable_baselines3.common.policies import ActorCriticPolicy

    act_fn = torch.nn.Tanh if meta.activation == "tanh" else torch.nn.ReLU
    arch = list(meta.net_arch)
    return ActorCriticPolicy(
        gym.spaces.Box(LOW, HIGH, dtype=np.float32),
        gym.spaces.MultiDiscrete([len(meta.factors), len(meta.batch_sizes)]),
        lr_schedule=lambda _: 0.0,
        net_arch={"pi": arch, "vf": arch},
        activation_fn=act_fn,
    )


def read_meta(directory: Path) -> dict[str, Any]:
    """``meta.json`` of a policy directory as a dict (missing or corrupt: a PpoLoadError)."""
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise PpoPolicyMissingError(f"no {META_FILE}: not a trained policy directory",
                                    path=meta_path)
    try:
        data = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PpoPolicyCorruptError(f"{META_FILE} is not valid JSON ({exc})",
                                    path=meta_path) from None
    if not isinstance(data, dict) or data.get("format") != ARTIFACT_FORMAT:
        raise PpoPolicyCorruptError(f"{META_FILE} is not an {ARTIFACT_FORMAT} description",
                               path=meta_path)
    return data


def load_ppo_artifact(directory: str | Path) -> tuple[ActionModel, PpoMeta]:
    """Load and verify a policy directory; a :class:`PpoLoadError` subclass names the problem.

    Order: files exist → meta parses → sha256 matches → schema matches → weights load. The
    checksum comes before anything reads ``model.zip``, so a tampered or truncated file is
    never parsed."""
    d = Path(directory)
    if not d.is_dir():
        raise PpoPolicyMissingError("policy directory does not exist", path=d)
    data = read_meta(d)
    meta_path = d / META_FILE
    fmt_version = data.get("format_version")
    if fmt_version != ARTIFACT_FORMAT_VERSION:
        raise PpoSchemaError(
            f"artifact format version {fmt_version!r}; this aiops reads "
            f"{ARTIFACT_FORMAT_VERSION}", path=meta_path)
    model_path = d / MODEL_FILE
    if not model_path.is_file():
        raise PpoPolicyMissingError(f"no {MODEL_FILE} beside {META_FILE}", path=model_path)
    expected = data.get("sha256")
    actual = sha256_file(model_path)
    if not isinstance(expected, str) or expected != actual:
        raise PpoChecksumError(
            f"sha256 is {actual}, {META_FILE} records {expected!r}: the model file was "
            "changed, truncated or replaced after training", path=model_path)
    version = data.get("feature_schema_version")
    names = data.get("feature_names")
    if version != FEATURE_SCHEMA_VERSION:
        raise PpoSchemaError(
            f"trained on feature schema version {version!r}; this aiops builds version "
            f"{FEATURE_SCHEMA_VERSION} — retrain with `aiops train`", path=meta_path)
    if names != list(FEATURE_NAMES):
        raise PpoSchemaError(
            "feature names differ from aiops.features.FEATURE_NAMES at the same schema "
            "version — retrain with `aiops train`", path=meta_path)
    try:
        meta = PpoMeta.from_json(data, source=str(d))
    except (KeyError, TypeError, ValueError) as exc:
        raise PpoPolicyCorruptError(f"{META_FILE} is malformed: {exc!r}", path=meta_path) from None
    try:
        from stable_baselines3.common.save_util import load_from_zip_file

        _, params, _ = load_from_zip_file(str(model_path), load_data=False, device="cpu")
        policy = build_actor_critic(meta)
        policy.load_state_dict(params["policy"])
        policy.set_training_mode(False)
    except Exception as exc:  # any failure to read the weights means "corrupt"
        raise PpoPolicyCorruptError(f"{MODEL_FILE} cannot be loaded as the network {META_FILE} "
                               f"describes: {exc}", path=model_path) from None
    return SbActor(policy), meta


# --------------------------------------------------------------------------------------
# the policy
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShieldConfig:
    """Knobs of the shield; each default says what an operator would accept blind.

    * ``floor_margin`` (0.0): extra fraction over the floor. 0 lets the agent go as low as
      the median forecast needs — below that, half of the likely futures overload it.
      Negative values (down to -0.5) loosen the floor, positive tighten it.
    * ``batch_cooldown_s`` (300 s): at most one batch-size change per window: each is a
      rolling restart (90 s cold starts, 25 % surge), so flapping costs GPUs and latency.
    * ``min_ready_for_batch`` (2): a rolling restart of one replica leaves nothing warm.
    * ``ood_load_factor`` (3.0): hand over when the arrival rate is this many times the
      heaviest seen in training: the agent's per-capacity features still look normal there,
      but nothing it learnt was tested against absolute loads that large.
    * ``ood_tolerance`` (0.05): a feature may stray this fraction of its full range outside
      the range seen in training before it counts as out of distribution.
    """

    floor_margin: float = 0.0
    batch_cooldown_s: float = 300.0
    min_ready_for_batch: int = 2
    ood_load_factor: float = 3.0
    ood_tolerance: float = 0.05

    def __post_init__(self) -> None:
        if not -0.5 <= self.floor_margin <= 2.0:
            raise InputError(f"ppo floor_margin {self.floor_margin} is outside [-0.5, 2]")
        if not self.batch_cooldown_s >= 0:
            raise InputError(f"ppo batch_cooldown {self.batch_cooldown_s} must be >= 0 s")
        if self.min_ready_for_batch < 1:
            raise InputError("ppo min_ready_for_batch must be >= 1")
        if not self.ood_load_factor >= 1.0:
            raise InputError(f"ppo ood_load_factor {self.ood_load_factor} must be >= 1")
        if not 0.0 <= self.ood_tolerance <= 1.0:
            raise InputError(f"ppo ood_tolerance {self.ood_tolerance} is outside [0, 1]")


@dataclass(frozen=True)
class PpoState:
    """Feature memory, the base policy's own state (it decides every tick: its plan is what
    the agent adjusts, and a handover continues a live controller rather than a cold one),
    the last batch change and the recent factors (:func:`stabilize_factor`)."""

    features: FeatureState = field(default_factory=FeatureState)
    fallback: Any = None
    last_batch_change: float = -math.inf
    last_batch: int = -1
    recent_factors: tuple[tuple[float, float], ...] = ()  # (time, factor asked for)


@dataclass(frozen=True)
class Observed:
    """One tick's observation, the base policy's recommendation it was built around, and
    the state after both (:meth:`PpoPolicy.observe`)."""

    obs: npt.NDArray[np.float32]
    base: Recommendation
    state: PpoState


@dataclass(frozen=True)
class _Floor:
    replicas: int
    source: str  # "forecast" | "hpa" | "hold"
    text: str


class PpoPolicy:
    """The trained agent, shielded; see the module docstring for the rules.

    ``fallback`` is the base policy: its plan is what the network's factor multiplies, and
    out of distribution its decision goes through alone (``predictive`` from
    :func:`build_fallback` in the daemon, the evaluation and training alike; the HPA when
    none is given). ``decide`` is pure: the network is frozen (inference only,
    deterministic mode) and everything that changes lives in :class:`PpoState`.
    """

    name: str = "ppo"

    def __init__(
        self,
        model: ActionModel,
        meta: PpoMeta,
        *,
        shield: ShieldConfig | None = None,
        fallback: Policy[Any] | None = None,
        fallback_name: str = "predictive",
    ) -> None:
        self.model = model
        self.meta = meta
        self.shield = shield or ShieldConfig()
        self.fallback = fallback if fallback is not None else HpaPolicy()
        self.fallback_name = fallback_name if fallback is not None else "hpa"
        self._hpa = HpaPolicy()

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_spec(
        cls,
        spec: PolicySpec,
        context: PolicyContext,
        *,
        default_dir: str | Path | None = None,
        fallback: Policy[Any] | None = None,
    ) -> PpoPolicy:
        """Build from ``ppo[:path=DIR,floor_margin=F,batch_cooldown=S,ood_load_factor=K,
        ood_tolerance=T]``. Loads ``path`` (or ``default_dir``, or ``policies/default``);
        raises a :class:`PpoLoadError` subclass when that directory is unusable."""
        check_known_params(spec, set(PPO_PARAMS))
        shield = ShieldConfig(
            floor_margin=param_float(spec, "floor_margin", 0.0, lo=-0.5, hi=2.0),
            batch_cooldown_s=param_float(spec, "batch_cooldown", 300.0, lo=0.0),
            ood_load_factor=param_float(spec, "ood_load_factor", 3.0, lo=1.0),
            ood_tolerance=param_float(spec, "ood_tolerance", 0.05, lo=0.0, hi=1.0),
        )
        directory = Path(spec.params.get("path") or default_dir or DEFAULT_POLICY_DIR)
        model, meta = load_ppo_artifact(directory)
        fb, fb_name = (fallback, "predictive") if fallback is not None else \
            build_fallback(context)
        return cls(model, meta, shield=shield, fallback=fb, fallback_name=fb_name)

    def initial_state(self) -> PpoState:
        return PpoState(fallback=self.fallback.initial_state())

    # ---------------------------------------------------------------- the decision

    def observe(self, inp: PolicyInput, state: PpoState) -> Observed:
        """The base policy's decision and the observation built around it (the first half
        of :meth:`decide`; the training environment calls it to show the agent a state)."""
        snap, ctx = inp.snapshot, inp.context
        base, fb_state = self.fallback.decide(inp, state.fallback)
        base_n = min(max(int(base.replicas), ctx.min_replicas), ctx.max_replicas)
        forecast = inp.forecast if self.meta.forecast_in_observation else None
        obs, fstate = build_features(snap, ctx, forecast, state.features, base_n)
        last_change = state.last_batch_change
        if state.last_batch >= 0 and snap.batch_size != state.last_batch:
            last_change = max(last_change, snap.time)  # a change took effect (ours or not)
        state = replace(state, features=fstate, fallback=fb_state,
                        last_batch_change=last_change, last_batch=snap.batch_size)
        return Observed(obs, base, state)

    def decide(self, inp: PolicyInput, state: PpoState) -> tuple[Recommendation, PpoState]:
        seen = self.observe(inp, state)
        ood = self.out_of_distribution(seen.obs, inp.snapshot, inp.context)
        if ood is not None:
            base = seen.base
            reason = (f"ppo: out of training distribution ({ood}); handed to "
                      f"{self.fallback_name}: {base.reason}")
            return replace(base, reason=reason, details={
                **base.details, "ood": 1.0, "shield_handover": 1.0}), seen.state
        factor_i, batch_i = self.model.act(seen.obs)
        return self.act_on(inp, seen, factor_i, batch_i)

    def act_on(self, inp: PolicyInput, seen: Observed, factor_i: int,
               batch_i: int) -> tuple[Recommendation, PpoState]:
        """The shielded recommendation for action (``factor_i``, ``batch_i``) on ``seen``
        (the second half of :meth:`decide`; the training environment calls it with the
        agent's action)."""
        snap, ctx, state = inp.snapshot, inp.context, seen.state
        factor_i = min(max(factor_i, 0), len(self.meta.factors) - 1)
        batch_i = min(max(batch_i, 0), len(self.meta.batch_sizes) - 1)
        asked = self.meta.factors[factor_i]
        factor, recent = stabilize_factor(asked, snap.time, state.recent_factors,
                                          ctx.cold_start_s)
        state = replace(state, recent_factors=recent)
        current = snap.replicas
        base_n = min(max(int(seen.base.replicas), ctx.min_replicas), ctx.max_replicas)
        wanted = min(max(residual_target(base_n, factor), ctx.min_replicas), ctx.max_replicas)
        # An agent trained without a batch head (one size, ``--fixed-batch``) has no batch
        # decision to make: it keeps whatever the pods run, which need not be the size it
        # was trained at (another profile's default, an operator's choice).
        wanted_batch = (self.meta.batch_sizes[batch_i] if len(self.meta.batch_sizes) > 1
                        else snap.batch_size)
        details: dict[str, float] = {
            "current_replicas": float(current),
            "ready_replicas": float(snap.ready_replicas),
            "base_replicas": float(base_n),
            "model_factor": asked,
            "factor": factor,
            "model_replicas": float(wanted),
            "model_batch_size": float(wanted_batch),
            "ood": 0.0,
        }
        overrides: list[str] = []

        floor = self.replica_floor(inp)
        details["floor_replicas"] = float(floor.replicas)
        replicas = wanted
        if wanted < floor.replicas:
            replicas = floor.replicas
            details["shield_floor"] = 1.0
            overrides.append(f"shield raised {wanted} to the floor {floor.replicas} "
                             f"({floor.text})")

        cap = ctx.max_batch_for_tpot
        if cap > 0 and wanted_batch > cap and wanted_batch > snap.batch_size:
            safe = max((b for b in self.meta.batch_sizes if b <= cap), default=snap.batch_size)
            details["shield_batch_tpot"] = 1.0
            overrides.append(f"shield capped batch {wanted_batch} at {safe}: a full batch "
                             f"of {wanted_batch} decodes slower than the TPOT objective "
                             f"({ctx.tpot_slo_s:g} s)")
            wanted_batch = max(safe, min(snap.batch_size, wanted_batch))
        batch: int | None = None
        if wanted_batch != snap.batch_size:
            blocked = self.batch_block(wanted_batch, snap, ctx, state)
            if blocked is None:
                batch = wanted_batch
                state = replace(state, last_batch_change=snap.time)
            else:
                details["shield_batch_blocked"] = 1.0
                overrides.append(f"shield kept batch {snap.batch_size} "
                                 f"(model wanted {wanted_batch}): {blocked}")

        move = f"{current} → {replicas}" if replicas != current else f"hold at {current}"
        batch_text = (f"batch {snap.batch_size} → {batch}" if batch is not None
                      else f"batch {snap.batch_size}")
        model_text = (f"model wants ×{asked:g} over {self.fallback_name}'s {base_n} "
                      f"({wanted}), batch {wanted_batch}")
        if factor != asked:
            model_text += (f"; ×{factor:g} still in force (highest factor of the last "
                           f"{ctx.cold_start_s:g} s)")
        reason = "; ".join([f"ppo: {model_text}", *overrides]) + f": {move}, {batch_text}"
        reason += f" [{self.fallback_name}: {seen.base.reason}]"
        return Recommendation(replicas=replicas, batch_size=batch, reason=reason,
                              details=details), state

    # ---------------------------------------------------------------- the shield

    def out_of_distribution(self, obs: npt.NDArray[np.float32], snap: Snapshot,
                            ctx: PolicyContext) -> str | None:
        """Why this observation is outside what the agent was trained on, or None."""
        if not ctx.replica_capacity_rps > 0:
            # Every load feature is "per replica of capacity": without it they are noise.
            return "per-replica capacity unknown, so the load features mean nothing"
        raw = {"arrival_rate": snap.arrival_rate, "requests_running": snap.requests_running,
               "requests_waiting": snap.requests_waiting}
        bad = [k for k, v in raw.items() if not math.isfinite(v)]
        if bad:
            return f"non-finite {', '.join(bad)}"
        limit = self.shield.ood_load_factor * self.meta.max_arrival_rate
        if self.meta.max_arrival_rate > 0 and snap.arrival_rate > limit:
            return (f"arrival rate {snap.arrival_rate:.1f} req/s is more than "
                    f"{self.shield.ood_load_factor:g}× the heaviest load seen in training "
                    f"({self.meta.max_arrival_rate:.1f} req/s)")
        tol = self.shield.ood_tolerance * (HIGH - LOW)
        outside = np.flatnonzero((obs < self.meta.feature_min - tol)
                                 | (obs > self.meta.feature_max + tol))
        if outside.size:
            parts = [f"{FEATURE_NAMES[i]}={obs[i]:.3g} outside "
                     f"[{self.meta.feature_min[i]:.3g}, {self.meta.feature_max[i]:.3g}]"
                     for i in outside[:3]]
            return "; ".join(parts)
        return None

    def replica_floor(self, inp: PolicyInput) -> _Floor:
        """The fewest replicas the shield allows (within the context's bounds)."""
        ctx = inp.context
        need = forecast_need(inp.forecast, inp.snapshot.time, ctx)
        margin = 1.0 + self.shield.floor_margin
        if need is not None:
            rate, replicas = need
            n = math.ceil(replicas * margin - 1e-9)
            text = (f"median forecast up to {rate:.1f} req/s within a cold start, at "
                    f"{ctx.replica_capacity_rps:.2f} req/s per replica")
            source = "forecast"
        else:
            proposal, _ = self._hpa.propose(inp.snapshot)
            if proposal is None:
                n, source = inp.snapshot.replicas, "hold"
                text = "no forecast and no HPA metric: never scale down blind"
            else:
                n = math.ceil(proposal.replicas * margin - 1e-9)
                source = "hpa"
                text = "no forecast: the reactive HPA answer"
        if self.shield.floor_margin:
            text += f", margin {self.shield.floor_margin:+.0%}"
        n = min(max(n, ctx.min_replicas), ctx.max_replicas)
        return _Floor(n, source, text)

    def batch_block(self, wanted: int, snap: Snapshot, ctx: PolicyContext,
                    state: PpoState) -> str | None:
        """Why a change to batch size ``wanted`` is not allowed now, or None."""
        if ctx.batch_sizes and wanted not in ctx.batch_sizes:
            return f"batch {wanted} is not one the target offers ({list(ctx.batch_sizes)})"
        if snap.ready_replicas < self.shield.min_ready_for_batch:
            return (f"{snap.ready_replicas} ready replica(s); a rolling restart needs >= "
                    f"{self.shield.min_ready_for_batch}")
        since = snap.time - state.last_batch_change
        if since < self.shield.batch_cooldown_s:
            return (f"last batch change {since:.0f} s ago, within the "
                    f"{self.shield.batch_cooldown_s:g} s rate limit")
        return None


def forecast_need(forecast: Forecast | None, now: float,
                  ctx: PolicyContext) -> tuple[float, float] | None:
    """(median load, replicas it needs) over the next cold start and decision interval, or
    None without a usable forecast (none, stale, non-finite) or capacity.

    The window is [now, now + cold start + interval]: a replica removed now cannot be back
    before a cold start has passed, so whatever the median says is needed at any point of
    that span must be kept. (``predictive`` plans on the forecast at the *end* of it, where
    a replica asked for now arrives, with spare on top; the floor is the bare median, so the
    agent keeps the right to be leaner than ``predictive``, never leaner than the likeliest
    future.)"""
    if forecast is None or forecast.horizon == 0 or not ctx.replica_capacity_rps > 0:
        return None
    q = forecast.quantiles.get(0.5)
    series = np.asarray(q if q is not None else forecast.mean, dtype=np.float64)
    end = now + ctx.cold_start_s + ctx.interval_s
    idx = [i for i in range(forecast.horizon)
           if forecast.start + i * forecast.step <= end
           and forecast.start + (i + 1) * forecast.step > now]
    window = series[idx]
    window = window[np.isfinite(window)]
    if window.size == 0:
        return None
    rate = max(float(window.max()), 0.0)
    return rate, rate / ctx.replica_capacity_rps


# --------------------------------------------------------------------------------------
# fallback
# --------------------------------------------------------------------------------------


def build_fallback(context: PolicyContext) -> tuple[Policy[Any], str]:
    """``predictive`` with its defaults, or the HPA when that module is not available."""
    try:
        from aiops.policy.predictive import PredictivePolicy
    except ImportError:
        return HpaPolicy.from_spec(PolicySpec.parse("hpa"), context), "hpa"
    policy: Policy[Any] = PredictivePolicy.from_spec(PolicySpec.parse("predictive"), context)
    return policy, "predictive"


def load_ppo_or_fallback(
    spec: PolicySpec | str,
    context: PolicyContext,
    *,
    default_dir: str | Path | None = None,
    fallback: Policy[Any] | None = None,
    build_fallback_fn: Callable[[PolicyContext], tuple[Policy[Any], str]] = build_fallback,
) -> tuple[Policy[Any], str | None]:
    """The ``ppo`` policy, or ``predictive`` and the reason it replaced the agent.

    For the daemon: a policy file that is missing, corrupt, tampered with or from another
    feature schema must neither crash the loop nor leave a target without a decision. A bad
    spec parameter (a typo in the config) is still raised: that is the operator's to fix
    and config validation should catch it at start."""
    parsed = PolicySpec.parse(spec) if isinstance(spec, str) else spec
    try:
        return PpoPolicy.from_spec(parsed, context, default_dir=default_dir,
                                   fallback=fallback), None
    except PpoLoadError as err:
        fb, name = (fallback, "predictive") if fallback is not None else \
            build_fallback_fn(context)
        return fb, f"ppo policy unusable ({err.kind}): {err}; falling back to {name}"


def feature_ranges(observations: Sequence[npt.NDArray[np.float32]]
                   ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-feature (min, max) over observations: the training range ``meta.json`` keeps."""
    stack = np.vstack(observations).astype(np.float32)
    return stack.min(axis=0), stack.max(axis=0)
