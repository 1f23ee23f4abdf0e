"""Kubernetes Events on the target Deployment: the explanation ``kubectl describe`` shows.

REST calls (for the RBAC Role; in the target's namespace): ``create`` and ``patch`` on
``events`` (core API group), ``get`` on ``deployments`` (``apps``, to learn the object's
UID, cached).

Why core/v1 Events rather than ``events.k8s.io/v1``: both land in the same storage, but
``kubectl describe`` and most dashboards still read the core fields (``count``,
``lastTimestamp``), and the legacy aggregation (patch ``count`` on a repeat) is simple and
well understood. The ``involvedObject`` carries the Deployment's UID because
``kubectl describe`` selects events by it; without the UID the Event would exist but not be
shown where operators look.

Aggregation, so a 15-second loop does not write 240 Events an hour:

* a decision that neither changed anything nor was held by a guardrail writes nothing;
* a standing situation (a dry-run recommendation, a guardrail holding a change, a
  fallback) repeated within ``aggregate_window_s`` patches the existing Event: ``count``
  goes up, ``lastTimestamp`` and the message show the latest numbers;
* an applied change is a discrete action and gets its own Event unless its message is
  exactly the previous one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kubernetes.client

from aiops.actuate.k8s import ApiCall, NotFoundError, call_api, make_api_client
from aiops.annotate.base import REASON_SCALED, Explanation, explain
from aiops.config import KubernetesConfig, TargetConfig
from aiops.errors import AiopsError
from aiops.types import Decision

log = logging.getLogger(__name__)

JSON = dict[str, Any]
COMPONENT = "aiops"


def k8s_time(t: float) -> str:
    """Unix seconds as a Kubernetes ``Time`` (RFC 3339, whole seconds, UTC)."""
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Series:
    name: str
    count: int
    last_time: float
    message: str


class KubernetesEventAnnotator:
    """Writes one Event per explained decision (see the module docstring); never raises."""

    name = "event"

    def __init__(self, api_client: kubernetes.client.ApiClient, *,
                 instance: str | None = None, request_timeout_s: float = 5.0,
                 aggregate_window_s: float = 600.0, uid_ttl_s: float = 300.0) -> None:
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.instance = instance or os.environ.get("POD_NAME") or socket.gethostname()
        self.timeout_s = request_timeout_s
        self.aggregate_window_s = aggregate_window_s
        self.uid_ttl_s = uid_ttl_s
        self._series: dict[tuple[Any, ...], _Series] = {}
        self._uids: dict[str, tuple[str, float]] = {}
        self._seq = 0
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, kube: KubernetesConfig, **kwargs: Any) -> KubernetesEventAnnotator:
        """An annotator with its own client (the same credentials as the actuator)."""
        kwargs.setdefault("request_timeout_s", min(kube.request_timeout_s, 5.0))
        return cls(make_api_client(kube), **kwargs)

    # ------------------------------------------------------------------ public
    def annotate(self, target: TargetConfig, decision: Decision) -> bool:
        exp = explain(target, decision)
        if exp is None:
            return True
        try:
            self._emit(target, decision, exp)
        except AiopsError as exc:
            log.warning("event for target %s not written: %s", target.name, exc)
            return False
        except Exception:  # the contract is "never raises": a bug here must not stop a tick
            log.exception("event for target %s not written", target.name)
            return False
        return True

    # ------------------------------------------------------------------ internals
    def _key(self, target: TargetConfig, exp: Explanation) -> tuple[Any, ...]:
        base = (target.namespace, target.deployment, exp.reason, exp.event_type)
        if exp.reason == REASON_SCALED:
            return (*base, exp.text)
        return (*base, exp.action, exp.rules)

    def _uid(self, target: TargetConfig, now: float) -> str:
        cached = self._uids.get(target.key)
        if cached is not None and now - cached[1] < self.uid_ttl_s:
            return cached[0]
        call = ApiCall("get", "deployments", "apps", target.namespace, target.deployment)
        try:
            dep = call_api(call, self.apps.read_namespaced_deployment, self.timeout_s,
                           name=target.deployment, namespace=target.namespace)
        except AiopsError as exc:
            log.info("target %s: no UID for its Events (%s)", target.name, exc)
            return cached[0] if cached is not None else ""
        uid = str((dep.get("metadata") or {}).get("uid", ""))
        self._uids[target.key] = (uid, now)
        return uid

    def _event_name(self, deployment: str, now: float) -> str:
        with self._lock:
            self._seq += 1
            seq = self._seq
        return f"{deployment[:230]}.{int(now * 1e9) + seq:x}"

    def _emit(self, target: TargetConfig, decision: Decision, exp: Explanation) -> None:
        now = decision.time
        key = self._key(target, exp)
        with self._lock:
            series = self._series.get(key)
        if series is not None and now - series.last_time <= self.aggregate_window_s:
            body = {"count": series.count + 1, "lastTimestamp": k8s_time(now),
                    "message": exp.text}
            call = ApiCall("patch", "events", "", target.namespace, series.name)
            try:
                call_api(call, self.core.patch_namespaced_event, self.timeout_s,
                         name=series.name, namespace=target.namespace, body=body)
            except NotFoundError:  # expired (events live about an hour): start a new one
                pass
            else:
                with self._lock:
                    series.count += 1
                    series.last_time = now
                    series.message = exp.text
                return
        name = self._event_name(target.deployment, now)
        ts = k8s_time(now)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": target.namespace,
                         "annotations": {"aiops.io/target": target.name}},
            "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": target.deployment, "namespace": target.namespace,
                               "uid": self._uid(target, now)},
            "reason": exp.reason,
            "message": exp.text,
            "type": exp.event_type,
            "action": exp.action,
            "count": 1,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance[:128],
        }
        call = ApiCall("create", "events", "", target.namespace)
        call_api(call, self.core.create_namespaced_event, self.timeout_s,
                 namespace=target.namespace, body=body)
        with self._lock:
            self._series[key] = _Series(name, 1, now, exp.text)
            if len(self._series) > 4096:  # forget the oldest; bounded memory for months
                oldest = min(self._series, key=lambda k: self._series[k].last_time)
                del self._series[oldest]


EventAnnotator = KubernetesEventAnnotator  # the name the daemon's wiring uses
