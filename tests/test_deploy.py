"""deploy/: the manifests render, validate, ask for least privilege and agree with the code.

The overlays are rendered by ``kubectl kustomize`` (kustomize v5), exactly as ``kubectl
apply -k`` will; set-up checks that kubectl is there (scripts/kubectl.sh). Every other test
checks one promise of the deployment against the code it depends on: the RBAC rules against
the requests the configured daemon really sends (to the loopback API server, which enforces
them), the ConfigMap against aiops.config, the dashboard and alert rules against the metric
names of aiops.telemetry and aiops.ingest.queries, the example target against the
batch-size parser of the actuator.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes.apiserver import FakeApiServer
from fakes.kustomize import (
    DEPLOY,
    LEASE_NAME,
    LEASE_NS,
    ROOT,
    TARGET_DEPLOYMENT,
    TARGET_NS,
    RenderError,
    daemon_config,
    overlay,
    render,
)
from fakes.sources import Overloaded
from fakes.tools import find
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from aiops import telemetry
from aiops.actuate.base import PAUSE_ANNOTATION
from aiops.actuate.k8s import batch_size_patch, find_container, parse_batch_size
from aiops.cli import app
from aiops.clock import SimClock
from aiops.config import Config, parse_config
from aiops.ingest import queries
from aiops.ingest.queries import validate_overrides

OVERLAYS = ("dry-run", "enforce")
RULES_FILE = DEPLOY / "prometheus" / "aiops-rules.yaml"
RULES_TEST_FILE = DEPLOY / "prometheus" / "aiops-rules.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "aiops-dashboard.json"
EXAMPLE = DEPLOY / "examples" / "vllm-llama3-8b.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCS = ROOT / "docs" / "deploy.md"
K8S_VERSIONS = ("1.30.0", "1.33.0")  # oldest still common in managed clusters; recent
SA = ("aiops", "aiops")  # (namespace, name) of the daemon's ServiceAccount

# Peak RSS measured for the Deployment's memory limit (see the comment in
# deploy/base/deployment.yaml): the highest of the simulated runs, the import of the live
# path and one refit of the default forecaster on the longest history the daemon keeps.
MEASURED_PEAK_MIB = 833
MEASURED_STEADY_MIB = 508


# --------------------------------------------------------------------------- rendering
def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def obj_id(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def only(objs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None
                                                       or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The daemon's container (the Deployment has no other)."""
    (c,) = only(objs, "Deployment", "aiops")["spec"]["template"]["spec"]["containers"]
    assert c["name"] == "aiops"
    return c


def all_manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every object deploy/ ships: both overlays, the optional objects and the example."""
    out = [(f"overlay {name}", o) for name in OVERLAYS for o in overlay(name)]
    out += [("optional", o) for o in render(DEPLOY / "optional")]
    out += [("example", o) for o in load_docs(EXAMPLE)]
    return out


def test_a_broken_kustomization_fails_rather_than_skips(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(RenderError, match=r"missing\.yaml"):
        render(tmp_path)


def test_overlays_render_without_duplicates() -> None:
    for name in OVERLAYS:
        ids = Counter(obj_id(o) for o in overlay(name))
        assert [i for i, n in ids.items() if n > 1] == [], name


def test_rendered_objects_per_overlay() -> None:
    base = Counter({"Namespace": 1, "ServiceAccount": 1, "Role": 2, "RoleBinding": 2,
                    "ConfigMap": 1, "Deployment": 1, "Service": 1, "PodDisruptionBudget": 1})
    assert Counter(o["kind"] for o in overlay("dry-run")) == base
    assert Counter(o["kind"] for o in overlay("enforce")) == base + Counter(
        {"Role": 1, "RoleBinding": 1})
    assert Counter(o["kind"] for o in render(DEPLOY / "optional")) == Counter(
        {"ServiceMonitor": 1, "PrometheusRule": 1})


# --------------------------------------------------------------------------- schemas
def _kubernetes_validate() -> Any:
    import kubernetes_validate  # a dev requirement: never skipped

    return kubernetes_validate


CRD_GROUPS = ("monitoring.coreos.com/",)  # no schema in kubernetes-validate: checked below


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    kv = _kubernetes_validate()
    checked = 0
    for where, obj in all_manifests():
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{where}: {obj_id(obj)} is not a valid {obj['kind']} for "
                        f"Kubernetes {version}: {exc.message} at "
                        f"{'.'.join(map(str, exc.path))}")
        checked += 1
    assert checked >= 14


def test_the_schema_check_catches_a_broken_manifest() -> None:
    kv = _kubernetes_validate()
    dep = copy.deepcopy(only(overlay("dry-run"), "Deployment", "aiops"))
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFileSystem"] = True  # a typo strict validation must catch
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, K8S_VERSIONS[-1], strict=True)


def test_prometheus_operator_objects_are_well_formed() -> None:
    objs = render(DEPLOY / "optional")
    sm = only(objs, "ServiceMonitor")
    rule = only(objs, "PrometheusRule")
    for o in (sm, rule):
        assert o["apiVersion"] == "monitoring.coreos.com/v1"
        assert o["metadata"]["namespace"] == "aiops"
    svc = only(overlay("dry-run"), "Service", "aiops")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == ["aiops"]
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= port_names
    # The job label of a ServiceMonitor's targets is the Service's name; the rules use it.
    assert 'job="aiops"' in RULES_FILE.read_text()
    assert svc["metadata"]["name"] == "aiops"


def test_prometheus_rule_holds_the_same_rules_as_the_rule_file() -> None:
    rule = only(render(DEPLOY / "optional"), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())


# --------------------------------------------------------------------------- RBAC
Grant = tuple[str, str, str, str, tuple[str, ...]]  # namespace, apiGroup, resource, verb, names

EXPECTED_RBAC: dict[str, set[Grant]] = {
    "dry-run": {
        ("llm", "apps", "deployments", "get", ("vllm-llama3-8b",)),
        ("llm", "apps", "deployments/scale", "patch", ("vllm-llama3-8b",)),
        ("llm", "", "events", "create", ()),
        ("llm", "", "events", "patch", ()),
        ("aiops", "coordination.k8s.io", "leases", "get", ("aiops-leader",)),
        ("aiops", "coordination.k8s.io", "leases", "update", ("aiops-leader",)),
        ("aiops", "coordination.k8s.io", "leases", "create", ()),
    },
}
EXPECTED_RBAC["enforce"] = EXPECTED_RBAC["dry-run"] | {
    ("llm", "apps", "deployments", "patch", ("vllm-llama3-8b",)),
}


def rbac_violations(objs: Iterable[dict[str, Any]]) -> list[str]:
    """Wildcards anywhere, or cluster-wide objects (aiops needs none)."""
    bad = []
    for o in objs:
        if o["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            bad.append(f"{o['kind']} {o['metadata']['name']}: aiops needs no cluster-wide RBAC")
        if o["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in o.get("rules") or []:
            for field in ("verbs", "resources", "apiGroups", "resourceNames",
                          "nonResourceURLs"):
                if any("*" in str(v) for v in rule.get(field) or []):
                    bad.append(f"{o['kind']} {o['metadata']['name']}: wildcard in {field}")
    return bad


def granted(objs: list[dict[str, Any]], subject: tuple[str, str] = SA) -> set[Grant]:
    """Every (namespace, group, resource, verb, resourceNames) bound to ``subject``."""
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
             for o in objs if o["kind"] == "Role"}
    out: set[Grant] = set()
    for rb in (o for o in objs if o["kind"] == "RoleBinding"):
        ns = rb["metadata"]["namespace"]
        if not any(s["kind"] == "ServiceAccount" and (s["namespace"], s["name"]) == subject
                   for s in rb["subjects"]):
            continue
        assert rb["roleRef"]["kind"] == "Role", rb["metadata"]["name"]
        role = roles[(ns, rb["roleRef"]["name"])]  # a binding to a missing Role fails here
        for rule in role["rules"]:
            names = tuple(sorted(rule.get("resourceNames") or ()))
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((ns, group, res, verb, names))
    return out


def test_the_wildcard_check_catches_a_wildcard() -> None:
    bad = {"kind": "Role", "metadata": {"name": "x", "namespace": "llm"},
           "rules": [{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]}]}
    assert rbac_violations([bad]) == ["Role x: wildcard in resources"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_no_role_grants_a_wildcard_or_anything_cluster_wide(name: str) -> None:
    assert rbac_violations(overlay(name)) == []


@pytest.mark.parametrize("name", OVERLAYS)
def test_rbac_is_exactly_the_expected_table(name: str) -> None:
    objs = overlay(name)
    assert granted(objs) == EXPECTED_RBAC[name]
    # No rule sits in a Role that nothing binds, and nothing else is bound to anyone.
    bound = {(rb["metadata"]["namespace"], rb["roleRef"]["name"])
             for rb in objs if rb["kind"] == "RoleBinding"}
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"])
             for o in objs if o["kind"] == "Role"}
    assert roles == bound
    assert {(s["namespace"], s["name"]) for rb in objs if rb["kind"] == "RoleBinding"
            for s in rb["subjects"]} == {SA}


def effective_config(objs: list[dict[str, Any]]) -> Config:
    """The ConfigMap's config with the Deployment's AIOPS_* variables, as the daemon sees it."""
    cfg, env = daemon_config(objs)
    return parse_config(yaml.safe_dump(cfg), source="configmap aiops-config", environ=env)


def run_shipped_daemon(objs: list[dict[str, Any]], server: FakeApiServer, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch, edit: Callable[[dict[str, Any]], None]
                       = lambda cfg: None, ticks: int = 4) -> None:
    """Build the daemon from the overlay's ConfigMap and environment (``aiops run``'s own
    wiring) with a kubeconfig for ``server``, and run its lease and tick jobs.

    The target is overloaded throughout. After the first tick (a scale-up, or in dry-run its
    server-side check) an operator scales it back by hand and pauses it: the daemon holds,
    explains the hold once, and counts the repeats on that Event."""
    from aiops import wiring

    server.add_deployment(TARGET_NS, TARGET_DEPLOYMENT, replicas=1)
    cfg, env = daemon_config(objs)
    cfg["kubernetes"] = {"in_cluster": False,
                         "kubeconfig": str(server.write_kubeconfig(tmp_path / "kubeconfig"))}
    cfg["grafana"] = {"url": None}
    edit(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for var in [v for v in os.environ if v.startswith("AIOPS_")]:
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(wiring, "setup_logging", lambda *a, **k: None)
    built = wiring.build(path)
    built.controller.source = Overloaded()
    # Ticks a tick interval apart, as the scheduler runs them, without waiting for it.
    clock = SimClock(time.time())
    built.controller.clock = clock
    for tick in range(ticks):
        built.daemon.lease_job()
        assert built.daemon.is_leader
        built.daemon.tick_job()
        clock.advance(built.config.daemon.interval_s)
        if tick == 0:
            server.scale_directly(TARGET_NS, TARGET_DEPLOYMENT, 1)
            server.annotate(TARGET_NS, TARGET_DEPLOYMENT, PAUSE_ANNOTATION, "true")


def sent(server: FakeApiServer) -> set[tuple[str, str, str, str, str]]:
    """(namespace, group, resource, verb, name) of every request the server saw."""
    return {(a.namespace, a.group, a.full_resource, a.verb, a.name)
            for a in (r.authz for r in server.requests) if a is not None}


def forbidden(server: FakeApiServer) -> list[str]:
    return [f"{r.method} {r.path}" for r in server.requests if r.status == 403]


@pytest.mark.parametrize("name", OVERLAYS)
def test_rbac_allows_what_the_configured_daemon_sends_and_nothing_more(
        name: str, make_apiserver: Callable[..., FakeApiServer], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped RBAC against the requests the shipped config really makes: none is
    refused, and every grant is used by one of them (a grant nothing uses is privilege
    nobody needs)."""
    objs = overlay(name)
    server = make_apiserver(name)
    run_shipped_daemon(objs, server, tmp_path, monkeypatch)
    assert forbidden(server) == []
    calls = sent(server)
    unused = [g for g in sorted(granted(objs)) if not any(
        (ns, group, res, verb) == g[:4] and (not g[4] or n in g[4])
        for ns, group, res, verb, n in calls)]
    assert unused == []
    writes = [r for r in server.writes() if r.path.endswith("/scale")]
    assert writes and all(r.dry_run == (name == "dry-run") for r in writes)


def test_a_config_that_needs_more_is_caught(make_apiserver: Callable[..., FakeApiServer],
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A Lease name the Role does not list: the run is refused, and the check sees it."""
    server = make_apiserver("dry-run")

    def rename(cfg: dict[str, Any]) -> None:
        cfg["leader_election"]["lease_name"] = "aiops-other"

    with pytest.raises(AssertionError):
        run_shipped_daemon(overlay("dry-run"), server, tmp_path, monkeypatch, rename)
    assert forbidden(server) == [
        f"GET /apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/aiops-other"]


def test_the_tests_target_is_the_shipped_one() -> None:
    """The other suites run against the shipped RBAC with these names (tests/fakes)."""
    cfg = effective_config(overlay("enforce"))
    (target,) = cfg.targets
    assert (target.namespace, target.deployment) == (TARGET_NS, TARGET_DEPLOYMENT)
    le = cfg.leader_election
    assert (le.namespace, le.lease_name) == (LEASE_NS, LEASE_NAME)


# --------------------------------------------------------------------------- the config
@pytest.mark.parametrize(("name", "dry_run"), [("dry-run", True), ("enforce", False)])
def test_configmap_config_is_valid_and_matches_the_overlay(name: str, dry_run: bool) -> None:
    objs = overlay(name)
    cfg = effective_config(objs)
    for target in cfg.targets:
        validate_overrides(target)
    assert cfg.backend == "kubernetes"
    assert cfg.dry_run is dry_run
    assert cfg.kubernetes.in_cluster
    le = cfg.leader_election
    dep = only(objs, "Deployment", "aiops")
    assert le.enabled and dep["spec"]["replicas"] == 2
    assert le.namespace == dep["metadata"]["namespace"]


def test_configmap_config_passes_aiops_validate_config(tmp_path: Path) -> None:
    cm = only(overlay("dry-run"), "ConfigMap", "aiops-config")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    result = CliRunner().invoke(app, ["validate-config", str(path)])
    assert result.exit_code == 0, result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text(cm["data"]["config.yaml"].replace("max_replicas: 4", "max_replica: 4"))
    assert CliRunner().invoke(app, ["validate-config", str(broken)]).exit_code == 2


def test_the_deployment_mounts_what_the_config_reads() -> None:
    objs = overlay("dry-run")
    cfg = effective_config(objs)
    dep = only(objs, "Deployment", "aiops")
    pod = dep["spec"]["template"]["spec"]
    c = container(objs)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # Config: `--config <mount>/<key>` of the ConfigMap.
    cfg_vol = next(n for n, v in volumes.items()
                   if v.get("configMap", {}).get("name") == "aiops-config")
    assert c["args"] == ["--config", f"{mounts[cfg_vol]['mountPath']}/config.yaml"]
    # Grafana token: a Secret item mounted where grafana.token_file points.
    token = cfg.grafana.token_file
    assert cfg.grafana.url and token is not None
    secret = next(n for n, v in volumes.items() if "secret" in v)
    items = {i["path"] for i in volumes[secret]["secret"]["items"]}
    assert str(token) in {f"{mounts[secret]['mountPath']}/{p}" for p in items}
    # HTTP: one port for the container, the probes, the scrape annotations and the Service.
    port = cfg.daemon.http_port
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http-metrics": port}
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert ports[c[probe]["httpGet"]["port"]] == port
    svc = only(objs, "Service", "aiops")
    assert svc["spec"]["selector"].items() <= pod_labels(dep).items()
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http-metrics"]
    # The Lease holder's identity comes from the downward API.
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert pod["serviceAccountName"] == SA[1] and dep["metadata"]["namespace"] == SA[0]


def pod_labels(dep: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    return labels


# --------------------------------------------------------------------------- the pod
def mebibytes(quantity: str) -> float:
    units = {"Ki": 2**-10, "Mi": 1, "Gi": 2**10, "K": 1e3 / 2**20, "M": 1e6 / 2**20,
             "G": 1e9 / 2**20}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", quantity)
    assert m, quantity
    return float(m.group(1)) * (units[m.group(2)] if m.group(2) else 2**-20)


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_pod_runs_locked_down(name: str) -> None:
    objs = overlay(name)
    pod = only(objs, "Deployment", "aiops")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = container(objs)["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc.get("privileged", False) is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["runAsNonRoot"] is True
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    ns = only(objs, "Namespace", "aiops")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_writable_path_is_an_empty_dir() -> None:
    objs = overlay("dry-run")
    pod = only(objs, "Deployment", "aiops")["spec"]["template"]["spec"]
    c = container(objs)
    empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = [m["mountPath"] for m in c["volumeMounts"]
                if m["name"] in empty and not m.get("readOnly")]
    assert "/tmp" in writable
    env = {e["name"]: e.get("value") for e in c["env"]}
    for var in ("NUMBA_CACHE_DIR", "MPLCONFIGDIR", "HOME", "XDG_CACHE_HOME"):
        assert any(env[var] == w or env[var].startswith(w + "/") for w in writable), var
    for m in c["volumeMounts"]:
        if m["name"] not in empty:
            assert m.get("readOnly") is True, m


def test_resources_are_sized_from_the_measured_memory() -> None:
    objs = overlay("dry-run")
    res = container(objs)["resources"]
    req, lim = mebibytes(res["requests"]["memory"]), mebibytes(res["limits"]["memory"])
    assert req >= MEASURED_STEADY_MIB
    assert lim >= 1.25 * MEASURED_PEAK_MIB and lim >= req
    assert lim <= 4 * MEASURED_PEAK_MIB  # sized, not "as much as possible"
    cpu_limit = cpus(res["limits"]["cpu"])
    assert cpus(res["requests"]["cpu"]) <= cpu_limit
    # Thread pools sized to the CPU limit, not to the node's cores.
    env = {e["name"]: e.get("value") for e in container(objs)["env"]}
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        assert int(env[var]) == max(1, int(cpu_limit)), var


def test_memory_measurement_is_stated_in_the_deployment() -> None:
    text = (DEPLOY / "base" / "deployment.yaml").read_text()
    assert "--duration 10m" in text and "stable-baselines3" in text
    assert f"{MEASURED_PEAK_MIB} MiB" in text


# --------------------------------------------------------------------------- PromQL names
_PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2",
}
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (enough PromQL for deploy/'s expressions).

    Drops strings, label matchers, ranges, label lists of by/on/..., Grafana variables and
    function names; what is left that looks like a name is a metric.
    """
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\$\{[^}]*\}|\$\w+", "", e)  # Grafana variables
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries
    e = _LABEL_LISTS.sub(" ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def known_series() -> set[str]:
    """Series names the daemon exports (counter/histogram suffixes resolved) and the vLLM,
    kube-state-metrics and DCGM names of aiops.ingest.queries, and ``up``."""
    registry = CollectorRegistry()
    telemetry.Telemetry(registry)
    kinds = {fam.name: fam.type for fam in registry.collect()}
    names = {"up"}
    for n in telemetry.METRIC_NAMES:
        base = n.removesuffix("_total")
        kind = kinds.get(n) or kinds.get(base)
        assert kind is not None, f"{n} is in METRIC_NAMES but the daemon does not export it"
        if kind == "counter":
            names.add(base + "_total")
        elif kind == "histogram":
            names |= {n + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(n)
    return names | set(queries.METRIC_NAMES)


def test_the_metric_name_check_sees_every_name() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(foo_bucket{a="x{y}", b=~"[a-z]+"}'
            '[$__rate_interval]))) / on (instance) group_left (pod) (bar == 1) '
            'or vector(0) and vllm:baz{namespace="$namespace"} offset 5m')
    assert promql_metric_names(expr) == {"foo_bucket", "bar", "vllm:baz"}
    assert "aiops_ticks" not in known_series()
    assert {"aiops_ticks_total", "aiops_tick_duration_seconds_bucket", "up"} <= known_series()


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
        assert m, q
        exprs.append(m.group(1))
    return exprs


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def test_dashboard_and_rules_query_only_exported_metrics() -> None:
    known = known_series()
    for where, exprs in (("dashboard", dashboard_exprs()), ("rules", rule_exprs())):
        assert exprs, where
        unknown = {n: e for e in exprs for n in promql_metric_names(e) if n not in known}
        assert unknown == {}, f"{where} queries metrics nobody exports: {unknown}"


def test_dashboard_shows_what_the_issue_asks() -> None:
    used = set().union(*map(promql_metric_names, dashboard_exprs()))
    assert {
        "aiops_recommended_replicas", "aiops_decided_replicas", "aiops_current_replicas",
        "aiops_ready_replicas", "aiops_forecast_load_rps", "aiops_observed_load_rps",
        "aiops_guardrail_firings_total", "aiops_anomaly_score",
        "aiops_tick_duration_seconds_bucket", "aiops_errors_total", "aiops_leader",
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket", "vllm:time_per_output_token_seconds_bucket",
    } <= used
    dash = json.loads(DASHBOARD.read_text())
    assert {v["name"] for v in dash["templating"]["list"]} >= {"namespace", "deployment",
                                                               "target"}
    tag_queries = [a["target"]["tags"] for a in dash["annotations"]["list"]
                   if a.get("target", {}).get("type") == "tags"]
    assert any("aiops" in tags for tags in tag_queries)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    # The vLLM selectors have the shape of aiops.ingest.queries' $vllm (namespace + pod regex).
    suffix = queries.POD_SUFFIX_REGEX
    vllm = [e for e in dashboard_exprs() if "vllm:" in e]
    assert vllm and all(f'pod=~"${{deployment:regex}}{suffix}"' in e for e in vllm)


def test_alert_rules_cover_the_issue_and_point_to_a_runbook() -> None:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    exprs = " ".join(r["expr"] for r in rules.values())
    for needle in ('up{job="aiops"}', "aiops_leader", "aiops_last_success_timestamp_seconds",
                   "aiops_guardrail_firings_total", "aiops_forecast_abs_pct_error",
                   'aiops_errors_total{kind="actuation"}', "aiops_policy_fallback"):
        assert needle in exprs, needle
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", DOCS.read_text(), flags=re.M)}
    for name, r in rules.items():
        assert r["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description", "runbook"} <= set(r["annotations"]), name
        doc, _, anchor = r["annotations"]["runbook"].partition("#")
        assert doc == "docs/deploy.md" and anchor in anchors, (name, anchor)


def _promtool() -> str:
    return find("promtool", env="AIOPS_PROMTOOL_BIN", install="scripts/prometheus.sh install")


@pytest.mark.integration
def test_promtool_accepts_the_rules_and_their_unit_tests_pass(tmp_path: Path) -> None:
    tool = _promtool()
    spec = only(render(DEPLOY / "optional"), "PrometheusRule")["spec"]
    operator_rules = tmp_path / "operator-rules.yaml"
    operator_rules.write_text(yaml.safe_dump(spec))
    for cmd in ([tool, "check", "rules", str(RULES_FILE), str(operator_rules)],
                [tool, "test", "rules", str(RULES_TEST_FILE)]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, f"{shlex.join(cmd)}:\n{out.stdout}{out.stderr}"


# --------------------------------------------------------------------------- Dockerfile
def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions (keyword, arguments) per stage, continuations joined, comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: list[list[tuple[str, str]]] = []
    for ln in joined.splitlines():
        if not ln.strip():
            continue
        keyword, _, args = ln.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword.upper(), args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)  # shell form would run under /bin/sh and swallow SIGTERM
    assert isinstance(value, list) and all(isinstance(a, str) for a in value), args
    return value


def test_dockerfile_entrypoint_runs_aiops_run() -> None:
    final = dockerfile_stages(DOCKERFILE.read_text())[-1]
    entry = [exec_form(a) for k, a in final if k == "ENTRYPOINT"]
    cmd = [exec_form(a) for k, a in final if k == "CMD"]
    argv = (entry[-1] if entry else []) + (cmd[-1] if cmd else [])
    assert argv[:2] == ["aiops", "run"]
    # The Deployment replaces CMD with its args: still `aiops run --config ...`.
    objs = overlay("dry-run")
    assert (entry[-1] + container(objs)["args"])[:3] == ["aiops", "run", "--config"]


def test_dockerfile_builds_a_cpu_only_non_root_image_with_the_artifacts() -> None:
    text = DOCKERFILE.read_text()
    stages = dockerfile_stages(text)
    assert len(stages) >= 2, "multi-stage"
    final = stages[-1]
    users = [a for k, a in final if k == "USER"]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    pod = only(overlay("dry-run"), "Deployment", "aiops")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    # torch: the CPU wheel index, at the version pyproject.toml pins.
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.replace(" ", "").startswith("torch=="))
    version = pin.split("==")[1]
    assert f"ARG TORCH_VERSION={version}" in text
    assert re.search(r"--index-url https://download\.pytorch\.org/whl/cpu\s+\"?torch==",
                     text)
    build_copies = " ".join(a for st in stages[:-1] for k, a in st if k == "COPY")
    for path in ("aiops/", "policies/", "models/"):
        assert re.search(rf"(^|\s){path}\s", build_copies + " "), path
    assert any(k == "COPY" and "--from=" in a and "/app" in a for k, a in final)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {"!aiops/", "!policies/", "!models/", "!pyproject.toml"} <= set(ignore)


# --------------------------------------------------------------------------- example target
def test_example_vllm_target_is_what_the_config_expects() -> None:
    cfg = effective_config(overlay("dry-run"))
    docs = load_docs(EXAMPLE)
    (target,) = cfg.targets
    dep = only(docs, "Deployment", target.deployment)
    assert dep["metadata"]["namespace"] == target.namespace
    c = find_container(dep, target)
    # The daemon reads the batch size from the args exactly as it will in the cluster ...
    batch = parse_batch_size(c, target.batch_size_via)
    assert batch == 64 and batch in target.batch_sizes
    assert target.batch_size_via.arg is not None
    assert f"{target.batch_size_via.arg}=64" in c["args"]
    # ... and could rewrite it in place (tune_batch_size) without touching another argument.
    patch = batch_size_patch(c, target.batch_size_via, 128)
    assert [a for a in patch["args"] if a not in c["args"]] == [f"{target.batch_size_via.arg}=128"]
    assert f"--served-model-name={target.model_name}" in c["args"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    svc = only(docs, "Service", target.deployment)
    assert svc["spec"]["selector"].items() <= pod_labels(dep).items()
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_docs_name_the_real_event_reasons_and_annotations() -> None:
    from aiops.actuate.base import PAUSE_ANNOTATION
    from aiops.annotate.base import REASON_FALLBACK, REASON_RECOMMENDATION, REASON_SCALED

    text = DOCS.read_text()
    for needle in ("kubectl apply -k deploy/overlays/dry-run",
                   "kubectl apply -k deploy/overlays/enforce",
                   f"reason={REASON_RECOMMENDATION}", REASON_SCALED, REASON_FALLBACK,
                   f"{PAUSE_ANNOTATION}=true"):
        assert needle in text, needle
