"""A loopback Kubernetes API server that speaks the REST paths aiops uses.

No API server can be installed where the tests run, so this one stands in for it. The real
``kubernetes`` client talks to it over HTTP, which is the point: a fake *client* would only
prove that aiops calls the methods it thinks it calls, while this server checks the wire
(paths, query parameters, patch content types, JSON bodies, time formats) the way the real
one would, and answers the way the real one does (``Status`` objects with ``reason`` and
``code``, ``resourceVersion`` conflicts, server-side dry-run).

Paths served (everything else is 404):

* ``/apis/apps/v1/namespaces/{ns}/deployments/{name}``: GET, PATCH, PUT
* ``/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale``: GET, PATCH, PUT
* ``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]``: GET, POST, PUT
* ``/api/v1/namespaces/{ns}/events[/{name}]``: GET, POST, PATCH (core/v1 Events, the ones
  ``kubectl describe`` lists, with ``count`` aggregation)

Semantics kept from the real server:

* ``dryRun=All`` runs every stage (decode, patch, validate, conflict check) but persists
  nothing; any other ``dryRun`` value is a 400.
* Optimistic concurrency: a PUT whose ``metadata.resourceVersion`` is set, or a PATCH that
  sets it, must match the stored object, else 409 ``Conflict``. The scale subresource shares
  the Deployment's ``resourceVersion``.
* PATCH content types: ``application/strategic-merge-patch+json`` (lists with a merge key,
  such as ``containers`` and ``env``, merge by ``name``; other lists are replaced),
  ``application/merge-patch+json`` (RFC 7386) and ``application/json-patch+json``
  (RFC 6902: add, remove, replace, test).
* Lease ``acquireTime``/``renewTime`` must be ``MicroTime`` (exactly six fractional digits),
  Event timestamps ``Time`` (RFC 3339), as the real decoder insists.

Fault injection for tests: :meth:`FakeApiServer.inject` (any status, a delay, on matching
requests, a number of times), :meth:`FakeApiServer.deny` (RBAC: 403 with the real message
for a verb on a resource), :attr:`FakeApiServer.hook` (runs before a request is served,
outside the lock, to stage races). Every request is recorded in :attr:`requests`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes.client

from .loopback import LoopbackHTTP

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
    status: int = 0

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == ["All"]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


@dataclass
class Fault:
    """An injected misbehaviour for requests that match ``method`` and ``path`` (a regex).

    ``status`` None with a ``delay_s`` is a slow but correct answer. ``times`` None means
    every matching request; otherwise the fault disarms after that many hits.
    """

    status: int | None = None
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    delay_s: float = 0.0
    message: str = "injected fault"
    hits: int = 0

    def matches(self, req: RecordedRequest) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != req.method:
            return False
        return self.path is None or re.search(self.path, req.path) is not None


@dataclass
class _Route:
    resource: str  # RBAC resource, with subresource: "deployments/scale"
    group: str  # API group, "" for core
    kind_plural: str  # "deployments.apps", as real error messages name it
    ns: str
    name: str | None


# --------------------------------------------------------------------------- patches
def strategic_merge(original: Any, patch: Any, key: str = "", *, new_first: bool = False) -> Any:
    """Apply a strategic merge patch (the subset a Deployment's pod template needs).

    Maps merge, keyed lists (``MERGE_KEYS``) merge by key, other lists replace. New items of
    a keyed list are appended, as the API server does, or put first with ``new_first``, as
    kustomize renders its patches."""
    if isinstance(patch, dict) and isinstance(original, dict):
        out = dict(original)
        for k, v in patch.items():
            if k.startswith("$"):
                raise ApiError(400, f"unsupported strategic merge directive {k!r}")
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k, new_first=new_first)
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
                    out_list[i] = strategic_merge(existing, item, "", new_first=new_first)
                    break
            else:
                added.append(copy.deepcopy(item))
        return added + out_list if new_first else out_list + added
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
class FakeApiServer:
    """In-memory objects behind the real REST paths; start with ``with FakeApiServer() as s``."""

    def __init__(self, user: str = "system:serviceaccount:aiops:aiops") -> None:
        self.user = user
        self.objects: dict[tuple[str, str, str], JSON] = {}
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.denied: set[tuple[str, str]] = set()
        self.hook: Callable[[RecordedRequest], None] | None = None
        self._rv = 1000
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._http = LoopbackHTTP(self._serve)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeApiServer:
        self._http.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
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

    def configuration(self) -> kubernetes.client.Configuration:
        """A client configuration for this server, as a kubeconfig would give it."""
        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        cfg.proxy = None
        cfg.retries = False  # as aiops configures it: no hidden urllib3 retries
        cfg.api_key = {"authorization": "test-token"}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return cfg

    def api_client(self) -> kubernetes.client.ApiClient:
        return kubernetes.client.ApiClient(self.configuration())

    def write_kubeconfig(self, path: Path, token: str = "kubeconfig-token") -> Path:
        """A kubeconfig whose context ``fake`` points here (the default context too)."""
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
        }
        path.write_text(json.dumps(doc))  # JSON is YAML
        return path

    # ------------------------------------------------------------------ test helpers
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add_deployment(self, namespace: str, name: str, *, replicas: int = 1,
                       ready: int | None = None, containers: list[JSON] | None = None,
                       annotations: dict[str, str] | None = None) -> JSON:
        if containers is None:
            containers = [{"name": "vllm", "image": "vllm/vllm-openai:v0.8.5",
                           "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct",
                                    "--max-num-seqs=64", "--port", "8000"]}]
        with self._lock:
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

    def set_ready(self, namespace: str, name: str, ready: int) -> None:
        with self._lock:
            obj = self.objects[("deployments", namespace, name)]
            obj["status"]["readyReplicas"] = ready
            obj["metadata"]["resourceVersion"] = self._next_rv()

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
            obj["metadata"]["resourceVersion"] = self._next_rv()

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

    def deny(self, verb: str, resource: str) -> None:
        """RBAC: the caller may not ``verb`` the ``resource`` ("deployments/scale", ...)."""
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
            try:
                req.body = json.loads(raw) if raw else None
            except ValueError:
                raise ApiError(400, "the request body is not valid JSON") from None
            with self._lock:
                self.requests.append(req)
            if self.hook is not None:
                self.hook(req)
            fault = self._take_fault(req)
            if fault is not None:
                if fault.delay_s > 0 and self._stopping.wait(fault.delay_s):
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

    def _dispatch(self, req: RecordedRequest) -> tuple[int, JSON]:
        route = self._route(req.path)
        verb = VERBS.get(req.method, req.method.lower())
        if verb == "get" and route.name is None:
            verb = "list"
        if (verb, route.resource) in self.denied:
            named = f' "{route.name}"' if route.name else ""
            raise ApiError(
                403,
                f'{route.kind_plural}{named} is forbidden: User "{self.user}" cannot {verb} '
                f'resource "{route.resource}" in API group "{route.group}" in the namespace '
                f'"{route.ns}"',
                details={"name": route.name or "", "group": route.group,
                         "kind": route.resource.split("/")[0]},
            )
        dry = req.query.get("dryRun")
        if dry is not None and dry != ["All"]:
            raise ApiError(400, f"Invalid dry run directive: {dry!r}; only All is supported")
        if req.method in ("GET",) and req.body is not None:
            raise ApiError(400, "GET with a body")
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

    def _store(self, req: RecordedRequest, resource: str, route: _Route, old: JSON,
               new: JSON) -> JSON:
        """Persist ``new`` unless dry-run; keeps identity fields the client may not change."""
        new = copy.deepcopy(new)
        meta = new.setdefault("metadata", {})
        for keep in ("name", "namespace", "uid", "creationTimestamp"):
            if keep in old.get("metadata", {}):
                meta[keep] = old["metadata"][keep]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if resource == "deployments":
            if new.get("spec") != old.get("spec"):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
            new["status"] = copy.deepcopy(old.get("status", {}))
        if req.dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        assert route.name is not None
        self.objects[(resource, route.ns, route.name)] = new
        return copy.deepcopy(new)

    def _check_rv(self, route: _Route, old: JSON, wanted: Any) -> None:
        if wanted not in (None, "") and str(wanted) != old["metadata"]["resourceVersion"]:
            raise self._conflict(route)

    def _deployment(self, req: RecordedRequest, route: _Route) -> tuple[int, JSON]:
        old = self._get(route, "deployments")
        if req.method == "GET":
            return 200, copy.deepcopy(old)
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
    "STRATEGIC",
    "ApiError",
    "FakeApiServer",
    "Fault",
    "RecordedRequest",
    "apply_patch",
    "json_patch",
    "merge_patch",
    "strategic_merge",
]
