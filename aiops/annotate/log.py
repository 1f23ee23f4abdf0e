"""Every decision worth telling, as one log line worded like its Event and annotation."""

from __future__ import annotations

import logging

from aiops.annotate.base import explain
from aiops.config import TargetConfig
from aiops.types import Decision

log = logging.getLogger("aiops.decision")


class LogAnnotator:
    """Writes the explanation as a structured line (JSON keys with ``--log-format json``)."""

    name = "log"

    def annotate(self, target: TargetConfig, decision: Decision) -> bool:
        """One line per decision: INFO (WARNING for a fallback) when it is news, else DEBUG."""
        exp = explain(target, decision)
        if exp is None:
            level, event, text = logging.DEBUG, "AIOpsHold", (
                f"held {target.key} at {decision.replicas} replicas")
        else:
            level = logging.WARNING if exp.warning else logging.INFO
            event, text = exp.reason, exp.text
        log.log(level, "%s: %s", event, text, extra={"fields": {
            "event": event,
            "decision_time": decision.time,
            "target": target.name,
            "namespace": target.namespace,
            "deployment": target.deployment,
            "current_replicas": decision.previous_replicas,
            "recommended_replicas": decision.recommendation.replicas,
            "final_replicas": decision.replicas,
            "batch_size": decision.batch_size,
            "previous_batch_size": decision.previous_batch_size,
            "policy": target.policy,
            "rules": list(decision.rules),
            "dry_run": decision.dry_run,
            "applied": decision.changed and not decision.dry_run,
        }})
        return True
