"""The ``Annotator`` protocol and the one explanation of a Decision that every channel shares.

Contract: ``annotate(target, decision) -> bool`` never raises. ``True`` means delivered, or
nothing worth saying; ``False`` means it failed, and the annotator has already logged why.
The caller counts the ``False`` (``aiops_errors_total{kind="annotate_<name>"}``) and goes on:
an explanation channel being down must never stop or delay actuation. A bool rather than a
typed error because there is nothing for the caller to decide: every failure is handled the
same way (count, carry on), and a forgotten ``except`` must not be able to kill the loop.
:func:`safe_annotate` adds a last guard for annotators written by others.

What is worth saying (:func:`explain`), so Events, Grafana and logs agree:

==========================  =======================  =========
situation                   reason                   type
==========================  =======================  =========
a change applied            ``AIOpsScaled``          Normal
a change in dry-run         ``AIOpsRecommendation``  Normal
guardrails held a change    ``AIOpsGuardrail``       Normal
a fallback rule fired       ``AIOpsFallback``        Warning
nothing recommended         (nothing)
==========================  =======================  =========

A fallback is recognised by the name of a clamp's rule containing ``fallback``, ``data_hold``
or ``stale`` (the guardrails' ``fallback``, ``data_hold`` and ``batch_data_hold`` rules): the
daemon is acting without trustworthy metrics, which operators should see as a warning.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Protocol

from aiops.config import TargetConfig
from aiops.types import Decision

log = logging.getLogger(__name__)

REASON_SCALED = "AIOpsScaled"
REASON_RECOMMENDATION = "AIOpsRecommendation"
REASON_GUARDRAIL = "AIOpsGuardrail"
REASON_FALLBACK = "AIOpsFallback"
FALLBACK_RULE_MARKERS = ("fallback", "data_hold", "stale")
MAX_MESSAGE = 1024  # events.k8s.io caps a note at 1 kB; core/v1 Events are kept the same


class Annotator(Protocol):
    """One channel that explains decisions (Kubernetes Events, Grafana, ...)."""

    name: str  # metric label: "event", "grafana"

    def annotate(self, target: TargetConfig, decision: Decision) -> bool:
        """Explain ``decision``; True when delivered or nothing to say. Never raises."""
        ...


def safe_annotate(annotator: Annotator, target: TargetConfig, decision: Decision) -> bool:
    """Call ``annotator`` and turn anything it raises into ``False`` (logged)."""
    try:
        return bool(annotator.annotate(target, decision))
    except Exception:
        log.exception("annotator %s raised on target %s", getattr(annotator, "name", "?"),
                      target.name)
        return False


@dataclass(frozen=True)
class Explanation:
    """What happened to one decision, worded once for every channel."""

    reason: str  # REASON_*
    warning: bool
    action: str  # "scale-up", "scale-down", "batch-size", "hold"
    rules: tuple[str, ...]
    text: str

    @property
    def event_type(self) -> str:
        return "Warning" if self.warning else "Normal"


def is_fallback_rule(rule: str) -> bool:
    low = rule.lower()
    return any(m in low for m in FALLBACK_RULE_MARKERS)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def explain(target: TargetConfig, decision: Decision, *,
            max_len: int = MAX_MESSAGE) -> Explanation | None:
    """The explanation of ``decision``, or None when nothing was recommended or changed.

    "Held" means the policy asked for something the guardrails refused; a decision where
    the policy itself asked for no change is not news and yields None, so a quiet target
    produces no Events and no annotations.
    """
    rec = decision.recommendation
    rules = decision.rules
    p, r = decision.previous_replicas, decision.replicas
    pb, b = decision.previous_batch_size, decision.batch_size
    wanted_other = rec.replicas != r or (rec.batch_size is not None and rec.batch_size != b)
    fallback = any(is_fallback_rule(x) for x in rules)
    if not decision.changed and not (rules and wanted_other) and not fallback:
        return None

    if r > p:
        action = "scale-up"
    elif r < p:
        action = "scale-down"
    elif b != pb:
        action = "batch-size"
    else:
        action = "hold"
    batch = f"batch size {pb}→{b}" if b != pb else f"batch size {b}"
    change = f"replicas {p}→{r}, {batch}"
    if fallback:
        reason = REASON_FALLBACK
        head = (f"Fallback on {target.key}: " + change if decision.changed
                else f"Fallback on {target.key}: held at {p} replicas, {batch}")
        if decision.dry_run and decision.changed:
            head = "Dry-run: " + head
    elif decision.changed:
        reason = REASON_RECOMMENDATION if decision.dry_run else REASON_SCALED
        head = (f"Dry-run: would set {target.key} " if decision.dry_run
                else f"Set {target.key} ") + change
    else:
        reason = REASON_GUARDRAIL
        head = f"Held {target.key} at {p} replicas, {batch}"

    policy = f"policy {target.policy} recommended {rec.replicas} replicas"
    if rec.batch_size is not None:
        policy += f" at batch size {rec.batch_size}"
    if rec.reason:
        policy += f" ({rec.reason})"
    parts = [head, policy]
    if decision.clamps:
        parts.append("guardrails: " + ", ".join(
            c.text() + (f" ({c.detail})" if c.detail else "")
            for c in decision.clamps))
    return Explanation(reason=reason, warning=fallback, action=action, rules=rules,
                       text=_truncate("; ".join(parts), max_len))


class QueuedAnnotator:
    """Runs a slow annotator on its own thread: bounded queue, retries, counted drops.

    Grafana that hangs for its whole timeout must not hold up a tick, and one that is down
    for an hour must not grow memory without bound. ``annotate`` only enqueues: it returns
    False (and counts a drop) when the queue is full. The worker retries a failed delivery
    ``retries`` times with doubling backoff; what still fails is counted in ``failed``.
    """

    def __init__(self, inner: Annotator, *, maxsize: int = 256, retries: int = 2,
                 backoff_s: float = 1.0) -> None:
        if maxsize < 1 or retries < 0 or backoff_s < 0:
            raise ValueError("maxsize >= 1, retries >= 0 and backoff_s >= 0 are required")
        self.inner = inner
        self.name = inner.name
        self.retries = retries
        self.backoff_s = backoff_s
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[TargetConfig, Decision] | None] = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"annotate-{self.name}",
                                        daemon=True)
        self._thread.start()

    def annotate(self, target: TargetConfig, decision: Decision) -> bool:
        if self._stop.is_set():
            return False
        try:
            self._queue.put_nowait((target, decision))
        except queue.Full:
            with self._lock:
                self.dropped += 1
            log.warning("annotator %s: queue full, dropped the annotation for %s",
                        self.name, target.name)
            return False
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                target, decision = item
                ok = False
                for attempt in range(self.retries + 1):
                    ok = safe_annotate(self.inner, target, decision)
                    if ok or attempt == self.retries:
                        break
                    self._stop.wait(self.backoff_s * 2**attempt)  # shorter once closing
                with self._lock:
                    if ok:
                        self.sent += 1
                    else:
                        self.failed += 1
            finally:
                self._queue.task_done()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued so far was delivered or given up; False on timeout."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, try what is queued once more (no backoff), stop the worker."""
        self._stop.set()
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped,
                    "queued": self._queue.qsize()}
