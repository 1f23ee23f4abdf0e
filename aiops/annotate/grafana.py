"""Grafana annotations: the explanation drawn on the dashboards operators already watch.

One call, Grafana's documented HTTP API: ``POST {url}/api/annotations`` with
``Authorization: Bearer <service account token>`` and a JSON body
``{"dashboardUID", "time" (epoch ms), "tags", "text"}``. Without ``dashboard_uid`` the
annotation is organisation-wide and shows on any dashboard whose annotation query filters
on the ``aiops`` tag. Tags are ``key:value`` strings (``target:llama``, ``policy:hpa``,
``rule:cooldown``, ...) so a dashboard can filter to one target or one rule.

The token is read at every call (from ``token_file``, else the ``token_env`` variable) so a
rotated Secret is picked up without a restart. Every request has a timeout; a failure is
logged and returns False, never raises (see :mod:`aiops.annotate.base`). Wrap the annotator
in :class:`aiops.annotate.base.QueuedAnnotator` to keep even the timeout off the tick.

Repeats are suppressed: the same situation (same reason, action, replicas, batch size and
rules) is annotated again only after ``repeat_after_s``, so a dry-run recommendation that
stands for an hour is one mark on the graph, not 240.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from aiops.annotate.base import Explanation, explain
from aiops.config import GrafanaConfig, TargetConfig
from aiops.types import Decision

log = logging.getLogger(__name__)


class GrafanaAnnotator:
    """Posts one annotation per explained decision; never raises."""

    name = "grafana"

    def __init__(self, cfg: GrafanaConfig, *, environ: Mapping[str, str] | None = None,
                 repeat_after_s: float = 600.0) -> None:
        if not cfg.url:
            raise ValueError("grafana.url is not set; build no GrafanaAnnotator then")
        self.cfg = cfg
        self.endpoint = cfg.url.rstrip("/") + "/api/annotations"
        self.environ = environ if environ is not None else os.environ
        self.repeat_after_s = repeat_after_s
        self._opener = urllib.request.build_opener()
        self._last: dict[str, tuple[tuple[Any, ...], float]] = {}
        self._lock = threading.Lock()
        self._warned_no_token = False

    def token(self) -> str | None:
        """The bearer token: the file's content, else the environment variable, else None.

        Raises OSError when the configured file cannot be read (the caller logs it).
        """
        if self.cfg.token_file is not None:
            return self.cfg.token_file.read_text().strip() or None
        if self.cfg.token_env:
            return self.environ.get(self.cfg.token_env) or None
        return None

    def payload(self, target: TargetConfig, decision: Decision, exp: Explanation) -> dict[str, Any]:
        """The JSON body for ``decision`` (pure; the tests check its shape)."""
        policy = target.policy.split(":", 1)[0]
        tags = [
            *self.cfg.tags,
            f"target:{target.name}",
            f"namespace:{target.namespace}",
            f"policy:{policy}",
            f"action:{exp.action}",
            f"reason:{exp.reason}",
            "dry-run" if decision.dry_run else "enforce",
            *(f"rule:{r}" for r in dict.fromkeys(exp.rules)),
        ]
        text = exp.text
        details = decision.recommendation.details
        if details:
            text += "; " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(details.items()))
        body: dict[str, Any] = {"time": round(decision.time * 1000), "tags": tags,
                                "text": text}
        if self.cfg.dashboard_uid:
            body["dashboardUID"] = self.cfg.dashboard_uid
        return body

    def annotate(self, target: TargetConfig, decision: Decision) -> bool:
        try:
            return self._annotate(target, decision)
        except Exception:  # the contract is "never raises": a bug here must not stop a tick
            log.exception("grafana: annotation for %s not sent", target.name)
            return False

    def _annotate(self, target: TargetConfig, decision: Decision) -> bool:
        exp = explain(target, decision)
        if exp is None:
            return True
        signature = (exp.reason, exp.action, exp.rules, decision.previous_replicas,
                     decision.replicas, decision.previous_batch_size, decision.batch_size)
        with self._lock:
            last = self._last.get(target.key)
        if last is not None and last[0] == signature and (
                decision.time - last[1] < self.repeat_after_s):
            return True
        try:
            token = self.token()
        except OSError as exc:
            log.warning("grafana: cannot read the token file %s: %s", self.cfg.token_file, exc)
            return False
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif not self._warned_no_token:
            self._warned_no_token = True
            log.warning("grafana: no token (token_file/token_env); posting without one")
        data = json.dumps(self.payload(target, decision, exp)).encode()
        req = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.cfg.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace") if exc.fp is not None else ""
            log.warning("grafana: annotation for %s refused: HTTP %s %s", target.name,
                        exc.code, detail)
            return False
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            log.warning("grafana: annotation for %s not sent: %s", target.name, exc)
            return False
        with self._lock:
            self._last[target.key] = (signature, decision.time)
        return True
