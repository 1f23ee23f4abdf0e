"""The `ppo` policy: loading checks, the fallback, the shield, determinism, simulate."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.training import TrainedPolicy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aiops.errors import InputError, PermanentError
from aiops.features import FEATURE_NAMES, HIGH, LOW, N_FEATURES
from aiops.policy import make_policy
from aiops.policy.base import PolicyContext, PolicyInput, PolicySpec
from aiops.policy.ppo import (
    DEFAULT_FACTORS,
    PpoChecksumError,
    PpoLoadError,
    PpoMeta,
    PpoPolicy,
    PpoPolicyCorruptError,
    PpoPolicyMissingError,
    PpoSchemaError,
    PpoState,
    SbActor,
    ShieldConfig,
    load_ppo_artifact,
    load_ppo_or_fallback,
    residual_target,
    sha256_file,
    stabilize_factor,
)
from aiops.sim.profiles import load_profile
from aiops.sim.runner import compare_policies
from aiops.sim.workloads import synthetic
from aiops.types import Forecast, Recommendation, Snapshot

BATCHES = (16, 32, 64, 128, 256)
CTX = PolicyContext(min_replicas=1, max_replicas=64, batch_sizes=BATCHES,
                    replica_capacity_rps=5.0, cold_start_s=90.0)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def policy_dir(tiny_policy: TrainedPolicy) -> Path:
    """A genuinely trained (tiny) policy directory, shared by the session (conftest.py)."""
    return tiny_policy.output


@pytest.fixture
def copy_dir(policy_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(policy_dir, dst)
    return dst


def snap(**kw: Any) -> Snapshot:
    base: dict[str, Any] = {
        "time": 1000.0, "replicas": 4, "ready_replicas": 4, "batch_size": 64,
        "requests_running": 60.0, "requests_waiting": 0.0, "kv_cache_usage": 0.3,
        "arrival_rate": 15.0, "prompt_tokens_rate": 9000.0, "generation_tokens_rate": 2000.0,
        "ttft_p50": 0.1, "ttft_p99": 0.3, "tpot_p99": 0.03}
    base.update(kw)
    return Snapshot(**base)


def flat_forecast(rate: float, steps: int = 8, start: float = 1015.0) -> Forecast:
    arr = np.full(steps, rate)
    return Forecast(start=start, step=15.0, mean=arr, quantiles={0.1: arr * 0.8, 0.5: arr,
                                                               0.9: arr * 1.2})


@dataclass
class FixedModel:
    """An ActionModel that always answers the same (factor index, batch index)."""

    action: tuple[int, int]
    calls: int = 0

    def act(self, obs: Any) -> tuple[int, int]:
        self.calls += 1
        return self.action


@dataclass
class StubFallback:
    """Stands in for `predictive` (the base policy) so its plan and the handover are
    visible in the recommendation."""

    replicas: int = 7
    name = "stub"

    def initial_state(self) -> int:
        return 0

    def decide(self, inp: PolicyInput, state: int) -> tuple[Recommendation, int]:
        return Recommendation(self.replicas, None, f"stub fallback: {self.replicas} replicas",
                              {"fallback_replicas": float(self.replicas)}), state + 1


def wide_meta(max_rate: float = 100.0) -> PpoMeta:
    """A meta whose training range covers every feature value (no OOD on features)."""
    return PpoMeta(factors=DEFAULT_FACTORS, batch_sizes=BATCHES, feature_min=LOW.copy(),
                   feature_max=HIGH.copy(), max_arrival_rate=max_rate)


def stub_policy(action: tuple[int, int], shield: ShieldConfig | None = None,
                max_rate: float = 100.0, base: int = 7) -> PpoPolicy:
    return PpoPolicy(FixedModel(action), wide_meta(max_rate), shield=shield,
                     fallback=StubFallback(base), fallback_name="predictive")


def factor(f: float) -> int:
    return DEFAULT_FACTORS.index(f)


ONE = factor(1.0)


# ----------------------------------------------------------------------------- loading


def test_round_trip_gives_the_same_actions_as_sb3(policy_dir: Path) -> None:
    import torch
    from stable_baselines3 import PPO

    reference = PPO.load(policy_dir / "model.zip", device="cpu")
    model, meta = load_ppo_artifact(policy_dir)
    obs = np.random.default_rng(0).uniform(LOW, HIGH, (200, N_FEATURES)).astype(np.float32)
    ours = [model.act(o) for o in obs]
    theirs = [tuple(int(x) for x in reference.predict(o, deterministic=True)[0]) for o in obs]
    assert ours == theirs
    assert all(0 <= h < len(meta.factors) for h, _ in ours)
    # Equal argmaxes could hide different weights (a flat policy acts the same everywhere):
    # the action probabilities themselves must agree, and differ between observations.
    assert isinstance(model, SbActor)
    with torch.no_grad():
        x = torch.as_tensor(obs)
        p_ours = [d.probs.numpy() for d in model.policy.get_distribution(x).distribution]
        p_ref = [d.probs.numpy() for d in reference.policy.get_distribution(x).distribution]
    for a, b in zip(p_ours, p_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        assert np.ptp(a, axis=0).max() > 1e-3


def test_same_observation_same_action(policy_dir: Path) -> None:
    a, _ = load_ppo_artifact(policy_dir)
    b, _ = load_ppo_artifact(policy_dir)
    obs = np.random.default_rng(1).uniform(LOW, HIGH, (100, N_FEATURES)).astype(np.float32)
    first = [a.act(o) for o in obs]
    assert first == [a.act(o) for o in obs] == [b.act(o) for o in obs]


def test_decide_is_deterministic_and_pure(policy_dir: Path) -> None:
    policy = PpoPolicy.from_spec(PolicySpec.parse(f"ppo:path={policy_dir}"), CTX)
    inputs = [PolicyInput(snap(time=15.0 * i, arrival_rate=10.0 + i), CTX,
                          forecast=flat_forecast(10.0 + i, start=15.0 * i + 15.0))
              for i in range(1, 30)]

    def run() -> list[tuple[int, int | None, str]]:
        state = policy.initial_state()
        out = []
        for inp in inputs:
            rec, state = policy.decide(inp, state)
            out.append((rec.replicas, rec.batch_size, rec.reason))
        return out

    assert run() == run()


def test_missing_directory_is_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(PpoPolicyMissingError, match="does not exist"):
        load_ppo_artifact(tmp_path / "nope")


def test_missing_model_file(copy_dir: Path) -> None:
    (copy_dir / "model.zip").unlink()
    with pytest.raises(PpoPolicyMissingError, match=r"model\.zip"):
        load_ppo_artifact(copy_dir)


def test_wrong_sha256_is_a_checksum_error(copy_dir: Path) -> None:
    meta = json.loads((copy_dir / "meta.json").read_text())
    meta["sha256"] = "0" * 64
    (copy_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(PpoChecksumError, match="sha256"):
        load_ppo_artifact(copy_dir)


def test_tampered_model_is_a_checksum_error(copy_dir: Path) -> None:
    with (copy_dir / "model.zip").open("ab") as fh:
        fh.write(b"appended")
    with pytest.raises(PpoChecksumError):
        load_ppo_artifact(copy_dir)


def test_corrupt_model_with_matching_sha_is_a_corrupt_error(copy_dir: Path) -> None:
    path = copy_dir / "model.zip"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    meta = json.loads((copy_dir / "meta.json").read_text())
    meta["sha256"] = sha256_file(path)
    (copy_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(PpoPolicyCorruptError, match="cannot be loaded"):
        load_ppo_artifact(copy_dir)


def test_corrupt_meta_is_a_corrupt_error(copy_dir: Path) -> None:
    (copy_dir / "meta.json").write_text("{ not json")
    with pytest.raises(PpoPolicyCorruptError, match="not valid JSON"):
        load_ppo_artifact(copy_dir)


def test_architecture_mismatch_is_a_corrupt_error(copy_dir: Path) -> None:
    meta = json.loads((copy_dir / "meta.json").read_text())
    meta["network"]["net_arch"] = [8]
    (copy_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(PpoPolicyCorruptError):
        load_ppo_artifact(copy_dir)


@pytest.mark.parametrize("change", ["version", "names"])
def test_schema_mismatch_is_its_own_error(copy_dir: Path, change: str) -> None:
    meta = json.loads((copy_dir / "meta.json").read_text())
    if change == "version":
        meta["feature_schema_version"] = 999
    else:
        meta["feature_names"] = list(reversed(FEATURE_NAMES))
    (copy_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(PpoSchemaError, match="retrain"):
        load_ppo_artifact(copy_dir)


def test_load_errors_are_permanent_input_errors() -> None:
    for cls in (PpoPolicyMissingError, PpoPolicyCorruptError, PpoChecksumError, PpoSchemaError):
        assert issubclass(cls, PpoLoadError)
        assert issubclass(cls, PermanentError) and issubclass(cls, InputError)


@pytest.mark.parametrize(("damage", "kind"), [
    ("missing", "missing"), ("sha", "checksum"), ("schema", "schema"), ("corrupt", "corrupt")])
def test_fallback_names_the_reason(copy_dir: Path, damage: str, kind: str) -> None:
    meta = json.loads((copy_dir / "meta.json").read_text())
    if damage == "missing":
        shutil.rmtree(copy_dir)
    elif damage == "sha":
        meta["sha256"] = "f" * 64
    elif damage == "schema":
        meta["feature_schema_version"] = -1
    else:
        (copy_dir / "model.zip").write_bytes(b"garbage")
        meta["sha256"] = sha256_file(copy_dir / "model.zip")
    if damage != "missing":
        (copy_dir / "meta.json").write_text(json.dumps(meta))
    fallback = StubFallback()
    policy, reason = load_ppo_or_fallback(f"ppo:path={copy_dir}", CTX, fallback=fallback)
    assert policy is fallback
    assert reason is not None and f"({kind})" in reason and "falling back" in reason
    assert str(copy_dir) in reason


def test_fallback_without_injection_is_a_real_policy(tmp_path: Path) -> None:
    policy, reason = load_ppo_or_fallback(f"ppo:path={tmp_path / 'none'}", CTX)
    assert reason is not None and ("predictive" in reason or "hpa" in reason)
    state = policy.initial_state()
    rec, _ = policy.decide(PolicyInput(snap(), CTX), state)
    assert rec.replicas >= 1


def test_fallback_is_none_when_the_policy_loads(policy_dir: Path) -> None:
    policy, reason = load_ppo_or_fallback(f"ppo:path={policy_dir}", CTX)
    assert reason is None and isinstance(policy, PpoPolicy)


def test_bad_spec_parameter_is_an_input_error_not_a_fallback(policy_dir: Path) -> None:
    with pytest.raises(InputError, match="unknown parameter"):
        load_ppo_or_fallback(f"ppo:path={policy_dir},nope=1", CTX)


# ----------------------------------------------------------------------------- the shield


HYP = settings(max_examples=150, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])


@HYP
@given(head=st.integers(0, len(DEFAULT_FACTORS) - 1), batch=st.integers(0, 4),
       base=st.integers(0, 80),
       replicas=st.integers(1, 64), ready=st.integers(0, 64),
       rate=st.floats(0.0, 300.0), waiting=st.floats(0.0, 500.0),
       forecast_rate=st.one_of(st.none(), st.floats(0.0, 300.0)),
       margin=st.sampled_from([-0.3, 0.0, 0.25]),
       since_change=st.floats(0.0, 1000.0),
       tpot_cap=st.sampled_from([0, 32, 128]), current_batch=st.sampled_from(BATCHES))
def test_shielded_decision_respects_floor_and_batch_rules(
        head: int, batch: int, base: int, replicas: int, ready: int, rate: float,
        waiting: float, forecast_rate: float | None, margin: float, since_change: float,
        tpot_cap: int, current_batch: int) -> None:
    ctx = replace(CTX, max_batch_for_tpot=tpot_cap)
    shield = ShieldConfig(floor_margin=margin)
    policy = stub_policy((head, batch), shield, max_rate=1e6, base=base)
    s = snap(replicas=replicas, ready_replicas=min(ready, replicas), arrival_rate=rate,
             requests_waiting=waiting, requests_running=min(ready, replicas) * 32.0,
             batch_size=current_batch)
    fc = None if forecast_rate is None else flat_forecast(forecast_rate)
    inp = PolicyInput(s, ctx, forecast=fc)
    state = replace(policy.initial_state(), last_batch_change=s.time - since_change,
                    last_batch=s.batch_size)
    rec, new_state = policy.decide(inp, state)
    if "out of training distribution" in rec.reason:
        return  # handed over; the fallback owns the decision
    floor = policy.replica_floor(inp)
    assert rec.replicas >= floor.replicas
    assert CTX.min_replicas <= rec.replicas <= CTX.max_replicas
    if fc is not None:
        need = math.ceil(forecast_rate / CTX.replica_capacity_rps * (1 + margin) - 1e-9)
        assert rec.replicas >= min(max(need, CTX.min_replicas), CTX.max_replicas)
    if rec.batch_size is not None and rec.batch_size != s.batch_size:
        assert s.ready_replicas >= 2
        # The policy measures the time since the last change as now - then, as here.
        assert s.time - state.last_batch_change >= shield.batch_cooldown_s
        assert new_state.last_batch_change == s.time
        if tpot_cap and rec.batch_size > s.batch_size:
            assert rec.batch_size <= tpot_cap  # never grown past the TPOT-safe batch
    # The residual: the factor times the base's plan (within bounds), or the floor above it.
    bounded = min(max(base, CTX.min_replicas), CTX.max_replicas)
    asked = min(max(residual_target(bounded, DEFAULT_FACTORS[head]), CTX.min_replicas),
                CTX.max_replicas)
    assert rec.details["model_replicas"] == asked
    assert rec.replicas == max(asked, floor.replicas)
    if rec.replicas != asked:  # the shield overrode it
        assert rec.details.get("shield_floor") == 1.0
        assert f"floor {rec.replicas}" in rec.reason


def test_floor_holds_against_a_model_that_wants_too_few() -> None:
    policy = stub_policy((factor(0.7), 2))
    inp = PolicyInput(snap(replicas=10, arrival_rate=5.0), CTX, forecast=flat_forecast(40.0))
    rec, _ = policy.decide(inp, policy.initial_state())
    assert rec.replicas == 8  # 40 req/s median / 5 req/s per replica
    assert "floor 8" in rec.reason and "median forecast up to 40.0" in rec.reason
    assert rec.details["shield_floor"] == 1.0
    assert rec.details["model_replicas"] == 5.0  # 0.7 x the base's 7, rounded up


def test_floor_margin_tightens_the_floor() -> None:
    policy = stub_policy((factor(0.7), 2), ShieldConfig(floor_margin=0.5))
    inp = PolicyInput(snap(replicas=10, arrival_rate=5.0), CTX, forecast=flat_forecast(40.0))
    rec, _ = policy.decide(inp, policy.initial_state())
    assert rec.replicas == 12 and "margin +50%" in rec.reason


def test_the_factor_multiplies_the_base_plan() -> None:
    for f, base, want in ((1.0, 7, 7), (1.5, 7, 11), (3.0, 7, 21), (0.8, 20, 16)):
        policy = stub_policy((factor(f), 2), base=base)
        rec, _ = policy.decide(PolicyInput(snap(replicas=3, arrival_rate=1.0), CTX,
                                           forecast=flat_forecast(1.0)),
                               policy.initial_state())
        assert rec.replicas == want, (f, base)
        assert rec.details["base_replicas"] == base and rec.details["factor"] == f
        assert f"×{f:g} over predictive's {base}" in rec.reason
        assert "stub fallback" in rec.reason  # the base's own reason comes along


def test_floor_without_forecast_is_the_hpa_answer() -> None:
    policy = stub_policy((factor(0.7), 2), base=2)
    # 4 ready pods, 200 requests in the system at batch 64: HPA (target 0.7) wants 5.
    s = snap(replicas=4, ready_replicas=4, requests_running=180.0, requests_waiting=20.0,
             arrival_rate=1.0)
    rec, _ = policy.decide(PolicyInput(s, CTX), policy.initial_state())
    assert rec.replicas == 5
    assert "reactive HPA answer" in rec.reason


def test_batch_change_blocked_with_one_ready_replica() -> None:
    policy = stub_policy((HOLD_INDEX, BATCHES.index(128)))
    s = snap(replicas=1, ready_replicas=1, requests_running=10.0, arrival_rate=3.0)
    rec, _ = policy.decide(PolicyInput(s, CTX, forecast=flat_forecast(3.0)),
                           policy.initial_state())
    assert rec.batch_size is None
    assert "kept batch 64" in rec.reason and "1 ready replica" in rec.reason
    assert rec.details["shield_batch_blocked"] == 1.0


def test_batch_change_allowed_then_rate_limited() -> None:
    policy = stub_policy((HOLD_INDEX, BATCHES.index(128)))
    state = policy.initial_state()
    rec, state = policy.decide(PolicyInput(snap(time=1000.0), CTX), state)
    assert rec.batch_size == 128
    # The model flips back 60 s later (the pods now run 128): blocked by the rate limit.
    flip = stub_policy((HOLD_INDEX, BATCHES.index(64)))
    rec2, state = flip.decide(PolicyInput(snap(time=1060.0, batch_size=128), CTX), state)
    assert rec2.batch_size is None and "rate limit" in rec2.reason
    # The cooldown counts from when the new size was seen (1060 s): free again at 1360 s.
    rec3, state = flip.decide(PolicyInput(snap(time=1300.0, batch_size=128), CTX), state)
    assert rec3.batch_size is None
    rec4, _ = flip.decide(PolicyInput(snap(time=1400.0, batch_size=128), CTX), state)
    assert rec4.batch_size == 64


def test_batch_growth_is_capped_at_the_tpot_safe_size() -> None:
    ctx = replace(CTX, max_batch_for_tpot=128)
    policy = stub_policy((HOLD_INDEX, BATCHES.index(256)))
    rec, _ = policy.decide(PolicyInput(snap(batch_size=32), ctx), policy.initial_state())
    assert rec.batch_size == 128
    assert "capped batch 256 at 128" in rec.reason and rec.details["shield_batch_tpot"] == 1.0
    # Already at the cap: the model's 256 is no change at all.
    rec2, _ = policy.decide(PolicyInput(snap(batch_size=128), ctx), policy.initial_state())
    assert rec2.batch_size is None
    # Shrinking is always allowed by this rule (an operator may have set 256 by hand).
    shrink = stub_policy((HOLD_INDEX, BATCHES.index(128)))
    rec3, _ = shrink.decide(PolicyInput(snap(batch_size=256), ctx), shrink.initial_state())
    assert rec3.batch_size == 128


def test_profile_knows_the_largest_tpot_safe_batch() -> None:
    from aiops.sim.profiles import load_profile

    p = load_profile("llama3-8b-a100")
    for ctx in (500.0, 2000.0, 4000.0):
        safe = p.max_batch_for_tpot(0.05, ctx)
        assert p.step_time(safe, ctx) <= 0.05
        bigger = [b for b in p.batch_sizes if b > safe]
        assert all(p.step_time(b, ctx) > 0.05 for b in bigger)
    # Longer sequences hold more KV: the safe batch shrinks.
    assert p.max_batch_for_tpot(0.05, 4000.0) < p.max_batch_for_tpot(0.05, 500.0)
    assert p.max_batch_for_tpot(1.0) == max(p.batch_sizes)
    assert p.max_batch_for_tpot(0.001) == min(p.batch_sizes)  # none meets it: the smallest


def test_an_agent_without_a_batch_head_keeps_the_running_batch() -> None:
    """Trained with --fixed-batch (one size, 64), the agent never asks for a batch change,
    whatever the pods run: its one size is no decision, not a size to impose."""
    meta = replace(wide_meta(), batch_sizes=(64,))
    policy = PpoPolicy(FixedModel((ONE, 0)), meta, fallback=StubFallback(7),
                       fallback_name="predictive")
    for running in (32, 64, 128):
        rec, _ = policy.decide(PolicyInput(snap(batch_size=running), CTX),
                               policy.initial_state())
        assert rec.batch_size is None, running
        assert rec.details["model_batch_size"] == running
        assert "shield_batch_blocked" not in rec.details


def test_batch_the_target_does_not_offer_is_blocked() -> None:
    ctx = replace(CTX, batch_sizes=(32, 64))
    policy = stub_policy((HOLD_INDEX, BATCHES.index(256)))
    rec, _ = policy.decide(PolicyInput(snap(), ctx), policy.initial_state())
    assert rec.batch_size is None and "not one the target offers" in rec.reason


HOLD_INDEX = ONE


def test_load_ten_times_beyond_training_hands_over() -> None:
    model = FixedModel((HOLD_INDEX, 2))
    policy = PpoPolicy(model, wide_meta(max_rate=50.0), fallback=StubFallback())
    rec, state = policy.decide(PolicyInput(snap(arrival_rate=500.0), CTX),
                               policy.initial_state())
    assert rec.replicas == 7
    assert "out of training distribution" in rec.reason and "50.0 req/s" in rec.reason
    assert "handed to predictive: stub fallback" in rec.reason
    assert rec.details["ood"] == 1.0 and rec.details["fallback_replicas"] == 7.0
    assert model.calls == 0  # the network was not asked
    assert state.fallback == 1  # the fallback's own state moved on


def test_load_within_training_is_not_handed_over() -> None:
    policy = stub_policy((HOLD_INDEX, 2), max_rate=50.0)
    rec, _ = policy.decide(PolicyInput(snap(arrival_rate=60.0), CTX), policy.initial_state())
    assert "out of training distribution" not in rec.reason


def test_feature_outside_training_range_hands_over() -> None:
    meta = wide_meta()
    tight = meta.feature_max.copy()
    i = FEATURE_NAMES.index("waiting_per_slot")
    tight[i] = 0.5
    policy = PpoPolicy(FixedModel((HOLD_INDEX, 2)), replace(meta, feature_max=tight),
                       fallback=StubFallback())
    s = snap(requests_waiting=4 * 64 * 3.0)  # 3 waiting per slot
    rec, _ = policy.decide(PolicyInput(s, CTX), policy.initial_state())
    assert "waiting_per_slot" in rec.reason and "handed to" in rec.reason


def test_unknown_capacity_hands_over() -> None:
    policy = stub_policy((HOLD_INDEX, 2))
    rec, _ = policy.decide(PolicyInput(snap(), replace(CTX, replica_capacity_rps=0.0)),
                           policy.initial_state())
    assert "capacity unknown" in rec.reason and rec.replicas == 7


def test_non_finite_input_hands_over() -> None:
    policy = stub_policy((HOLD_INDEX, 2))
    rec, _ = policy.decide(PolicyInput(snap(arrival_rate=math.nan), CTX),
                           policy.initial_state())
    assert "non-finite arrival_rate" in rec.reason and rec.replicas == 7


def test_ood_hands_over_to_the_real_predictive_policy() -> None:
    pytest.importorskip("aiops.policy.predictive")
    policy = PpoPolicy(FixedModel((HOLD_INDEX, 2)), wide_meta(max_rate=10.0))
    from aiops.policy.ppo import build_fallback

    fallback, name = build_fallback(CTX)
    policy = PpoPolicy(FixedModel((HOLD_INDEX, 2)), wide_meta(max_rate=10.0),
                       fallback=fallback, fallback_name=name)
    rec, _ = policy.decide(PolicyInput(snap(arrival_rate=100.0), CTX,
                                       forecast=flat_forecast(100.0)), policy.initial_state())
    assert name == "predictive" and "handed to predictive" in rec.reason


def test_a_lowered_factor_waits_one_cold_start() -> None:
    state = stub_policy((ONE, 2)).initial_state()

    def at(t: float, f: float) -> Recommendation:
        nonlocal state
        policy = stub_policy((factor(f), 2))
        inp = PolicyInput(snap(time=t, replicas=7, arrival_rate=1.0, requests_running=1.0),
                          CTX, forecast=flat_forecast(1.0, start=t + 15.0))
        rec, state = policy.decide(inp, state)
        return rec

    assert at(1000.0, 3.0).replicas == 21  # raising the factor is immediate
    rec = at(1015.0, 1.0)  # the model is back to the base plan
    assert rec.replicas == 21 and "×3 still in force" in rec.reason
    assert rec.details["model_factor"] == 1.0 and rec.details["factor"] == 3.0
    assert at(1075.0, 1.0).replicas == 21  # 75 s after the high factor: still held
    assert at(1095.0, 1.0).replicas == 7  # one cold start (90 s) later: released


def test_residual_target_and_factor_stabilization() -> None:
    assert residual_target(7, 1.0) == 7
    assert residual_target(7, 1.1) == 8  # 7.7: rounded up
    assert residual_target(10, 1.1) == 11  # exactly 11, not 12 from rounding noise
    assert residual_target(0, 3.0) == 0
    f, recent = stabilize_factor(2.0, 100.0, (), 90.0)
    assert f == 2.0 and recent == ((100.0, 2.0),)
    f, recent = stabilize_factor(0.8, 150.0, recent, 90.0)
    assert f == 2.0  # the 2.0 of 50 s ago is still in force
    f, recent = stabilize_factor(0.8, 190.0, recent, 90.0)
    assert f == 0.8 and recent == ((150.0, 0.8), (190.0, 0.8))  # 90 s old: forgotten


def test_a_factor_of_one_is_the_base_policy() -> None:
    """The residual builds on predictive's own decisions: with factor 1 throughout, the
    agent's replicas are predictive's at every tick, except where the shield's floor (the
    median forecast's need) lies above them, which it names."""
    from aiops.policy.ppo import build_fallback
    from aiops.sim.runner import initial_replicas, planning_context, run_policy
    from aiops.train.evaluate import naive_forecast_fn

    profile = load_profile()
    w = synthetic("flash-crowd", seed=5, duration=1800.0)
    ctx = planning_context(profile, w)
    runs = {}
    for name in ("predictive", "ppo"):
        base, _ = build_fallback(ctx)
        policy = base if name == "predictive" else PpoPolicy(
            FixedModel((ONE, BATCHES.index(64))), wide_meta(1e6), fallback=base)
        runs[name] = run_policy(policy, w, profile, ctx, start_replicas=initial_replicas(w, ctx),
                                forecast_fn=naive_forecast_fn(ctx)).timeline
    pred, ppo = runs["predictive"], runs["ppo"]
    same = pred.desired == ppo.desired
    assert same.mean() > 0.9
    for i in np.flatnonzero(~same):
        assert "floor" in ppo.reasons[i], ppo.reasons[i]
    # Both runs changed their fleets: the equality is not a constant fleet.
    assert len(set(pred.desired)) > 3


def test_shield_config_is_checked() -> None:
    with pytest.raises(InputError):
        ShieldConfig(floor_margin=5.0)
    with pytest.raises(InputError):
        ShieldConfig(ood_load_factor=0.5)
    with pytest.raises(InputError, match="unknown parameter"):
        PpoPolicy.from_spec(PolicySpec.parse("ppo:foo=1"), CTX)


def test_state_is_frozen() -> None:
    state = PpoState()
    with pytest.raises(AttributeError):
        state.last_batch = 3  # type: ignore[misc]


# ----------------------------------------------------------------------------- wiring


def test_registry_builds_ppo_from_a_path(policy_dir: Path) -> None:
    policy = make_policy(PolicySpec.parse(f"ppo:path={policy_dir},floor_margin=0.1"), CTX)
    assert isinstance(policy, PpoPolicy) and policy.shield.floor_margin == 0.1


def test_simulate_runs_ppo(policy_dir: Path) -> None:
    w = synthetic("flash-crowd", seed=4, duration=600.0)
    out = compare_policies(w, load_profile(), [f"ppo:path={policy_dir}", "hpa"],
                           forecast_model="naive")
    r = out.outputs[f"ppo:path={policy_dir}"]
    assert r.result.requests == len(w) and r.result.gpu_hours > 0
    assert all(reason.startswith("ppo:") for reason in r.timeline.reasons)


def test_simulate_cli_with_ppo(policy_dir: Path) -> None:
    from aiops.cli import app

    res = CliRunner().invoke(app, ["simulate", "--workload", "synthetic:steady", "--duration",
                                   "5m", "--policy", f"ppo:path={policy_dir}",
                                   "--policy", "hpa"])
    assert res.exit_code == 0, res.output
    assert "ppo:path=" in res.output


def test_simulate_cli_reports_a_broken_policy(tmp_path: Path) -> None:
    from aiops.cli import app

    res = CliRunner().invoke(app, ["simulate", "--duration", "5m", "--policy",
                                   f"ppo:path={tmp_path / 'missing'}"])
    assert res.exit_code == 2
    assert "policy directory does not exist" in res.output


def test_shipped_default_policy_loads() -> None:
    from aiops.policy.ppo import DEFAULT_POLICY_DIR

    if not DEFAULT_POLICY_DIR.exists():
        pytest.skip("no policies/default in this checkout")
    _, meta = load_ppo_artifact(DEFAULT_POLICY_DIR)
    assert (DEFAULT_POLICY_DIR / "model.zip").stat().st_size < 1_000_000
    assert meta.raw["command"].startswith("aiops train ")
    policy = make_policy(PolicySpec.parse("ppo"), CTX)
    rec, _ = policy.decide(PolicyInput(snap(), CTX, forecast=flat_forecast(15.0)),
                           policy.initial_state())
    assert rec.replicas >= 3 and rec.reason.startswith("ppo:")
