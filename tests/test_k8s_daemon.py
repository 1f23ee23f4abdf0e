"""The controller with the Kubernetes actuator, against the fake API server's harder rules:
another writer that keeps changing the Deployment (409 storms) and an admission webhook that
refuses dry-run requests. The loop must keep going and say what happened, as it happened."""

from __future__ import annotations

import logging

import pytest
from fakes.apiserver import FakeApiServer, Webhook
from fakes.kustomize import TARGET_DEPLOYMENT, TARGET_NS
from fakes.sources import Overloaded
from prometheus_client import CollectorRegistry

from aiops.actuate.k8s import KubernetesActuator
from aiops.clock import SimClock
from aiops.config import KubernetesConfig, parse_config
from aiops.controller import Controller
from aiops.telemetry import Telemetry

T0 = 1_700_000_000.0


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
    """Another writer changes the Deployment right after each of our reads: every write's
    precondition is stale. Each tick tries twice (one re-read), counts the failure and moves
    on; nothing is written without a precondition; when the storm passes, the next tick
    applies what the target needs."""
    apiserver.add_deployment(TARGET_NS, TARGET_DEPLOYMENT, replicas=1)
    storm = apiserver.status_writer(TARGET_NS, TARGET_DEPLOYMENT, after_spec_change=0,
                                    after_read=True)
    ctl, clock, tel = controller(apiserver, dry_run=False)
    for _ in range(4):
        clock.advance(15.0)
        (decision,) = ctl.tick_all().values()  # never raises, whatever the server answers
        assert decision is not None and decision.changed
    storm.stop()
    scales = apiserver.find("PATCH", "/scale$")
    assert [r.status for r in scales] == [409] * 8
    assert all(r.body["metadata"]["resourceVersion"] for r in scales)
    assert errors(tel, "actuation") == 4
    assert apiserver.deployment(TARGET_NS, TARGET_DEPLOYMENT)["spec"]["replicas"] == 1
    clock.advance(15.0)
    (decision,) = ctl.tick_all().values()
    assert decision is not None
    assert apiserver.deployment(TARGET_NS, TARGET_DEPLOYMENT)["spec"]["replicas"] == \
        decision.replicas > 1


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
