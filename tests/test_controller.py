"""The tick and the daemon loop on the embedded simulated cluster: safety under failure."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aiops.actuate.base import PAUSE_ANNOTATION, STATE_ANNOTATION, ApplyResult, TargetState
from aiops.clock import SimClock
from aiops.config import Config, TargetConfig, parse_config
from aiops.controller import Controller
from aiops.daemon import Daemon
from aiops.errors import DataQualityError, PermanentError, TransientError
from aiops.guardrails import GuardrailState
from aiops.policy import make_policy
from aiops.policy.base import PolicySpec
from aiops.sim.backend import SimBackend
from aiops.sim.profiles import load_profile
from aiops.sim.runner import initial_replicas, planning_context, run_policy
from aiops.sim.workloads import Workload, synthetic
from aiops.telemetry import Telemetry
from aiops.types import Decision, Snapshot

BASE = """
backend: sim
dry_run: {dry_run}
daemon: {{interval_s: 15, http_port: 0}}
leader_election: {{enabled: false}}
guardrails: {guardrails}
targets:
{targets}
"""


def target_yaml(name: str, policy: str = "hpa", max_replicas: int = 16) -> str:
    return (f"  - {{name: {name}, deployment: {name}, policy: '{policy}', "
            f"min_replicas: 1, max_replicas: {max_replicas}, batch_sizes: [32, 64, 128]}}")


def make_config(*targets: str, dry_run: bool = False, guardrails: str = "{}") -> Config:
    text = BASE.format(dry_run=str(dry_run).lower(), guardrails=guardrails,
                       targets="\n".join(targets or (target_yaml("a"),)))
    return parse_config(text, environ={})


def metric(tel: Telemetry, name: str, **labels: str) -> float:
    value = tel.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def build(config: Config, workloads: Mapping[str, Workload] | None = None,
          source: Any = None, actuator: Any = None) -> tuple[Controller, SimBackend, SimClock,
                                                             Telemetry]:
    clock = SimClock(0.0)
    backend = SimBackend(config, clock, workloads=workloads, duration=3600.0)
    tel = Telemetry(CollectorRegistry())
    ctl = Controller(config, source or backend, actuator or backend, clock, tel)
    return ctl, backend, clock, tel


def run_ticks(ctl: Controller, clock: SimClock, n: int) -> list[dict[str, Decision | None]]:
    out = []
    for _ in range(n):
        clock.advance(15.0)
        out.append(ctl.tick_all())
    return out


class FailingSource:
    """A Prometheus that went away after ``good`` ticks."""

    def __init__(self, inner: SimBackend, good: int, exc: Exception) -> None:
        self.inner, self.good, self.exc, self.calls = inner, good, exc, 0

    def snapshot(self, target: TargetConfig, at: float) -> Snapshot:
        self.calls += 1
        self.inner.snapshot(target, at)  # the cluster keeps running meanwhile
        if self.calls > self.good:
            raise self.exc
        return self.inner.snapshot(target, at)

    def load_history(self, *args: Any) -> Any:
        return self.inner.load_history(*args)


@pytest.mark.parametrize("exc", [TransientError("connection refused"),
                                 DataQualityError("vllm:num_requests_running: empty result")])
def test_dead_prometheus_never_scales_down_and_the_loop_keeps_running(exc: Exception) -> None:
    cfg = make_config(target_yaml("a", max_replicas=16),
                      guardrails="{max_failures: 3, fallback: hold}")
    ctl, backend, clock, tel = build(cfg, workloads={"a": synthetic("steady", seed=0,
                                                                    duration=3600.0)})
    sim = backend.sims["a"]
    sim.scale(8)  # over-provisioned: a policy with data would scale down
    source = FailingSource(backend, good=0, exc=exc)
    ctl.source = source
    decisions = run_ticks(ctl, clock, 40)
    assert all(d["a"] is not None for d in decisions)
    assert sim.desired_replicas >= 8
    assert all(d["a"].replicas >= 8 for d in decisions if d["a"] is not None)
    kind = "transient" if isinstance(exc, TransientError) else "data_quality"
    assert metric(tel, "aiops_errors_total", target="a", kind=kind) == 40
    assert metric(tel, "aiops_consecutive_failures", target="a") == 40
    rules = {r for d in decisions if d["a"] is not None for r in d["a"].rules}
    assert rules & {"data_hold", "fallback"}


def test_one_target_failing_does_not_stop_another() -> None:
    cfg = make_config(target_yaml("a"), target_yaml("b"))
    ctl, backend, clock, tel = build(cfg)

    class Broken:
        def __init__(self) -> None:
            self.inner = backend

        def read(self, target: TargetConfig) -> TargetState:
            if target.name == "a":
                raise RuntimeError("a bug in an edge")
            return backend.read(target)

        def apply(self, target: TargetConfig, decision: Decision, *,
                  dry_run: bool) -> ApplyResult:
            return backend.apply(target, decision, dry_run=dry_run)

        def save_state(self, target: TargetConfig, state: Mapping[str, str]) -> None:
            backend.save_state(target, state)

    ctl.actuator = Broken()
    out = run_ticks(ctl, clock, 5)
    assert all(d["a"] is None and d["b"] is not None for d in out)
    assert metric(tel, "aiops_errors_total", target="a", kind="internal") == 5
    assert metric(tel, "aiops_ticks_total", target="b", outcome="ok") == 5


FAST = "{scale_down_stabilization_s: 0}"


def test_conflict_from_the_api_server_is_counted_and_retried_next_tick() -> None:
    cfg = make_config(target_yaml("a"), guardrails=FAST)
    ctl, backend, clock, tel = build(cfg)
    backend.sims["a"].scale(12)  # too many: the HPA will want fewer
    calls = {"n": 0}
    real_apply = backend.apply

    def conflicting(target: TargetConfig, decision: Decision, *, dry_run: bool) -> ApplyResult:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise TransientError("409 Conflict: the object has been modified")
        return real_apply(target, decision, dry_run=dry_run)

    backend.apply = conflicting  # type: ignore[method-assign]
    run_ticks(ctl, clock, 40)
    assert metric(tel, "aiops_errors_total", target="a", kind="actuation") == 2
    assert backend.sims["a"].desired_replicas < 12  # applied once the conflict cleared


def test_dry_run_reports_but_never_changes_the_target() -> None:
    cfg = make_config(target_yaml("a"), dry_run=True, guardrails=FAST)
    ctl, backend, clock, tel = build(cfg)
    backend.sims["a"].scale(12)
    before = backend.sims["a"].desired_replicas
    out = run_ticks(ctl, clock, 30)
    assert backend.sims["a"].desired_replicas == before
    assert any(d["a"] is not None and d["a"].replicas < before for d in out)
    assert all(d["a"] is not None and d["a"].dry_run for d in out)
    assert metric(tel, "aiops_actions_total", target="a", direction="down", mode="dry_run") > 0
    assert STATE_ANNOTATION not in backend.annotations["a"]  # dry-run writes nothing


def test_pause_annotation_freezes_the_target() -> None:
    cfg = make_config(target_yaml("a"), guardrails=FAST)
    ctl, backend, clock, tel = build(cfg)
    backend.sims["a"].scale(12)
    backend.set_annotation("a", PAUSE_ANNOTATION, "true")
    out = run_ticks(ctl, clock, 30)
    assert backend.sims["a"].desired_replicas == 12
    assert all(d["a"] is not None and "paused" in d["a"].rules for d in out
               if d["a"] is not None and d["a"].recommendation.replicas != 12)
    assert metric(tel, "aiops_paused", target="a") == 1
    backend.set_annotation("a", PAUSE_ANNOTATION, "false")
    run_ticks(ctl, clock, 30)
    assert backend.sims["a"].desired_replicas < 12


def test_restart_restores_the_guardrail_state_from_annotations() -> None:
    cfg = make_config(target_yaml("a"),
                      guardrails="{scale_down_stabilization_s: 600, max_step_down: 8}")
    ctl, backend, clock, _ = build(cfg, workloads={"a": synthetic("step", seed=3,
                                                                  duration=3600.0)})
    backend.sims["a"].scale(12)
    run_ticks(ctl, clock, 4)
    saved, problem = GuardrailState.from_json(json.dumps(
        json.loads(backend.annotations["a"][STATE_ANNOTATION])["guardrails"]))
    assert problem is None and saved == ctl.runtimes["a"].guard_state
    assert saved.recommendations and saved.recommendations[0][1] == 12
    # A new controller (the daemon restarted) on the same cluster and annotations.
    tel2 = Telemetry(CollectorRegistry())
    ctl2 = Controller(cfg, backend, backend, clock, tel2)
    out = run_ticks(ctl2, clock, 1)
    assert out[0]["a"] is not None
    restored = ctl2.runtimes["a"].guard_state
    # History came back from the annotation: the window's maximum, from before the restart.
    assert saved.recommendations[0] in restored.recommendations
    assert out[0]["a"].replicas == 12  # still inside the stabilization window: no flap


def test_unusable_ppo_model_falls_back_to_predictive_with_the_reason(tmp_path: Any) -> None:
    bad = tmp_path / "ppo"
    bad.mkdir()
    (bad / "model.zip").write_bytes(b"not a zip")
    (bad / "meta.json").write_text("{}")
    cfg = make_config(target_yaml("a", policy=f"ppo:path={bad}"))
    ctl, _, clock, _tel = build(cfg)
    rt = ctl.runtimes["a"]
    assert rt.policy_name == "predictive"  # the documented fallback, not its own fallback
    assert rt.fallback_reason is not None
    assert rt.fallback_reason.startswith(f"ppo:path={bad}: ")
    assert "meta.json" in rt.fallback_reason  # the reason names what is wrong with the model
    out = run_ticks(ctl, clock, 3)
    assert all(d["a"] is not None for d in out)


def test_daemon_on_the_simulated_cluster_follows_the_load() -> None:
    cfg = make_config(target_yaml("a", max_replicas=32))
    ctl, backend, clock, tel = build(cfg)
    daemon = Daemon(cfg, ctl, clock, tel)
    daemon.run_simulated(3600.0)
    sim = backend.sims["a"]
    assert clock.now() == pytest.approx(3600.0)
    assert sim.scale_ups > 0 and sim.scale_downs > 0
    res = backend.finish()["a"]
    assert float(res["slo_attainment"]) > 0.8
    assert metric(tel, "aiops_ticks_total", target="a", outcome="ok") == 240


def test_parity_daemon_tick_and_simulate_agree() -> None:
    """The same scenario through the daemon's path and aiops simulate's path."""
    permissive = ("{max_step_up: 1000, max_step_down: 1000, scale_down_stabilization_s: 0, "
                  "cooldown_s: 0, anomaly_freeze: false, scale_down_min_attainment: null}")
    cfg = make_config(target_yaml("a", max_replicas=64), guardrails=permissive)
    w = synthetic("flash-crowd", seed=4, duration=1800.0)
    ctl, backend, clock, _tel = build(cfg, workloads={"a": w})
    for _ in range(120):
        clock.advance(15.0)
        ctl.tick_all()
    daemon_sim = backend.sims["a"]
    daemon_sim.finish()

    profile = load_profile()
    ctx = planning_context(profile, w, min_replicas=1, max_replicas=64, interval_s=15.0)
    policy = make_policy(PolicySpec.parse("hpa"), ctx)
    direct = run_policy(policy, w, profile, ctx, start_replicas=initial_replicas(w, ctx))
    assert daemon_sim.result() == direct.result
    assert not math.isnan(direct.result.gpu_hours)


def test_permanent_error_reading_target_is_counted_not_raised() -> None:
    cfg = make_config(target_yaml("a"))
    ctl, backend, clock, tel = build(cfg)

    def gone(target: TargetConfig) -> TargetState:
        raise PermanentError("deployments.apps 'a' not found")

    backend.read = gone  # type: ignore[method-assign]
    out = run_ticks(ctl, clock, 3)
    assert all(d["a"] is None for d in out)
    assert metric(tel, "aiops_errors_total", target="a", kind="permanent") == 3


class OutageSource:
    """Prometheus that answers, then stops for a while, then comes back."""

    def __init__(self, inner: SimBackend, down: range) -> None:
        self.inner, self.down, self.calls = inner, down, 0

    def snapshot(self, target: TargetConfig, at: float) -> Snapshot:
        self.calls += 1
        snap = self.inner.snapshot(target, at)
        if self.calls in self.down:
            raise TransientError("connection refused")
        return snap

    def load_history(self, *args: Any) -> Any:
        return self.inner.load_history(*args)


def test_prometheus_outage_mid_run_holds_then_recovers() -> None:
    cfg = make_config(target_yaml("a"), guardrails=FAST)
    ctl, backend, clock, tel = build(cfg)
    backend.sims["a"].scale(12)
    ctl.source = OutageSource(backend, range(6, 40))
    out = [d["a"] for d in run_ticks(ctl, clock, 70)]
    assert all(d is not None for d in out)
    before = out[4].replicas if out[4] else 12
    during = [d for d in out[5:39] if d is not None]
    assert all(d.replicas >= before for d in during)  # never down while blind
    assert all(set(d.rules) & {"data_hold", "fallback"} for d in during)
    after = [d for d in out[45:] if d is not None]
    assert any(d.replicas < before for d in after)  # acting again once data is back
    assert metric(tel, "aiops_errors_total", target="a", kind="transient") == 34


def test_enforce_writes_last_scale_annotations() -> None:
    cfg = make_config(target_yaml("a"), guardrails=FAST)
    ctl, backend, clock, _ = build(cfg)
    backend.sims["a"].scale(12)
    run_ticks(ctl, clock, 30)
    ann = backend.annotations["a"]
    assert ann["aiops.io/last-scale-time"].endswith("Z")
    assert "replicas" in ann["aiops.io/last-decision"]


def test_an_arrival_rate_called_bad_telemetry_never_reaches_the_forecast_history() -> None:
    from aiops.detect.faults import Fault, FaultySource
    from aiops.types import AnomalyReport, MetricAnomaly

    lie = Fault("unit_change", 300.0, 300.0, metric="arrival_rate", factor=1000.0)

    class Monitor:
        """Calls the arrival rate bad telemetry exactly while the fault lasts."""

        def observe(self, snap: Snapshot) -> AnomalyReport:
            bad = (MetricAnomaly("arrival_rate", 1.0, "bad_telemetry", "unit change"),)
            return AnomalyReport(snap.time, bad if lie.active(snap.time) else ())

    config = make_config()
    clock = SimClock(0.0)
    backend = SimBackend(config, clock, duration=3600.0)
    ctl = Controller(config, FaultySource(backend, [lie]), backend, clock,
                     Telemetry(CollectorRegistry()), monitor_factory=lambda t: Monitor())
    run_ticks(ctl, clock, 60)
    rt = ctl.runtimes["a"]
    history = dict(zip(rt.history.times, rt.history.values, strict=True))
    assert max(history.values()) < 500  # the thousandfold rates were never recorded
    assert not any(300 < t <= 600 for t in history)  # the fault's minutes are left out
    assert {240.0, 660.0} <= set(history)  # before and after, the load is recorded


def test_a_failing_anomaly_detector_vouches_for_nothing_so_nothing_scales_down() -> None:
    class Broken:
        def observe(self, snap: Snapshot) -> Any:
            raise RuntimeError("corrupt detector state")

    config = make_config(target_yaml("a"), guardrails=FAST)
    clock = SimClock(0.0)
    backend = SimBackend(config, clock, duration=3600.0)
    tel = Telemetry(CollectorRegistry())
    ctl = Controller(config, backend, backend, clock, tel, monitor_factory=lambda t: Broken())
    backend.sims["a"].scale(12)  # too many: the HPA wants fewer
    decisions = [d["a"] for d in run_ticks(ctl, clock, 20) if d["a"] is not None]
    assert all(d.replicas >= d.previous_replicas for d in decisions)
    assert any("unverified_telemetry" in d.rules for d in decisions)  # held, and said so
    assert metric(tel, "aiops_errors_total", target="a", kind="internal") == 20


def test_the_daemon_plans_with_the_capacity_of_the_mix_the_service_sends() -> None:
    # The fixed capacity assumes 600/150 tokens; a service of long prompts gets less per
    # replica, measured on the target's profile and SLO.
    cfg = make_config(target_yaml("a"))
    ctl, _, _, _ = build(cfg)
    rt = ctl.runtimes["a"]
    ctx = rt.context
    assert ctx.capacity_for is not None
    slo = rt.cfg.slo
    long_mix = ctx.capacity_for(3000.0, 150.0)
    assert long_mix == rt.profile.replica_capacity_rps(
        rt.profile.default_batch_size, 3000.0, 150.0, ttft_slo=slo.ttft_s,
        tpot_slo=slo.tpot_s)
    assert long_mix < ctx.replica_capacity_rps / 2


def test_an_unchanged_page_stays_in_doubt_as_long_as_the_ingest_accepts_a_stale_sample() -> None:
    from aiops.wiring import monitor_factory

    cfg = parse_config(BASE.format(dry_run="true", guardrails="{}", targets=target_yaml("a"))
                       + "prometheus: {stale_after_s: 300}\n", environ={})
    make = monitor_factory(cfg)
    monitor = make(cfg.targets[0])
    assert monitor.scorer.checks.still_s == 300.0
