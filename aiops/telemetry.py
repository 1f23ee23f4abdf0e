"""The daemon's own Prometheus metrics, on an injectable registry.

Every action aiops takes is visible here, labelled by target and, for clamps, by the
guardrail rule that fired: operators alert on these (deploy/prometheus/aiops-rules.yaml) and
graph them next to the vLLM metrics (deploy/grafana/aiops-dashboard.json). Tests build a
fresh ``CollectorRegistry`` per test, so nothing leaks between them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aiops.types import AnomalyReport, Decision

# Every metric name the daemon exports; the deploy tests check dashboards and alert rules
# against this list.
METRIC_NAMES: tuple[str, ...] = (
    "aiops_build_info",
    "aiops_ticks_total",
    "aiops_tick_duration_seconds",
    "aiops_errors_total",
    "aiops_consecutive_failures",
    "aiops_last_success_timestamp_seconds",
    "aiops_recommended_replicas",
    "aiops_decided_replicas",
    "aiops_current_replicas",
    "aiops_ready_replicas",
    "aiops_batch_size",
    "aiops_actions_total",
    "aiops_guardrail_firings_total",
    "aiops_anomaly_score",
    "aiops_observed_load_rps",
    "aiops_forecast_load_rps",
    "aiops_forecast_abs_pct_error",
    "aiops_forecast_horizon_load_rps",
    "aiops_policy_fallback",
    "aiops_leader",
    "aiops_paused",
)


class Telemetry:
    """Metric objects of one daemon; ``registry`` is what ``/metrics`` serves."""

    def __init__(self, registry: CollectorRegistry | None = None, version: str = "") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Gauge("aiops_build_info", "aiops version (value is always 1)",
                                ["version"], registry=r)
        self.build_info.labels(version=version or "unknown").set(1)
        self.ticks = Counter("aiops_ticks", "Ticks per target by outcome "
                             "(ok, held, failed, paused, standby)", ["target", "outcome"],
                             registry=r)
        # Buckets from 5 ms (sim) to 30 s (a slow Prometheus with retries).
        self.tick_seconds = Histogram(
            "aiops_tick_duration_seconds", "Wall time of one tick of one target", ["target"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.errors = Counter("aiops_errors", "Errors by target and kind (transient, "
                              "permanent, data_quality, actuation, annotation, internal)",
                              ["target", "kind"], registry=r)
        self.failures = Gauge("aiops_consecutive_failures",
                              "Consecutive ticks whose metrics could not be read", ["target"],
                              registry=r)
        self.last_success = Gauge("aiops_last_success_timestamp_seconds",
                                  "Time of the last tick with good metrics", ["target"],
                                  registry=r)
        self.recommended = Gauge("aiops_recommended_replicas",
                                 "Replicas the policy asked for, before guardrails",
                                 ["target", "policy"], registry=r)
        self.decided = Gauge("aiops_decided_replicas",
                             "Replicas after guardrails (applied unless dry-run)", ["target"],
                             registry=r)
        self.current = Gauge("aiops_current_replicas", "spec.replicas of the target",
                             ["target"], registry=r)
        self.ready = Gauge("aiops_ready_replicas", "Ready replicas of the target", ["target"],
                           registry=r)
        self.batch = Gauge("aiops_batch_size", "Batch size (--max-num-seqs) decided",
                           ["target"], registry=r)
        self.actions = Counter("aiops_actions", "Changes decided, by direction and mode",
                               ["target", "direction", "mode"], registry=r)
        self.guardrails = Counter("aiops_guardrail_firings",
                                  "Guardrail clamps by rule", ["target", "rule"], registry=r)
        self.anomaly = Gauge("aiops_anomaly_score", "Latest anomaly score per metric, 0..1",
                             ["target", "metric"], registry=r)
        self.load = Gauge("aiops_observed_load_rps", "Observed arrival rate, requests/s",
                          ["target"], registry=r)
        self.forecast = Gauge("aiops_forecast_load_rps",
                              "Forecast arrival rate one cold start ahead, requests/s",
                              ["target", "quantile"], registry=r)
        self.forecast_by_horizon = Gauge(
            "aiops_forecast_horizon_load_rps",
            "Forecast arrival rate per horizon (seconds ahead) and quantile, requests/s",
            ["target", "quantile", "horizon_s"], registry=r)
        self.forecast_error = Gauge(
            "aiops_forecast_abs_pct_error",
            "Absolute error of the forecast made one cold start ago, relative to the load",
            ["target"], registry=r)
        self.fallback = Gauge("aiops_policy_fallback",
                              "1 when the configured policy could not be used",
                              ["target", "reason"], registry=r)
        self.leader = Gauge("aiops_leader", "1 while this replica holds the leader Lease",
                            registry=r)
        self.paused = Gauge("aiops_paused", "1 while the target is paused by annotation",
                            ["target"], registry=r)

    def record_decision(self, target: str, policy: str, decision: Decision) -> None:
        self.recommended.labels(target=target, policy=policy).set(
            decision.recommendation.replicas)
        self.decided.labels(target=target).set(decision.replicas)
        self.current.labels(target=target).set(decision.previous_replicas)
        self.batch.labels(target=target).set(decision.batch_size)
        for rule in decision.rules:
            self.guardrails.labels(target=target, rule=rule).inc()
        mode = "dry_run" if decision.dry_run else "enforce"
        if decision.replicas > decision.previous_replicas:
            self.actions.labels(target=target, direction="up", mode=mode).inc()
        elif decision.replicas < decision.previous_replicas:
            self.actions.labels(target=target, direction="down", mode=mode).inc()
        if decision.batch_size != decision.previous_batch_size:
            self.actions.labels(target=target, direction="batch", mode=mode).inc()

    def record_anomalies(self, target: str, report: AnomalyReport) -> None:
        for a in report.anomalies:
            self.anomaly.labels(target=target, metric=a.metric).set(a.score)
