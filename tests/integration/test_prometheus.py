"""``PrometheusSource`` against the real Prometheus server, on data the simulator produced.

A simulated Deployment serves a steady ~20 req/s workload for 40 minutes (3 replicas, 5 from
minute 15, back to 3 at minute 30). Every 15 s its ``prometheus_metrics()`` scrape is written
as OpenMetrics — split over two pods, with ``finished_reason`` labels, kube-state-metrics
and DCGM series — next to decoys the selectors must not catch (a ``vllm-llama-large``
Deployment, the same name in another namespace, another model on the same pods). A
four-minute scrape outage is cut out of the middle. ``promtool`` backfills it, Prometheus
serves it, and every snapshot is checked against the simulator's own numbers.

Queries are asked 7-8 s after a scrape, as a daemon's ticks fall between scrapes: the
``rate()`` window (60 s) then holds the same four samples on Prometheus 2.x and 3.x, so the
expected values are exact: a counter's rate is its increase over those samples / 45 s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pytest

from aiops.clock import SimClock
from aiops.config import PrometheusConfig, TargetConfig
from aiops.detect.monitor import TargetMonitor
from aiops.ingest.prometheus import (
    EmptyResultError,
    MultipleSeriesError,
    PrometheusQueryError,
    PrometheusSource,
    StaleSampleError,
)
from aiops.sim.cluster import ClusterSim
from aiops.sim.profiles import load_profile
from aiops.sim.workloads import synthetic
from aiops.types import Snapshot

pytestmark = pytest.mark.integration

STEP = 15
DURATION = 2400
SCALE = {900: 5, 1800: 3}  # sim time -> spec.replicas
GAP = (1500, 1740)  # scrape outage: no sample with GAP[0] <= t < GAP[1]
END_AGO = 600  # the last sample is this many seconds before the test starts
OFFSET = 8  # seconds after a scrape at which queries are asked

NS = "llm"
MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
MAIN = TargetConfig(name="llama", namespace=NS, deployment="vllm-llama", model_name=MODEL)
PODS = ("vllm-llama-7c9d8b6f5d-x2x4z", "vllm-llama-7c9d8b6f5d-q8k2n")
OLD = TargetConfig(name="old", namespace=NS, deployment="vllm-old")  # gpu_cache_usage_perc only
IDLE = TargetConfig(name="idle", namespace=NS, deployment="vllm-idle")  # scaled to zero
DUP = TargetConfig(name="dup", namespace=NS, deployment="vllm-dup")  # two kube-state-metrics
# The same scrapes from a vLLM that exports TPOT per output token only (releases before the
# per-request histogram).
PER_TOKEN = TargetConfig(name="per-token", namespace=NS, deployment="vllm-v0", model_name=MODEL)
PER_TOKEN_PODS = ("vllm-v0-6c8d9b7f4d-m3n4p", "vllm-v0-6c8d9b7f4d-r5s6t")


Scrape = dict[str, float | dict[str, float]]  # ClusterSim.prometheus_metrics()


class RunningPrometheus(Protocol):  # what conftest's start_prometheus returns
    url: str
    data_dir: Path
    version: str


def num(m: Scrape, name: str) -> float:
    value = m[name]
    assert isinstance(value, float)
    return value


def hist(m: Scrape, name: str) -> dict[str, float]:
    value = m[name]
    assert isinstance(value, dict)
    return value


# --------------------------------------------------------------------------- OpenMetrics
@dataclass
class OpenMetrics:
    """Samples grouped by family and series, as OpenMetrics wants; timestamps in seconds."""

    families: dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]],
                                         list[tuple[int, float]]]]] = field(default_factory=dict)

    def add(self, family: str, kind: str, name: str, labels: Mapping[str, str], t: int,
            value: float) -> None:
        _, series = self.families.setdefault(family, (kind, {}))
        series.setdefault((name, tuple(labels.items())), []).append((t, value))

    def text(self) -> str:
        lines: list[str] = []
        for family, (kind, series) in self.families.items():
            lines.append(f"# TYPE {family} {kind}")
            for (name, labels), points in series.items():
                sel = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.extend(f"{name}{{{sel}}} {v:.17g} {t}" for t, v in points)
        lines.append("# EOF")
        return "\n".join(lines) + "\n"


def isplit(value: float, part: int) -> float:
    """Split an integer count in two (floor, ceil): each part stays a monotonic counter."""
    low = math.floor(value / 2)
    return float(low if part == 0 else value - low)


GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
COUNTERS = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total")
HISTOGRAMS = ("vllm:time_to_first_token_seconds", "vllm:time_per_output_token_seconds",
              "vllm:request_time_per_output_token_seconds", "vllm:request_prompt_tokens")
PER_TOKEN_HISTOGRAMS = tuple(h for h in HISTOGRAMS
                             if h != "vllm:request_time_per_output_token_seconds")


def write_vllm_pod(om: OpenMetrics, m: Scrape, labels: dict[str, str], part: int, t: int,
                   histograms: tuple[str, ...] = HISTOGRAMS) -> None:
    """One pod's share of the Deployment-wide scrape ``m`` (``part`` 0 or 1 of two)."""
    for name in GAUGES:
        om.add(name, "gauge", name, labels, t, num(m, name) / 2)
    for name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"):
        om.add(name, "gauge", name, labels, t, num(m, name))
    done = isplit(num(m, "vllm:request_success_total"), part)
    stop = math.floor(0.9 * done)
    for reason, value in (("stop", stop), ("length", done - stop)):
        om.add("vllm:request_success", "counter", "vllm:request_success_total",
               {**labels, "finished_reason": reason}, t, float(value))
    for name in COUNTERS:
        om.add(name.removesuffix("_total"), "counter", name, labels, t,
               isplit(num(m, name), part))
    for fam in histograms:
        buckets = hist(m, fam + "_bucket")
        for le, count in buckets.items():
            om.add(fam, "histogram", fam + "_bucket", {**labels, "le": le}, t,
                   isplit(count, part))
        om.add(fam, "histogram", fam + "_sum", labels, t, num(m, fam + "_sum") / 2)
        om.add(fam, "histogram", fam + "_count", labels, t, isplit(buckets["+Inf"], part))


def write_ksm(om: OpenMetrics, ns: str, deployment: str, t: int, spec: float, ready: float,
              total: float, job: str = "kube-state-metrics") -> None:
    labels = {"namespace": ns, "deployment": deployment, "job": job}
    for name, value in (("kube_deployment_spec_replicas", spec),
                        ("kube_deployment_status_replicas_ready", ready),
                        ("kube_deployment_status_replicas", total)):
        om.add(name, "gauge", name, labels, t, value)


# --------------------------------------------------------------------------- the recording
@dataclass
class Recording:
    """What the simulator did, scrape by scrape (index k is sim time k * STEP)."""

    base: int  # Unix time of sim time 0
    metrics: list[Scrape]
    snapshots: list[Snapshot]
    present: list[bool]  # the scrape was written (not in the outage)
    mean_arrival_rate: float
    server: RunningPrometheus

    def at(self, k: int) -> float:
        """Query time for scrape k: OFFSET seconds after it."""
        return float(self.base + k * STEP + OFFSET)

    def counter(self, name: str, k: int) -> float:
        return num(self.metrics[k], name)

    def rate(self, name: str, k: int) -> float:
        """What ``rate(name[60s])`` summed over pods gives at ``at(k)``."""
        return (self.counter(name, k) - self.counter(name, k - 3)) / 45.0

    def quantile(self, q: float, family: str, k: int) -> float:
        now = hist(self.metrics[k], family + "_bucket")
        before = hist(self.metrics[k - 3], family + "_bucket")
        return bucket_quantile(q, {le: now[le] - before[le] for le in now})

    def below(self, family: str, le: str, k: int) -> float:
        """The share of the window's observations at or under bucket ``le``."""
        now = hist(self.metrics[k], family + "_bucket")
        before = hist(self.metrics[k - 3], family + "_bucket")
        total = now["+Inf"] - before["+Inf"]
        return (now[le] - before[le]) / total if total else math.nan

    def window_complete(self, k: int) -> bool:
        return k >= 3 and all(self.present[k - 3:k + 1])


def bucket_quantile(q: float, buckets: Mapping[str, float]) -> float:
    """Prometheus's ``histogram_quantile`` on cumulative bucket counts (linear interpolation;
    the +Inf bucket answers with the highest finite bound)."""
    bounds = sorted((float(le), c) for le, c in buckets.items())
    total = bounds[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next(i for i, (_, c) in enumerate(bounds) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2][0]
    start, prev = (0.0, 0.0) if b == 0 else bounds[b - 1]
    end, count = bounds[b]
    return start + (end - start) * (rank - prev) / (count - prev)


@pytest.fixture(scope="module")
def recording(start_prometheus: Callable[[str, str], RunningPrometheus]) -> Recording:
    workload = synthetic("steady", seed=7, duration=DURATION)
    sim = ClusterSim(load_profile("llama3-8b-a100"), workload, replicas=3)
    metrics, snapshots = [sim.prometheus_metrics()], [sim.snapshot()]
    while sim.time < DURATION - 1e-9:
        if round(sim.time) in SCALE:
            sim.scale(SCALE[round(sim.time)])
        sim.step(STEP)
        metrics.append(sim.prometheus_metrics())
        snapshots.append(sim.snapshot())
    base = (int(time.time()) // STEP) * STEP - END_AGO - DURATION
    present = [not GAP[0] <= k * STEP < GAP[1] for k in range(len(metrics))]

    om = OpenMetrics()
    decoy = {"running": 0.0}
    for k, m in enumerate(metrics):
        if not present[k]:
            continue
        t = base + k * STEP
        for part, pod in enumerate(PODS):
            labels = {"namespace": NS, "pod": pod, "model_name": MODEL, "job": "vllm"}
            write_vllm_pod(om, m, labels, part, t)
            kv = num(m, "vllm:kv_cache_usage_perc")
            om.add("DCGM_FI_DEV_GPU_UTIL", "gauge", "DCGM_FI_DEV_GPU_UTIL",
                   {"namespace": NS, "pod": pod, "gpu": "0", "UUID": f"GPU-{part}"}, t,
                   100 * kv if part == 0 else 50 * kv)
        write_ksm(om, NS, "vllm-llama", t, num(m, "kube_deployment_spec_replicas"),
                  num(m, "kube_deployment_status_replicas_ready"),
                  num(m, "kube_deployment_status_replicas"))
        for part, pod in enumerate(PER_TOKEN_PODS):
            write_vllm_pod(om, m, {"namespace": NS, "pod": pod, "model_name": MODEL},
                           part, t, PER_TOKEN_HISTOGRAMS)
        write_ksm(om, NS, "vllm-v0", t, num(m, "kube_deployment_spec_replicas"),
                  num(m, "kube_deployment_status_replicas_ready"),
                  num(m, "kube_deployment_status_replicas"))
        # Decoys: another Deployment whose name starts the same, the same name in another
        # namespace, another model served by the same pods. None may leak into MAIN.
        decoy["running"] += 1000.0
        for labels in ({"namespace": NS, "pod": "vllm-llama-large-6b7c8d9f4-zzzzz",
                        "model_name": MODEL},
                       {"namespace": "other", "pod": "vllm-llama-5f6d7c8b9-aaaaa",
                        "model_name": MODEL},
                       {"namespace": NS, "pod": PODS[0], "model_name": "other-model"}):
            om.add("vllm:num_requests_running", "gauge", "vllm:num_requests_running", labels, t,
                   1000.0)
            om.add("vllm:request_success", "counter", "vllm:request_success_total",
                   {**labels, "finished_reason": "stop"}, t, decoy["running"])
        write_ksm(om, NS, "vllm-llama-large", t, 9, 9, 9)
        write_ksm(om, "other", "vllm-llama", t, 7, 7, 7)
        # OLD: a vLLM before the kv_cache_usage_perc rename, no latency histograms, no DCGM.
        old = {"namespace": NS, "pod": "vllm-old-5d4f8b7c6-abcde"}
        om.add("vllm:num_requests_running", "gauge", "vllm:num_requests_running", old, t, 5)
        om.add("vllm:num_requests_waiting", "gauge", "vllm:num_requests_waiting", old, t, 1)
        om.add("vllm:gpu_cache_usage_perc", "gauge", "vllm:gpu_cache_usage_perc", old, t, 0.3)
        om.add("vllm:request_success", "counter", "vllm:request_success_total",
               {**old, "finished_reason": "stop"}, t, 15.0 * k)
        om.add("vllm:prompt_tokens", "counter", "vllm:prompt_tokens_total", old, t, 9000.0 * k)
        om.add("vllm:generation_tokens", "counter", "vllm:generation_tokens_total", old, t,
               2250.0 * k)
        write_ksm(om, NS, "vllm-old", t, 1, 1, 1)
        write_ksm(om, NS, "vllm-idle", t, 0, 0, 0)
        write_ksm(om, NS, "vllm-dup", t, 2, 2, 2, job="ksm-a")
        write_ksm(om, NS, "vllm-dup", t, 2, 2, 2, job="ksm-b")
    server = start_prometheus(om.text(), "sim")
    return Recording(base, metrics, snapshots, present, len(workload) / DURATION, server)


def source(rec: Recording, **cfg: float) -> PrometheusSource:
    config = PrometheusConfig(url=rec.server.url, timeout_s=10, retries=1).model_copy(update=cfg)
    return PrometheusSource(config, SimClock(rec.at(0)), sleep=lambda s: None)


# --------------------------------------------------------------------------- tests
def test_server_version(recording: Recording, record_property: Callable[[str, object], None]
                        ) -> None:
    record_property("prometheus_version", recording.server.version)
    print(f"Prometheus {recording.server.version} at {recording.server.url}")
    assert int(recording.server.version.split(".")[0]) >= 2


@pytest.mark.parametrize("t", [300, 600, 915, 960, 1200, 1485, 1950, 2100, 2400])
def test_snapshot_matches_the_simulator(recording: Recording, t: int) -> None:
    k = t // STEP
    assert recording.window_complete(k)
    snap = source(recording).snapshot(MAIN, recording.at(k))
    sim = recording.snapshots[k]
    assert snap.time == recording.at(k)
    assert (snap.replicas, snap.ready_replicas, snap.starting_replicas) == (
        sim.replicas, sim.ready_replicas, sim.starting_replicas)
    assert snap.requests_running == pytest.approx(sim.requests_running, rel=1e-9, abs=1e-9)
    assert snap.requests_waiting == pytest.approx(sim.requests_waiting, abs=1e-9)
    assert snap.kv_cache_usage == pytest.approx(sim.kv_cache_usage, rel=1e-9, abs=1e-12)
    assert snap.gpu_utilization == pytest.approx(0.75 * sim.kv_cache_usage, rel=1e-9, abs=1e-12)
    assert snap.arrival_rate == pytest.approx(
        recording.rate("vllm:request_success_total", k), rel=1e-9)
    assert snap.prompt_tokens_rate == pytest.approx(
        recording.rate("vllm:prompt_tokens_total", k), rel=1e-9)
    assert snap.generation_tokens_rate == pytest.approx(
        recording.rate("vllm:generation_tokens_total", k), rel=1e-9)
    for got, q, fam in ((snap.ttft_p50, 0.5, "vllm:time_to_first_token_seconds"),
                        (snap.ttft_p99, 0.99, "vllm:time_to_first_token_seconds"),
                        (snap.tpot_p99, 0.99, "vllm:request_time_per_output_token_seconds")):
        assert got == pytest.approx(recording.quantile(q, fam, k), rel=1e-6, nan_ok=True)
    assert snap.ttft_p50 <= snap.ttft_p99
    # SLO attainment from the histograms at the objectives (TTFT 0.5 s, TPOT 50 ms), over
    # the prompts short enough to be served in time (vLLM's bucket at 5,000 tokens).
    long = 1.0 - recording.below("vllm:request_prompt_tokens", "5000.0", k)
    # TPOT per request, as the objective is set (and as the simulator's snapshot counts).
    expect = (recording.below("vllm:time_to_first_token_seconds", "0.5", k)
              * recording.below("vllm:request_time_per_output_token_seconds", "0.05", k)
              / (1 - long))
    assert snap.slo_attainment == pytest.approx(min(expect, 1.0), rel=1e-6)
    assert 0.0 <= snap.slo_attainment <= 1.0
    assert snap.requests_finished == pytest.approx(snap.arrival_rate * 60.0)


def test_the_scale_up_is_seen_while_pods_start(recording: Recording) -> None:
    snap = source(recording).snapshot(MAIN, recording.at(930 // STEP))
    assert (snap.replicas, snap.ready_replicas, snap.starting_replicas) == (5, 3, 2)


def test_arrival_rate_tracks_the_workload(recording: Recording) -> None:
    """Completions per second (what vLLM counts) average to the offered load."""
    src = source(recording)
    ks = [k for k in range(8, len(recording.metrics), 8) if recording.window_complete(k)]
    rates = [src.snapshot(MAIN, recording.at(k)).arrival_rate for k in ks]
    sim_rates = [recording.snapshots[k].arrival_rate for k in ks]
    assert np.mean(rates) == pytest.approx(recording.mean_arrival_rate, rel=0.08)
    assert np.mean(rates) == pytest.approx(np.mean(sim_rates), rel=0.08)


def test_old_vllm_metric_name_and_missing_optional_series(recording: Recording) -> None:
    snap = source(recording).snapshot(OLD, recording.at(1200 // STEP))
    assert (snap.replicas, snap.ready_replicas, snap.starting_replicas) == (1, 1, 0)
    assert (snap.requests_running, snap.requests_waiting) == (5, 1)
    assert snap.kv_cache_usage == pytest.approx(0.3)  # from vllm:gpu_cache_usage_perc
    assert snap.arrival_rate == pytest.approx(1.0)
    assert (snap.prompt_tokens_rate, snap.generation_tokens_rate) == pytest.approx((600, 150))
    assert math.isnan(snap.ttft_p99) and math.isnan(snap.tpot_p99)  # no histograms
    assert math.isnan(snap.gpu_utilization)  # no DCGM


def test_tpot_per_output_token_where_vllm_exports_no_per_request_histogram(
        recording: Recording) -> None:
    """An older vLLM's TPOT histogram counts output tokens: the attainment falls back to it,
    and reads kinder than the per-request one wherever a slow reply is short."""
    kinder = 0
    for t in (300, 600, 960, 1200, 1950, 2400):
        k = t // STEP
        snap = source(recording).snapshot(PER_TOKEN, recording.at(k))
        per_request = source(recording).snapshot(MAIN, recording.at(k))
        assert snap.tpot_p99 == pytest.approx(
            recording.quantile(0.99, "vllm:time_per_output_token_seconds", k), rel=1e-6)
        long = 1.0 - recording.below("vllm:request_prompt_tokens", "5000.0", k)
        expect = (recording.below("vllm:time_to_first_token_seconds", "0.5", k)
                  * recording.below("vllm:time_per_output_token_seconds", "0.05", k)
                  / (1 - long))
        assert snap.slo_attainment == pytest.approx(min(expect, 1.0), rel=1e-6)
        assert snap.arrival_rate == pytest.approx(per_request.arrival_rate, rel=1e-9)
        kinder += snap.slo_attainment > per_request.slo_attainment + 1e-9
    assert kinder > 0


def test_a_deployment_scaled_to_zero_reads_as_zero_load(recording: Recording) -> None:
    snap = source(recording).snapshot(IDLE, recording.at(600 // STEP))
    assert (snap.replicas, snap.ready_replicas, snap.requests_running, snap.arrival_rate) == (
        0, 0, 0, 0)


def test_two_kube_state_metrics_are_multiple_series(recording: Recording) -> None:
    with pytest.raises(MultipleSeriesError) as err:
        source(recording).snapshot(DUP, recording.at(600 // STEP))
    assert err.value.query == "replicas" and 'job="ksm-a"' in str(err.value)
    fixed = DUP.model_copy(update={"queries": {
        "replicas": "max by (namespace, deployment) (kube_deployment_spec_replicas{$kube})",
        "ready_replicas":
            "max by (namespace, deployment) (kube_deployment_status_replicas_ready{$kube})",
        "total_replicas": "max by (namespace, deployment) (kube_deployment_status_replicas{$kube})",
    }})
    assert source(recording).query(fixed, "replicas", recording.at(600 // STEP)) is not None


def test_overrides_run_on_the_real_server(recording: Recording) -> None:
    k = 600 // STEP
    per_pod = MAIN.model_copy(update={"queries": {
        "requests_running": "vllm:num_requests_running{$vllm}"}})
    with pytest.raises(MultipleSeriesError, match="2 series"):
        source(recording).snapshot(per_pod, recording.at(k))
    broken = MAIN.model_copy(update={"queries": {
        "requests_waiting": "sum(vllm:num_requests_waiting{$vllm}"}})
    with pytest.raises(PrometheusQueryError) as err:
        source(recording).snapshot(broken, recording.at(k))
    assert err.value.status == 400 and "parse error" in str(err.value)
    no_model = MAIN.model_copy(update={"model_name": None})  # now other-model's series count
    snap = source(recording).snapshot(no_model, recording.at(k))
    assert snap.requests_running == pytest.approx(recording.snapshots[k].requests_running + 1000)


def test_outage_and_end_of_data_are_stale_then_empty(recording: Recording) -> None:
    src = source(recording)
    last_before_gap = recording.base + GAP[0] - STEP
    with pytest.raises(StaleSampleError) as err:
        src.snapshot(MAIN, last_before_gap + 150.0)
    assert err.value.query == "kube_sample_time" and "150 s old" in str(err.value)
    end = recording.base + DURATION
    with pytest.raises(StaleSampleError):
        src.snapshot(MAIN, end + 200.0)
    assert source(recording, stale_after_s=300).snapshot(MAIN, end + 10.0).replicas == 3
    with pytest.raises(EmptyResultError) as empty:  # past the 5 min lookback: series gone
        src.snapshot(MAIN, end + 400.0)
    assert empty.value.query == "kube_sample_time"


def test_a_stopped_scrape_is_told_by_its_samples_age_before_the_ingest_refuses_it(
        recording: Recording) -> None:
    # the outage's first two minutes: Prometheus still serves the last scrape, whose values
    # look live; the ingest refuses it only past stale_after_s (120 s), the age rule sooner
    src = source(recording)
    monitor = TargetMonitor()
    live = range((GAP[0] - 600) // STEP, GAP[0] // STEP)
    for k in live:
        snap = src.snapshot(MAIN, recording.at(k))
        assert snap.sample_age_s == OFFSET  # queried OFFSET s after each scrape
        report = monitor.observe(snap)
        assert not any("oldest vLLM sample" in d for d in report.unverified)
    stopped = [src.snapshot(MAIN, recording.at(live[-1]) + STEP * j) for j in (1, 2)]
    assert [s.sample_age_s for s in stopped] == [OFFSET + STEP, OFFSET + 2 * STEP]
    # the gauges are the last scrape's, the rates come from the samples left in their
    # window: numbers that look live, on which a scale-down is held (23 s, 38 s old where
    # 8 s is usual)
    assert stopped[1].requests_running == pytest.approx(
        recording.snapshots[live[-1]].requests_running, rel=1e-9, abs=1e-9)
    for s in stopped:
        report = monitor.observe(s)
        assert any("oldest vLLM sample" in d for d in report.unverified)
    # once a rate's window holds a single sample the server answers nothing, and the
    # ingest refuses the snapshot as empty, before its freshness limit (120 s)
    with pytest.raises(EmptyResultError) as empty:
        src.snapshot(MAIN, recording.at(live[-1]) + STEP * 3)
    assert empty.value.query == "arrival_rate"


def test_load_history_reports_the_outage_and_the_end_as_gaps(recording: Recording) -> None:
    src = source(recording)
    start, end, step = recording.base + 68, recording.base + DURATION + 548, 60
    series = src.load_range(MAIN, "arrival_rate", start, end, step)
    times, values = src.load_history(MAIN, start, end, step)
    np.testing.assert_array_equal(times, series.times)
    np.testing.assert_array_equal(values, series.values)
    assert times[0] == start and times[-1] == end

    sample_times = np.array([recording.base + k * STEP for k, p in enumerate(recording.present)
                             if p])
    expected_missing = [t for t in times
                        if np.count_nonzero((sample_times > t - 60) & (sample_times <= t)) < 2]
    assert times[np.isnan(values)].tolist() == expected_missing
    assert len(series.gaps) == 2  # the outage, and everything after the data ends
    (a, b), (c, d) = series.gaps
    assert recording.base + GAP[0] < a <= b < recording.base + GAP[1] + STEP
    assert recording.base + DURATION < c and d == end
    for t, v in zip(times, values, strict=True):
        k = int((t - recording.base) // STEP)
        if k < len(recording.metrics) and recording.window_complete(k):
            assert v == pytest.approx(recording.rate("vllm:request_success_total", k), rel=1e-9)


def test_load_range_of_other_named_queries(recording: Recording) -> None:
    src = source(recording)
    start, end = recording.base + 68, recording.base + DURATION - 52
    replicas = src.load_range(MAIN, "replicas", start, end, 60)
    assert replicas.gaps == ()  # a gauge survives a 4 min outage (5 min lookback)
    for t, v in zip(replicas.times, replicas.values, strict=True):
        k = int((t - recording.base) // STEP)
        while not recording.present[k]:
            k -= 1
        assert v == recording.snapshots[k].replicas
    ttft = src.load_range(MAIN, "ttft_p99", start, end, 60)
    finite = ttft.values[np.isfinite(ttft.values)]
    assert len(finite) > 0.8 * len(ttft.values) and (finite > 0).all()
    kv = src.load_range(MAIN, "kv_cache_usage", start, end, 60)
    assert np.nanmax(kv.values) <= 1.0
