"""A loopback Kubernetes API server that speaks the REST paths aiops uses, by the real rules.

No API server can be installed where the tests run, so this one stands in for it. The real
``kubernetes`` client talks to it over HTTPS, which is the point: a fake *client* would only
prove that aiops calls the methods it thinks it calls, while this server checks the wire
(TLS against a CA, bearer tokens, paths, query parameters, patch content types, JSON bodies,
time formats) the way the real one would, and answers the way the real one does (``Status``
objects with ``reason`` and ``code``, ``resourceVersion`` conflicts, server-side dry-run).

Paths served (everything else is 404):

* ``/apis/apps/v1/namespaces/{ns}/deployments/{name}``: GET, PATCH, PUT
* ``/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale``: GET, PATCH, PUT
* ``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]``: GET, POST, PUT
* ``/api/v1/namespaces/{ns}/events[/{name}]``: GET, POST, PATCH (core/v1 Events, the ones
  ``kubectl describe`` lists, with ``count`` aggregation)

Rules kept from the real server, in the order it applies them:

* Authentication: a bearer token the server knows (``tokens``), else 401 ``Unauthorized``.
* Authorisation: RBAC, deny by default (:mod:`fakes.rbac`), loaded from the Roles and
  RoleBindings that ``kubectl kustomize deploy/overlays/<mode>`` renders; a refusal is the
  real 403 message. Dry-run requests are authorised like real ones.
* Namespaces must exist: creating an object in a missing one is 404 ``namespaces "x" not
  found`` (the NamespaceLifecycle admission plugin).
* ``dryRun=All`` runs every stage (decode, patch, validate, admission, conflict check) but
  persists nothing; any other ``dryRun`` value is a 400.
* Admission webhooks (:class:`Webhook`) see writes after validation: one may deny with its
  own message and code, and one with side effects refuses every dry-run request (400
  ``admission webhook "x" does not support dry run``).
* Optimistic concurrency: a PUT whose ``metadata.resourceVersion`` is set, or a PATCH that
  sets it, must match the stored object, else 409 ``Conflict``. The scale subresource shares
  the Deployment's ``resourceVersion``. A write that changes nothing keeps the
  ``resourceVersion`` (and ``generation``), as the real storage layer skips no-op updates.
* Other writers: :meth:`FakeApiServer.status_writer` plays the Deployment controller, which
  writes the status right after every spec change (so a precondition taken from the scale
  answer is already stale) and, optionally, on a period (a 409 storm).
* PATCH content types: ``application/strategic-merge-patch+json`` (lists with a merge key,
  such as ``containers`` and ``env``, merge by ``name``; other lists are replaced),
  ``application/merge-patch+json`` (RFC 7386) and ``application/json-patch+json``
  (RFC 6902: add, remove, replace, test).
* Lease ``acquireTime``/``renewTime`` must be ``MicroTime`` (exactly six fractional digits),
  Event timestamps ``Time`` (RFC 3339), as the real decoder insists.

Fault injection for tests: :meth:`FakeApiServer.inject` (any status, a delay, a hold until
released, on matching requests, a number of times), :meth:`FakeApiServer.deny` (revoke one
verb on one resource on top of RBAC), :attr:`FakeApiServer.hook` (runs before a request is
served, outside the lock, to stage races). Every request is recorded in :attr:`requests`,
with the user it authenticated as and the RBAC rule that allowed it.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes.client

from .loopback import LoopbackHTTP
from .rbac import Grant, Rbac, service_account_user
from .rbac import Request as AuthzRequest
from .tls import TestCA

JSON = dict[str, Any]

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# Lists that strategic merge patch merges by a key instead of replacing (from the k8s API's
# x-kubernetes-patch-merge-key annotations); only those on a Deployment's pod template path.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}

MICRO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")

DEPLOYMENT_PATH = re.compile(
    r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)(?P<sub>/scale)?$"
)
LEASE_PATH = re.compile(
    r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/leases(?:/(?P<name>[^/]+))?$"
)
EVENT_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/events(?:/(?P<name>[^/]+))?$")

VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An answer other than 2xx, carried to the handler as a ``Status`` object."""

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> JSON:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details or {},
            "code": self.code,
        }


@dataclass
class RecordedRequest:
    """One request as the server saw it (headers lower-cased, body decoded from JSON)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int = 0  # 0 until the answer is sent
    received: float = field(default_factory=time.monotonic)  # when it arrived
    user: str = ""  # who the bearer token authenticated
    allowed_by: Grant | None = None  # the RBAC rule that allowed it
    authz: AuthzRequest | None = None  # its authorisation attributes

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == ["All"]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


@dataclass
class Fault:
    """An injected misbehaviour for requests that match ``method`` and ``path`` (a regex).

    ``status`` None with a ``delay_s`` is a slow but correct answer; with ``hold`` the answer
    waits until the test sets that event (or the server stops, or ``hold_max_s`` passes, so
    a client that never gives up fails its test instead of hanging it), and a test can tell
    "the client gave up before the answer" from "the answer came" without timing anything.
    ``times`` None means every matching request; otherwise the fault disarms after that many
    hits.
    """

    status: int | None = None
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    delay_s: float = 0.0
    hold: threading.Event | None = None
    hold_max_s: float = 30.0
    message: str = "injected fault"
    hits: int = 0

    def matches(self, req: RecordedRequest) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != req.method:
            return False
        return self.path is None or re.search(self.path, req.path) is not None


@dataclass
class Webhook:
    """A validating admission webhook on writes to ``resource`` (``deployments/scale``...).

    ``deny``: it refuses every matching write with this message and ``code`` (403 is what
    policy engines such as Gatekeeper answer; the API server makes anything below 400 a 400).
    ``side_effects``: ``None``/``NoneOnDryRun`` let dry-run requests through to the
    webhook; ``Unknown``/``Some`` make the API server refuse every dry-run request it
    matches, before asking the webhook.
    """

    name: str
    resource: str = "deployments/scale"
    deny: str | None = None
    code: int = 403
    side_effects: str = "None"
    dry_run_only: bool = False  # deny only dry-run requests (a policy on recommendations)

    def check(self, route: _Route, dry_run: bool) -> None:
        if route.resource != self.resource:
            return
        if dry_run and self.side_effects in ("Unknown", "Some"):
            raise ApiError(400, f'admission webhook "{self.name}" does not support dry run')
        if self.deny is not None and (dry_run or not self.dry_run_only):
            raise ApiError(max(400, self.code),
                           f'admission webhook "{self.name}" denied the request: {self.deny}')


@dataclass
class StatusWriter:
    """The Deployment controller's status writes on one Deployment (see the module doc)."""

    namespace: str
    name: str
    after_spec_change: int = 1
    every_s: float | None = None
    after_read: bool = False  # a write right after every read: each precondition is stale
    writes: int = 0
    _thread: threading.Thread | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def stop(self) -> None:
        self._stop.set()
        self.after_spec_change, self.after_read = 0, False
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass
class _Route:
    resource: str  # RBAC resource, with subresource: "deployments/scale"
    group: str  # API group, "" for core
    kind_plural: str  # "deployments.apps", as real error messages name it
    ns: str
    name: str | None


# --------------------------------------------------------------------------- patches
def strategic_merge(original: Any, patch: Any, key: str = "") -> Any:
    """Apply a strategic merge patch (the subset a Deployment's pod template needs).

    Maps merge, keyed lists (``MERGE_KEYS``) merge by key, other lists replace. New items of
    a keyed list are appended, as the API server does."""
    if isinstance(patch, dict) and isinstance(original, dict):
        out = dict(original)
        for k, v in patch.items():
            if k.startswith("$"):
                raise ApiError(400, f"unsupported strategic merge directive {k!r}")
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(patch, list) and isinstance(original, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out_list = [copy.deepcopy(x) for x in original]
        added = []
        for item in patch:
            if not isinstance(item, dict) or mk not in item:
                raise ApiError(400, f"strategic merge patch: every {key} item needs {mk!r}")
            for i, existing in enumerate(out_list):
                if isinstance(existing, dict) and existing.get(mk) == item[mk]:
                    out_list[i] = strategic_merge(existing, item, "")
                    break
            else:
                added.append(copy.deepcopy(item))
        return out_list + added
    return copy.deepcopy(patch)


def merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(original) if isinstance(original, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(400, f"json patch: bad path {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(original: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test)."""
    if not isinstance(ops, list):
        raise ApiError(400, "json patch body must be a list of operations")
    doc = copy.deepcopy(original)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, f"json patch: malformed operation {op!r}")
        parts = _pointer(op["path"])
        if not parts:
            raise ApiError(400, "json patch: the root cannot be patched")
        parent: Any = doc
        try:
            for p in parts[:-1]:
                parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, f"json patch: path {op['path']!r} does not exist") from None
        last = parts[-1]
        kind = op["op"]
        try:
            if kind == "test":
                current = parent[int(last)] if isinstance(parent, list) else parent[last]
                if current != op.get("value"):
                    raise ApiError(422, f"json patch: test failed at {op['path']!r}")
            elif kind == "remove":
                if isinstance(parent, list):
                    del parent[int(last)]
                else:
                    del parent[last]
            elif kind in ("add", "replace"):
                value = copy.deepcopy(op.get("value"))
                if isinstance(parent, list):
                    if last == "-" and kind == "add":
                        parent.append(value)
                    elif kind == "add":
                        parent.insert(int(last), value)
                    else:
                        parent[int(last)] = value
                else:
                    if kind == "replace" and last not in parent:
                        raise KeyError(last)
                    parent[last] = value
            else:
                raise ApiError(400, f"json patch: unsupported op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, f"json patch: path {op['path']!r} does not exist") from None
    return doc


def apply_patch(original: JSON, content_type: str, body: Any) -> JSON:
    if content_type == STRATEGIC:
        out = strategic_merge(original, body)
    elif content_type == MERGE:
        out = merge_patch(original, body)
    elif content_type == JSON_PATCH:
        out = json_patch(original, body)
    else:
        raise ApiError(415, f"the body of the request was in an unknown format: {content_type}")
    if not isinstance(out, dict):
        raise ApiError(422, "patch did not produce an object")
    return out


# --------------------------------------------------------------------------- validation
def _invalid(kind: str, name: str, problems: list[str]) -> ApiError:
    return ApiError(422, f'{kind} "{name}" is invalid: ' + "; ".join(problems),
                    details={"name": name, "causes": [{"message": p} for p in problems]})


def _check_annotations(meta: JSON, problems: list[str]) -> None:
    ann = meta.get("annotations")
    if ann is None:
        return
    if not isinstance(ann, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in ann.items()):
        problems.append("metadata.annotations: values must be strings")
    elif sum(len(k) + len(v) for k, v in ann.items()) > 256 * 1024:
        problems.append("metadata.annotations: Too long: must have at most 262144 bytes")


def validate_deployment(obj: JSON) -> None:
    problems: list[str] = []
    meta = obj.get("metadata", {})
    _check_annotations(meta, problems)
    spec = obj.get("spec", {})
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        problems.append(f"spec.replicas: Invalid value: {replicas!r}: must be >= 0")
    containers = spec.get("template", {}).get("spec", {}).get("containers")
    if not isinstance(containers, list) or not containers:
        problems.append("spec.template.spec.containers: Required value")
        containers = []
    for i, c in enumerate(containers):
        where = f"spec.template.spec.containers[{i}]"
        if not isinstance(c, dict) or not c.get("name") or not c.get("image"):
            problems.append(f"{where}: name and image are required")
            continue
        for lst in ("args", "command"):
            if lst in c and not (isinstance(c[lst], list)
                                 and all(isinstance(a, str) for a in c[lst])):
                problems.append(f"{where}.{lst}: must be a list of strings")
        for j, e in enumerate(c.get("env", []) or []):
            if not isinstance(e, dict) or not isinstance(e.get("name"), str):
                problems.append(f"{where}.env[{j}].name: Required value")
            elif "value" in e and not isinstance(e["value"], str):
                problems.append(f"{where}.env[{j}].value: must be a string")
            elif "value" in e and "valueFrom" in e:
                problems.append(f"{where}.env[{j}].valueFrom: may not be specified when "
                                "`value` is not empty")
    if problems:
        raise _invalid("Deployment.apps", meta.get("name", ""), problems)


def validate_lease(obj: JSON) -> None:
    spec = obj.get("spec") or {}
    for f in ("acquireTime", "renewTime"):
        v = spec.get(f)
        if v is not None and (not isinstance(v, str) or not MICRO_TIME.match(v)):
            raise ApiError(400, f'Lease in version "v1" cannot be handled as a Lease: '
                                f'v1.LeaseSpec.{f}: parsing time {v!r} as '
                                '"2006-01-02T15:04:05.000000Z07:00"')
    problems = []
    d = spec.get("leaseDurationSeconds")
    if d is not None and (not isinstance(d, int) or d <= 0):
        problems.append(f"spec.leaseDurationSeconds: Invalid value: {d!r}: must be > 0")
    t = spec.get("leaseTransitions")
    if t is not None and (not isinstance(t, int) or t < 0):
        problems.append(f"spec.leaseTransitions: Invalid value: {t!r}: must be >= 0")
    h = spec.get("holderIdentity")
    if h is not None and not isinstance(h, str):
        problems.append("spec.holderIdentity: must be a string")
    if problems:
        raise _invalid("Lease.coordination.k8s.io", obj["metadata"].get("name", ""), problems)


def validate_event(obj: JSON, ns: str) -> None:
    for f in ("firstTimestamp", "lastTimestamp"):
        v = obj.get(f)
        if v is not None and (not isinstance(v, str) or not TIME.match(v)):
            raise ApiError(400, f'Event in version "v1" cannot be handled as a Event: '
                                f"parsing time {v!r}")
    problems = []
    inv = obj.get("involvedObject") or {}
    if not inv.get("kind") or not inv.get("name"):
        problems.append("involvedObject: kind and name are required")
    if inv.get("namespace", ns) != ns:
        problems.append("involvedObject.namespace: Invalid value: does not match event.namespace")
    if obj.get("type") not in ("Normal", "Warning"):
        problems.append(f"type: Unsupported value: {obj.get('type')!r}")
    if not obj.get("reason"):
        problems.append("reason: Required value")
    count = obj.get("count")
    if count is not None and (not isinstance(count, int) or count < 1):
        problems.append(f"count: Invalid value: {count!r}")
    if problems:
        raise _invalid("Event", obj.get("metadata", {}).get("name", ""), problems)


# --------------------------------------------------------------------------- the server
SERVICE_ACCOUNT = service_account_user("aiops", "aiops")
"""The user the daemon's service-account token authenticates as (deploy/base)."""


class FakeApiServer:
    """In-memory objects behind the real REST paths; start with ``with FakeApiServer() as s``.

    ``tls``: serve HTTPS with this CA's server certificate (plain HTTP without).
    ``tokens``: bearer token → user name; by default ``test-token`` and ``kubeconfig-token``
    are the daemon's service account. ``rbac``: who may do what; None allows nothing.
    ``namespaces``: the namespaces that exist.
    """

    def __init__(self, user: str = SERVICE_ACCOUNT, *, tls: TestCA | None = None,
                 tokens: dict[str, str] | None = None, rbac: Rbac | None = None,
                 namespaces: Iterable[str] = ("default",)) -> None:
        self.user = user
        self.tls = tls
        self.tokens = dict(tokens) if tokens is not None else {
            "test-token": user, "kubeconfig-token": user}
        self.rbac = rbac if rbac is not None else Rbac()
        self.namespaces: set[str] = set(namespaces)
        self.objects: dict[tuple[str, str, str], JSON] = {}
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.denied: set[tuple[str, str]] = set()
        self.webhooks: list[Webhook] = []
        self.status_writers: list[StatusWriter] = []
        self.hook: Callable[[RecordedRequest], None] | None = None
        self._rv = 1000
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._http = LoopbackHTTP(self._serve,
                                  tls=tls.server_context() if tls is not None else None)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeApiServer:
        self._http.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for w in self.status_writers:
            w.stop()
        self._http.stop()

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def url(self) -> str:
        return self._http.url

    def configuration(self, token: str = "test-token") -> kubernetes.client.Configuration:
        """A client configuration for this server, as a kubeconfig would give it."""
        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        cfg.proxy = None
        cfg.retries = False  # as aiops configures it: no hidden urllib3 retries
        if self.tls is not None:
            cfg.ssl_ca_cert = str(self.tls.ca_cert)
            cfg.verify_ssl = True
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return cfg

    def api_client(self, token: str = "test-token") -> kubernetes.client.ApiClient:
        return kubernetes.client.ApiClient(self.configuration(token))

    def write_kubeconfig(self, path: Path, token: str = "kubeconfig-token") -> Path:
        """A kubeconfig whose context ``fake`` points here (the default context too), with
        the CA inline, as ``kubectl config view --raw`` shows a real cluster's."""
        cluster: JSON = {"server": self.url}
        if self.tls is not None:
            cluster["certificate-authority-data"] = base64.b64encode(
                self.tls.ca_pem()).decode()
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
        }
        path.write_text(json.dumps(doc))  # JSON is YAML
        return path

    # ------------------------------------------------------------------ test helpers
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add_namespace(self, namespace: str) -> None:
        with self._lock:
            self.namespaces.add(namespace)

    def add_deployment(self, namespace: str, name: str, *, replicas: int = 1,
                       ready: int | None = None, containers: list[JSON] | None = None,
                       annotations: dict[str, str] | None = None) -> JSON:
        """Create (or replace) a Deployment, as ``kubectl apply`` of its manifest would."""
        if containers is None:
            containers = [{"name": "vllm", "image": "vllm/vllm-openai:v0.8.5",
                           "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct",
                                    "--max-num-seqs=64", "--port", "8000"]}]
        with self._lock:
            if namespace not in self.namespaces:
                raise ValueError(f"namespace {namespace!r} does not exist on this server "
                                 f"(it has {sorted(self.namespaces)}): add_namespace first")
            obj: JSON = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": self._next_rv(),
                    "generation": 1,
                    "creationTimestamp": "2024-01-01T00:00:00Z",
                    "annotations": dict(annotations or {}),
                    "labels": {"app": name},
                },
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": copy.deepcopy(containers)},
                    },
                },
                "status": {
                    "replicas": replicas,
                    "readyReplicas": replicas if ready is None else ready,
                    "observedGeneration": 1,
                },
            }
            validate_deployment(obj)
            self.objects[("deployments", namespace, name)] = obj
            return copy.deepcopy(obj)

    def deployment(self, namespace: str, name: str) -> JSON:
        with self._lock:
            return copy.deepcopy(self.objects[("deployments", namespace, name)])

    def container(self, namespace: str, name: str, container: str = "vllm") -> JSON:
        dep = self.deployment(namespace, name)
        for c in dep["spec"]["template"]["spec"]["containers"]:
            if c["name"] == container:
                return dict(c)
        raise KeyError(container)

    def set_status(self, namespace: str, name: str, **status: Any) -> bool:
        """The Deployment controller writes ``status`` fields; the version moves only when
        something changed. Returns whether it did."""
        with self._lock:
            obj = self.objects[("deployments", namespace, name)]
            new = {**obj.get("status", {}), **status}
            if new == obj.get("status"):
                return False
            obj["status"] = new
            obj["metadata"]["resourceVersion"] = self._next_rv()
            return True

    def set_ready(self, namespace: str, name: str, ready: int) -> None:
        self.set_status(namespace, name, readyReplicas=ready)

    def touch(self, namespace: str, name: str, resource: str = "deployments") -> str:
        """Another writer changed the object (e.g. a status update): bump its version."""
        with self._lock:
            obj = self.objects[(resource, namespace, name)]
            obj["metadata"]["resourceVersion"] = self._next_rv()
            return str(obj["metadata"]["resourceVersion"])

    def scale_directly(self, namespace: str, name: str, replicas: int) -> None:
        """Someone else (an operator, another controller) scaled the Deployment."""
        with self._lock:
            obj = self.objects[("deployments", namespace, name)]
            obj["spec"]["replicas"] = replicas
            obj["metadata"]["generation"] = int(obj["metadata"].get("generation", 1)) + 1
            obj["metadata"]["resourceVersion"] = self._next_rv()

    def status_writer(self, namespace: str, name: str, *, after_spec_change: int = 1,
                      every_s: float | None = None, after_read: bool = False) -> StatusWriter:
        """Play the Deployment controller on one Deployment: ``after_spec_change`` status
        writes land right after every persisted spec change (before the next request is
        served); with ``every_s`` one more on that period from a thread of its own (a storm
        whose conflicts depend on timing); with ``after_read`` one right after every read
        of it (a storm in which every precondition is stale, whatever the timing)."""
        writer = StatusWriter(namespace, name, after_spec_change, every_s, after_read)
        with self._lock:
            self.status_writers.append(writer)
        if every_s is not None:
            def loop() -> None:
                while not writer._stop.wait(every_s) and not self._stopping.is_set():
                    with self._lock:
                        self._controller_writes(writer, 1)

            writer._thread = threading.Thread(target=loop, daemon=True,
                                              name=f"status-writer-{name}")
            writer._thread.start()
        return writer

    def _controller_writes(self, writer: StatusWriter, count: int) -> None:
        obj = self.objects.get(("deployments", writer.namespace, writer.name))
        if obj is None:
            return
        for _ in range(count):
            writer.writes += 1
            spec, meta = obj["spec"], obj["metadata"]
            stamp = datetime.fromtimestamp(1_700_000_000 + writer.writes, tz=UTC)
            obj["status"] = {
                **obj.get("status", {}),
                "observedGeneration": meta.get("generation", 1),
                "replicas": spec.get("replicas", 1),
                "updatedReplicas": spec.get("replicas", 1),
                "conditions": [{"type": "Progressing", "status": "True",
                                "reason": "ReplicaSetUpdated",
                                "lastUpdateTime": stamp.strftime("%Y-%m-%dT%H:%M:%SZ")}],
            }
            meta["resourceVersion"] = self._next_rv()

    def annotate(self, namespace: str, name: str, key: str, value: str | None) -> None:
        """``kubectl annotate deploy NAME key=value`` (None: ``key-``)."""
        with self._lock:
            meta = self.objects[("deployments", namespace, name)]["metadata"]
            ann = meta.setdefault("annotations", {})
            if value is None:
                ann.pop(key, None)
            else:
                ann[key] = value
            meta["resourceVersion"] = self._next_rv()

    def lease(self, namespace: str, name: str) -> JSON | None:
        with self._lock:
            obj = self.objects.get(("leases", namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def events(self, namespace: str | None = None) -> list[JSON]:
        with self._lock:
            return [copy.deepcopy(o) for (r, ns, _), o in self.objects.items()
                    if r == "events" and (namespace is None or ns == namespace)]

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def add_webhook(self, webhook: Webhook) -> Webhook:
        with self._lock:
            self.webhooks.append(webhook)
        return webhook

    def deny(self, verb: str, resource: str) -> None:
        """Revoke ``verb`` on ``resource`` ("deployments/scale", ...), whatever RBAC allows."""
        self.denied.add((verb, resource))

    def find(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method.upper())
                    and (path is None or re.search(path, r.path))]

    def writes(self) -> list[RecordedRequest]:
        return [r for r in self.find() if r.method in ("POST", "PUT", "PATCH", "DELETE")]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # ------------------------------------------------------------------ serving
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        req = RecordedRequest(h.command, parts.path, parse_qs(parts.query), headers, None)
        status: int
        payload: JSON
        try:
            with self._lock:
                self.requests.append(req)
            self._authenticate(req)
            try:
                req.body = json.loads(raw) if raw else None
            except ValueError:
                raise ApiError(400, "the request body is not valid JSON") from None
            if self.hook is not None:
                self.hook(req)
            fault = self._take_fault(req)
            if fault is not None:
                if fault.delay_s > 0 and self._stopping.wait(fault.delay_s):
                    return
                if fault.hold is not None:
                    fault.hold.wait(fault.hold_max_s)
                    if self._stopping.is_set():
                        return
                if fault.status is not None:
                    raise ApiError(fault.status, fault.message)
            with self._lock:
                status, payload = self._dispatch(req)
        except ApiError as err:
            status, payload = err.code, err.status()
        req.status = status
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:  # the client gave up (timeout test)
            h.close_connection = True

    def _authenticate(self, req: RecordedRequest) -> None:
        auth = req.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, "Unauthorized")
        req.user = user

    def _take_fault(self, req: RecordedRequest) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.matches(req):
                    f.hits += 1
                    return f
        return None

    def _route(self, path: str) -> _Route:
        m = DEPLOYMENT_PATH.match(path)
        if m:
            res = "deployments/scale" if m["sub"] else "deployments"
            return _Route(res, "apps", "deployments.apps", m["ns"], m["name"])
        m = LEASE_PATH.match(path)
        if m:
            return _Route("leases", "coordination.k8s.io", "leases.coordination.k8s.io",
                          m["ns"], m["name"])
        m = EVENT_PATH.match(path)
        if m:
            return _Route("events", "", "events", m["ns"], m["name"])
        raise ApiError(404, f"the server could not find the requested resource ({path})")

    def _authorize(self, req: RecordedRequest, route: _Route, verb: str) -> None:
        resource, _, sub = route.resource.partition("/")
        attrs = AuthzRequest(req.user, verb, route.group, resource, sub, route.ns,
                             route.name or "")
        req.authz = attrs
        grant = self.rbac.authorize(attrs)
        if grant is None or (verb, route.resource) in self.denied:
            named = f' "{route.name}"' if route.name else ""
            raise ApiError(
                403,
                f'{route.kind_plural}{named} is forbidden: User "{req.user}" cannot {verb} '
                f'resource "{route.resource}" in API group "{route.group}" in the namespace '
                f'"{route.ns}"',
                details={"name": route.name or "", "group": route.group,
                         "kind": route.resource.split("/")[0]},
            )
        req.allowed_by = grant

    def _dispatch(self, req: RecordedRequest) -> tuple[int, JSON]:
        route = self._route(req.path)
        verb = VERBS.get(req.method, req.method.lower())
        if verb == "get" and route.name is None:
            verb = "list"
        self._authorize(req, route, verb)
        dry = req.query.get("dryRun")
        if dry is not None and dry != ["All"]:
            raise ApiError(400, f"Invalid dry run directive: {dry!r}; only All is supported")
        if req.method in ("GET",) and req.body is not None:
            raise ApiError(400, "GET with a body")
        if req.method == "POST" and route.ns not in self.namespaces:
            raise ApiError(404, f'namespaces "{route.ns}" not found',
                           details={"name": route.ns, "kind": "namespaces"})
        if route.resource == "deployments":
            return self._deployment(req, route)
        if route.resource == "deployments/scale":
            return self._scale(req, route)
        if route.resource == "leases":
            return self._lease(req, route)
        return self._event(req, route)

    def _get(self, route: _Route, resource: str) -> JSON:
        assert route.name is not None
        obj = self.objects.get((resource, route.ns, route.name))
        if obj is None:
            raise ApiError(404, f'{route.kind_plural} "{route.name}" not found',
                           details={"name": route.name, "kind": resource})
        return obj

    def _conflict(self, route: _Route) -> ApiError:
        return ApiError(
            409,
            f'Operation cannot be fulfilled on {route.kind_plural} "{route.name}": the object '
            "has been modified; please apply your changes to the latest version and try again",
        )

    def _admit(self, req: RecordedRequest, route: _Route) -> None:
        for webhook in self.webhooks:
            webhook.check(route, req.dry_run)

    def _store(self, req: RecordedRequest, resource: str, route: _Route, old: JSON,
               new: JSON) -> JSON:
        """Persist ``new`` unless dry-run; keeps identity fields the client may not change.

        Admission runs first (dry-run too). A write that changes nothing returns the stored
        object with its ``resourceVersion`` unchanged."""
        self._admit(req, route)
        new = copy.deepcopy(new)
        meta = new.setdefault("metadata", {})
        for keep in ("name", "namespace", "uid", "creationTimestamp", "generation"):
            if keep in old.get("metadata", {}):
                meta[keep] = old["metadata"][keep]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        spec_changed = False
        if resource == "deployments":
            spec_changed = new.get("spec") != old.get("spec")
            if spec_changed:
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
            new["status"] = copy.deepcopy(old.get("status", {}))
        if new == old or req.dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        assert route.name is not None
        self.objects[(resource, route.ns, route.name)] = new
        answer = copy.deepcopy(new)
        if spec_changed:
            for writer in self.status_writers:
                if (writer.namespace, writer.name) == (route.ns, route.name):
                    self._controller_writes(writer, writer.after_spec_change)
        return answer
    def _check_rv(self, route: _Route, old: JSON, wanted: Any) -> None:
        if wanted not in (None, "") and str(wanted) != old["metadata"]["resourceVersion"]:
            raise self._conflict(route)

    def _after_read(self, route: _Route) -> None:
        for writer in self.status_writers:
            if writer.after_read and (writer.namespace, writer.name) == (route.ns, route.name):
                self._controller_writes(writer, 1)

    def _deployment(self, req: RecordedRequest, route: _Route) -> tuple[int, JSON]:
        old = self._get(route, "deployments")
        if req.method == "GET":
            answer = copy.deepcopy(old)
            self._after_read(route)
            return 200, answer
        if req.method == "PATCH":
            new = apply_patch(old, req.content_type, req.body)
        elif req.method == "PUT":
            if not isinstance(req.body, dict):
                raise ApiError(400, "PUT needs an object")
            new = req.body
        else:
            raise ApiError(405, f"{req.method} is not supported here")
        self._check_rv(route, old, (new.get("metadata") or {}).get("resourceVersion"))
        validate_deployment(new)
        return 200, self._store(req, "deployments", route, old, new)

    def _scale_of(self, dep: JSON) -> JSON:
        meta = dep["metadata"]
        labels = dep["spec"].get("selector", {}).get("matchLabels", {})
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                               "creationTimestamp") if k in meta},
            "spec": {"replicas": dep["spec"]["replicas"]},
            "status": {"replicas": dep.get("status", {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in labels.items())},
        }

    def _scale(self, req: RecordedRequest, route: _Route) -> tuple[int, JSON]:
        dep = self._get(route, "deployments")
        scale = self._scale_of(dep)
        if req.method == "GET":
            self._after_read(route)
            return 200, scale
        if req.method == "PATCH":
            new_scale = apply_patch(scale, req.content_type, req.body)
        elif req.method == "PUT":
            if not isinstance(req.body, dict) or req.body.get("kind") not in (None, "Scale"):
                raise ApiError(400, "PUT needs a Scale")
            new_scale = req.body
        else:
            raise ApiError(405, f"{req.method} is not supported here")
        self._check_rv(route, dep, (new_scale.get("metadata") or {}).get("resourceVersion"))
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise _invalid("Scale.autoscaling", route.name or "",
                           [f"spec.replicas: Invalid value: {replicas!r}: must be >= 0"])
        new_dep = copy.deepcopy(dep)
        new_dep["spec"]["replicas"] = replicas
        stored = self._store(req, "deployments", route, dep, new_dep)
        return 200, self._scale_of(stored)

    def _lease(self, req: RecordedRequest, route: _Route) -> tuple[int, JSON]:
        if req.method == "POST":
            if route.name is not None or not isinstance(req.body, dict):
                raise ApiError(405, "POST a Lease to the collection")
            obj = copy.deepcopy(req.body)
            meta = obj.setdefault("metadata", {})
            name = meta.get("name")
            if not name:
                raise _invalid("Lease.coordination.k8s.io", "", ["metadata.name: Required value"])
            if meta.get("namespace", route.ns) != route.ns:
                raise ApiError(400, "the namespace of the object does not match the request")
            if meta.get("resourceVersion"):
                raise _invalid("Lease.coordination.k8s.io", name,
                               ["metadata.resourceVersion: must be empty on create"])
            validate_lease(obj)
            if ("leases", route.ns, name) in self.objects:
                raise ApiError(409, f'leases.coordination.k8s.io "{name}" already exists',
                               reason="AlreadyExists")
            self._admit(req, route)
            meta.update(namespace=route.ns, uid=str(uuid.uuid4()),
                        creationTimestamp="2024-01-01T00:00:00Z")
            if req.dry_run:
                return 201, obj
            meta["resourceVersion"] = self._next_rv()
            self.objects[("leases", route.ns, name)] = obj
            return 201, copy.deepcopy(obj)
        if route.name is None:
            raise ApiError(405, "listing leases is not served")
        old = self._get(route, "leases")
        if req.method == "GET":
            return 200, copy.deepcopy(old)
        if req.method != "PUT" or not isinstance(req.body, dict):
            raise ApiError(405, f"{req.method} is not supported on leases here")
        self._check_rv(route, old, (req.body.get("metadata") or {}).get("resourceVersion"))
        validate_lease(req.body)
        return 200, self._store(req, "leases", route, old, req.body)

    def _event(self, req: RecordedRequest, route: _Route) -> tuple[int, JSON]:
        if req.method == "POST":
            if route.name is not None or not isinstance(req.body, dict):
                raise ApiError(405, "POST an Event to the collection")
            obj = copy.deepcopy(req.body)
            meta = obj.setdefault("metadata", {})
            name = meta.get("name") or (meta.get("generateName", "") + uuid.uuid4().hex[:5])
            if not name:
                raise _invalid("Event", "", ["metadata.name: Required value"])
            if meta.get("namespace", route.ns) != route.ns:
                raise ApiError(400, "the namespace of the object does not match the request")
            validate_event(obj, route.ns)
            if ("events", route.ns, name) in self.objects:
                raise ApiError(409, f'events "{name}" already exists', reason="AlreadyExists")
            self._admit(req, route)
            meta.update(name=name, namespace=route.ns, uid=str(uuid.uuid4()))
            if req.dry_run:
                return 201, obj
            meta["resourceVersion"] = self._next_rv()
            self.objects[("events", route.ns, name)] = obj
            return 201, copy.deepcopy(obj)
        if route.name is None:
            if req.method == "GET":
                items = [copy.deepcopy(o) for (r, ns, _), o in self.objects.items()
                         if r == "events" and ns == route.ns]
                return 200, {"kind": "EventList", "apiVersion": "v1", "metadata": {},
                             "items": items}
            raise ApiError(405, f"{req.method} on the events collection")
        old = self._get(route, "events")
        if req.method == "GET":
            return 200, copy.deepcopy(old)
        if req.method != "PATCH":
            raise ApiError(405, f"{req.method} is not supported on events here")
        new = apply_patch(old, req.content_type, req.body)
        self._check_rv(route, old, (new.get("metadata") or {}).get("resourceVersion"))
        validate_event(new, route.ns)
        return 200, self._store(req, "events", route, old, new)


__all__ = [
    "JSON_PATCH",
    "MERGE",
    "SERVICE_ACCOUNT",
    "STRATEGIC",
    "ApiError",
    "FakeApiServer",
    "Fault",
    "RecordedRequest",
    "StatusWriter",
    "Webhook",
    "apply_patch",
    "json_patch",
    "merge_patch",
    "strategic_merge",
]
