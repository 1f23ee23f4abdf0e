"""KubernetesActuator against the loopback API server, through the official client.

What is asserted is what the API server saw (paths, query, content type, bodies) and what
it holds afterwards, not which Python methods were called. The server speaks HTTPS with a
test CA, checks bearer tokens and enforces the enforce overlay's RBAC (deny by default), so
every call that passes here is one the shipped Role allows on a real cluster; the target is
therefore the shipped config's Deployment.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from fakes.apiserver import STRATEGIC, FakeApiServer, Fault, RecordedRequest, Webhook
from fakes.kustomize import TARGET_DEPLOYMENT, TARGET_NS
from fakes.loopback import refusing_port

from aiops.actuate.base import STATE_ANNOTATION
from aiops.actuate.k8s import (
    ConflictError,
    KubernetesActuator,
    StaleDecisionError,
    batch_size_patch,
    build_configuration,
    parse_batch_size,
)
from aiops.config import BatchSizeVia, KubernetesConfig, TargetConfig
from aiops.errors import ActuationError, PermanentError, TransientError
from aiops.types import Decision, Recommendation

NS, NAME = TARGET_NS, TARGET_DEPLOYMENT
ARGS = ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--max-num-seqs=64", "--port", "8000"]


@pytest.fixture
def server(apiserver: FakeApiServer) -> FakeApiServer:
    apiserver.add_deployment(NS, NAME, replicas=2, ready=2,
                             annotations={"team": "inference", "aiops.io/paused": "false"})
    return apiserver


def actuator(server: FakeApiServer, timeout_s: float = 5.0) -> KubernetesActuator:
    return KubernetesActuator(KubernetesConfig(request_timeout_s=timeout_s),
                              api_client=server.api_client())


def target(**kw: Any) -> TargetConfig:
    base: dict[str, Any] = {"name": "llama", "namespace": NS, "deployment": NAME}
    base.update(kw)
    return TargetConfig(**base)


def decision(replicas: int, prev: int = 2, batch: int = 64, prev_batch: int = 64,
             dry_run: bool = False) -> Decision:
    return Decision(time=1_700_000_000.0, target="llama", replicas=replicas, batch_size=batch,
                    previous_replicas=prev, previous_batch_size=prev_batch,
                    recommendation=Recommendation(replicas), dry_run=dry_run)


def writes(server: FakeApiServer) -> list[RecordedRequest]:
    return server.writes()


# --------------------------------------------------------------------------- read
def test_read_reports_spec_status_batch_annotations_and_version(server: FakeApiServer) -> None:
    server.set_ready(NS, NAME, 1)
    state = actuator(server).read(target())
    dep = server.deployment(NS, NAME)
    assert state.replicas == 2
    assert state.ready_replicas == 1
    assert state.batch_size == 64
    assert state.annotations["team"] == "inference"
    assert not state.paused
    assert state.resource_version == dep["metadata"]["resourceVersion"]
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}")]
    assert server.requests[0].headers["authorization"] == "Bearer test-token"


@pytest.mark.parametrize(("container", "via", "expected"), [
    ({"args": ["--max-num-seqs=128"]}, BatchSizeVia(), 128),
    ({"args": ["--port", "8000", "--max-num-seqs", "32"]}, BatchSizeVia(), 32),
    ({"command": ["vllm", "serve", "m", "--max-num-seqs", "16"]}, BatchSizeVia(), 16),
    ({"command": ["/bin/sh", "-c"], "args": ["exec vllm serve m --max-num-seqs 48 --port 1"]},
     BatchSizeVia(), 48),
    ({"args": ["--max-num-seqs=8", "--max-num-seqs=24"]}, BatchSizeVia(), 24),  # last wins
    ({"args": ["--max-num-seqs=$(SEQS)"]}, BatchSizeVia(), None),
    ({"args": ["--max-num-seqs-extra=9"]}, BatchSizeVia(), None),
    ({"args": ["--port", "1"]}, BatchSizeVia(), None),
    ({"env": [{"name": "MAX_NUM_SEQS", "value": "96"}]}, BatchSizeVia(arg=None, env="MAX_NUM_SEQS"),
     96),
    ({"env": [{"name": "MAX_NUM_SEQS",
               "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]},
     BatchSizeVia(arg=None, env="MAX_NUM_SEQS"), None),
])
def test_parse_batch_size(container: dict[str, Any], via: BatchSizeVia,
                          expected: int | None) -> None:
    assert parse_batch_size({"name": "vllm", **container}, via) == expected


def test_read_names_a_missing_container(server: FakeApiServer) -> None:
    with pytest.raises(PermanentError, match=r"no container 'server' \(it has \['vllm'\]\)"):
        actuator(server).read(target(container="server"))


def test_read_of_a_missing_deployment_is_permanent_and_names_the_target(
        server: FakeApiServer) -> None:
    server.objects.pop(("deployments", NS, NAME))  # deleted under the daemon's feet
    with pytest.raises(PermanentError,
                       match=rf"target 'ghost' \(deployment {NS}/{NAME}\) not found"):
        actuator(server).read(target(name="ghost"))


# --------------------------------------------------------------------------- apply
def test_apply_scales_through_the_scale_subresource_with_a_precondition(
        server: FakeApiServer) -> None:
    rv = server.deployment(NS, NAME)["metadata"]["resourceVersion"]
    result = actuator(server).apply(target(), decision(4), dry_run=False)
    assert result.applied and not result.dry_run
    assert "replicas 2→4" in result.message
    (patch,) = writes(server)
    assert patch.method == "PATCH"
    assert patch.path == f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}/scale"
    assert patch.content_type == STRATEGIC
    assert patch.body == {"metadata": {"resourceVersion": rv}, "spec": {"replicas": 4}}
    assert "dryRun" not in patch.query
    assert patch.query["fieldManager"] == ["aiops"]
    dep = server.deployment(NS, NAME)
    assert dep["spec"]["replicas"] == 4
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"] == ARGS  # untouched


def test_dry_run_sends_the_same_writes_with_dry_run_all_and_persists_nothing(
        server: FakeApiServer) -> None:
    before = server.deployment(NS, NAME)
    d = decision(5, batch=128, dry_run=True)
    result = actuator(server).apply(target(tune_batch_size=True), d, dry_run=True)
    assert not result.applied and result.dry_run
    assert "dry-run accepted" in result.message
    sent = writes(server)
    assert [r.path.rsplit("/", 1)[-1] for r in sent] == ["scale", NAME]
    assert all(r.query.get("dryRun") == ["All"] for r in sent)
    assert all(r.status == 200 for r in sent)
    assert server.deployment(NS, NAME) == before


def test_dry_run_reports_what_the_api_server_would_refuse(server: FakeApiServer) -> None:
    server.inject(Fault(status=422, method="PATCH", path="/scale$",
                        message='Scale.autoscaling "llama" is invalid: admission webhook denied'))
    with pytest.raises(ActuationError, match="admission webhook denied"):
        actuator(server).apply(target(), decision(5, dry_run=True), dry_run=True)


def test_no_change_makes_no_request(server: FakeApiServer) -> None:
    result = actuator(server).apply(target(), decision(2), dry_run=False)
    assert not result.applied
    assert server.requests == []


@pytest.mark.parametrize(("container", "via", "expected"), [
    ({"args": ["--model", "m", "--max-num-seqs=64", "--port", "8000"]}, BatchSizeVia(),
     {"args": ["--model", "m", "--max-num-seqs=128", "--port", "8000"]}),
    ({"args": ["--model", "m", "--max-num-seqs", "64", "--port", "8000"]}, BatchSizeVia(),
     {"args": ["--model", "m", "--max-num-seqs", "128", "--port", "8000"]}),
    ({"command": ["/bin/sh", "-c"], "args": ["exec vllm serve m --max-num-seqs 64 --port 80"]},
     BatchSizeVia(), {"args": ["exec vllm serve m --max-num-seqs 128 --port 80"]}),
    ({"args": ["--port", "8000"],
      "env": [{"name": "A", "value": "1"}, {"name": "MAX_NUM_SEQS", "value": "64"}]},
     BatchSizeVia(arg=None, env="MAX_NUM_SEQS"),
     {"env": [{"name": "MAX_NUM_SEQS", "value": "128"}]}),
])
def test_batch_size_patch_forms(server: FakeApiServer, container: dict[str, Any],
                                via: BatchSizeVia, expected: dict[str, Any]) -> None:
    full = {"name": "vllm", "image": "vllm/vllm-openai:v0.8.5", **container}
    server.add_deployment(NS, NAME, replicas=2, containers=[
        full, {"name": "sidecar", "image": "envoy", "args": ["--max-num-seqs=1"]}])
    t = target(tune_batch_size=True, batch_size_via=via)
    result = actuator(server).apply(t, decision(2, batch=128), dry_run=False)
    assert result.applied
    (patch,) = writes(server)
    assert patch.path.endswith(f"/deployments/{NAME}")
    assert patch.content_type == STRATEGIC
    assert patch.body["spec"]["template"]["spec"]["containers"] == [{"name": "vllm", **expected}]
    stored = server.container(NS, NAME, "vllm")
    for key, value in container.items():  # everything else is as it was
        if key not in expected:
            assert stored[key] == value
    assert parse_batch_size(stored, via) == 128
    if via.env:
        assert stored["env"][0] == {"name": "A", "value": "1"}
    assert server.container(NS, NAME, "sidecar")["args"] == ["--max-num-seqs=1"]


def test_scale_and_batch_in_one_decision_chain_the_resource_version(
        server: FakeApiServer) -> None:
    actuator(server).apply(target(tune_batch_size=True), decision(3, batch=32), dry_run=False)
    scale, template = writes(server)
    assert scale.status == template.status == 200
    assert template.body["metadata"]["resourceVersion"] != scale.body["metadata"][
        "resourceVersion"]
    dep = server.deployment(NS, NAME)
    assert dep["spec"]["replicas"] == 3
    assert "--max-num-seqs=32" in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_batch_change_is_ignored_when_tuning_is_off(server: FakeApiServer) -> None:
    result = actuator(server).apply(target(), decision(2, batch=128), dry_run=False)
    assert not result.applied
    assert "tune_batch_size is off" in result.message
    assert writes(server) == []


@pytest.mark.parametrize(("container", "via", "match"), [
    ({"args": ["--port", "8000"]}, BatchSizeVia(), "has no --max-num-seqs argument"),
    ({"args": ["--max-num-seqs=$(SEQS)"]}, BatchSizeVia(), "not a number"),
    ({"env": [{"name": "SEQS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     BatchSizeVia(arg=None, env="SEQS"), "not a literal number"),
    ({"env": []}, BatchSizeVia(arg=None, env="SEQS"), "no environment variable SEQS"),
])
def test_batch_size_patch_refuses_to_invent_a_setting(container: dict[str, Any],
                                                      via: BatchSizeVia, match: str) -> None:
    with pytest.raises(PermanentError, match=match):
        batch_size_patch({"name": "vllm", **container}, via, 128)


# --------------------------------------------------------------------------- conflicts
def test_a_conflict_is_re_read_and_retried_once(server: FakeApiServer) -> None:
    first = []

    def another_writer(req: RecordedRequest) -> None:
        if req.method == "PATCH" and not first:  # a status update lands first
            first.append(req)
            server.touch(NS, NAME)

    server.hook = another_writer
    result = actuator(server).apply(target(), decision(4), dry_run=False)
    assert result.applied
    assert [(r.method, r.status) for r in server.requests] == [
        ("GET", 200), ("PATCH", 409), ("GET", 200), ("PATCH", 200)]
    assert server.deployment(NS, NAME)["spec"]["replicas"] == 4


def test_a_second_conflict_gives_up_until_the_next_tick(server: FakeApiServer) -> None:
    server.hook = lambda req: server.touch(NS, NAME) if req.method == "PATCH" else None
    with pytest.raises(ConflictError, match="giving up until the next tick") as err:
        actuator(server).apply(target(), decision(4), dry_run=False)
    assert isinstance(err.value, TransientError)
    assert [r.status for r in server.find("PATCH")] == [409, 409]
    assert server.deployment(NS, NAME)["spec"]["replicas"] == 2


def test_a_partial_apply_is_completed_on_retry(server: FakeApiServer) -> None:
    server.hook = (lambda req: server.touch(NS, NAME)
                   if req.method == "PATCH" and req.path.endswith(NAME)
                   and len(server.find("PATCH", NAME + "$")) == 1 else None)
    actuator(server).apply(target(tune_batch_size=True), decision(3, batch=32), dry_run=False)
    assert [(r.path.rsplit("/", 1)[-1], r.status) for r in server.find("PATCH")] == [
        ("scale", 200), (NAME, 409), (NAME, 200)]  # the scale is not sent twice
    dep = server.deployment(NS, NAME)
    assert dep["spec"]["replicas"] == 3
    assert "--max-num-seqs=32" in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_a_decision_made_from_stale_replicas_is_not_applied(server: FakeApiServer) -> None:
    server.scale_directly(NS, NAME, 7)  # an operator scaled by hand after our read
    with pytest.raises(StaleDecisionError, match="replicas are 7, not the 2"):
        actuator(server).apply(target(), decision(1), dry_run=False)
    assert writes(server) == []
    assert server.deployment(NS, NAME)["spec"]["replicas"] == 7


# --------------------------------------------------------------------------- failures
@pytest.mark.parametrize(("verb", "resource", "call"), [
    ("patch", "deployments/scale", "apply"),
    ("get", "deployments", "read"),
    ("patch", "deployments", "save_state"),
])
def test_forbidden_names_the_missing_permission(server: FakeApiServer, verb: str,
                                                resource: str, call: str) -> None:
    server.deny(verb, resource)
    act = actuator(server)
    with pytest.raises(PermanentError) as err:
        if call == "apply":
            act.apply(target(), decision(4), dry_run=True)
        elif call == "read":
            act.read(target())
        else:
            act.save_state(target(), {STATE_ANNOTATION: "{}"})
    msg = str(err.value)
    assert f"grant verb '{verb}' on resource '{resource}' in apiGroup apps" in msg
    assert f"namespace {NS}" in msg


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_transient(server: FakeApiServer, status: int) -> None:
    server.inject(Fault(status=status, method="PATCH"))
    with pytest.raises(TransientError, match=f"API server error {status}"):
        actuator(server).apply(target(), decision(4), dry_run=False)


def test_a_slow_answer_times_out_as_transient(server: FakeApiServer) -> None:
    release = threading.Event()
    server.inject(Fault(hold=release, method="GET"))
    try:
        with pytest.raises(TransientError, match="timed out"):
            actuator(server, timeout_s=0.3).read(target())
        (get,) = server.find("GET")  # one try, no hidden urllib3 retries
        assert get.status == 0  # the client gave up before the server answered
    finally:
        release.set()


def test_an_unreachable_server_is_transient(server: FakeApiServer) -> None:
    sock, port = refusing_port()
    with sock:
        conf = server.configuration()
        conf.host = f"https://127.0.0.1:{port}"
        act = KubernetesActuator(KubernetesConfig(request_timeout_s=5.0),
                                 api_client=kubernetes.client.ApiClient(conf))
        with pytest.raises(TransientError, match="unreachable"):
            act.read(target())


# --------------------------------------------------------------------------- who may call
def test_a_deployment_the_role_does_not_name_is_forbidden(server: FakeApiServer) -> None:
    server.add_deployment(NS, "unlisted", replicas=2)
    with pytest.raises(PermanentError, match="grant verb 'get' on resource 'deployments'"):
        actuator(server).read(target(deployment="unlisted"))
    (get,) = server.find("GET")
    assert get.status == 403 and get.allowed_by is None


def test_every_call_is_allowed_by_a_shipped_role(server: FakeApiServer) -> None:
    act = actuator(server)
    act.apply(target(tune_batch_size=True), decision(3, batch=32), dry_run=False)
    act.save_state(target(), {STATE_ANNOTATION: "{}"})
    assert server.requests and all(r.status == 200 for r in server.requests)
    assert {r.allowed_by.role for r in server.requests if r.allowed_by} == {
        "Role llm/aiops-target", "Role llm/aiops-target-writer"}


def test_a_token_the_server_does_not_know_is_unauthorized(server: FakeApiServer) -> None:
    act = KubernetesActuator(KubernetesConfig(), api_client=server.api_client(token="stolen"))
    with pytest.raises(PermanentError, match=r"unauthorized.*credentials were refused"):
        act.read(target())
    assert [r.status for r in server.requests] == [401]


def test_a_server_certificate_from_another_ca_is_refused(server: FakeApiServer,
                                                         tmp_path: Path) -> None:
    from fakes.tls import make_test_ca

    conf = server.configuration()
    conf.ssl_ca_cert = str(make_test_ca(tmp_path / "other-ca").ca_cert)
    act = KubernetesActuator(KubernetesConfig(), api_client=kubernetes.client.ApiClient(conf))
    with pytest.raises(PermanentError, match="TLS certificate is not signed by the configured CA"):
        act.read(target())
    assert server.requests == []  # nothing was sent to a server we could not verify


# --------------------------------------------------------------------------- admission
def test_a_webhook_denial_is_reported_as_a_webhook_not_as_rbac(server: FakeApiServer) -> None:
    server.add_webhook(Webhook("replicas.policy.example.com",
                               deny="llm/vllm-llama3-8b may not exceed 3 replicas"))
    with pytest.raises(ActuationError) as err:
        actuator(server).apply(target(), decision(5, dry_run=True), dry_run=True)
    msg = str(err.value)
    assert 'admission webhook "replicas.policy.example.com" denied the request' in msg
    assert "may not exceed 3 replicas" in msg
    assert "grant verb" not in msg and "Role" not in msg
    (patch,) = server.find("PATCH")
    assert patch.status == 403 and patch.dry_run


def test_a_webhook_with_side_effects_refuses_dry_run_only(server: FakeApiServer) -> None:
    server.add_webhook(Webhook("audit.example.com", side_effects="Unknown"))
    with pytest.raises(ActuationError, match=r'"audit\.example\.com" does not support dry run'):
        actuator(server).apply(target(), decision(5, dry_run=True), dry_run=True)
    assert actuator(server).apply(target(), decision(5), dry_run=False).applied


# --------------------------------------------------------------------------- other writers
def test_the_controllers_status_write_after_a_scale_is_survived(server: FakeApiServer) -> None:
    """The Deployment controller writes the status right after the scale: the template
    patch's precondition, taken from the scale answer, is already stale. One re-read
    completes the decision without sending the scale again."""
    server.status_writer(NS, NAME, after_spec_change=1)
    result = actuator(server).apply(target(tune_batch_size=True), decision(3, batch=32),
                                    dry_run=False)
    assert result.applied
    assert [(r.method, r.path.rsplit("/", 1)[-1], r.status) for r in server.requests] == [
        ("GET", NAME, 200), ("PATCH", "scale", 200), ("PATCH", NAME, 409),
        ("GET", NAME, 200), ("PATCH", NAME, 200)]
    dep = server.deployment(NS, NAME)
    assert dep["spec"]["replicas"] == 3
    assert "--max-num-seqs=32" in dep["spec"]["template"]["spec"]["containers"][0]["args"]


# --------------------------------------------------------------------------- state
def test_save_state_merges_annotations_without_touching_others(server: FakeApiServer) -> None:
    act = actuator(server)
    act.save_state(target(), {STATE_ANNOTATION: '{"cooldown_until": 1}',
                              "aiops.io/last-scale-time": "1700000000"})
    (patch,) = writes(server)
    assert patch.content_type == STRATEGIC
    assert "resourceVersion" not in patch.body["metadata"]
    state = act.read(target())
    assert state.annotations == {"team": "inference", "aiops.io/paused": "false",
                                 STATE_ANNOTATION: '{"cooldown_until": 1}',
                                 "aiops.io/last-scale-time": "1700000000"}
    dep = server.deployment(NS, NAME)
    assert dep["spec"]["replicas"] == 2


# --------------------------------------------------------------------------- configuration
def test_a_kubeconfig_file_selects_the_context_and_switches_off_hidden_retries(
        server: FakeApiServer, tmp_path: Path) -> None:
    assert server.tls is not None
    fake = {"server": server.url, "certificate-authority": str(server.tls.ca_cert)}
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "wrong",
        "clusters": [{"name": "fake", "cluster": fake},
                     {"name": "nowhere", "cluster": {"server": "https://nowhere.invalid"}}],
        "users": [{"name": "u", "user": {"token": "kubeconfig-token"}}],
        "contexts": [{"name": "right", "context": {"cluster": "fake", "user": "u"}},
                     {"name": "wrong", "context": {"cluster": "nowhere", "user": "u"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    cfg = KubernetesConfig(in_cluster=False, kubeconfig=path, context="right")
    assert build_configuration(cfg).retries is False
    act = KubernetesActuator(cfg)
    assert act.read(target()).replicas == 2
    assert server.requests[-1].headers["authorization"] == "Bearer kubeconfig-token"


def test_in_cluster_outside_a_cluster_is_a_permanent_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(PermanentError, match="in-cluster service account"):
        build_configuration(KubernetesConfig(in_cluster=True))


def test_an_untunable_batch_size_does_not_block_scaling(server: FakeApiServer) -> None:
    server.add_deployment(NS, NAME, replicas=2, containers=[
        {"name": "vllm", "image": "vllm/vllm-openai:v0.8.5", "args": ["--port", "8000"]}])
    t = target(tune_batch_size=True)
    with pytest.raises(PermanentError, match=r"replicas 2→4 applied, but the batch size "
                                             r"cannot be changed: .*has no --max-num-seqs"):
        actuator(server).apply(t, decision(4, batch=128), dry_run=False)
    assert server.deployment(NS, NAME)["spec"]["replicas"] == 4
    assert [r.path.rsplit("/", 1)[-1] for r in writes(server)] == ["scale"]
