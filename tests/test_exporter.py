"""The live exporter of the simulated fleet: what a Prometheus scraping it sees."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiops.config import TargetConfig
from aiops.ingest import queries
from aiops.sim.cluster import ClusterSim
from aiops.sim.exporter import FleetExporter
from aiops.sim.profiles import load_profile
from aiops.sim.workloads import synthetic

NS, DEP, MODEL = "llm", "vllm-llama3-8b", "llama3-8b"


def exporter(replicas: int = 3) -> FleetExporter:
    profile = load_profile("llama3-8b-a100")
    sim = ClusterSim(profile, synthetic("steady", seed=1, duration=1800.0), replicas=replicas)
    return FleetExporter(sim, namespace=NS, deployment=DEP, model_name=MODEL, start=0.0)


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} (histogram buckets keep their ``le``)."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def total(samples: dict[tuple[tuple[str, str], ...], float], **match: str) -> float:
    return sum(v for labels, v in samples.items()
               if all(dict(labels).get(k) == want for k, want in match.items()))


def test_sums_over_pods_are_the_simulators_figures() -> None:
    exp = exporter()
    exp.advance(120.0)
    got = parse(exp.exposition())
    agg = exp.sim.prometheus_metrics()
    pods = {dict(k)["pod"] for k in got["vllm:num_requests_running"]}
    assert len(pods) == exp.sim.ready_replicas == 3
    pod_re = re.compile(re.escape(DEP) + queries.POD_SUFFIX_REGEX)
    assert all(pod_re.fullmatch(p) for p in pods)  # the daemon's selector picks them
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:request_success_total", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total"):
        assert total(got[name]) == pytest.approx(float(agg[name]))
    for name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"):
        values = list(got[name].values())
        assert len(values) == 3 and values == pytest.approx([float(agg[name])] * 3)
    buckets = agg["vllm:time_to_first_token_seconds_bucket"]
    assert isinstance(buckets, dict)
    for le, count in buckets.items():
        le_text = "+Inf" if le == "+Inf" else str(float(le))
        assert total(got["vllm:time_to_first_token_seconds_bucket"], le=le_text) == \
            pytest.approx(count)
    assert total(got["vllm:time_to_first_token_seconds_count"]) == pytest.approx(
        float(agg["vllm:time_to_first_token_seconds_count"]))
    labels = dict(next(iter(got["vllm:num_requests_running"])))
    assert labels["namespace"] == NS and labels["model_name"] == MODEL
    kube = {("deployment", DEP), ("namespace", NS)}
    assert got["kube_deployment_spec_replicas"] == {tuple(sorted(kube)): 3.0}
    assert got["kube_deployment_status_replicas_ready"] == {tuple(sorted(kube)): 3.0}


def test_every_series_the_daemon_reads_is_exported() -> None:
    exp = exporter()
    exp.advance(60.0)
    names = set(parse(exp.exposition()))
    optional = {"DCGM_FI_DEV_GPU_UTIL"}  # the DCGM exporter: no GPU, no series
    assert set(queries.METRIC_NAMES) - optional <= names


def test_each_pods_counters_only_grow_and_pods_follow_the_fleet() -> None:
    exp = exporter(replicas=2)
    seen: dict[str, float] = {}
    for t, replicas in ((60, 2), (120, 4), (300, 4), (360, 1), (420, 1)):
        exp.scale(replicas)
        exp.advance(float(t))
        got = parse(exp.exposition())
        running = got["vllm:num_requests_running"]
        assert len(running) == exp.sim.ready_replicas
        for labels, value in got["vllm:request_success_total"].items():
            pod = dict(labels)["pod"]
            assert value >= seen.get(pod, 0.0)
            seen[pod] = value
    assert len(seen) == 4  # two pods came, three went
    exp.scale(0)
    exp.advance(600.0)
    got = parse(exp.exposition())
    assert "vllm:num_requests_running" not in got  # no ready pod: no vLLM series at all
    assert list(got["kube_deployment_spec_replicas"].values()) == [0.0]


def test_a_scrape_steps_the_simulation_to_now() -> None:
    exp = exporter()
    server = exp.serve(clock=lambda: 90.0)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = resp.read().decode()
        assert exp.sim.time == pytest.approx(90.0)
        assert "vllm:request_success_total" in body
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=10)
        assert err.value.code == 404
    finally:
        server.close()


def test_the_default_queries_select_the_exported_series() -> None:
    """The selectors of aiops.ingest.queries, applied to the exported labels."""
    exp = exporter()
    exp.advance(60.0)
    got = parse(exp.exposition())
    target = TargetConfig(name="t", namespace=NS, deployment=DEP, model_name=MODEL)
    v = queries.variables(target)
    pod_re = re.compile(v["pod_regex"].replace("\\\\", "\\"))
    for labels in got["vllm:num_requests_running"]:
        d = dict(labels)
        assert d["namespace"] == NS and pod_re.fullmatch(d["pod"]) and d["model_name"] == MODEL
