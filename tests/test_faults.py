"""Labelled cluster faults through the daemon's own tick: never a blind scale-down.

The scenarios run the simulated fleet (``SimBackend``) through ``Daemon.run_simulated``
with telemetry faults injected at the metric source. The workload is the seeded
``synthetic:step`` (10, then 30, then 15 requests/s from minute 40): the faults start a
minute after the step down, so a policy that follows the load wants to scale down while
they last — without anomaly detection it does, in most of them, which is what makes this
test able to fail.

Each fault runs twice with detection: under the default policy, which the reports and
their timing are judged on, and under ``predictive`` without its burst memory, which the
zero-blind-scale-down property is also judged on. The guardrails are one pipeline for every
policy, and the default's two-hour memory of bursts holds the fleet at the step's peak for
the rest of the hour, which would leave them almost no scale-down to block here; without
that memory the policy follows the step down inside most faults.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from aiops.detect.faults import (
    LOAD_CHANGES,
    TELEMETRY_FAULTS,
    Fault,
    FaultySource,
    load_change_of,
    load_factor,
    reshape,
)
from aiops.detect.scenarios import (
    Run,
    Scenario,
    false_alarms,
    run_scenario,
    score_event,
    standard_events,
)
from aiops.sim.workloads import Workload, resolve_workload
from aiops.types import Snapshot

DURATION = 3600.0
ONSET = 2460.0  # a minute after the step down from 30 to 15 requests/s
EVENTS = standard_events(DURATION, ONSET, fault_s=720.0, change_s=600.0)
FAULTS = [e for e in EVENTS if e.telemetry]
POLICY = "predictive:burst_window=0"  # follows the step down within the faults


@pytest.fixture(scope="module")
def workload() -> Workload:
    return resolve_workload("synthetic:step", duration=DURATION, seed=0)


@pytest.fixture(scope="module")
def fault_runs(workload: Workload) -> dict[str, tuple[Run, Run, Run]]:
    """Each fault's run with anomaly detection under the default policy, and with and
    without it under ``POLICY`` (no forecaster: faster, and the guardrails are the same)."""
    out = {}
    for e in FAULTS:
        sc = Scenario(e.label, workload, (e,))
        out[e.label] = (run_scenario(sc, forecast=False),
                        run_scenario(sc, forecast=False, policy=POLICY),
                        run_scenario(sc, forecast=False, detect=False, policy=POLICY))
    return out


def test_every_kind_of_fault_is_in_the_scenarios() -> None:
    assert {e.kind for e in EVENTS} == set(TELEMETRY_FAULTS) | set(LOAD_CHANGES)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.label for f in FAULTS])
def test_no_blind_scale_down_and_the_fault_is_reported(
        fault: Fault, fault_runs: dict[str, tuple[Run, Run, Run]]) -> None:
    run, following, _ = fault_runs[fault.label]
    assert score_event(following, fault).scale_downs == 0
    score = score_event(run, fault)
    assert score.scale_downs == 0
    assert math.isfinite(score.ticks_to_detect)  # reported as bad telemetry
    assert score.flagged >= score.ticks // 5  # and for much of its duration


def test_without_detection_these_faults_scale_down_blind(
        fault_runs: dict[str, tuple[Run, Run, Run]]) -> None:
    blind = {e.label: score_event(fault_runs[e.label][2], e).scale_downs for e in FAULTS}
    # faults that look like less load, or that hide the load: the policy alone follows them
    # (not a stale series: past stale_after_s the ingest refuses it and the data hold keeps
    # the fleet, so whether the policy alone scales down in the first two minutes depends
    # on where its plan happens to be, not on the fault)
    for label in ("flatline:requests_running", "flatline:arrival_rate",
                  "flatline:kv_cache_usage", "unit_change:ttft_p99", "nan_inf:kv_cache_usage",
                  "renamed_metric:requests_waiting"):
        assert blind[label] > 0, blind


def test_most_faults_are_reported_within_two_ticks(
        fault_runs: dict[str, tuple[Run, Run, Run]]) -> None:
    ttd = [score_event(fault_runs[e.label][0], e).ticks_to_detect for e in FAULTS]
    assert float(np.median(ttd)) <= 2.0, ttd


# Onsets where the policy alone does scale down inside the fault (in the crowd's tail), so
# that the scenario tests something.
@pytest.mark.parametrize("onset", [2580.0, 2700.0])
def test_a_doubled_scrape_on_a_quiet_service_is_caught_before_any_scale_down(
        onset: float) -> None:
    # a flash crowd at a tenth of its traffic: a few requests a tick and a few sequences
    # running, too few for any ratio on one tick; without detection the policy scales down
    # while every count reads twice what it is
    quiet = resolve_workload("synthetic:flash-crowd", duration=DURATION, seed=0,
                             rate_scale=0.1)
    fault = Fault("double_scrape", onset, 720.0)
    sc = Scenario(fault.label, quiet, (fault,))
    assert score_event(run_scenario(sc, forecast=False, detect=False), fault).scale_downs > 0
    score = score_event(run_scenario(sc, forecast=False), fault)
    assert score.scale_downs == 0
    # a finding needs the pooled ticks to count enough: a few minutes on a quiet service
    assert score.ticks_to_detect <= 12


@pytest.fixture(scope="module")
def goes_idle(workload: Workload) -> Workload:
    """The step workload, with no request after its step down: the fleet then scales in
    over the idle stretch, step by step."""
    keep = workload.arrivals < 2400.0
    return Workload(f"{workload.name}, then idle", workload.arrivals[keep],
                    workload.context_tokens[keep], workload.generated_tokens[keep],
                    workload.duration)


@pytest.mark.parametrize("onset", [2760.0, 2820.0])
def test_a_scrape_that_stops_while_the_service_is_idle_is_told_by_the_samples_age(
        goes_idle: Workload, onset: float) -> None:
    # the stopped scrape serves the idle page the service would serve anyway: only the
    # samples' age tells, and the ingest refuses them only past stale_after_s (120 s)
    fault = Fault("stale_series", onset, 600.0)
    sc = Scenario(fault.label, goes_idle, (fault,))
    ageless = run_scenario(sc, forecast=False, policy=POLICY,
                           monitor_params={"checks": {"age_ticks": 240}})  # never judged
    assert score_event(ageless, fault).scale_downs > 0
    score = score_event(run_scenario(sc, forecast=False, policy=POLICY), fault)
    assert score.scale_downs == 0
    assert score.ticks_to_detect <= 4  # a finding once two scrapes are missed


@pytest.mark.parametrize("kind", ["surge", "drop_to_zero"])
def test_a_real_load_change_is_followed_not_frozen(workload: Workload, kind: str) -> None:
    change = next(e for e in EVENTS if e.kind == kind)
    sc = Scenario(change.label, workload, (change,))
    run = run_scenario(sc, forecast=False)
    score = score_event(run, change)
    assert score.frozen == 0 and score.flagged == 0
    assert false_alarms(run)[0] == 0
    # the same decisions as without any anomaly detection
    plain = run_scenario(sc, forecast=False, detect=False)
    assert run.replicas == plain.replicas


def test_a_clean_run_has_no_bad_telemetry(workload: Workload) -> None:
    run = run_scenario(Scenario("clean", workload), forecast=False)
    assert not any(run.bad)
    assert run.served == run.true


class _Fixed:
    """A metric source returning prepared snapshots, one per call."""

    def __init__(self, snaps: list[Snapshot]) -> None:
        self.snaps = iter(snaps)

    def snapshot(self, target: object, at: float) -> Snapshot:
        return next(self.snaps)

    def load_history(self, target: object, start: float, end: float,
                     step: float) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(0), np.zeros(0)


def _snap(t: float, rate: float) -> Snapshot:
    return Snapshot(time=t, replicas=2, ready_replicas=2, batch_size=64, requests_running=20,
                    requests_waiting=1, kv_cache_usage=0.3, arrival_rate=rate,
                    prompt_tokens_rate=500 * rate, generation_tokens_rate=200 * rate,
                    ttft_p99=0.4, tpot_p99=0.03, pods_reporting=2)


def _served(fault: Fault, n: int = 10) -> list[Snapshot]:
    source = FaultySource(_Fixed([_snap(15.0 * k, 10.0 + k) for k in range(n)]), [fault])
    return [source.snapshot(None, 15.0 * k) for k in range(n)]  # type: ignore[arg-type]


def test_fault_models_change_what_the_daemon_reads() -> None:
    gap = _served(Fault("scrape_gap", 45.0, 30.0))
    assert math.isnan(gap[3].arrival_rate) and math.isnan(gap[4].kv_cache_usage)
    assert gap[5].arrival_rate == 15.0 and gap[5].replicas == 2  # back; kube data kept
    stale = _served(Fault("stale_series", 45.0, 600.0))
    assert stale[3].arrival_rate == stale[6].arrival_rate == 12.0  # the last good sample
    reset = _served(Fault("counter_reset", 45.0, 60.0))
    # the counter's whole history over the 60 s window (the first read has no interval)
    assert reset[3].arrival_rate == pytest.approx(13.0 + (11 + 12 + 13) * 15 / 60)
    assert reset[7].arrival_rate == 17.0  # one window later the artefact is gone
    double = _served(Fault("double_scrape", 45.0, 60.0))
    assert double[3].requests_running == 40 and double[3].kv_cache_usage == 0.3
    assert double[3].pods_reporting == 4  # each pod's series twice
    unit = _served(Fault("unit_change", 45.0, 60.0, metric="ttft_p99", factor=1000.0))
    assert unit[3].ttft_p99 == pytest.approx(400.0)
    flaky = _served(Fault("nan_inf", 45.0, 60.0, metric="kv_cache_usage"))
    kv = [flaky[3].kv_cache_usage, flaky[4].kv_cache_usage]
    assert any(math.isnan(x) for x in kv) and any(math.isinf(x) for x in kv)
    flat = _served(Fault("flatline", 45.0, 60.0, metric="arrival_rate"))
    assert flat[3].arrival_rate == flat[6].arrival_rate == 12.0
    assert flat[6].prompt_tokens_rate == 500 * 16.0  # the other metrics keep moving


def test_a_stale_series_is_refused_as_the_ingest_would_once_older_than_its_limit() -> None:
    # the daemon's Prometheus source reads the samples' timestamps and raises
    # StaleSampleError past prometheus.stale_after_s; values alone cannot tell a stopped
    # scrape of an idle service from the idle service
    from aiops.ingest.prometheus import StaleSampleError

    n = 30
    # scrapes at 7, 37, 67, ... s: the last one before the stop at 45 s is at 37 s
    source = FaultySource(_Fixed([_snap(15.0 * k, 10.0 + k) for k in range(n)]),
                          [Fault("stale_series", 45.0, 600.0)],
                          scrape_interval_s=30.0, scrape_phase_s=7.0)
    refused = []
    for k in range(n):
        try:
            source.snapshot(None, 15.0 * k)  # type: ignore[arg-type]
            refused.append(False)
        except StaleSampleError:
            refused.append(True)
    age = [15.0 * k - 37.0 for k in range(n)]
    assert refused == [120.0 < a < 300.0 for a in age]  # then the series is gone (NaN)
    assert len(source.served) == n  # what Prometheus held is still recorded for the plots
    assert math.isnan(source.served[-1].arrival_rate)
    served_age = [s.sample_age_s for s in source.served]
    assert served_age[:3] == [23.0, 8.0, 23.0]  # live: the age cycles with the scrape
    assert served_age[3:8] == age[3:8]  # stopped: it grows, while the values stand still
    assert source.served[3].arrival_rate == source.served[7].arrival_rate == 12.0


def test_reshape_multiplies_the_rate_where_the_change_is(workload: Workload) -> None:
    surge = Fault("surge", 600.0, 600.0, factor=5.0)
    out = reshape(workload, [surge], seed=1)
    before = np.histogram(workload.arrivals, bins=[0, 600, 660, 1200, 1260, 1800])[0]
    after = np.histogram(out.arrivals, bins=[0, 600, 660, 1200, 1260, 1800])[0]
    assert after[0] == before[0]  # untouched before the change
    assert after[2] == pytest.approx(5 * before[2], rel=0.1)  # five times during it
    assert after[4] == before[4]  # and back after it
    drop = reshape(workload, [Fault("drop_to_zero", 600.0, 600.0)], seed=1)
    assert not ((drop.arrivals > 615) & (drop.arrivals < 1200)).any()
    assert load_factor(Fault("slow_drift", 0.0, 100.0, factor=3.0))(np.array([50.0]))[0] == 2.0
    with pytest.raises(ValueError, match="unknown fault"):
        Fault("meteor", 0.0, 1.0)
    with pytest.raises(ValueError, match="needs a metric"):
        Fault("flatline", 0.0, 1.0)


def test_a_fault_is_judged_against_the_load_change_it_comes_with(workload: Workload) -> None:
    # A stuck queue comes with a surge; its reference is that surge read truly, the same
    # requests as the faulted run (the clean workload would count the surge as the fault's).
    stuck = Fault("queue_stuck", 600.0, 600.0, metric="requests_waiting", factor=10.0)
    change = load_change_of(stuck)
    assert change is not None and change.kind == "surge" and change.factor == 10.0
    assert not change.telemetry
    faulted, true = reshape(workload, [stuck], seed=3), reshape(workload, [change], seed=3)
    assert np.array_equal(faulted.arrivals, true.arrivals)
    assert len(true) > len(workload)
    # The other telemetry faults change only what is read; a real change is its own.
    assert load_change_of(Fault("flatline", 0.0, 1.0, metric="arrival_rate")) is None
    drop = Fault("drop_to_zero", 0.0, 1.0)
    assert load_change_of(drop) == drop
