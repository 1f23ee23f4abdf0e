"""Several metrics of one target: bad telemetry vs real load or health change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiops.detect.base import load_state, save_state
from aiops.detect.monitor import TargetMonitor
from aiops.detect.multivariate import MetricSpec, TargetScorer
from aiops.types import AnomalyReport, Snapshot

STEP = 300.0
T0 = 1.6e9
# Small windows so the detectors warm up in ~50 ticks (the classification is under test here,
# not the detector); the likelihood's averaging is kept at its default.
SMALL = {"min_train": 20, "train": 150, "refit_every": 20, "reestimate": 10, "history": 300,
         "learning": 20}
METRICS = (
    MetricSpec("arrival_rate", "load", 0.0),
    MetricSpec("prompt_tokens_rate", "load", 0.0),
    MetricSpec("generation_tokens_rate", "load", 0.0),
    MetricSpec("kv_cache_usage", "usage", 0.0, 1.0),
    MetricSpec("ttft_p99", "health", 0.0),
)
WARM = 120  # ticks of normal traffic before anything happens


def traffic(n: int, seed: int = 0, load: float = 1.0) -> list[dict[str, float]]:
    """Load metrics that move together, KV usage that follows load, steady latency."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        rate = load * (10 + 3 * np.sin(2 * np.pi * k / 48) + rng.normal(0, 0.3))
        out.append({
            "arrival_rate": rate,
            "prompt_tokens_rate": 500 * rate * (1 + rng.normal(0, 0.02)),
            "generation_tokens_rate": 200 * rate * (1 + rng.normal(0, 0.02)),
            "kv_cache_usage": min(0.9, 0.02 * rate + rng.normal(0, 0.005) + 0.1),
            "ttft_p99": 0.5 + rng.normal(0, 0.02),
        })
    return out


def run(rows: list[dict[str, float]], scorer: TargetScorer | None = None,
        start: int = 0) -> tuple[TargetScorer, list[AnomalyReport]]:
    scorer = scorer or TargetScorer(METRICS, **SMALL)
    reports = [scorer.update(T0 + STEP * (start + k), row) for k, row in enumerate(rows)]
    return scorer, reports


def kinds(report: AnomalyReport) -> dict[str, str]:
    return {a.metric: a.kind for a in report.anomalies if a.score >= report.threshold}


def test_normal_traffic_is_never_called_bad_telemetry() -> None:
    # (how rarely normal data alarms is a property of the detector, tested with its default
    # windows in test_detect.py; the small windows here alarm more often)
    _, reports = run(traffic(WARM + 150))
    assert not any(r.bad_telemetry for r in reports)
    assert not any(a.kind == "bad_telemetry" for r in reports for a in r.anomalies)


def test_impossible_value_is_bad_telemetry_at_once() -> None:
    rows = traffic(5)
    rows[3]["kv_cache_usage"] = 1.7
    _, reports = run(rows)
    assert reports[3].bad_telemetry
    (a,) = reports[3].anomalies
    assert (a.metric, a.score, a.kind) == ("kv_cache_usage", 1.0, "bad_telemetry")
    assert "impossible" in a.detail
    assert not reports[4].active


def test_stale_sample_is_bad_telemetry() -> None:
    scorer, _ = run(traffic(10))
    now = T0 + STEP * 10
    report = scorer.update(now, traffic(1, 1)[0], sample_times={"ttft_p99": now - 900.0})
    assert kinds(report) == {"ttft_p99": "bad_telemetry"}
    assert "stale" in report.anomalies[0].detail


def test_flatline_in_one_load_metric_is_bad_telemetry() -> None:
    rows = traffic(WARM + 20)
    stuck = rows[WARM - 1]["arrival_rate"]
    for row in rows[WARM:]:
        row["arrival_rate"] = stuck  # the exporter froze; tokens keep flowing
    _, reports = run(rows)
    assert not reports[WARM + 5].bad_telemetry  # not yet an hour of identical samples
    flagged = [k for k, r in enumerate(reports) if kinds(r).get("arrival_rate") == "bad_telemetry"]
    assert flagged and flagged[0] == WARM + 10  # 12 identical samples: the last good one + 11


def test_idle_target_is_not_a_flatline() -> None:
    rows = traffic(WARM + 30)
    for row in rows[WARM:]:
        row.update(arrival_rate=0.0, prompt_tokens_rate=0.0, generation_tokens_rate=0.0)
    _, reports = run(rows)
    assert not any(r.bad_telemetry for r in reports[WARM + 11:])


def test_step_in_one_load_metric_alone_is_bad_telemetry() -> None:
    rows = traffic(WARM + 5)
    rows[WARM]["arrival_rate"] *= 3  # requests tripled but not their tokens: impossible
    _, reports = run(rows)
    r = reports[WARM]
    assert kinds(r).get("arrival_rate") == "bad_telemetry"
    assert "not seen in related" in next(a.detail for a in r.anomalies
                                         if a.metric == "arrival_rate")


def test_step_in_all_load_metrics_is_a_load_change() -> None:
    rows = traffic(WARM) + traffic(10, seed=5, load=3.0)
    _, reports = run(rows)
    r = reports[WARM]
    found = kinds(r)
    assert found, "a tripled load must raise an alarm"
    assert set(found.values()) == {"load_change"}
    assert not r.bad_telemetry


def test_latency_step_at_steady_load_is_health() -> None:
    rows = traffic(WARM + 10)
    for row in rows[WARM:]:
        row["ttft_p99"] *= 4  # a sick node: same traffic, four times the latency
    _, reports = run(rows)
    assert kinds(reports[WARM]) == {"ttft_p99": "health"}


def test_missing_latency_is_no_data_not_an_anomaly() -> None:
    rows = traffic(WARM + 10)
    for row in rows[WARM:]:
        row["ttft_p99"] = float("nan")  # no request finished in the window
    _, reports = run(rows)
    assert not any("ttft_p99" in kinds(r) for r in reports[WARM:])


def test_unknown_metric_and_bad_parameters_are_refused() -> None:
    scorer = TargetScorer(METRICS, **SMALL)
    with pytest.raises(ValueError, match="unknown metrics"):
        scorer.update(T0, {"qps": 1.0})
    with pytest.raises(ValueError, match="repeat"):
        TargetScorer((METRICS[0], METRICS[0]))
    with pytest.raises(ValueError, match="report_floor"):
        TargetScorer(METRICS, threshold=0.4, report_floor=0.5)


def test_saved_target_state_continues_with_identical_reports(tmp_path: Path) -> None:
    rows = traffic(WARM + 20)
    rows[WARM + 10]["kv_cache_usage"] = 0.99  # something to report after the restore
    for row in rows[WARM + 12:]:
        row["ttft_p99"] *= 4
    _, straight = run(rows)
    first, _ = run(rows[:WARM])
    save_state(first.state_dict(), tmp_path / "target")
    second = TargetScorer(METRICS, **SMALL)
    second.load_state_dict(load_state(tmp_path / "target"))
    _, after = run(rows[WARM:], second, start=WARM)
    assert after == straight[WARM:]
    assert any(r.active for r in after)


def test_monitor_observes_snapshots_for_the_controller() -> None:
    monitor = TargetMonitor(threshold=0.9, detector="default")
    snap = Snapshot(time=T0, replicas=2, ready_replicas=2, batch_size=64,
                    requests_running=10, requests_waiting=0, kv_cache_usage=1.5,
                    arrival_rate=3.0, prompt_tokens_rate=1500.0, generation_tokens_rate=600.0)
    report = monitor.observe(snap)
    assert isinstance(report, AnomalyReport)
    assert report.bad_telemetry
    assert [a.metric for a in report.anomalies] == ["kv_cache_usage"]


def test_an_empty_queue_for_an_hour_is_not_bad_telemetry() -> None:
    from aiops.detect.multivariate import VLLM_METRICS, TargetScorer

    scorer = TargetScorer(VLLM_METRICS)
    rng = np.random.default_rng(0)
    reports = []
    for i in range(400):
        waiting = float(rng.integers(0, 5)) if i < 100 else 0.0  # queue drains, stays empty
        rate = 20.0 + rng.normal(0.0, 1.0)
        reports.append(scorer.update(15.0 * i, {
            "arrival_rate": rate, "prompt_tokens_rate": 600 * rate,
            "generation_tokens_rate": 150 * rate, "requests_running": 30 + rng.normal(),
            "requests_waiting": waiting, "kv_cache_usage": 0.2, "gpu_utilization": 0.6,
            "ttft_p99": 0.2, "tpot_p99": 0.03}))
    assert not any(a.metric == "requests_waiting" and a.kind == "bad_telemetry"
                   for r in reports for a in r.anomalies)
