"""The fake API server keeps the real server's rules, or the actuator tests would prove little.

Each rule the actuator and leader tests rely on (authentication, RBAC deny by default,
namespaces, conflicts, no-op writes, other writers, admission, dry-run, patch semantics,
time formats, error messages) is checked here with the real client over HTTPS, so a fake
that got lax would fail here first. The ``server`` fixture grants everything (cluster-admin)
so that the rules other than RBAC are seen on their own; RBAC is tested with the shipped
overlays' Roles.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import kubernetes.client
import pytest
import urllib3
from fakes.apiserver import (
    SERVICE_ACCOUNT,
    ApiError,
    FakeApiServer,
    Fault,
    Webhook,
    json_patch,
    merge_patch,
    strategic_merge,
)
from fakes.kustomize import LEASE_NAME, LEASE_NS, TARGET_DEPLOYMENT, TARGET_NS
from fakes.rbac import Rbac, Request
from kubernetes.client.exceptions import ApiException


@pytest.fixture
def server(make_apiserver: Callable[..., FakeApiServer]) -> FakeApiServer:
    s = make_apiserver(Rbac.allow_all(SERVICE_ACCOUNT), namespaces=("ml", "aiops"))
    s.add_deployment("ml", "llama", replicas=2)
    return s


@pytest.fixture
def apps(server: FakeApiServer) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(server.api_client())


def test_strategic_merge_merges_containers_by_name_and_replaces_args() -> None:
    original = {"containers": [{"name": "a", "image": "x", "args": ["1", "2"],
                                "env": [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}]},
                               {"name": "b", "image": "y"}]}
    patch = {"containers": [{"name": "a", "args": ["3"], "env": [{"name": "F", "value": "9"}]}]}
    out = strategic_merge(original, patch)
    assert out["containers"][0] == {"name": "a", "image": "x", "args": ["3"],
                                    "env": [{"name": "E", "value": "1"},
                                            {"name": "F", "value": "9"}]}
    assert out["containers"][1] == {"name": "b", "image": "y"}
    assert original["containers"][0]["args"] == ["1", "2"]  # not mutated


def test_merge_and_json_patch() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2,
                                                                                      "d": 3}}
    doc = {"spec": {"replicas": 1, "list": [1, 2]}}
    out = json_patch(doc, [{"op": "test", "path": "/spec/replicas", "value": 1},
                           {"op": "replace", "path": "/spec/replicas", "value": 3},
                           {"op": "add", "path": "/spec/list/-", "value": 9}])
    assert out == {"spec": {"replicas": 3, "list": [1, 2, 9]}}
    with pytest.raises(ApiError) as err:
        json_patch(doc, [{"op": "test", "path": "/spec/replicas", "value": 2}])
    assert err.value.code == 422


def test_stale_resource_version_is_409_and_dry_run_persists_nothing(
        server: FakeApiServer, apps: kubernetes.client.AppsV1Api) -> None:
    rv = server.deployment("ml", "llama")["metadata"]["resourceVersion"]
    server.touch("ml", "llama")
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment_scale(
            "llama", "ml", body={"metadata": {"resourceVersion": rv}, "spec": {"replicas": 5}})
    assert err.value.status == 409
    before = server.deployment("ml", "llama")
    out = apps.patch_namespaced_deployment_scale(
        "llama", "ml", body={"spec": {"replicas": 5}}, dry_run="All")
    assert out.spec.replicas == 5  # the answer shows the would-be object
    assert server.deployment("ml", "llama") == before  # and nothing changed
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment_scale("llama", "ml", body={"spec": {"replicas": 5}},
                                               dry_run="Some")
    assert err.value.status == 400


def test_lease_times_must_be_micro_time(server: FakeApiServer) -> None:
    coord = kubernetes.client.CoordinationV1Api(server.api_client())
    body = {"metadata": {"name": "l"}, "spec": {"renewTime": "2024-01-01T00:00:00+00:00"}}
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease("aiops", body=body)
    assert err.value.status == 400
    body["spec"]["renewTime"] = "2024-01-01T00:00:00.000000Z"
    coord.create_namespaced_lease("aiops", body=body)
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease("aiops", body=body)
    assert err.value.status == 409 and "AlreadyExists" in err.value.body


def test_denied_verb_gets_the_real_403_message(server: FakeApiServer,
                                               apps: kubernetes.client.AppsV1Api) -> None:
    server.deny("patch", "deployments/scale")
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment_scale("llama", "ml", body={"spec": {"replicas": 3}})
    assert err.value.status == 403
    message = json.loads(err.value.body)["message"]
    assert 'cannot patch resource "deployments/scale" in API group "apps"' in message
    apps.read_namespaced_deployment("llama", "ml")  # other verbs still allowed


def test_faults_fire_the_given_number_of_times(server: FakeApiServer,
                                               apps: kubernetes.client.AppsV1Api) -> None:
    server.inject(Fault(status=503, method="GET", times=2))
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            apps.read_namespaced_deployment("llama", "ml")
        assert err.value.status == 503
    apps.read_namespaced_deployment("llama", "ml")
    assert [r.status for r in server.find("GET")] == [503, 503, 200]


def test_scale_put_is_conditional_too(server: FakeApiServer,
                                      apps: kubernetes.client.AppsV1Api) -> None:
    scale = apps.read_namespaced_deployment_scale("llama", "ml")
    server.touch("ml", "llama")
    scale.spec.replicas = 6
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment_scale("llama", "ml", body=scale)
    assert err.value.status == 409
    scale = apps.read_namespaced_deployment_scale("llama", "ml")
    scale.spec.replicas = 6
    apps.replace_namespaced_deployment_scale("llama", "ml", body=scale)
    assert server.deployment("ml", "llama")["spec"]["replicas"] == 6


def rv(server: FakeApiServer, ns: str = "ml", name: str = "llama") -> str:
    return str(server.deployment(ns, name)["metadata"]["resourceVersion"])


# --------------------------------------------------------------------------- authentication
def test_a_request_without_a_known_bearer_token_is_401(server: FakeApiServer) -> None:
    anonymous = server.configuration()
    anonymous.api_key, anonymous.api_key_prefix = {}, {}
    for client in (server.api_client("wrong"), kubernetes.client.ApiClient(anonymous)):
        with pytest.raises(ApiException) as err:
            kubernetes.client.AppsV1Api(client).read_namespaced_deployment("llama", "ml")
        assert err.value.status == 401
        assert json.loads(err.value.body)["reason"] == "Unauthorized"
    assert [r.status for r in server.requests] == [401, 401]


def test_https_only_and_only_with_the_ca(server: FakeApiServer) -> None:
    assert server.url.startswith("https://127.0.0.1:")
    plain = server.configuration()
    plain.host = server.url.replace("https://", "http://")
    with pytest.raises((ApiException, urllib3.exceptions.HTTPError)):
        kubernetes.client.AppsV1Api(kubernetes.client.ApiClient(plain)).read_namespaced_deployment(
            "llama", "ml", _request_timeout=(5, 5))
    assert server.requests == []  # plain HTTP never reaches the API


# --------------------------------------------------------------------------- RBAC
def attrs(verb: str, resource: str, name: str = "", ns: str = TARGET_NS, group: str = "apps",
          sub: str = "", user: str = SERVICE_ACCOUNT) -> Request:
    return Request(user, verb, group, resource, sub, ns, name)


def test_nothing_is_allowed_without_a_rule(test_ca: object) -> None:
    with FakeApiServer(namespaces=("ml",)) as s:  # no RBAC given
        s.add_deployment("ml", "llama")
        with pytest.raises(ApiException) as err:
            kubernetes.client.AppsV1Api(s.api_client()).read_namespaced_deployment("llama", "ml")
        assert err.value.status == 403
        assert (f'User "{SERVICE_ACCOUNT}" cannot get resource "deployments" in API group '
                '"apps" in the namespace "ml"') in json.loads(err.value.body)["message"]


def test_the_shipped_roles_allow_exactly_what_they_name(shipped_rbac: dict[str, Rbac]) -> None:
    dry, enforce = shipped_rbac["dry-run"], shipped_rbac["enforce"]
    dep = TARGET_DEPLOYMENT
    assert dry.authorize(attrs("get", "deployments", dep))
    assert dry.authorize(attrs("patch", "deployments", dep, sub="scale"))
    assert not dry.authorize(attrs("patch", "deployments", dep))  # enforce only
    assert enforce.authorize(attrs("patch", "deployments", dep))
    # "deployments" does not cover the scale subresource, and names are names.
    assert not dry.authorize(attrs("update", "deployments", dep, sub="scale"))
    assert not dry.authorize(attrs("get", "deployments", "another"))
    assert not dry.authorize(attrs("get", "deployments", dep, ns="default"))
    assert not dry.authorize(attrs("list", "deployments"))
    # create cannot be limited to a name: the Role's unnamed create rule is what allows it
    assert dry.authorize(attrs("create", "leases", ns=LEASE_NS, group="coordination.k8s.io"))
    assert dry.authorize(attrs("update", "leases", LEASE_NAME, ns=LEASE_NS,
                               group="coordination.k8s.io"))
    assert not dry.authorize(attrs("update", "leases", "other", ns=LEASE_NS,
                                   group="coordination.k8s.io"))
    assert dry.authorize(attrs("create", "events", group=""))
    assert not dry.authorize(attrs("create", "events", group="", ns=LEASE_NS))
    # another service account gets nothing
    other = "system:serviceaccount:aiops:default"
    assert not enforce.authorize(attrs("get", "deployments", dep, user=other))


def test_rbac_bindings_roles_and_groups() -> None:
    objs = [
        {"kind": "ClusterRole", "metadata": {"name": "reader"},
         "rules": [{"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "all-sa"},
         "roleRef": {"kind": "ClusterRole", "name": "reader"},
         "subjects": [{"kind": "Group", "name": "system:serviceaccounts:aiops"}]},
        {"kind": "RoleBinding", "metadata": {"name": "dangling", "namespace": "ml"},
         "roleRef": {"kind": "Role", "name": "missing"},
         "subjects": [{"kind": "ServiceAccount", "name": "aiops", "namespace": "aiops"}]},
    ]
    rbac = Rbac.from_objects(objs)
    assert rbac.authorize(attrs("get", "deployments", "x", ns="any", sub="scale"))
    assert not rbac.authorize(attrs("get", "deployments", "x", ns="any"))
    assert not rbac.authorize(attrs("get", "deployments", "x", sub="scale",
                                    user="system:serviceaccount:other:aiops"))


def test_a_forbidden_request_names_what_is_missing(make_apiserver: Callable[..., FakeApiServer]
                                                   ) -> None:
    s = make_apiserver("dry-run")
    s.add_deployment(TARGET_NS, TARGET_DEPLOYMENT, replicas=2)
    apps = kubernetes.client.AppsV1Api(s.api_client())
    apps.patch_namespaced_deployment_scale(TARGET_DEPLOYMENT, TARGET_NS,
                                           body={"spec": {"replicas": 3}}, dry_run="All")
    with pytest.raises(ApiException) as err:  # dry-run is authorised like the real thing
        apps.patch_namespaced_deployment(TARGET_DEPLOYMENT, TARGET_NS,
                                         body={"metadata": {"labels": {"a": "b"}}},
                                         dry_run="All")
    assert err.value.status == 403
    assert (f'deployments.apps "{TARGET_DEPLOYMENT}" is forbidden: User "{SERVICE_ACCOUNT}" '
            f'cannot patch resource "deployments" in API group "apps" in the namespace '
            f'"{TARGET_NS}"') == json.loads(err.value.body)["message"]
    allowed = [r for r in s.requests if r.status == 200]
    assert [r.allowed_by.role for r in allowed if r.allowed_by] == ["Role llm/aiops-target"]


# --------------------------------------------------------------------------- namespaces
def test_objects_are_created_only_in_namespaces_that_exist(server: FakeApiServer) -> None:
    core = kubernetes.client.CoreV1Api(server.api_client())
    event = {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Deployment", "name": "x"},
             "reason": "R", "type": "Normal"}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_event("nowhere", body=event)
    assert err.value.status == 404
    assert json.loads(err.value.body)["message"] == 'namespaces "nowhere" not found'
    core.create_namespaced_event("ml", body=event)
    with pytest.raises(ValueError, match="add_namespace first"):
        server.add_deployment("nowhere", "x")


# --------------------------------------------------------------------------- versions
def test_a_write_that_changes_nothing_keeps_the_resource_version(server: FakeApiServer) -> None:
    apps = kubernetes.client.AppsV1Api(server.api_client())
    before = server.deployment("ml", "llama")
    out = apps.patch_namespaced_deployment_scale("llama", "ml", body={"spec": {"replicas": 2}})
    assert out.metadata.resource_version == before["metadata"]["resourceVersion"]
    apps.patch_namespaced_deployment("llama", "ml", body={"metadata": {"labels": {"app": "llama"}}})
    assert server.deployment("ml", "llama") == before
    out = apps.patch_namespaced_deployment_scale("llama", "ml", body={"spec": {"replicas": 3}})
    after = server.deployment("ml", "llama")
    assert out.metadata.resource_version == after["metadata"]["resourceVersion"] != \
        before["metadata"]["resourceVersion"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1


def test_the_status_writer_moves_the_version_right_after_a_spec_change(
        server: FakeApiServer) -> None:
    apps = kubernetes.client.AppsV1Api(server.api_client())
    writer = server.status_writer("ml", "llama", after_spec_change=2)
    out = apps.patch_namespaced_deployment_scale("llama", "ml", body={"spec": {"replicas": 4}})
    assert writer.writes == 2
    stored = server.deployment("ml", "llama")
    assert int(stored["metadata"]["resourceVersion"]) == int(out.metadata.resource_version) + 2
    assert stored["status"]["observedGeneration"] == stored["metadata"]["generation"]
    with pytest.raises(ApiException) as err:  # the precondition from the answer is stale
        apps.patch_namespaced_deployment(
            "llama", "ml", body={"metadata": {"resourceVersion": out.metadata.resource_version,
                                              "labels": {"x": "y"}}})
    assert err.value.status == 409
    apps.patch_namespaced_deployment_scale("llama", "ml", body={"spec": {"replicas": 4}})
    assert writer.writes == 2  # a no-op is no spec change: the controller has nothing to do


def test_a_status_writer_after_every_read_makes_every_precondition_stale(
        server: FakeApiServer) -> None:
    apps = kubernetes.client.AppsV1Api(server.api_client())
    writer = server.status_writer("ml", "llama", after_spec_change=0, after_read=True)
    for _ in range(3):
        read = apps.read_namespaced_deployment_scale("llama", "ml")
        with pytest.raises(ApiException) as err:
            apps.patch_namespaced_deployment_scale("llama", "ml", body={
                "metadata": {"resourceVersion": read.metadata.resource_version},
                "spec": {"replicas": 5}})
        assert err.value.status == 409
    writer.stop()
    read = apps.read_namespaced_deployment_scale("llama", "ml")
    apps.patch_namespaced_deployment_scale("llama", "ml", body={
        "metadata": {"resourceVersion": read.metadata.resource_version},
        "spec": {"replicas": 5}})
    assert writer.writes == 3 and server.deployment("ml", "llama")["spec"]["replicas"] == 5


def test_a_periodic_status_writer_makes_a_409_storm(server: FakeApiServer) -> None:
    writer = server.status_writer("ml", "llama", after_spec_change=0, every_s=0.01)
    seen = {rv(server)}
    deadline = threading.Event()
    for _ in range(500):
        if len(seen) >= 3:
            break
        deadline.wait(0.01)
        seen.add(rv(server))
    writer.stop()
    assert len(seen) >= 3 and writer.writes >= 2


# --------------------------------------------------------------------------- admission
def test_webhooks_see_dry_run_writes_with_their_own_message_and_code(
        server: FakeApiServer) -> None:
    apps = kubernetes.client.AppsV1Api(server.api_client())
    server.add_webhook(Webhook("limits.example.com", deny="at most 3 replicas", code=403,
                               dry_run_only=True))
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment_scale("llama", "ml", body={"spec": {"replicas": 5}},
                                               dry_run="All")
    assert err.value.status == 403
    assert json.loads(err.value.body)["message"] == (
        'admission webhook "limits.example.com" denied the request: at most 3 replicas')
    apps.patch_namespaced_deployment_scale("llama", "ml", body={"spec": {"replicas": 5}})
    server.webhooks = [Webhook("audit.example.com", side_effects="Some", code=200,
                               deny="never asked")]
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment_scale("llama", "ml", body={"spec": {"replicas": 6}},
                                               dry_run="All")
    assert err.value.status == 400
    assert "does not support dry run" in json.loads(err.value.body)["message"]
    with pytest.raises(ApiException) as err:  # a code below 400 is made a 400
        apps.patch_namespaced_deployment_scale("llama", "ml", body={"spec": {"replicas": 6}})
    assert err.value.status == 400


def test_a_held_answer_waits_for_the_test(server: FakeApiServer) -> None:
    release = threading.Event()
    server.inject(Fault(hold=release, method="GET"))
    apps = kubernetes.client.AppsV1Api(server.api_client())
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(
        apps.read_namespaced_deployment("llama", "ml").spec.replicas))
    t.start()
    for _ in range(500):
        if server.requests:
            break
        release.wait(0.01)
    assert done == [] and server.requests[0].status == 0
    release.set()
    t.join(30)
    assert done == [2] and server.requests[0].status == 200
