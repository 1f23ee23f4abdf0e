"""Leader election with a ``coordination.k8s.io/v1`` Lease, so two daemon replicas never both act.

REST calls (for the RBAC Role; in the Lease's namespace, API group ``coordination.k8s.io``):
``get``, ``create`` and ``update`` on ``leases``.

The algorithm is client-go's ``tryAcquireOrRenew``, because it is the one operators already
trust and reason about:

* Expiry is judged by *when this candidate last saw the record change* on its own clock, not
  by comparing the holder's ``renewTime`` with the local time. Clocks of two pods can
  disagree; "I have watched this record stand still for a whole lease duration" cannot.
  A fresh candidate therefore waits one lease duration before taking over a lease it has
  never seen move.
* Writes are conditional on the ``resourceVersion`` that was read: if two candidates race
  for an expired lease, the API server accepts one PUT and answers 409 to the other.
* The leader stops considering itself leader once ``renew_deadline_s`` has passed without a
  successful renewal, which is shorter than ``lease_duration_s``: it steps down before
  anyone else can take over, so there is no window with two leaders (clocks running at the
  same rate is the only assumption).
* ``release`` on shutdown writes an empty holder with a one-second duration, so the standby
  takes over at once instead of waiting out the lease.

Times are written as ``MicroTime`` with exactly six fractional digits: the API server
rejects anything else, and ``datetime.isoformat`` drops the fraction when it is zero.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import kubernetes.client

from aiops.actuate.k8s import ApiCall, ConflictError, NotFoundError, call_api, make_api_client
from aiops.clock import Clock
from aiops.config import KubernetesConfig, LeaderElectionConfig
from aiops.errors import AiopsError, PermanentError, TransientError

log = logging.getLogger(__name__)

JSON = dict[str, Any]


def micro_time(t: float) -> str:
    """Unix seconds as a Kubernetes ``MicroTime`` (RFC 3339, six fractional digits, UTC)."""
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """``<pod name>_<random>``: the pod name for operators, the suffix for uniqueness.

    A restarted container keeps its pod name; the suffix stops it from mistaking the lease
    its previous incarnation held (and may still be acting on) for its own.
    """
    host = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    """Acquire, renew and release one Lease; call :meth:`try_acquire_or_renew` every
    ``retry_period_s`` and act only while :attr:`is_leader`.

    Failures talking to the API server never raise: they are logged, kept in
    :attr:`last_error` (for the errors metric) and leave leadership to run out at the renew
    deadline.
    """

    def __init__(self, cfg: LeaderElectionConfig, api_client: kubernetes.client.ApiClient, *,
                 clock: Clock, identity: str | None = None,
                 request_timeout_s: float = 5.0) -> None:
        self.cfg = cfg
        self.identity = identity or default_identity()
        self.clock = clock
        self.api = kubernetes.client.CoordinationV1Api(api_client)
        self.timeout_s = request_timeout_s
        self.duration_s = max(1, math.ceil(cfg.lease_duration_s))
        self.last_error: AiopsError | None = None
        self._observed_spec: JSON | None = None
        self._observed_at = -math.inf
        self._renewed_at = -math.inf  # last successful write of ours as holder
        self._holding = False

    @classmethod
    def from_config(cls, cfg: LeaderElectionConfig, kube: KubernetesConfig, *, clock: Clock,
                    identity: str | None = None) -> LeaderElector:
        """An elector with its own client; one request may take at most a retry period.

        A renewal that hangs for the full API timeout would eat the renew deadline, so the
        per-request timeout is the smaller of the two (at least one second).
        """
        timeout = max(1.0, min(kube.request_timeout_s, cfg.retry_period_s))
        return cls(cfg, make_api_client(kube), clock=clock, identity=identity,
                   request_timeout_s=timeout)

    # ------------------------------------------------------------------ queries
    @property
    def is_leader(self) -> bool:
        """True while our last successful renewal is younger than the renew deadline."""
        return self._holding and self.clock.now() - self._renewed_at < self.cfg.renew_deadline_s

    @property
    def holder(self) -> str | None:
        """The holder as last seen on the Lease (None: none seen, or released)."""
        if self._observed_spec is None:
            return None
        return self._observed_spec.get("holderIdentity") or None

    # ------------------------------------------------------------------ API
    def _call(self, verb: str, fn: Any, **kwargs: Any) -> JSON:
        call = ApiCall(verb, "leases", "coordination.k8s.io", self.cfg.namespace,
                       self.cfg.lease_name)
        return call_api(call, fn, self.timeout_s, namespace=self.cfg.namespace,
                        subject=f"lease {self.cfg.namespace}/{self.cfg.lease_name}", **kwargs)

    def _observe(self, spec: JSON, now: float) -> None:
        if spec != self._observed_spec:
            self._observed_spec = dict(spec)
            self._observed_at = now

    def _spec(self, now: float, *, acquire: str, transitions: int) -> JSON:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration_s,
            "acquireTime": acquire,
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One round of the election; returns :attr:`is_leader` afterwards."""
        now = self.clock.now()
        try:
            won = self._round(now)
            self.last_error = None
        except ConflictError as exc:  # another candidate wrote first: it won this round
            log.info("lease %s: lost a race (%s)", self.cfg.lease_name, exc)
            self._holding = False
            return False
        except AiopsError as exc:
            self.last_error = exc
            level = logging.ERROR if isinstance(exc, PermanentError) else logging.WARNING
            log.log(level, "lease %s: %s", self.cfg.lease_name, exc)
            return self.is_leader
        except Exception as exc:  # e.g. a malformed Lease written by someone else
            log.exception("lease %s: election round failed", self.cfg.lease_name)
            self.last_error = TransientError(f"election round failed: {exc!r}")
            return self.is_leader
        if won:
            self._holding = True
            self._renewed_at = now
        else:
            self._holding = False
        return self.is_leader

    def _round(self, now: float) -> bool:
        try:
            lease = self._call("get", self.api.read_namespaced_lease, name=self.cfg.lease_name)
        except NotFoundError:
            spec = self._spec(now, acquire=micro_time(now), transitions=0)
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.cfg.lease_name, "namespace": self.cfg.namespace},
                    "spec": spec}
            created = self._call("create", self.api.create_namespaced_lease, body=body)
            self._observe(created.get("spec") or spec, now)
            log.info("lease %s: created, %s is leader", self.cfg.lease_name, self.identity)
            return True
        spec = lease.get("spec") or {}
        self._observe(spec, now)
        holder = spec.get("holderIdentity") or ""
        ours = holder == self.identity
        if holder and not ours:
            duration = spec.get("leaseDurationSeconds") or self.duration_s
            if self._observed_at + float(duration) > now:
                return False  # held and not yet expired
        if ours:
            new = self._spec(now, acquire=spec.get("acquireTime") or micro_time(now),
                             transitions=int(spec.get("leaseTransitions") or 0))
        else:
            new = self._spec(now, acquire=micro_time(now),
                             transitions=int(spec.get("leaseTransitions") or 0) + 1)
        body = dict(lease)
        body["spec"] = new
        updated = self._call("update", self.api.replace_namespaced_lease,
                             name=self.cfg.lease_name, body=body)
        self._observe(updated.get("spec") or new, now)
        if not ours:
            log.info("lease %s: %s took over from %r", self.cfg.lease_name, self.identity,
                     holder or None)
        return True

    def release(self) -> None:
        """Give the lease up (on shutdown) so the standby need not wait for it to expire.

        Never raises; a failure is logged and kept in :attr:`last_error`, and the lease then
        simply expires.
        """
        if not self._holding:
            return
        now = self.clock.now()
        self._holding = False
        try:
            lease = self._call("get", self.api.read_namespaced_lease, name=self.cfg.lease_name)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            body = dict(lease)
            body["spec"] = {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": int(spec.get("leaseTransitions") or 0),
            }
            self._call("update", self.api.replace_namespaced_lease,
                       name=self.cfg.lease_name, body=body)
        except AiopsError as exc:
            self.last_error = exc
            log.warning("lease %s: release failed (%s); it will expire instead",
                        self.cfg.lease_name, exc)
            return
        log.info("lease %s: released by %s", self.cfg.lease_name, self.identity)
