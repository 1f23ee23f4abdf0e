"""Explanations (shared wording) and Kubernetes Events on the loopback API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes.apiserver import TIME, FakeApiServer
from fakes.kustomize import TARGET_DEPLOYMENT, TARGET_NS

from aiops.annotate.base import (
    REASON_FALLBACK,
    REASON_GUARDRAIL,
    REASON_RECOMMENDATION,
    REASON_SCALED,
    explain,
)
from aiops.annotate.events import EventAnnotator, KubernetesEventAnnotator, k8s_time
from aiops.config import KubernetesConfig, TargetConfig
from aiops.types import Clamp, Decision, Recommendation

NS, NAME = TARGET_NS, TARGET_DEPLOYMENT  # what the shipped RBAC lets the daemon touch
T0 = 1_700_000_000.0
TARGET = TargetConfig(name="llama", namespace=NS, deployment=NAME, policy="predictive")


def decision(replicas: int, prev: int = 3, *, rec: int | None = None, dry_run: bool = False,
             clamps: tuple[Clamp, ...] = (), t: float = T0, batch: int = 64,
             reason: str = "queue growing") -> Decision:
    return Decision(time=t, target="llama", replicas=replicas, batch_size=batch,
                    previous_replicas=prev, previous_batch_size=64,
                    recommendation=Recommendation(replicas if rec is None else rec,
                                                  reason=reason),
                    clamps=clamps, dry_run=dry_run)


STEP = Clamp("max_step_up", 9, 7, "at most 4 up per tick")
COOLDOWN = Clamp("cooldown", 1, 3)
STALE = Clamp("data_hold", 1, 3, "no sample for 300 s")


@pytest.mark.parametrize(("d", "reason", "etype", "action", "words"), [
    (decision(7, rec=9, clamps=(STEP,)), REASON_SCALED, "Normal", "scale-up",
     [f"Set {NS}/{NAME} replicas 3→7", "policy predictive recommended 9 replicas (queue growing)",
      "max_step_up 9→7 (at most 4 up per tick)"]),
    (decision(5, dry_run=True), REASON_RECOMMENDATION, "Normal", "scale-up",
     [f"Dry-run: would set {NS}/{NAME} replicas 3→5"]),
    (decision(3, rec=1, clamps=(COOLDOWN,), reason="low load"), REASON_GUARDRAIL, "Normal",
     "hold", [f"Held {NS}/{NAME} at 3 replicas", "recommended 1 replicas (low load)",
              "cooldown 1→3"]),
    (decision(3, rec=1, clamps=(STALE,)), REASON_FALLBACK, "Warning", "hold",
     [f"Fallback on {NS}/{NAME}: held at 3 replicas", "data_hold 1→3"]),
    (decision(2, batch=128), REASON_SCALED, "Normal", "scale-down",
     ["replicas 3→2, batch size 64→128"]),
])
def test_explain(d: Decision, reason: str, etype: str, action: str, words: list[str]) -> None:
    exp = explain(TARGET, d)
    assert exp is not None
    assert (exp.reason, exp.event_type, exp.action) == (reason, etype, action)
    for w in words:
        assert w in exp.text


def test_nothing_to_explain_when_the_policy_asked_for_no_change() -> None:
    assert explain(TARGET, decision(3)) is None
    # a clamp that did not change the outcome is not news either
    assert explain(TARGET, decision(3, clamps=(Clamp("bounds", 3, 3),))) is None


def test_explanations_are_bounded() -> None:
    d = decision(7, rec=9, clamps=(Clamp("x", 9, 7, "y" * 5000),))
    exp = explain(TARGET, d)
    assert exp is not None and len(exp.text) == 1024 and exp.text.endswith("…")


@pytest.fixture
def server(apiserver: FakeApiServer) -> FakeApiServer:
    apiserver.add_deployment(NS, NAME, replicas=3)
    return apiserver


def annotator(server: FakeApiServer, **kw: Any) -> KubernetesEventAnnotator:
    return KubernetesEventAnnotator(server.api_client(), instance="aiops-0", **kw)


def test_an_applied_change_creates_an_event_on_the_deployment(server: FakeApiServer) -> None:
    assert annotator(server).annotate(TARGET, decision(7, rec=9, clamps=(STEP,)))
    (post,) = server.find("POST")
    assert post.path == f"/api/v1/namespaces/{NS}/events"
    (ev,) = server.events(NS)
    dep = server.deployment(NS, NAME)
    assert ev["involvedObject"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": NAME, "namespace": NS,
                                    "uid": dep["metadata"]["uid"]}
    assert ev["reason"] == "AIOpsScaled"
    assert ev["type"] == "Normal"
    assert ev["count"] == 1
    assert "replicas 3→7" in ev["message"] and "max_step_up" in ev["message"]
    assert "queue growing" in ev["message"]
    assert ev["firstTimestamp"] == ev["lastTimestamp"] == k8s_time(T0) == "2023-11-14T22:13:20Z"
    assert TIME.match(ev["firstTimestamp"])
    assert ev["source"] == {"component": "aiops"}
    assert ev["reportingInstance"] == "aiops-0"
    assert ev["metadata"]["name"].startswith(NAME + ".")


def test_a_standing_recommendation_is_one_event_with_a_count(server: FakeApiServer) -> None:
    ann = annotator(server, aggregate_window_s=600)
    for i, r in enumerate((5, 6, 6)):  # a dry-run says the same thing every 15-s tick
        assert ann.annotate(TARGET, decision(r, dry_run=True, t=T0 + 15 * i))
    (ev,) = server.events(NS)
    assert ev["reason"] == "AIOpsRecommendation"
    assert ev["count"] == 3
    assert ev["firstTimestamp"] == k8s_time(T0)
    assert ev["lastTimestamp"] == k8s_time(T0 + 30)
    assert "3→6" in ev["message"]  # the latest numbers
    assert len(server.find("POST")) == 1 and len(server.find("PATCH")) == 2
    assert len(server.find("GET")) == 1  # the UID is cached
    # after the window, a new Event
    assert ann.annotate(TARGET, decision(6, dry_run=True, t=T0 + 30 + 601))
    assert len(server.events(NS)) == 2


def test_quiet_ticks_write_nothing(server: FakeApiServer) -> None:
    ann = annotator(server)
    for i in range(5):
        assert ann.annotate(TARGET, decision(3, t=T0 + 15 * i))
    assert server.requests == []


def test_distinct_applied_changes_are_distinct_events(server: FakeApiServer) -> None:
    ann = annotator(server)
    ann.annotate(TARGET, decision(5, prev=3))
    ann.annotate(TARGET, decision(7, prev=5, t=T0 + 120))
    assert sorted(e["message"].split(";")[0] for e in server.events(NS)) == [
        f"Set {NS}/{NAME} replicas 3→5, batch size 64",
        f"Set {NS}/{NAME} replicas 5→7, batch size 64"]


def test_a_fallback_is_a_warning(server: FakeApiServer) -> None:
    annotator(server).annotate(TARGET, decision(3, rec=1, clamps=(STALE,)))
    (ev,) = server.events(NS)
    assert (ev["type"], ev["reason"]) == ("Warning", "AIOpsFallback")


def test_an_expired_event_is_recreated(server: FakeApiServer) -> None:
    ann = annotator(server)
    ann.annotate(TARGET, decision(5, dry_run=True))
    server.objects = {k: v for k, v in server.objects.items() if k[0] != "events"}  # TTL'd
    assert ann.annotate(TARGET, decision(5, dry_run=True, t=T0 + 15))
    assert [r.status for r in server.writes()] == [201, 404, 201]
    (ev,) = server.events(NS)
    assert ev["count"] == 1


def test_failures_return_false_and_never_raise(server: FakeApiServer) -> None:
    server.deny("create", "events")
    assert not annotator(server).annotate(TARGET, decision(5))
    assert server.events(NS) == []


def test_from_config_builds_its_own_client(server: FakeApiServer, tmp_path: Path) -> None:
    kube = KubernetesConfig(in_cluster=False,
                            kubeconfig=server.write_kubeconfig(tmp_path / "kubeconfig"))
    assert EventAnnotator.from_config(kube, instance="x").annotate(TARGET, decision(5))
    assert [e["reason"] for e in server.events(NS)] == ["AIOpsScaled"]
