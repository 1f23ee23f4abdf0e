"""Several metrics of one target: bad telemetry vs real load or health change."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from fakes.vllm import traffic

from aiops.detect.base import load_state, save_state
from aiops.detect.monitor import TargetMonitor
from aiops.detect.multivariate import VLLM_METRICS, Capacity, TargetScorer
from aiops.detect.telemetry import MetricSpec, TelemetryChecks
from aiops.types import AnomalyReport, Snapshot

STEP = 15.0
T0 = 1.6e9
CAP = Capacity(ready_replicas=8, replicas=8, batch_size=64)
# Small windows so the per-metric detectors warm up in ~50 ticks (the classification is
# under test here, not the detector); the likelihood's averaging is kept at its default.
# Small windows alarm more often, so one alarm per episode (rearm) would hide the step.
SMALL = {"min_train": 20, "train": 150, "refit_every": 20, "reestimate": 10, "history": 300,
         "learning": 20, "rearm": 1}
WARM = 150  # ticks of normal traffic before anything happens


def run(rows: list[dict[str, float]], scorer: TargetScorer | None = None, start: int = 0,
        capacity: Capacity | None = CAP) -> tuple[TargetScorer, list[AnomalyReport]]:
    scorer = scorer or TargetScorer(**SMALL)
    reports = [scorer.update(T0 + STEP * (start + k), row, capacity=capacity)
               for k, row in enumerate(rows)]
    return scorer, reports


def bad(report: AnomalyReport) -> dict[str, str]:
    """Metrics called bad telemetry, with the detail."""
    return {a.metric: a.detail for a in report.anomalies
            if a.kind == "bad_telemetry" and a.score >= report.threshold}


def kinds(report: AnomalyReport) -> dict[str, str]:
    return {a.metric: a.kind for a in report.anomalies if a.score >= report.threshold}


def first_bad(reports: list[AnomalyReport], start: int = WARM) -> int:
    """Ticks after ``start`` until the first bad-telemetry report (1 = at ``start``)."""
    hits = [k for k, r in enumerate(reports) if k >= start and r.bad_telemetry]
    return hits[0] - start + 1 if hits else -1


def test_normal_traffic_is_never_called_bad_telemetry() -> None:
    _, reports = run(traffic(WARM + 600))
    assert not any(r.bad_telemetry for r in reports)


def test_a_surge_with_its_tokens_and_sequences_is_a_load_change() -> None:
    rows = traffic(WARM) + traffic(40, seed=5, load=5.0)  # five times the load at once
    _, reports = run(rows)
    assert not any(r.bad_telemetry for r in reports)
    assert "load_change" in kinds(reports[WARM]).values()


def test_an_outage_to_zero_is_not_bad_telemetry() -> None:
    rows = traffic(WARM + 60)
    for row in rows[WARM:]:
        row.update(arrival_rate=0.0, prompt_tokens_rate=0.0, generation_tokens_rate=0.0,
                   requests_running=0.0, kv_cache_usage=0.0, ttft_p99=math.nan,
                   tpot_p99=math.nan)
    _, reports = run(rows)
    assert not any(r.bad_telemetry for r in reports)


def test_impossible_value_is_bad_telemetry_at_once() -> None:
    rows = traffic(5)
    rows[3]["kv_cache_usage"] = 1.7
    _, reports = run(rows)
    assert reports[3].bad_telemetry and not reports[4].active
    (a,) = reports[3].anomalies
    assert (a.metric, a.score, a.kind) == ("kv_cache_usage", 1.0, "bad_telemetry")
    assert "impossible" in a.detail


def test_more_running_sequences_than_slots_is_impossible() -> None:
    rows = traffic(5)
    rows[3]["requests_running"] = 8 * 64 * 2.0  # twice what eight pods of 64 can run
    _, reports = run(rows)
    assert "slots" in bad(reports[3])["requests_running"]
    _, without = run(rows, capacity=None)  # without the capacity the check cannot be made
    assert "requests_running" not in bad(without[3])


def test_sequences_and_kv_usage_come_together() -> None:
    rows = traffic(5)
    rows[3]["kv_cache_usage"] = 0.0  # sequences running in an empty cache
    rows[4]["requests_running"] = 0.0  # a cache in use with nothing running
    _, reports = run(rows)
    assert "kv_cache_usage" in bad(reports[3])
    assert "requests_running" in bad(reports[4])


def test_stale_sample_is_bad_telemetry() -> None:
    scorer, _ = run(traffic(10))
    now = T0 + STEP * 10
    report = scorer.update(now, traffic(1, 1)[0], sample_times={"ttft_p99": now - 900.0},
                           capacity=CAP)
    assert kinds(report) == {"ttft_p99": "bad_telemetry"}
    assert "stale" in report.anomalies[0].detail


def test_a_vanished_series_is_missing_but_missing_latency_is_no_data() -> None:
    rows = traffic(WARM + 10)
    for row in rows[WARM:]:
        row["requests_waiting"] = math.nan  # renamed on an upgrade: the query matches nothing
        row["ttft_p99"] = math.nan  # no request finished in the window: legitimate
    _, reports = run(rows)
    assert all(set(bad(r)) == {"requests_waiting"} for r in reports[WARM:])
    assert "no value" in bad(reports[WARM])["requests_waiting"]


def test_a_stale_scrape_freezes_every_metric_and_is_caught_at_the_first_repeat() -> None:
    rows = traffic(WARM + 10)
    for row in rows[WARM:]:
        row.update(rows[WARM - 1])
    _, reports = run(rows)
    assert first_bad(reports) == 1
    assert "frozen" not in bad(reports[WARM])  # the finding names the metric, not the rule
    assert "repeated" in bad(reports[WARM])["kv_cache_usage"]


def test_one_frozen_metric_is_caught_within_a_few_ticks() -> None:
    rows = traffic(WARM + 20)
    for row in rows[WARM:]:
        row["kv_cache_usage"] = rows[WARM - 1]["kv_cache_usage"]
    _, reports = run(rows)
    assert 1 <= first_bad(reports) <= 3  # a value that changed on every tick for an hour
    assert all("kv_cache_usage" in bad(r) for r in reports[WARM + 3:])


def test_repeats_at_a_bound_or_of_a_constant_metric_are_no_evidence() -> None:
    rows = traffic(WARM + 300)
    for row in rows:
        row["gpu_utilization"] = 0.6  # an exporter that always says the same: learnt
    for row in rows[WARM:]:
        row["requests_waiting"] = 0.0  # an empty queue stays empty
    _, reports = run(rows)
    assert not any(r.bad_telemetry for r in reports)


def test_a_unit_change_of_one_rate_breaks_its_ratios_at_once() -> None:
    rows = traffic(WARM + 10)
    for row in rows[WARM:]:
        row["arrival_rate"] *= 1000.0  # requests per millisecond read as per second
    _, reports = run(rows)
    assert first_bad(reports) == 1
    assert "arrival_rate" in bad(reports[WARM])


def test_a_counter_reset_read_through_rate_of_sum_breaks_littles_law() -> None:
    rows = traffic(WARM + 4)
    for row in rows[WARM:]:  # a day of counts over a 60 s window, gauges unchanged
        for m in ("arrival_rate", "prompt_tokens_rate", "generation_tokens_rate"):
            row[m] *= 1440.0
    _, reports = run(rows)
    assert first_bad(reports) == 1
    assert "Little" in " ".join(bad(reports[WARM]).values())


def test_a_doubled_scrape_breaks_kv_per_token_within_two_ticks() -> None:
    rows = traffic(WARM + 10)
    for row in rows[WARM:]:
        for m in ("arrival_rate", "prompt_tokens_rate", "generation_tokens_rate",
                  "requests_running", "requests_waiting"):
            row[m] *= 2.0  # sums double, the KV mean and the latencies do not
    _, reports = run(rows)
    assert 1 <= first_bad(reports) <= 2
    assert "KV per running sequence" in " ".join(bad(reports[WARM + 1]).values())


def test_a_latency_in_milliseconds_is_caught_on_the_second_tick() -> None:
    rows = traffic(WARM + 5)
    for row in rows[WARM:]:
        row["ttft_p99"] *= 1000.0
    _, reports = run(rows)
    assert first_bad(reports) == 2
    assert "Little" in bad(reports[WARM + 1])["ttft_p99"]


def test_a_stuck_queue_while_ttft_explodes_is_bad_telemetry() -> None:
    rows = traffic(WARM + 10)
    for k, row in enumerate(rows[WARM:]):
        row["requests_waiting"] = 3.0  # stuck, while requests really pile up
        row["requests_running"] = 8 * 64  # every slot busy
        row["kv_cache_usage"] = 0.0008 * 8 * 64
        row["ttft_p99"] = 5.0 + 2.0 * k
    _, reports = run(rows)
    assert "stuck" in bad(reports[WARM + 2])["requests_waiting"]


def test_littles_law_finds_a_queue_stuck_at_empty_and_lets_a_real_one_drain() -> None:
    rows = traffic(WARM + 8)
    for row in rows:
        row["ttft_p50"] = 0.1
    for row in rows[WARM:WARM + 4]:
        # half a minute to first token at ~10 requests/s: Little's law puts at least
        # ~150 requests in the system, the gauges show ~50 and an empty queue, as before
        row["ttft_p50"] = 30.0
    for row, waiting in zip(rows[WARM + 4:], (300.0, 150.0, 40.0, 0.0), strict=True):
        row["ttft_p50"] = 30.0  # a real queue draining: it moves every tick
        row["requests_waiting"] = waiting
    _, reports = run(rows)
    assert not any(r.bad_telemetry for r in reports[:WARM])
    assert "Little's law" in bad(reports[WARM])["requests_waiting"]
    assert not any(r.bad_telemetry for r in reports[WARM + 4:])
    assert any("Little's law" in d for d in reports[WARM + 7].unverified)  # but no ground
    # for a scale-down while the bound is broken


def test_a_first_unlikely_repeat_is_a_doubt_not_an_alarm() -> None:
    rows = traffic(WARM + 3)
    rows[WARM]["arrival_rate"] = rows[WARM - 1]["arrival_rate"]  # one repeat: suspicious
    _, reports = run(rows)
    assert not any(r.unverified for r in reports[WARM // 2:WARM])  # normal ticks vouch
    assert not reports[WARM].bad_telemetry
    assert any(d.startswith("arrival_rate repeated 1") for d in reports[WARM].unverified)
    assert not reports[WARM + 1].unverified  # it moved again: the doubt is gone


def test_traffic_that_stops_at_once_is_not_bad_telemetry() -> None:
    # a service gap: the last requests arrive early in the tick, those in flight still
    # generate the tick's tokens, then nothing; per-request ratios are off for that tick
    rows = traffic(WARM + 6)
    gap = rows[WARM]
    gap.update(arrival_rate=1.5, prompt_tokens_rate=500 * 1.5, requests_running=2.0,
               kv_cache_usage=0.0016)  # generation_tokens_rate: the previous tick's
    for row in rows[WARM + 1:]:
        row.update(arrival_rate=0.0, prompt_tokens_rate=0.0, generation_tokens_rate=0.0,
                   requests_running=0.0, kv_cache_usage=0.0)
    _, reports = run(rows)
    assert not any(r.bad_telemetry for r in reports)


def test_latency_step_at_steady_load_is_health_and_after_a_surge_follows_load() -> None:
    rows = traffic(WARM + 10)
    for row in rows[WARM:]:
        row["ttft_p99"] *= 4  # a sick node: same traffic, four times the latency
    _, reports = run(rows)
    assert kinds(reports[WARM]) == {"ttft_p99": "health"}
    rows = traffic(WARM) + traffic(10, seed=3, load=3.0)
    for row in rows[WARM:]:
        row["ttft_p99"] *= 4  # the same latency, with three times the load
    _, reports = run(rows)
    assert kinds(reports[WARM + 2]).get("ttft_p99") == "load_change"


def test_nothing_is_learnt_from_a_fault() -> None:
    # a long unit change does not become normal: still flagged at its end
    rows = traffic(WARM + 200)
    for row in rows[WARM:]:
        row["arrival_rate"] *= 1000.0
    _, reports = run(rows)
    assert all(r.bad_telemetry for r in reports[WARM:])


def test_unknown_metric_and_bad_parameters_are_refused() -> None:
    scorer = TargetScorer(**SMALL)
    with pytest.raises(ValueError, match="unknown metrics"):
        scorer.update(T0, {"qps": 1.0})
    with pytest.raises(ValueError, match="repeat"):
        TargetScorer((VLLM_METRICS[0], VLLM_METRICS[0]))
    with pytest.raises(ValueError, match="report_floor"):
        TargetScorer(threshold=0.4, report_floor=0.5)
    with pytest.raises(ValueError, match="frozen_p"):
        TelemetryChecks(VLLM_METRICS, frozen_p=2.0)


def test_saved_target_state_continues_with_identical_reports(tmp_path: Path) -> None:
    rows = traffic(WARM + 40)
    rows[WARM + 10]["kv_cache_usage"] = 1.5  # something to report after the restore
    for row in rows[WARM + 12:]:
        row["ttft_p99"] *= 4
    for row in rows[WARM + 20:]:
        row["arrival_rate"] *= 1000
    _, straight = run(rows)
    first, _ = run(rows[:WARM])
    save_state(first.state_dict(), tmp_path / "target")
    second = TargetScorer(**SMALL)
    second.load_state_dict(load_state(tmp_path / "target"))
    _, after = run(rows[WARM:], second, start=WARM)
    assert after == straight[WARM:]
    assert any(r.bad_telemetry for r in after) and any(
        a.kind == "health" for r in after for a in r.anomalies)


def test_monitor_observes_snapshots_for_the_controller() -> None:
    monitor = TargetMonitor(threshold=0.9, detector="default")
    snap = Snapshot(time=T0, replicas=2, ready_replicas=2, batch_size=64,
                    requests_running=10, requests_waiting=0, kv_cache_usage=1.5,
                    arrival_rate=3.0, prompt_tokens_rate=1500.0, generation_tokens_rate=600.0)
    report = monitor.observe(snap)
    assert report.bad_telemetry
    assert [a.metric for a in report.anomalies] == ["kv_cache_usage"]
    # the pods' slots come from the snapshot: 2 pods x 64 cannot run 500 sequences
    report = monitor.observe(Snapshot(
        time=T0 + STEP, replicas=2, ready_replicas=2, batch_size=64, requests_running=500,
        requests_waiting=0, kv_cache_usage=0.5, arrival_rate=3.0, prompt_tokens_rate=1500.0,
        generation_tokens_rate=600.0))
    assert [a.metric for a in report.anomalies] == ["requests_running"]


def test_an_empty_queue_for_an_hour_is_not_bad_telemetry() -> None:
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


def test_metric_specs_without_the_related_metrics_skip_those_checks() -> None:
    only = (MetricSpec("arrival_rate", "load", 0.0),)
    scorer = TargetScorer(only, **SMALL)
    rows = traffic(WARM + 3)
    for row in rows[WARM:]:
        row["arrival_rate"] *= 1000.0
    reports = [scorer.update(T0 + STEP * k, {"arrival_rate": row["arrival_rate"]})
               for k, row in enumerate(rows)]
    assert not any(r.bad_telemetry for r in reports)  # nothing to compare it with
