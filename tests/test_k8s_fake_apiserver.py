"""The fake API server keeps the real server's rules, or the actuator tests would prove little.

Each rule the actuator and leader tests rely on (conflicts, dry-run, patch semantics, time
formats, RBAC messages) is checked here with the real client, so a fake that got lax would
fail here first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import kubernetes.client
import pytest
from fakes.apiserver import (
    ApiError,
    FakeApiServer,
    Fault,
    json_patch,
    merge_patch,
    strategic_merge,
)
from kubernetes.client.exceptions import ApiException


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as s:
        s.add_deployment("ml", "llama", replicas=2)
        yield s


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
