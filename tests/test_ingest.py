"""Prometheus ingest: PromQL rendering, and every outcome of a query against a fake server.

The fake is a real HTTP server on 127.0.0.1 answering ``/api/v1/query`` and
``/api/v1/query_range`` with canned JSON, so prometheus-api-client, requests and our error
mapping all run for real; only Prometheus itself is replaced. The real server is exercised
in ``tests/integration/test_prometheus.py``.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from fakes.loopback import LoopbackHTTP, refusing_port

from aiops.clock import SimClock
from aiops.config import PrometheusConfig, TargetConfig, parse_config
from aiops.errors import DataQualityError, InputError, PermanentError, TransientError
from aiops.ingest import prometheus as prom
from aiops.ingest import queries as q
from aiops.ingest.prometheus import (
    EmptyResultError,
    MetricDataError,
    MultipleSeriesError,
    NotFiniteError,
    PrometheusQueryError,
    PrometheusSource,
    PrometheusUnavailableError,
    QueryExecutionError,
    StaleSampleError,
)

AT = 1_700_000_000.0
POD_RE = r"vllm-llama-[a-z0-9]+-[a-z0-9]{5}"
VLLM = f'namespace="llm",pod=~"{POD_RE}"'
KUBE = 'namespace="llm",deployment="vllm-llama"'


# --------------------------------------------------------------------------- fake server
@dataclass
class Canned:
    """One answer: HTTP status, JSON body (or raw bytes); with ``hold``, the answer waits
    until the test sets the event (30 s at most, so a client that never gives up fails its
    test instead of hanging it)."""

    body: Any = None
    status: int = 200
    hold: threading.Event | None = None
    answered: bool = False


def vector(*samples: tuple[Mapping[str, str], float, str]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": dict(labels), "value": [ts, value]} for labels, ts, value in samples]}}


def one(value: str | float, ts: float = AT, **labels: str) -> dict[str, Any]:
    return vector((labels, ts, str(value)))


def matrix(*series: tuple[Mapping[str, str], list[tuple[float, str]]]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": dict(labels), "values": [[t, v] for t, v in points]}
        for labels, points in series]}}


def error(status: int, message: str, kind: str = "bad_data") -> Canned:
    return Canned({"status": "error", "errorType": kind, "error": message}, status=status)


@dataclass
class Request:
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakePrometheus:
    """Answers by PromQL text; a list of answers is consumed in order, the last repeats."""

    answers: dict[str, Canned | list[Canned]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def set(self, promql: str, *answers: Canned | dict[str, Any]) -> None:
        canned = [a if isinstance(a, Canned) else Canned(a) for a in answers]
        self.answers[promql] = canned if len(canned) > 1 else canned[0]

    def answer(self, promql: str) -> Canned:
        got = self.answers.get(promql)
        if got is None:
            return Canned(vector())
        if isinstance(got, list):
            return got.pop(0) if len(got) > 1 else got[0]
        return got

    def queries(self) -> list[str]:
        return [r.params.get("query", "") for r in self.requests]


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    state = FakePrometheus()

    def serve(h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        if h.command == "POST":
            length = int(h.headers.get("Content-Length", 0))
            qs = parse_qs(h.rfile.read(length).decode())
        else:
            qs = parse_qs(url.query)
        params = {k: v[-1] for k, v in qs.items()}
        state.requests.append(Request(url.path, params, dict(h.headers)))
        if url.path not in ("/api/v1/query", "/api/v1/query_range"):
            canned = Canned(b"404 page not found", status=404)
        else:
            canned = state.answer(params.get("query", ""))
        if canned.hold is not None:
            canned.hold.wait(30.0)
        canned.answered = True
        body = canned.body if isinstance(canned.body, bytes) else json.dumps(
            canned.body).encode()
        try:
            h.send_response(canned.status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    server = LoopbackHTTP(serve).start()
    state.url = server.url
    try:
        yield state
    finally:
        server.stop()


def target(**kw: Any) -> TargetConfig:
    base: dict[str, Any] = {"name": "llama", "namespace": "llm", "deployment": "vllm-llama"}
    return TargetConfig(**{**base, **kw})


@dataclass
class Sleeps:
    calls: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def source(fake: FakePrometheus, sleeps: Sleeps | None = None, **cfg: Any) -> PrometheusSource:
    config = PrometheusConfig(url=fake.url, **cfg)
    return PrometheusSource(config, SimClock(AT), sleep=sleeps if sleeps is not None else Sleeps())


HEALTHY: dict[str, str | float] = {
    "kube_sample_time": AT - 10,
    "replicas": 4,
    "ready_replicas": 3,
    "total_replicas": 4,
    "vllm_sample_time": AT - 5,
    "requests_running": 120,
    "requests_waiting": 7,
    "pods_reporting": 3,
    "kv_cache_usage": 0.42,
    "arrival_rate": 21.5,
    "prompt_tokens_rate": 12000,
    "generation_tokens_rate": 3100,
    "ttft_p50": 0.12,
    "ttft_p99": 0.61,
    "tpot_p99": 0.031,
    "gpu_utilization": 0.77,
}


def serve(fake: FakePrometheus, tgt: TargetConfig, **changes: Any) -> dict[str, str]:
    """Canned answers for every query of ``tgt``; ``changes`` replace or (None) remove."""
    promql = q.render_all(tgt)
    values: dict[str, Any] = {**HEALTHY, **changes}
    for name, text in promql.items():
        value = values.get(name)
        if not text or value is None:
            continue
        fake.set(text, value if isinstance(value, (Canned, dict)) else one(value))
    return promql


# --------------------------------------------------------------------------- rendering
RENDER_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("replicas", {}, "replicas", f"kube_deployment_spec_replicas{{{KUBE}}}"),
    ("ready", {}, "ready_replicas", f"kube_deployment_status_replicas_ready{{{KUBE}}}"),
    ("running", {}, "requests_running", f"sum(vllm:num_requests_running{{{VLLM}}})"),
    ("waiting", {}, "requests_waiting", f"sum(vllm:num_requests_waiting{{{VLLM}}})"),
    ("exporters", {}, "pods_reporting", f"count(vllm:num_requests_running{{{VLLM}}})"),
    ("kv with fallback", {}, "kv_cache_usage",
     f"avg(vllm:kv_cache_usage_perc{{{VLLM}}}) or avg(vllm:gpu_cache_usage_perc{{{VLLM}}})"),
    ("arrivals", {}, "arrival_rate", f"sum(rate(vllm:request_success_total{{{VLLM}}}[60s]))"),
    ("ttft p99", {}, "ttft_p99",
     f"histogram_quantile(0.99, sum by (le) "
     f"(rate(vllm:time_to_first_token_seconds_bucket{{{VLLM}}}[60s])))"),
    ("tpot p99 per request, else per token", {}, "tpot_p99",
     f"histogram_quantile(0.99, sum by (le) "
     f"(rate(vllm:request_time_per_output_token_seconds_bucket{{{VLLM}}}[60s]))) or "
     f"histogram_quantile(0.99, sum by (le) "
     f"(rate(vllm:time_per_output_token_seconds_bucket{{{VLLM}}}[60s])))"),
    ("dcgm percent to fraction", {}, "gpu_utilization",
     f'avg(DCGM_FI_DEV_GPU_UTIL{{namespace="llm",pod=~"{POD_RE}"}}) / 100'),
    ("model name label", {"model_name": "meta-llama/Llama-3-8B"}, "requests_running",
     f'sum(vllm:num_requests_running{{{VLLM},model_name="meta-llama/Llama-3-8B"}})'),
    ("model name escaped", {"model_name": 'a"b\\c'}, "requests_waiting",
     f'sum(vllm:num_requests_waiting{{{VLLM},model_name="a\\"b\\\\c"}})'),
    ("dcgm has no model label", {"model_name": "m"}, "gpu_utilization",
     f'avg(DCGM_FI_DEV_GPU_UTIL{{namespace="llm",pod=~"{POD_RE}"}}) / 100'),
    ("dot in deployment is literal", {"deployment": "vllm.v2"}, "requests_running",
     'sum(vllm:num_requests_running{namespace="llm",pod=~"vllm\\\\.v2-[a-z0-9]+-[a-z0-9]{5}"})'),
    ("override with variables", {"queries": {"arrival_rate":
        'sum(rate(gateway_requests_total{namespace="$namespace",route="${deployment}"}[$window]))'}},
     "arrival_rate",
     'sum(rate(gateway_requests_total{namespace="llm",route="vllm-llama"}[60s]))'),
    ("override with $$", {"queries": {"replicas":
        'max(kube_deployment_spec_replicas{$kube,job=~"k.*$$"})'}},
     "replicas", f'max(kube_deployment_spec_replicas{{{KUBE},job=~"k.*$"}})'),
    ("override with pod regex", {"queries": {"requests_running":
        'sum(my_running{pod=~"$pod_regex"})'}}, "requests_running",
     f'sum(my_running{{pod=~"{POD_RE}"}})'),
    ("optional disabled", {"queries": {"gpu_utilization": ""}}, "gpu_utilization", ""),
    ("batch size has no default", {}, "batch_size", ""),
    ("batch size override", {"queries": {"batch_size": "max(my_batch{$kube})"}}, "batch_size",
     f"max(my_batch{{{KUBE}}})"),
]


@pytest.mark.parametrize(("case", "kw", "name", "expected"), RENDER_CASES,
                         ids=[c[0] for c in RENDER_CASES])
def test_render(case: str, kw: dict[str, Any], name: str, expected: str) -> None:
    assert q.render(name, target(**kw)) == expected


@pytest.mark.parametrize(("window", "text"), [(60, "60s"), (300, "300s"), (90.5, "90500ms")])
def test_rate_window_is_a_promql_duration(window: float, text: str) -> None:
    assert f"[{text}]" in q.render("arrival_rate", target(), window_s=window)


def test_pod_regex_matches_the_deployments_pods_only() -> None:
    pattern = "vllm-llama" + q.POD_SUFFIX_REGEX
    assert re.fullmatch(pattern, "vllm-llama-7c9d8b6f5d-x2x4z")
    assert re.fullmatch(pattern, "vllm-llama-5d4f-abcde")
    assert not re.fullmatch(pattern, "vllm-llama-large-7c9d8b6f5d-x2x4z")
    assert not re.fullmatch(pattern, "vllm-7c9d8b6f5d-x2x4z")


@pytest.mark.parametrize(("queries", "message"), [
    ({"arival_rate": "x"}, "'arival_rate'"),
    ({"replicas": "kube_deployment_spec_replicas{namespace=\"$namespce\"}"}, "$namespce"),
    ({"replicas": "x{m=\"$model_name\"}"}, "no model_name"),
    ({"replicas": ""}, "required"),
])
def test_bad_overrides_are_input_errors_naming_the_query(
    queries: dict[str, str], message: str
) -> None:
    tgt = target(queries=queries)
    with pytest.raises(InputError, match=re.escape(message)) as err:
        q.validate_overrides(tgt)
    assert "llama" in str(err.value)


def test_unknown_query_name() -> None:
    with pytest.raises(InputError, match="'nope'"):
        q.render("nope", target())


def test_metric_names_cover_every_default_query_and_match_the_simulator() -> None:
    from aiops.sim.cluster import ClusterSim
    from aiops.sim.profiles import load_profile
    from aiops.sim.workloads import synthetic

    referenced: set[str] = set()
    for spec in q.QUERIES.values():
        referenced |= set(re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{", spec.template))
    assert referenced == set(q.METRIC_NAMES)
    sim = ClusterSim(load_profile("llama3-8b-a100"), synthetic("steady", seed=0, duration=60),
                     replicas=1)
    exported = set(sim.prometheus_metrics())
    assert set(q.METRIC_NAMES) - exported == {"DCGM_FI_DEV_GPU_UTIL"}


# --------------------------------------------------------------------------- snapshot
def test_snapshot_reads_every_number(fake: FakePrometheus) -> None:
    tgt = target()
    promql = serve(fake, tgt)
    snap = source(fake).snapshot(tgt, AT)
    assert snap.time == AT
    assert (snap.replicas, snap.ready_replicas, snap.starting_replicas) == (4, 3, 1)
    assert (snap.requests_running, snap.requests_waiting) == (120, 7)
    assert snap.pods_reporting == 3  # exporters scraped, against 3 ready pods
    assert snap.sample_age_s == 5  # the oldest vLLM sample, for a scrape that stopped
    assert snap.kv_cache_usage == 0.42
    assert (snap.arrival_rate, snap.prompt_tokens_rate, snap.generation_tokens_rate) == (
        21.5, 12000, 3100)
    assert (snap.ttft_p50, snap.ttft_p99, snap.tpot_p99) == (0.12, 0.61, 0.031)
    assert snap.gpu_utilization == 0.77
    assert snap.batch_size == tgt.batch_sizes[0]  # not known to Prometheus
    asked = fake.queries()
    assert set(asked) == {text for text in promql.values() if text}
    assert asked[0] == promql["kube_sample_time"]  # freshness first
    for r in fake.requests:
        assert r.path == "/api/v1/query"
        assert float(r.params["time"]) == AT
        assert r.params["timeout"] == "10s"
        assert "Authorization" not in r.headers


def test_batch_size_from_an_override(fake: FakePrometheus) -> None:
    tgt = target(queries={"batch_size": "max(my_batch{$kube})"})
    serve(fake, tgt, batch_size=128)
    assert source(fake).snapshot(tgt, AT).batch_size == 128


def test_no_ready_replica_means_zero_load_not_missing_data(fake: FakePrometheus) -> None:
    tgt = target()
    vllm_names = [n for n, s in q.QUERIES.items() if s.zero_without_pods or s.nan_ok]
    serve(fake, tgt, replicas=0, ready_replicas=0, total_replicas=0,
          gpu_utilization=None, **dict.fromkeys(vllm_names))
    snap = source(fake).snapshot(tgt, AT)
    assert (snap.replicas, snap.ready_replicas, snap.starting_replicas) == (0, 0, 0)
    assert (snap.requests_running, snap.requests_waiting, snap.arrival_rate) == (0, 0, 0)
    assert snap.pods_reporting == 0
    assert math.isnan(snap.sample_age_s)  # no pod, no sample to date
    assert snap.kv_cache_usage == 0
    assert math.isnan(snap.ttft_p99) and math.isnan(snap.gpu_utilization)


def test_missing_total_replicas_falls_back_to_spec_minus_ready(fake: FakePrometheus) -> None:
    tgt = target()
    serve(fake, tgt, total_replicas=None, replicas=6, ready_replicas=2)
    assert source(fake).snapshot(tgt, AT).starting_replicas == 4


def test_latency_nan_is_no_data_not_an_error(fake: FakePrometheus) -> None:
    tgt = target()
    serve(fake, tgt, ttft_p50="NaN", ttft_p99="NaN", tpot_p99=None)
    snap = source(fake).snapshot(tgt, AT)
    assert math.isnan(snap.ttft_p50) and math.isnan(snap.ttft_p99) and math.isnan(snap.tpot_p99)


def test_dcgm_is_optional(fake: FakePrometheus) -> None:
    tgt = target()
    serve(fake, tgt, gpu_utilization=None)
    assert math.isnan(source(fake).snapshot(tgt, AT).gpu_utilization)


BAD_DATA: list[tuple[str, dict[str, Any], type[MetricDataError], str]] = [
    ("empty required", {"requests_running": None}, EmptyResultError, "requests_running"),
    ("empty kube", {"replicas": None}, EmptyResultError, "replicas"),
    ("empty vllm freshness", {"vllm_sample_time": None}, EmptyResultError, "vllm_sample_time"),
    ("several series", {"replicas": vector(({"job": "ksm-a"}, AT, "4"),
                                           ({"job": "ksm-b"}, AT, "4"))},
     MultipleSeriesError, "replicas"),
    ("NaN", {"arrival_rate": "NaN"}, NotFiniteError, "arrival_rate"),
    ("+Inf", {"kv_cache_usage": "+Inf"}, NotFiniteError, "kv_cache_usage"),
    ("-Inf", {"requests_waiting": "-Inf"}, NotFiniteError, "requests_waiting"),
    ("Inf latency is not 'no data'", {"ttft_p99": "+Inf"}, NotFiniteError, "ttft_p99"),
    ("NaN in optional DCGM", {"gpu_utilization": "NaN"}, NotFiniteError, "gpu_utilization"),
    ("negative replicas", {"ready_replicas": -1}, NotFiniteError, "ready_replicas"),
    ("stale vLLM sample", {"vllm_sample_time": AT - 121}, StaleSampleError, "vllm_sample_time"),
    ("stale kube sample", {"kube_sample_time": AT - 600}, StaleSampleError, "kube_sample_time"),
    ("answer stamped long ago", {"requests_running": one(5, ts=AT - 3600)}, StaleSampleError,
     "requests_running"),
    ("HTTP 422", {"arrival_rate": error(422, "many-to-many matching not allowed", "execution")},
     QueryExecutionError, "arrival_rate"),
]


@pytest.mark.parametrize(("case", "changes", "exc", "query"), BAD_DATA,
                         ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_a_named_outcome(
    fake: FakePrometheus, case: str, changes: dict[str, Any], exc: type[MetricDataError],
    query: str,
) -> None:
    tgt = target()
    serve(fake, tgt, **changes)
    sleeps = Sleeps()
    with pytest.raises(exc) as err:
        source(fake, sleeps).snapshot(tgt, AT)
    e = err.value
    assert isinstance(e, DataQualityError)
    assert e.kind == exc.kind and e.kind in prom.DATA_ERROR_KINDS
    assert e.query == query and e.target == "llama"
    assert f"query {query!r}" in str(e) and "'llama'" in str(e) and e.promql in str(e)
    assert sleeps.calls == []  # bad data is not retried: it would not change within a tick


def test_stale_threshold_comes_from_the_config(fake: FakePrometheus) -> None:
    tgt = target()
    serve(fake, tgt, vllm_sample_time=AT - 200)
    source(fake, stale_after_s=300).snapshot(tgt, AT)
    with pytest.raises(StaleSampleError, match="200 s old"):
        source(fake, stale_after_s=150).snapshot(tgt, AT)


def test_a_range_vector_where_a_number_is_needed_is_a_config_error(fake: FakePrometheus) -> None:
    tgt = target(queries={"requests_running": "vllm:num_requests_running{$vllm}[1m]"})
    promql = serve(fake, tgt)
    fake.set(promql["requests_running"], matrix(({}, [(AT - 15, "1"), (AT, "2")])))
    with pytest.raises(PrometheusQueryError, match="range vector"):
        source(fake).snapshot(tgt, AT)


def test_scalar_answers_are_accepted(fake: FakePrometheus) -> None:
    tgt = target(queries={"batch_size": "scalar(vector(64))"})
    serve(fake, tgt)
    fake.set("scalar(vector(64))",
             {"status": "success", "data": {"resultType": "scalar", "result": [AT, "64"]}})
    assert source(fake).snapshot(tgt, AT).batch_size == 64


# --------------------------------------------------------------------------- transport
def test_5xx_is_retried_with_exponential_backoff(fake: FakePrometheus) -> None:
    tgt = target()
    promql = serve(fake, tgt)
    fake.set(promql["kube_sample_time"], error(503, "overloaded"), error(502, "bad gateway"),
             one(AT - 10))
    sleeps = Sleeps()
    snap = source(fake, sleeps, retries=2, backoff_s=0.5).snapshot(tgt, AT)
    assert snap.replicas == 4
    assert sleeps.calls == [0.5, 1.0]


def test_retries_exhausted_is_transient(fake: FakePrometheus) -> None:
    tgt = target()
    promql = serve(fake, tgt)
    fake.set(promql["kube_sample_time"], error(503, "query queue full", "unavailable"))
    sleeps = Sleeps()
    with pytest.raises(PrometheusUnavailableError) as err:
        source(fake, sleeps, retries=3, backoff_s=0.25).snapshot(tgt, AT)
    assert isinstance(err.value, TransientError)
    assert err.value.kind == "http_status" and err.value.status == 503
    assert "query queue full" in str(err.value) and "kube_sample_time" in str(err.value)
    assert sleeps.calls == [0.25, 0.5, 1.0]
    assert fake.queries() == [promql["kube_sample_time"]] * 4  # the snapshot stops there


@pytest.mark.parametrize("status", [408, 429, 500, 504])
def test_retryable_statuses(fake: FakePrometheus, status: int) -> None:
    tgt = target()
    promql = serve(fake, tgt)
    fake.set(promql["kube_sample_time"], error(status, "try later"))
    with pytest.raises(PrometheusUnavailableError):
        source(fake, retries=0).snapshot(tgt, AT)


@pytest.mark.parametrize(("status", "message"), [
    (400, 'parse error: unexpected "}"'),
    (401, "unauthorized"),
    (403, "forbidden"),
])
def test_refused_queries_are_permanent_and_not_retried(
    fake: FakePrometheus, status: int, message: str
) -> None:
    tgt = target()
    promql = serve(fake, tgt)
    fake.set(promql["kube_sample_time"], error(status, message))
    sleeps = Sleeps()
    with pytest.raises(PrometheusQueryError) as err:
        source(fake, sleeps).snapshot(tgt, AT)
    assert isinstance(err.value, PermanentError) and err.value.status == status
    assert message in str(err.value).replace('\\"', '"')
    assert sleeps.calls == []


def test_wrong_url_path_is_permanent(fake: FakePrometheus) -> None:
    config = PrometheusConfig(url=fake.url + "/not-prometheus")
    with pytest.raises(PrometheusQueryError, match="HTTP 404"):
        PrometheusSource(config, SimClock(AT), sleep=Sleeps()).snapshot(target(), AT)


def test_connection_refused_is_transient() -> None:
    sock, port = refusing_port()
    with sock:
        config = PrometheusConfig(url=f"http://127.0.0.1:{port}", retries=1, backoff_s=2.0)
        sleeps = Sleeps()
        with pytest.raises(PrometheusUnavailableError) as err:
            PrometheusSource(config, SimClock(AT), sleep=sleeps).snapshot(target(), AT)
    assert err.value.kind == "connection" and sleeps.calls == [2.0]


def test_slow_answer_times_out(fake: FakePrometheus) -> None:
    tgt = target()
    promql = serve(fake, tgt)
    release = threading.Event()
    held = Canned(one(AT), hold=release)
    fake.set(promql["kube_sample_time"], held)
    with pytest.raises(PrometheusUnavailableError) as err:
        source(fake, retries=0, timeout_s=0.2).snapshot(tgt, AT)
    assert err.value.kind == "timeout" and "0.2 s" in str(err.value)
    assert not held.answered  # the source gave up before Prometheus answered
    release.set()


@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b'{"status": "success"}',
                                  b'{"data": {"result": [{"metric": {}, "value": [1, "x"]}]}}'])
def test_an_answer_that_is_not_prometheus_json_is_transient(
    fake: FakePrometheus, body: bytes
) -> None:
    tgt = target()
    promql = serve(fake, tgt)
    fake.set(promql["kube_sample_time"], Canned(body))
    with pytest.raises(PrometheusUnavailableError) as err:
        source(fake, retries=0).snapshot(tgt, AT)
    assert err.value.kind == "bad_response"


# --------------------------------------------------------------------------- auth, TLS
def test_bearer_token_file_is_reread_on_every_request(fake: FakePrometheus,
                                                      tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    tgt = target()
    serve(fake, tgt)
    src = source(fake, bearer_token_file=token)
    src.snapshot(tgt, AT)
    token.write_text("rotated")
    src.snapshot(tgt, AT)
    seen = [r.headers.get("Authorization") for r in fake.requests]
    assert seen[0] == "Bearer first" and seen[-1] == "Bearer rotated"


def test_bearer_token_from_the_environment(fake: FakePrometheus) -> None:
    tgt = target()
    serve(fake, tgt)
    config = PrometheusConfig(url=fake.url, bearer_token_env="PROM_TOKEN")
    src = PrometheusSource(config, SimClock(AT), environ={"PROM_TOKEN": "s3cret"})
    src.snapshot(tgt, AT)
    assert {r.headers.get("Authorization") for r in fake.requests} == {"Bearer s3cret"}
    missing = PrometheusSource(config, SimClock(AT), environ={})
    with pytest.raises(PrometheusQueryError, match="PROM_TOKEN is not set"):
        missing.snapshot(tgt, AT)


def test_basic_auth(fake: FakePrometheus) -> None:
    import base64

    tgt = target()
    serve(fake, tgt)
    config = PrometheusConfig(url=fake.url, basic_auth_user="aiops",
                              basic_auth_password_env="PROM_PASSWORD")
    PrometheusSource(config, SimClock(AT), environ={"PROM_PASSWORD": "pw"}).snapshot(tgt, AT)
    expected = "Basic " + base64.b64encode(b"aiops:pw").decode()
    assert {r.headers.get("Authorization") for r in fake.requests} == {expected}


def test_unreadable_token_file_is_permanent(fake: FakePrometheus, tmp_path: Path) -> None:
    with pytest.raises(PrometheusQueryError, match="bearer_token_file"):
        source(fake, bearer_token_file=tmp_path / "missing").snapshot(target(), AT)


@pytest.mark.parametrize("cfg", [
    {"bearer_token_file": "/t", "bearer_token_env": "T"},
    {"bearer_token_env": "T", "basic_auth_user": "u"},
    {"basic_auth_password_env": "P"},
])
def test_conflicting_auth_settings_are_rejected(cfg: dict[str, Any]) -> None:
    # Caught when the config is loaded, with the section and line named.
    lines = "".join(f"  {k}: {v}\n" for k, v in cfg.items())
    with pytest.raises(InputError, match=r"prometheus \(line 2\)"):
        parse_config(f"targets: [{{name: a, deployment: a}}]\nprometheus:\n{lines}",
                     environ={})


def test_source_refuses_conflicting_auth_in_an_unvalidated_config() -> None:
    cfg = PrometheusConfig.model_construct(url="http://prom", bearer_token_env="T",
                                           basic_auth_user="u")
    with pytest.raises(InputError, match="prometheus: set bearer token or basic auth"):
        PrometheusSource(cfg, SimClock(AT))


@pytest.mark.parametrize("verify", [True, False])
def test_tls_verification_follows_the_config(verify: bool) -> None:
    src = PrometheusSource(PrometheusConfig(url="https://prom.example", verify_tls=verify),
                           SimClock(AT))
    assert src._client._session.verify is verify


# --------------------------------------------------------------------------- ranges
def test_load_range_puts_points_on_the_grid_and_reports_gaps(fake: FakePrometheus) -> None:
    tgt = target()
    promql = q.render("arrival_rate", tgt)
    start, step = AT - 600, 60.0
    points = [(start + 60 * k, str(10.0 + k)) for k in range(11) if k not in (3, 4, 8)]
    points[0] = (start, "NaN")  # a NaN from Prometheus is a value, not a gap
    fake.set(promql, matrix(({}, points)))
    series = source(fake).load_range(tgt, "arrival_rate", start, AT, step)
    assert len(series.times) == 11 and series.times[0] == start and series.times[-1] == AT
    assert series.gaps == ((start + 180, start + 240), (start + 480, start + 480))
    assert series.missing == 3
    assert math.isnan(series.values[0]) and series.values[1] == 11.0
    assert np.isnan(series.values[[3, 4, 8]]).all()
    (req,) = fake.requests
    assert req.path == "/api/v1/query_range"
    assert (float(req.params["start"]), float(req.params["end"])) == (start, AT)
    assert req.params["step"] == "60"


def test_load_history_is_the_arrival_rate(fake: FakePrometheus) -> None:
    tgt = target()
    fake.set(q.render("arrival_rate", tgt),
             matrix(({}, [(AT - 30, "1.5"), (AT - 15, "2"), (AT, "2.5")])))
    times, values = source(fake).load_history(tgt, AT - 30, AT, 15)
    assert times.tolist() == [AT - 30, AT - 15, AT] and values.tolist() == [1.5, 2, 2.5]


def test_long_ranges_are_read_in_chunks(fake: FakePrometheus,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prom, "MAX_POINTS_PER_QUERY", 4)
    tgt = target()
    promql = q.render("replicas", tgt)
    start = AT - 9 * 15
    fake.set(promql, matrix(({}, [(start + 15 * k, str(k)) for k in range(10)])))
    series = source(fake).load_range(tgt, "replicas", start, AT, 15)
    assert series.values.tolist() == list(range(10)) and series.gaps == ()
    spans = [(float(r.params["start"]), float(r.params["end"])) for r in fake.requests]
    assert spans == [(start, start + 45), (start + 60, start + 105), (start + 120, AT)]


def test_range_with_several_series_or_none(fake: FakePrometheus) -> None:
    tgt = target()
    promql = q.render("ready_replicas", tgt)
    fake.set(promql, matrix(({"job": "a"}, [(AT, "1")]), ({"job": "b"}, [(AT, "1")])))
    with pytest.raises(MultipleSeriesError, match='job="a"'):
        source(fake).load_range(tgt, "ready_replicas", AT - 60, AT, 15)
    fake.set(promql, matrix())
    with pytest.raises(EmptyResultError, match="no data between"):
        source(fake).load_range(tgt, "ready_replicas", AT - 60, AT, 15)


def test_range_of_a_disabled_query_or_a_bad_range() -> None:
    src = PrometheusSource(PrometheusConfig(), SimClock(AT))
    with pytest.raises(InputError, match="disabled"):
        src.load_range(target(), "batch_size", AT - 60, AT, 15)
    with pytest.raises(InputError, match="before its start"):
        src.load_range(target(), "replicas", AT, AT - 60, 15)
    with pytest.raises(InputError, match="unknown query"):
        src.load_range(target(), "qps", AT - 60, AT, 15)


def test_query_returns_the_sample_with_labels(fake: FakePrometheus) -> None:
    tgt = target()
    fake.set(q.render("replicas", tgt), one(3, deployment="vllm-llama"))
    sample = source(fake).query(tgt, "replicas", AT)
    assert sample is not None and sample.value == 3 and sample.labels == {
        "deployment": "vllm-llama"}
    assert source(fake).query(tgt, "ready_replicas", AT) is None  # nothing matched
