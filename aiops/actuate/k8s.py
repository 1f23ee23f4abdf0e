"""The Kubernetes actuator: reads a target Deployment and applies a Decision to it.

REST calls (for the RBAC Role; all in the target's namespace, API group ``apps``):

=========  ======================  ==================================================
verb       resource                why
=========  ======================  ==================================================
get        deployments             ``read`` and the fresh read before every ``apply``
patch      deployments/scale       replicas (the scale subresource, as the HPA does)
patch      deployments             batch size (pod template) and ``save_state``
=========  ======================  ==================================================

Why these choices:

* Replicas go through the ``scale`` subresource, not a Deployment patch: that is the
  contract every autoscaler uses, it cannot touch anything but ``spec.replicas``, and it can
  be granted on its own.
* Every write carries the ``resourceVersion`` of a read made in the same ``apply`` (a
  precondition), and ``apply`` first checks that the target still has the replicas and batch
  size the decision was made from. A decision made from stale state is not applied: a
  guardrail's "at most one replica down per tick" is only true relative to what is really
  there. A 409 is re-read and retried once; if it conflicts again the tick gives up with a
  ``TransientError`` and the next tick decides afresh.
* Dry-run sends the very same requests with ``dryRun=All``: the API server authorises,
  admits and validates them, so a dry-run proves enforce mode would work, and persists
  nothing.
* Requests are sent with a (connect, read) timeout tuple and without urllib3's hidden
  retries. (The generated client silently ignores a *float* ``_request_timeout``: only an
  int or a tuple is honoured, so a float would mean no timeout at all.)

Errors become the classes in :mod:`aiops.errors` so the loop knows what to do next:
409, 429, 5xx, timeouts and refused connections are ``TransientError``; 403 is a
``PermanentError`` naming the verb and resource the Role lacks; 404 is a ``PermanentError``
naming the target; 400/422 (the server rejected the change) is an ``ActuationError``, and so
is an admission webhook's refusal, whatever its code (a policy engine answers 403, which is
not a missing permission).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3
from kubernetes.client.exceptions import ApiException

from aiops.actuate.base import ApplyResult, TargetState
from aiops.config import BatchSizeVia, KubernetesConfig, TargetConfig
from aiops.errors import (
    ActuationError,
    AiopsError,
    PermanentError,
    TransientError,
)
from aiops.types import Decision

log = logging.getLogger(__name__)

JSON = dict[str, Any]
FIELD_MANAGER = "aiops"


class ConflictError(TransientError):
    """409: the object changed since it was read (or, on create, it already exists)."""


class NotFoundError(PermanentError):
    """404: the object (or the target) does not exist."""


class StaleDecisionError(TransientError):
    """The target no longer has the replicas or batch size the decision was made from."""


# --------------------------------------------------------------------------- calls and errors
@dataclass(frozen=True)
class ApiCall:
    """What a request does, in RBAC terms, so an error can say which permission is missing."""

    verb: str  # get, list, create, update, patch
    resource: str  # "deployments", "deployments/scale", "leases", "events"
    group: str  # "apps", "coordination.k8s.io", "" (core)
    namespace: str
    name: str = ""

    def describe(self) -> str:
        group = self.group or "core"
        target = f"{self.namespace}/{self.name}" if self.name else self.namespace
        return f"{self.verb} {self.resource} ({group}) {target}"


def _server_message(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            return body[:300]
        if isinstance(parsed, dict) and parsed.get("message"):
            return str(parsed["message"])
    return str(exc.reason or "")


def error_from_exception(exc: BaseException, call: ApiCall, *,
                         subject: str = "") -> AiopsError:
    """Map a client exception to what the loop should do next (see the module docstring).

    ``subject`` names the target for a 404 ("target 'llama' (deployment ns/name)").
    """
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        said = _server_message(exc)
        if status == 409:
            return ConflictError(f"conflict on {call.describe()}: {said}")
        if said.startswith("admission webhook "):
            # A policy in the cluster refused the change (policy engines answer 403, the API
            # server 400 by default): no permission is missing, so no Role hint.
            return ActuationError(f"an admission webhook refused {call.describe()}: {said}")
        if status == 403:
            group = call.group or '"" (core)'
            return PermanentError(
                f"forbidden: the service account may not {call.verb} {call.resource} in "
                f"namespace {call.namespace}; grant verb '{call.verb}' on resource "
                f"'{call.resource}' in apiGroup {group} in its Role (server: {said})"
            )
        if status == 401:
            return PermanentError(f"unauthorized on {call.describe()}: the client's "
                                  f"credentials were refused ({said})")
        if status == 404:
            what = subject or f"{call.resource} {call.namespace}/{call.name}"
            return NotFoundError(f"{what} not found ({call.describe()}: {said})")
        if status in (400, 422):
            return ActuationError(f"the API server rejected {call.describe()}: {said}")
        if status == 429 or status >= 500:
            return TransientError(f"API server error {status} on {call.describe()}: {said}")
        if status == 0:  # raised by the client itself, e.g. a TLS failure
            reason = " ".join(str(exc.reason or "").split())
            hint = ""
            if "CERTIFICATE_VERIFY_FAILED" in reason:
                hint = ("; the API server's TLS certificate is not signed by the configured CA "
                        "(the kubeconfig's certificate-authority, or the service account's "
                        "ca.crt)")
            return PermanentError(f"cannot talk to the API server ({call.describe()}): "
                                  f"{reason}{hint}")
        return PermanentError(f"unexpected {status} on {call.describe()}: {said}")
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # a TimeoutError subclass
        return TransientError(f"API server unreachable: {call.describe()} ({exc})")
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return TransientError(f"timed out: {call.describe()} ({exc})")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return TransientError(f"API server unreachable: {call.describe()} ({exc})")
    return TransientError(f"unexpected error on {call.describe()}: {exc!r}")


def call_api(call: ApiCall, fn: Callable[..., Any], timeout_s: float, *,
             subject: str = "", **kwargs: Any) -> JSON:
    """Run one generated-client method and return the decoded JSON body.

    The raw body is used (``_preload_content=False``) rather than the generated models: the
    actuator edits the object as the server sent it, and nothing is lost or renamed on the
    way.
    """
    try:
        resp = fn(_preload_content=False, _request_timeout=(timeout_s, timeout_s), **kwargs)
        data = resp.data
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise error_from_exception(exc, call, subject=subject) from exc
    try:
        out = json.loads(data) if data else {}
    except ValueError as exc:
        raise TransientError(f"undecodable answer to {call.describe()}: {exc}") from exc
    if not isinstance(out, dict):
        raise TransientError(f"unexpected answer to {call.describe()}: {type(out).__name__}")
    return out


def build_configuration(cfg: KubernetesConfig) -> kubernetes.client.Configuration:
    """Client configuration from the pod's service account or a kubeconfig file.

    urllib3's retries are switched off: retrying is the loop's business (with backoff and a
    bounded tick), and its default would retry a timed-out GET three more times.
    ``persist_config=False`` because the daemon's root filesystem is read-only and a
    refreshed token must not be written back into a mounted kubeconfig.
    """
    conf = kubernetes.client.Configuration()
    try:
        if cfg.in_cluster:
            kubernetes.config.load_incluster_config(client_configuration=conf)
        else:
            kubernetes.config.load_kube_config(
                config_file=str(cfg.kubeconfig) if cfg.kubeconfig is not None else None,
                context=cfg.context,
                client_configuration=conf,
                persist_config=False,
            )
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        mode = "in-cluster service account" if cfg.in_cluster else f"kubeconfig {cfg.kubeconfig}"
        raise PermanentError(f"cannot load the Kubernetes client config ({mode}): {exc}") from exc
    conf.retries = False
    return conf


def make_api_client(cfg: KubernetesConfig) -> kubernetes.client.ApiClient:
    return kubernetes.client.ApiClient(build_configuration(cfg))


# --------------------------------------------------------------------------- batch size
_INT = re.compile(r"^\s*(\d+)\s*$")


def _flag_pattern(flag: str) -> re.Pattern[str]:
    # the flag inside a shell string: "vllm serve m --max-num-seqs 64" or "...=64"
    return re.compile(rf"(?<!\S){re.escape(flag)}(?:=|\s+)(\S+)(?!\S)")


def _arg_occurrences(argv: Sequence[str], flag: str) -> list[tuple[int, str, str]]:
    """Where ``flag`` is set in ``argv``: (index, form, value) with form "eq", "next", "shell"."""
    out: list[tuple[int, str, str]] = []
    pat = _flag_pattern(flag)
    for i, a in enumerate(argv):
        if a == flag:
            if i + 1 < len(argv):
                out.append((i + 1, "next", argv[i + 1]))
        elif a.startswith(flag + "="):
            out.append((i, "eq", a[len(flag) + 1:]))
        elif any(ch.isspace() for ch in a):
            out.extend((i, "shell", m.group(1)) for m in pat.finditer(a))
    return out


def _str_list(value: Any) -> list[str]:
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return list(value)
    return []


def parse_batch_size(container: Mapping[str, Any], via: BatchSizeVia) -> int | None:
    """The batch size the container's pods run with, or None when it is not set literally.

    For an argument, argv is ``command + args`` and the last occurrence wins, as with
    vLLM's argparse; for an environment variable, only a literal ``value`` counts (one from
    a ConfigMap or Secret cannot be read or changed here).
    """
    if via.arg is not None:
        argv = _str_list(container.get("command")) + _str_list(container.get("args"))
        found = _arg_occurrences(argv, via.arg)
        if not found:
            return None
        m = _INT.match(found[-1][2])
        return int(m.group(1)) if m else None
    for e in container.get("env") or []:
        if isinstance(e, dict) and e.get("name") == via.env:
            value = e.get("value")
            m = _INT.match(value) if isinstance(value, str) else None
            return int(m.group(1)) if m else None
    return None


def batch_size_patch(container: Mapping[str, Any], via: BatchSizeVia, value: int) -> JSON:
    """The container entry of a strategic merge patch that sets the batch size to ``value``.

    Only the lists that hold the setting are sent (``args``/``command`` are replaced whole,
    with every other argument as it was; ``env`` merges by name). Aiops edits a setting
    that is there; it never invents one, because adding a flag to an image whose entrypoint
    does not expect it would break the pods. Raises ``PermanentError`` when the setting is
    absent or not a literal number.
    """
    name = str(container.get("name", ""))
    if value < 1:
        raise ActuationError(f"batch size must be positive, got {value}")
    if via.arg is not None:
        patch: JSON = {"name": name}
        total = 0
        for key in ("command", "args"):
            argv = _str_list(container.get(key))
            found = _arg_occurrences(argv, via.arg)
            if not found:
                continue
            for idx, form, old in found:
                if not _INT.match(old):
                    raise PermanentError(
                        f"container {name!r} sets {via.arg} to {old!r}, not a number; aiops "
                        "cannot tune it (use batch_size_via.env if it comes from a variable)"
                    )
                if form == "next":
                    argv[idx] = str(value)
                elif form == "eq":
                    argv[idx] = f"{via.arg}={value}"
            if any(form == "shell" for _, form, _ in found):
                pat = _flag_pattern(via.arg)
                for idx in sorted({i for i, form, _ in found if form == "shell"}):
                    argv[idx] = pat.sub(
                        lambda m: m.group(0)[: m.start(1) - m.start(0)] + str(value), argv[idx]
                    )
            patch[key] = argv
            total += len(found)
        if total == 0:
            raise PermanentError(
                f"container {name!r} has no {via.arg} argument; add it to the pod template "
                "so aiops can tune the batch size"
            )
        return patch
    for e in container.get("env") or []:
        if isinstance(e, dict) and e.get("name") == via.env:
            value_now = e.get("value")
            if "valueFrom" in e or not (isinstance(value_now, str) and _INT.match(value_now)):
                raise PermanentError(
                    f"container {name!r} sets ${via.env} from {e.get('valueFrom') or value_now!r}"
                    ", not a literal number; aiops cannot tune it"
                )
            return {"name": name, "env": [{"name": via.env, "value": str(value)}]}
    raise PermanentError(
        f"container {name!r} has no environment variable {via.env}; add it to the pod "
        "template so aiops can tune the batch size"
    )


def find_container(deployment: Mapping[str, Any], target: TargetConfig) -> JSON:
    containers = (
        deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    )
    for c in containers:
        if isinstance(c, dict) and c.get("name") == target.container:
            return c
    names = [c.get("name") for c in containers if isinstance(c, dict)]
    raise PermanentError(
        f"target {target.name!r}: deployment {target.key} has no container "
        f"{target.container!r} (it has {names})"
    )


def target_state(deployment: Mapping[str, Any], target: TargetConfig) -> TargetState:
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    annotations = meta.get("annotations") or {}
    return TargetState(
        replicas=int(spec.get("replicas", 1)),  # the API server defaults an unset value to 1
        ready_replicas=int(status.get("readyReplicas") or 0),
        batch_size=parse_batch_size(find_container(deployment, target), target.batch_size_via),
        annotations={str(k): str(v) for k, v in annotations.items()},
        resource_version=str(meta.get("resourceVersion", "")),
    )


# --------------------------------------------------------------------------- the actuator
class KubernetesActuator:
    """Implements :class:`aiops.actuate.base.Actuator` with the official client.

    Holds no per-target state: everything it needs is read from the API server, so any
    replica of the daemon that becomes leader can carry on, and targets may be served from
    several threads.
    """

    def __init__(self, cfg: KubernetesConfig, *,
                 api_client: kubernetes.client.ApiClient | None = None,
                 field_manager: str = FIELD_MANAGER) -> None:
        self.cfg = cfg
        self.api_client = api_client if api_client is not None else make_api_client(cfg)
        self.apps = kubernetes.client.AppsV1Api(self.api_client)
        self.field_manager = field_manager
        self.timeout_s = cfg.request_timeout_s

    def close(self) -> None:
        self.api_client.close()

    # ------------------------------------------------------------------ reads
    def _subject(self, target: TargetConfig) -> str:
        return f"target {target.name!r} (deployment {target.key})"

    def _get(self, target: TargetConfig) -> JSON:
        call = ApiCall("get", "deployments", "apps", target.namespace, target.deployment)
        return call_api(call, self.apps.read_namespaced_deployment, self.timeout_s,
                        subject=self._subject(target),
                        name=target.deployment, namespace=target.namespace)

    def read(self, target: TargetConfig) -> TargetState:
        return target_state(self._get(target), target)

    # ------------------------------------------------------------------ writes
    def _patch_scale(self, target: TargetConfig, replicas: int, rv: str, dry_run: bool) -> JSON:
        call = ApiCall("patch", "deployments/scale", "apps", target.namespace, target.deployment)
        body = {"metadata": {"resourceVersion": rv}, "spec": {"replicas": replicas}}
        kwargs: dict[str, Any] = {"field_manager": self.field_manager}
        if dry_run:
            kwargs["dry_run"] = "All"
        return call_api(call, self.apps.patch_namespaced_deployment_scale, self.timeout_s,
                        subject=self._subject(target), name=target.deployment,
                        namespace=target.namespace, body=body, **kwargs)

    def _patch_deployment(self, target: TargetConfig, body: JSON, dry_run: bool) -> JSON:
        call = ApiCall("patch", "deployments", "apps", target.namespace, target.deployment)
        kwargs: dict[str, Any] = {"field_manager": self.field_manager}
        if dry_run:
            kwargs["dry_run"] = "All"
        return call_api(call, self.apps.patch_namespaced_deployment, self.timeout_s,
                        subject=self._subject(target), name=target.deployment,
                        namespace=target.namespace, body=body, **kwargs)

    def apply(self, target: TargetConfig, decision: Decision, *, dry_run: bool) -> ApplyResult:
        """Set replicas (scale subresource) and, when tuning is on, the batch size.

        Makes no request when the decision changes nothing. A batch-size change with
        ``tune_batch_size`` off is ignored (and said so in the message): the template patch
        rolls every pod, so it needs the operator's explicit consent.
        """
        notes: list[str] = []
        want_replicas = decision.replicas != decision.previous_replicas
        want_batch = decision.batch_size != decision.previous_batch_size
        if want_batch and not target.tune_batch_size:
            notes.append(f"batch size {decision.previous_batch_size}→{decision.batch_size} "
                         "ignored: tune_batch_size is off")
            want_batch = False
        if not (want_replicas or want_batch):
            return ApplyResult(applied=False, dry_run=dry_run,
                               message="; ".join(["no change", *notes]))
        try:
            return self._apply_once(target, decision, want_replicas, want_batch, dry_run, notes)
        except ConflictError as first:
            log.info("target %s: %s; re-reading and retrying once", target.name, first)
        try:
            return self._apply_once(target, decision, want_replicas, want_batch, dry_run, notes)
        except ConflictError as second:
            raise ConflictError(f"target {target.name!r}: still conflicting after a re-read "
                                f"({second}); giving up until the next tick") from second

    def _apply_once(self, target: TargetConfig, decision: Decision, want_replicas: bool,
                    want_batch: bool, dry_run: bool, notes: list[str]) -> ApplyResult:
        notes = list(notes)  # a retry starts from the caller's notes, not the failed try's
        dep = self._get(target)
        spec_replicas = int((dep.get("spec") or {}).get("replicas", 1))
        container = find_container(dep, target)
        done: list[str] = []
        if want_replicas:
            if spec_replicas == decision.replicas:
                want_replicas = False
                notes.append(f"replicas already {spec_replicas}")
            elif spec_replicas != decision.previous_replicas:
                raise StaleDecisionError(
                    f"target {target.name!r}: replicas are {spec_replicas}, not the "
                    f"{decision.previous_replicas} the decision was made from; not applying "
                    "a decision made from stale state (the next tick decides afresh)"
                )
        template_patch: JSON | None = None
        batch_error: PermanentError | None = None
        if want_batch:
            current = parse_batch_size(container, target.batch_size_via)
            if current == decision.batch_size:
                notes.append(f"batch size already {current}")
            elif current is not None and current != decision.previous_batch_size:
                raise StaleDecisionError(
                    f"target {target.name!r}: batch size is {current}, not the "
                    f"{decision.previous_batch_size} the decision was made from"
                )
            else:
                try:
                    template_patch = batch_size_patch(container, target.batch_size_via,
                                                      decision.batch_size)
                except PermanentError as exc:  # scaling must not wait for a batch-size fix
                    batch_error = exc
        rv = str((dep.get("metadata") or {}).get("resourceVersion", ""))
        if want_replicas:
            scale = self._patch_scale(target, decision.replicas, rv, dry_run)
            if not dry_run:  # a persisted write moved the version on; a dry-run did not
                rv = str((scale.get("metadata") or {}).get("resourceVersion", rv))
            done.append(f"replicas {spec_replicas}→{decision.replicas}")
        if template_patch is not None:
            body = {"metadata": {"resourceVersion": rv},
                    "spec": {"template": {"spec": {"containers": [template_patch]}}}}
            self._patch_deployment(target, body, dry_run)
            done.append(f"batch size {decision.previous_batch_size}→{decision.batch_size} "
                        "(rolls the pods)")
        if batch_error is not None:
            head = f"target {target.name!r}: "
            if done:
                head += ", ".join(done) + (" checked (dry-run)" if dry_run else " applied")
                head += ", but "
            raise PermanentError(f"{head}the batch size cannot be changed: {batch_error}"
                                 ) from batch_error
        if not done:
            return ApplyResult(applied=False, dry_run=dry_run, message="; ".join(notes))
        head = ("dry-run accepted by the API server: " if dry_run else "applied: ") + ", ".join(
            done)
        log.info("target %s: %s", target.name, head)
        return ApplyResult(applied=not dry_run, dry_run=dry_run,
                           message="; ".join([head, *notes]))

    def save_state(self, target: TargetConfig, state: Mapping[str, str]) -> None:
        """Merge the given annotations into the Deployment's metadata.

        No ``resourceVersion`` precondition: these keys are aiops' own, the last writer is
        the one that is right, and a conflict would only cost a tick. Keys not in ``state``
        are left as they are.
        """
        if not state:
            return
        body = {"metadata": {"annotations": {str(k): str(v) for k, v in state.items()}}}
        self._patch_deployment(target, body, dry_run=False)
