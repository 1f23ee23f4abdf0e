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
        exp = explain(target, decision)
        if exp is None:
            return True
        level = logging.WARNING if exp.warning else logging.INFO
        log.log(level, "%s: %s", exp.reason, exp.text, extra={"fields": {
            "reason": exp.reason,
            "action": exp.action,
            "target": target.name,
            "namespace": target.namespace,
            "deployment": target.deployment,
            "replicas_before": decision.previous_replicas,
            "replicas": decision.replicas,
            "recommended": decision.recommendation.replicas,
            "batch_before": decision.previous_batch_size,
            "batch": decision.batch_size,
            "rules": list(decision.rules),
            "dry_run": decision.dry_run,
            "decision_time": decision.time,
        }})
        return True
