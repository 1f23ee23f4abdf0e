"""The controller with the Kubernetes actuator, against the fake API server's harder rules:
another writer that keeps changing the Deployment (409 storms) and an admission webhook that
refuses dry-run requests. The loop must keep going and say what happened, as it happened."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from fakes.apiserver import FakeApiServer, Webhook
from fakes.kustomize import TARGET_DEPLOYMENT, TARGET_NS
from prometheus_client import CollectorRegistry

from aiops.actuate.k8s import KubernetesActuator
from aiops.clock import SimClock
from aiops.config import KubernetesConfig, parse_config
from aiops.controller import Controller
from aiops.telemetry import Telemetry
from aiops.types import Snapshot

T0 = 1_700_000_000.0


class Overloaded:
    """Every tick the target needs more replicas than it has."""

    def snapshot(self, target: Any, at: float) -> Snapshot:
        return Snapshot(time=at, replicas=1, ready_replicas=1, batch_size=64,
                        requests_running=64.0, requests_waiting=300.0, kv_cache_usage=0.95,
                        arrival_rate=60.0, prompt_tokens_rate=36_000.0,
                        generation_tokens_rate=9_000.0)

    def load_history(self, target: Any, start: float, end: float, step: float) -> Any:
        return np.zeros(0), np.zeros(0)


def controller(server: FakeApiServer, *, dry_run: bool) -> tuple[Controller, SimClock,
                                                                   Telemetry]:
    cfg = parse_config(f"""
backend: kubernetes
dry_run: {str(dry_run).lower()}
daemon: {{interval_s: 15}}
targets:
  - {{name: llama, namespace: {TARGET_NS}, deployment: {TARGET_DEPLOYMENT}, policy: hpa,
     max_replicas: 16}}
""", environ={})
    clock = SimClock(T0)
    tel = Telemetry(CollectorRegistry())
    act = KubernetesActuator(KubernetesConfig(request_timeout_s=5),
                             api_client=server.api_client())
    return Controller(cfg, Overloaded(), act, clock, tel), clock, tel


def errors(tel: Telemetry, kind: str) -> float:
    return tel.registry.get_sample_value("aiops_errors_total",
                                         {"target": "llama", "kind": kind}) or 0.0


def test_a_409_storm_costs_ticks_never_a_crash_or_a_blind_write(apiserver: FakeApiServer
                                                                 ) -> None:
    apiserver.add_deployment(TARGET_NS, TARGET_DEPLOYMENT, replicas=1)
    storm = apiserver.status_writer(TARGET_NS, TARGET_DEPLOYMENT, after_spec_change=0,
                                    every_s=0.0005)
    ctl, clock, tel = controller(apiserver, dry_run=False)
    for _ in range(4):
        clock.advance(15.0)
        ctl.tick_all()  # never raises, whatever the API server answers
    storm.stop()
    assert storm.writes > 0
    scales = apiserver.find("PATCH", "/scale$")
    assert scales and all(r.body["metadata"]["resourceVersion"] for r in scales)
    conflicts = [r for r in scales if r.status == 409]
    applied = [r for r in scales if r.status == 200]
    # Each tick applied its decision or was counted as failing to act (after two tries: one
    # re-read, no more), and moved on.
    assert len(applied) + errors(tel, "actuation") == 4
    assert len(conflicts) <= 2 * 4 and len(conflicts) > 0
    # With the other writer quiet, the next tick applies what the target needs.
    before = apiserver.deployment(TARGET_NS, TARGET_DEPLOYMENT)["spec"]["replicas"]
    clock.advance(15.0)
    ctl.tick_all()
    assert apiserver.deployment(TARGET_NS, TARGET_DEPLOYMENT)["spec"]["replicas"] > before


def test_a_webhook_refusing_dry_run_is_reported_as_a_webhook(
        apiserver: FakeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    apiserver.add_deployment(TARGET_NS, TARGET_DEPLOYMENT, replicas=1)
    apiserver.add_webhook(Webhook("replicas.policy.example.com",
                                  deny="llm may not run more than 2 replicas"))
    ctl, clock, tel = controller(apiserver, dry_run=True)
    clock.advance(15.0)
    with caplog.at_level(logging.WARNING, logger="aiops.controller"):
        (decision,) = ctl.tick_all().values()
    assert decision is not None and decision.changed and decision.dry_run
    assert errors(tel, "actuation") == 1
    (line,) = [r.getMessage() for r in caplog.records if "applying" in r.getMessage()]
    assert ('admission webhook "replicas.policy.example.com" denied the request: llm may '
            'not run more than 2 replicas') in line
    assert "grant verb" not in line  # not mistaken for a missing permission
    assert apiserver.deployment(TARGET_NS, TARGET_DEPLOYMENT)["spec"]["replicas"] == 1
