"""``PrometheusSource``: the live ``MetricSource``, reading Prometheus's HTTP API.

Queries go through prometheus-api-client's ``PrometheusConnect`` (``custom_query`` and
``custom_query_range``). What this module adds is the judgement of every answer, because an
autoscaler that reads "no data" as "no load" scales a busy fleet down (DESIGN principle 6):

* the server could not be asked (connection refused, timeout, HTTP 5xx, 408, 429, a body
  that is not Prometheus JSON) -> :class:`PrometheusUnavailableError`, a ``TransientError``,
  retried ``retries`` times with exponential backoff inside the call, then raised so the
  controller holds;
* the server refused the question (HTTP 400 bad PromQL, 401/403 auth, 404 wrong URL, a
  range vector where one number was expected) -> :class:`PrometheusQueryError`, a
  ``PermanentError``: retrying will not help until the config changes;
* the server answered, but the answer cannot be trusted -> a :class:`MetricDataError`
  (a ``DataQualityError``) whose ``kind`` is one of ``empty``, ``multiple_series``,
  ``not_finite``, ``stale`` or ``execution`` (HTTP 422), each with its own subclass and a
  message that names the query, the PromQL and the target.

Staleness: an instant query answers with the evaluation time, not the sample's, and
Prometheus keeps returning a series for ``--query.lookback-delta`` (5 min) after its last
sample. So the snapshot asks for ``min(timestamp(...))`` of the target's kube-state-metrics
and vLLM series (queries ``kube_sample_time`` and ``vllm_sample_time``) and compares the
oldest sample with ``at``; a result stamped far from ``at`` (a caching proxy) is stale too.

The snapshot follows the simulator's definitions (``ClusterSim.snapshot``): sums over the
Deployment's pods, rates per second, KV usage as the mean fraction. Two differences are
inherent to what vLLM exports and are documented on the queries: ``arrival_rate`` counts
finished requests (vLLM has no arrivals counter), and rates are over the rate window
(default 60 s), not over the last tick.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from aiops.clock import Clock
from aiops.config import PrometheusConfig, TargetConfig
from aiops.errors import DataQualityError, InputError, PermanentError, TransientError
from aiops.ingest import queries as q
from aiops.types import FloatArray, Snapshot

log = logging.getLogger(__name__)

MAX_POINTS_PER_QUERY = 10_000
"""Prometheus refuses range queries of more than 11,000 points per series; longer ranges
are read in chunks of this many steps. A multiple of 1000, so that with a step in whole
milliseconds every chunk starts on a whole second (the client library rounds to seconds)."""

_STATUS = re.compile(r"HTTP Status Code (\d{3})")
_RETRYABLE_STATUS = frozenset({408, 429})


# --------------------------------------------------------------------------- errors
class PrometheusUnavailableError(TransientError):
    """Prometheus could not be asked or did not answer properly; worth retrying.

    ``kind``: ``connection``, ``timeout``, ``http_status`` or ``bad_response``.
    """

    def __init__(self, kind: str, message: str, *, status: int | None = None) -> None:
        self.kind = kind
        self.status = status
        super().__init__(message)


class PrometheusQueryError(PermanentError):
    """Prometheus refused the query (bad PromQL, auth, wrong URL): fix the config."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.kind = "query"
        self.status = status
        super().__init__(message)


class MetricDataError(DataQualityError):
    """Prometheus answered, but the answer is not one trustworthy number.

    ``kind`` names the outcome (also the class); ``query`` is the query's name, ``promql``
    what was sent, ``target`` the target's name. The controller holds the target (never
    scales down on it) and counts the error by ``kind``.
    """

    kind: ClassVar[str] = "data"

    def __init__(self, detail: str, *, query: str, promql: str, target: str) -> None:
        self.detail = detail
        self.query = query
        self.promql = promql
        self.target = target
        super().__init__(
            f"{self.kind}: query {query!r} for target {target!r}: {detail} [PromQL: {promql}]"
        )


class EmptyResultError(MetricDataError):
    """No series matched: wrong selector, exporter down, or the series went away."""

    kind = "empty"


class MultipleSeriesError(MetricDataError):
    """Several series where one number was expected: a query without aggregation, or a
    duplicated exporter/job. Summing them silently would double the load."""

    kind = "multiple_series"


class NotFiniteError(MetricDataError):
    """NaN or +-Inf where a number was required (e.g. a division by a zero count)."""

    kind = "not_finite"


class StaleSampleError(MetricDataError):
    """The newest data is older than ``stale_after_s``: the exporter or scrape stopped."""

    kind = "stale"


class QueryExecutionError(MetricDataError):
    """Prometheus could not evaluate the query on this data (HTTP 422, e.g. duplicate
    series in a match group). Depends on the data, so it is held, not permanent."""

    kind = "execution"


DATA_ERROR_KINDS: tuple[str, ...] = tuple(
    c.kind for c in (EmptyResultError, MultipleSeriesError, NotFiniteError, StaleSampleError,
                     QueryExecutionError)
)


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Sample:
    """One instant-query answer: the value, its timestamp and its labels."""

    value: float
    time: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class RangeSeries:
    """A named query over ``[start, end]`` on Prometheus's grid ``start + k * step``.

    ``values`` holds NaN where Prometheus returned no point; ``gaps`` lists those runs as
    ``(first_missing_time, last_missing_time)`` so a report or a forecaster can say what it
    did not see instead of reading a hole as zero. A NaN that Prometheus itself returned
    (a latency quantile with no finished request) is a value, not a gap.
    """

    name: str
    promql: str
    target: str
    step: float
    times: FloatArray
    values: FloatArray
    gaps: tuple[tuple[float, float], ...] = ()

    @property
    def missing(self) -> int:
        """Grid points without a sample."""
        return sum(round((b - a) / self.step) + 1 for a, b in self.gaps)


# --------------------------------------------------------------------------- source
class PrometheusSource:
    """The ``MetricSource`` that reads a real Prometheus (see the module docstring).

    ``clock`` provides the default ``sleep`` between retries; tests inject ``sleep`` to
    record delays instead of waiting. ``rate_window_s`` is the window of ``rate()`` and the
    latency histograms. ``environ`` is where token and password variables are read
    (``os.environ`` by default). ``session`` replaces the requests session (custom CA,
    proxies, client certificates).
    """

    def __init__(
        self,
        cfg: PrometheusConfig,
        clock: Clock,
        *,
        sleep: Callable[[float], None] | None = None,
        rate_window_s: float = q.DEFAULT_RATE_WINDOW_S,
        environ: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        problem = cfg.auth_conflict()
        if problem is not None:
            raise InputError(f"prometheus: {problem}")
        q.duration(rate_window_s)  # fail fast on a bad window
        self.cfg = cfg
        self.clock = clock
        self.rate_window_s = rate_window_s
        self._sleep = sleep if sleep is not None else clock.sleep
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        session = session if session is not None else requests.Session()
        session.verify = cfg.verify_tls
        # Retries are ours (injectable sleep, typed errors); the library's urllib3 retry
        # would sleep for real and turn a 5xx into an opaque RetryError. ``read=False``
        # keeps a read timeout a ``requests.Timeout`` instead of a ConnectionError.
        self._client = PrometheusConnect(
            url=cfg.url.rstrip("/"),
            retry=Retry(total=0, read=False, raise_on_status=False),
            session=session,
            timeout=cfg.timeout_s,  # type: ignore[arg-type]  # requests takes a float
        )

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    # ------------------------------------------------------------------ public API
    def snapshot(self, target: TargetConfig, at: float) -> Snapshot:
        """The target at ``at`` (Unix s), with every outcome named (module docstring).

        Order matters: freshness first, so a stopped exporter is reported as ``stale``
        rather than as whichever rate went empty first; kube-state-metrics before vLLM,
        because with no ready replica an absent vLLM series means zero, not unknown.

        ``batch_size``: vLLM does not export ``--max-num-seqs``. It comes from the
        ``batch_size`` query when one is configured, else it is ``target.batch_sizes[0]``
        as a placeholder: the controller must take the real value from the pod template
        (``Actuator.read(...).batch_size``).
        """
        promql = self._render_all(target)
        self._check_fresh(target, "kube_sample_time", promql, at, allow_empty=False)
        replicas = self._count(target, "replicas", promql, at)
        ready = self._count(target, "ready_replicas", promql, at)
        total = self._value(target, "total_replicas", promql, at)
        starting = max(0, (round(total) if math.isfinite(total) else replicas) - ready)
        no_pods = ready == 0
        age = self._check_fresh(target, "vllm_sample_time", promql, at, allow_empty=no_pods)

        def vllm(name: str) -> float:
            return self._value(target, name, promql, at, no_pods=no_pods)

        batch = self._value(target, "batch_size", promql, at)
        arrival = vllm("arrival_rate")
        return Snapshot(
            time=float(at),
            replicas=replicas,
            ready_replicas=ready,
            batch_size=round(batch) if math.isfinite(batch) else target.batch_sizes[0],
            requests_running=vllm("requests_running"),
            requests_waiting=vllm("requests_waiting"),
            kv_cache_usage=vllm("kv_cache_usage"),
            arrival_rate=arrival,
            prompt_tokens_rate=vllm("prompt_tokens_rate"),
            generation_tokens_rate=vllm("generation_tokens_rate"),
            ttft_p50=vllm("ttft_p50"),
            ttft_p99=vllm("ttft_p99"),
            tpot_p99=vllm("tpot_p99"),
            starting_replicas=starting,
            gpu_utilization=self._value(target, "gpu_utilization", promql, at),
            slo_attainment=self._attainment(target, promql, at, no_pods),
            requests_finished=arrival * self.rate_window_s,
            pods_reporting=vllm("pods_reporting"),
            sample_age_s=age,
        )

    def _attainment(self, target: TargetConfig, promql: dict[str, str], at: float,
                    no_pods: bool) -> float:
        """SLO attainment over the rate window from vLLM's histograms: the share within
        the TTFT objective times the share within TPOT (of requests where vLLM exports its
        per-request TPOT histogram, else of output tokens, which reads kinder: see
        ``tpot_ok``), over the prompts any replica could serve in time. NaN when a share
        is unknown (no request, or an objective that is not one of vLLM's bucket
        bounds)."""
        if no_pods:
            return float("nan")
        ttft = self._value(target, "ttft_ok", promql, at)
        tpot = self._value(target, "tpot_ok", promql, at)
        long = self._value(target, "long_prompts", promql, at)
        if not (math.isfinite(ttft) and math.isfinite(tpot)):
            return float("nan")
        feasible = 1.0 - (min(max(long, 0.0), 0.99) if math.isfinite(long) else 0.0)
        return min(max(ttft * tpot / feasible, 0.0), 1.0)

    def load_history(
        self, target: TargetConfig, start: float, end: float, step: float
    ) -> tuple[FloatArray, FloatArray]:
        """Arrival rate (requests/s) on Prometheus's grid; NaN in gaps, which are logged.

        For the gaps themselves, call ``load_range(target, "arrival_rate", ...)``.
        """
        series = self.load_range(target, "arrival_rate", start, end, step)
        if series.gaps:
            log.warning(
                "arrival-rate history of %s has %d missing of %d points in %d gap(s): %s",
                target.name, series.missing, len(series.times), len(series.gaps),
                ", ".join(f"{_iso(a)}..{_iso(b)}" for a, b in series.gaps[:5]),
            )
        return series.times, series.values

    def load_range(
        self, target: TargetConfig, name: str, start: float, end: float, step: float
    ) -> RangeSeries:
        """Any named query over ``[start, end]`` every ``step`` seconds.

        ``start`` and ``end`` are rounded to whole seconds (the client library sends them
        so) and ``step`` to milliseconds (Prometheus's resolution). Long ranges are read in
        chunks of at most :data:`MAX_POINTS_PER_QUERY` points. Raises ``EmptyResultError``
        when no point at all came back and ``MultipleSeriesError`` for several series.
        """
        promql = self._render(target, name)
        if not promql:
            raise InputError(f"query {name!r} is disabled for target {target.name!r}")
        step_ms = round(step * 1000)
        if step_ms <= 0:
            raise InputError(f"step must be at least 1 ms, got {step} s")
        s0_ms, e0_ms = round(start) * 1000, round(end) * 1000
        if e0_ms < s0_ms:
            raise InputError(f"range end {end} is before its start {start}")
        n = (e0_ms - s0_ms) // step_ms + 1
        times = (s0_ms + step_ms * np.arange(n, dtype=np.int64)) / 1000.0
        values = np.full(n, np.nan)
        seen = np.zeros(n, dtype=bool)
        labels: Mapping[str, str] | None = None
        for first in range(0, n, MAX_POINTS_PER_QUERY):
            last = min(n, first + MAX_POINTS_PER_QUERY) - 1

            def call(a: float = float(times[first]), b: float = float(times[last])) -> Any:
                return self._client.custom_query_range(
                    promql,
                    start_time=datetime.fromtimestamp(a, tz=UTC),
                    end_time=datetime.fromtimestamp(b, tz=UTC),
                    step=_step_param(step_ms),
                    params=self._params(),
                )

            result = self._with_retries(target, name, promql, call)
            for series in _as_series_list(result, target, name, promql, want="values"):
                metric = _labels(series)
                if labels is not None and metric != labels:
                    raise MultipleSeriesError(
                        f"{len(result)} series: {_describe([labels, metric])}",
                        query=name, promql=promql, target=target.name,
                    )
                labels = metric
                for ts, raw in _points(series, target, name, promql):
                    k = round((ts * 1000 - s0_ms) / step_ms)
                    if 0 <= k < n:
                        values[k] = raw
                        seen[k] = True
        if not seen.any():
            raise EmptyResultError(
                f"no data between {_iso(times[0])} and {_iso(times[-1])}",
                query=name, promql=promql, target=target.name,
            )
        gaps = tuple((float(times[a]), float(times[b - 1])) for a, b in _runs(~seen))
        return RangeSeries(name=name, promql=promql, target=target.name, step=step_ms / 1000,
                           times=times, values=values, gaps=gaps)

    def query(self, target: TargetConfig, name: str, at: float) -> Sample | None:
        """One named instant query, judged for series count and sample age but not for
        NaN or absence: ``None`` when nothing matched. For diagnostics and reports."""
        promql = self._render(target, name)
        if not promql:
            return None
        return self._instant(target, name, promql, at)

    # ------------------------------------------------------------------ internals
    def _render(self, target: TargetConfig, name: str) -> str:
        return q.render(name, target, window_s=self.rate_window_s)

    def _render_all(self, target: TargetConfig) -> dict[str, str]:
        return q.render_all(target, window_s=self.rate_window_s)

    def _value(
        self, target: TargetConfig, name: str, promql: Mapping[str, str], at: float,
        *, no_pods: bool = False,
    ) -> float:
        """A judged number: NaN for a missing optional value, an error for a bad one."""
        spec = q.QUERIES[name]
        text = promql[name]
        if not text:
            return math.nan
        sample = self._instant(target, name, text, at)
        if sample is None:
            if spec.zero_without_pods and no_pods:
                return 0.0
            if spec.required:
                hint = " (no ready replica, and the query is not a vLLM sum)" if no_pods else ""
                raise EmptyResultError("no series matched" + hint, query=name, promql=text,
                                       target=target.name)
            return math.nan
        if not math.isfinite(sample.value) and not (spec.nan_ok and math.isnan(sample.value)):
            raise NotFiniteError(f"value is {sample.value}", query=name, promql=text,
                                 target=target.name)
        return sample.value

    def _count(
        self, target: TargetConfig, name: str, promql: Mapping[str, str], at: float
    ) -> int:
        value = self._value(target, name, promql, at)
        if value < 0:
            raise NotFiniteError(f"a replica count cannot be negative: {value}", query=name,
                                 promql=promql[name], target=target.name)
        return round(value)

    def _check_fresh(
        self, target: TargetConfig, name: str, promql: Mapping[str, str], at: float,
        *, allow_empty: bool,
    ) -> float:
        """The age (s) of the oldest sample at ``at``, checked against ``stale_after_s``
        (NaN when there is none and none is needed)."""
        text = promql[name]
        sample = self._instant(target, name, text, at)
        if sample is None:
            if allow_empty:
                return math.nan
            raise EmptyResultError("no series matched", query=name, promql=text,
                                   target=target.name)
        if not math.isfinite(sample.value):
            raise NotFiniteError(f"sample time is {sample.value}", query=name, promql=text,
                                 target=target.name)
        age = at - sample.value
        if age > self.cfg.stale_after_s:
            raise StaleSampleError(
                f"oldest sample is {age:.0f} s old at {_iso(at)} (stale after "
                f"{self.cfg.stale_after_s:g} s); last sample at {_iso(sample.value)}",
                query=name, promql=text, target=target.name,
            )
        return max(0.0, age)

    def _instant(self, target: TargetConfig, name: str, promql: str, at: float) -> Sample | None:
        result = self._with_retries(
            target, name, promql,
            lambda: self._client.custom_query(promql, params={**self._params(), "time": at}),
        )
        if _is_scalar(result):
            ts, raw = _point(result, target, name, promql)
            sample = Sample(raw, ts)
        else:
            series = _as_series_list(result, target, name, promql, want="value")
            if not series:
                return None
            if len(series) > 1:
                raise MultipleSeriesError(
                    f"{len(series)} series where one was expected: "
                    f"{_describe([_labels(s) for s in series])}; aggregate them (sum, max) "
                    "or narrow the selector",
                    query=name, promql=promql, target=target.name,
                )
            ts, raw = _point(series[0].get("value"), target, name, promql)
            sample = Sample(raw, ts, _labels(series[0]))
        if abs(sample.time - at) > self.cfg.stale_after_s:
            raise StaleSampleError(
                f"answer is stamped {_iso(sample.time)}, {abs(sample.time - at):.0f} s away "
                f"from the asked time {_iso(at)}", query=name, promql=promql,
                target=target.name,
            )
        return sample

    def _params(self) -> dict[str, Any]:
        """Per-request parameters: the server-side timeout, and fresh credentials.

        The token file is re-read on every request: Kubernetes rotates projected
        service-account tokens, and a daemon that runs for months must follow.
        """
        client: Any = self._client  # the library types these as never-None
        client.headers = self._auth_headers()
        client.auth = self._basic_auth()
        return {"timeout": q.duration(self.cfg.timeout_s)}

    def _auth_headers(self) -> dict[str, str] | None:
        token: str | None = None
        if self.cfg.bearer_token_file is not None:
            path = Path(self.cfg.bearer_token_file)
            try:
                token = path.read_text().strip()
            except OSError as exc:
                raise PrometheusQueryError(
                    f"cannot read prometheus.bearer_token_file {path}: {exc.strerror}"
                ) from None
        elif self.cfg.bearer_token_env is not None:
            token = self._environ.get(self.cfg.bearer_token_env)
            if not token:
                raise PrometheusQueryError(
                    f"prometheus.bearer_token_env: variable {self.cfg.bearer_token_env} "
                    "is not set"
                )
        return {"Authorization": f"Bearer {token}"} if token else None

    def _basic_auth(self) -> tuple[str, str] | None:
        if self.cfg.basic_auth_user is None:
            return None
        password = ""
        if self.cfg.basic_auth_password_env is not None:
            value = self._environ.get(self.cfg.basic_auth_password_env)
            if value is None:
                raise PrometheusQueryError(
                    f"prometheus.basic_auth_password_env: variable "
                    f"{self.cfg.basic_auth_password_env} is not set"
                )
            password = value
        return (self.cfg.basic_auth_user, password)

    def _with_retries(
        self, target: TargetConfig, name: str, promql: str, call: Callable[[], Any]
    ) -> Any:
        """Run ``call``; on a transient failure sleep ``backoff_s * 2**i`` and try again."""
        attempts = self.cfg.retries + 1
        for attempt in range(attempts):
            try:
                return self._call(target, name, promql, call)
            except PrometheusUnavailableError as exc:
                if attempt + 1 >= attempts:
                    raise
                delay = self.cfg.backoff_s * 2**attempt
                log.warning("prometheus query %s for %s failed (%s); retry %d/%d in %.2f s",
                            name, target.name, exc, attempt + 1, attempts - 1, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(self, target: TargetConfig, name: str, promql: str, call: Callable[[], Any]) -> Any:
        where = f"query {name!r} for target {target.name!r} at {self.cfg.url}"
        try:
            return call()
        except requests.Timeout:
            raise PrometheusUnavailableError(
                "timeout", f"{where}: no answer within {self.cfg.timeout_s:g} s"
            ) from None
        except requests.ConnectionError as exc:
            raise PrometheusUnavailableError(
                "connection", f"{where}: cannot connect: {exc}"
            ) from None
        except requests.exceptions.JSONDecodeError as exc:  # 200 but not JSON (a proxy page)
            raise PrometheusUnavailableError(
                "bad_response", f"{where}: the answer is not Prometheus JSON ({exc})"
            ) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise PrometheusQueryError(f"prometheus.url {self.cfg.url!r}: {exc}") from None
        except requests.RequestException as exc:
            raise PrometheusUnavailableError("connection", f"{where}: {exc}") from None
        except PrometheusApiClientException as exc:
            raise _http_error(str(exc), where, name, promql, target) from None
        except (ValueError, KeyError, TypeError) as exc:  # 200 but not Prometheus JSON
            raise PrometheusUnavailableError(
                "bad_response", f"{where}: the answer is not Prometheus JSON ({exc})"
            ) from None


# --------------------------------------------------------------------------- helpers
def _http_error(
    message: str, where: str, name: str, promql: str, target: TargetConfig
) -> Exception:
    """Map a non-200 answer to what the caller should do next."""
    m = _STATUS.search(message)
    status = int(m.group(1)) if m else None
    body = _error_text(message)
    if status is None or status >= 500 or status in _RETRYABLE_STATUS:
        return PrometheusUnavailableError("http_status", f"{where}: HTTP {status}: {body}",
                                     status=status)
    if status == 422:
        return QueryExecutionError(f"Prometheus could not evaluate it (HTTP 422): {body}",
                                   query=name, promql=promql, target=target.name)
    return PrometheusQueryError(f"{where}: HTTP {status}: {body} [PromQL: {promql}]",
                                status=status)


def _error_text(message: str) -> str:
    """Prometheus's own ``error`` field when the body carries one, else the raw message.

    The client library only keeps ``"HTTP Status Code N (<repr of the body bytes>)"``.
    """
    m = re.search(r"\((b(['\"]).*\2)\)\s*$", message, flags=re.DOTALL)
    if m:
        try:
            raw: object = ast.literal_eval(m.group(1))
            body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            data = json.loads(body)
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, str):
                return error
            return body[:300]
        except (ValueError, SyntaxError):
            pass
    return message[:300]


def _is_scalar(result: Any) -> bool:
    """Scalar and string results come back as ``[time, "value"]``, not a series list."""
    return (isinstance(result, list) and len(result) == 2
            and not isinstance(result[0], dict) and not isinstance(result[1], dict))


def _as_series_list(
    result: Any, target: TargetConfig, name: str, promql: str, *, want: str
) -> list[dict[str, Any]]:
    if not isinstance(result, list) or not all(isinstance(s, dict) for s in result):
        raise PrometheusUnavailableError("bad_response",
                                    f"query {name!r}: unexpected result shape {result!r:.200}")
    if want == "value" and any("values" in s for s in result):
        raise PrometheusQueryError(
            f"query {name!r} for target {target.name!r} returns a range vector; an instant "
            f"value is needed (wrap it in rate(), avg_over_time()...) [PromQL: {promql}]"
        )
    return result


def _point(raw: Any, target: TargetConfig, name: str, promql: str) -> tuple[float, float]:
    """``[time, "value"]`` -> floats; Prometheus writes NaN and +-Inf as strings."""
    try:
        ts, value = raw
        return float(ts), float(value)
    except (TypeError, ValueError):
        raise PrometheusUnavailableError(
            "bad_response", f"query {name!r} for target {target.name!r}: bad sample {raw!r:.100}"
        ) from None


def _points(
    series: Mapping[str, Any], target: TargetConfig, name: str, promql: str
) -> list[tuple[float, float]]:
    values = series.get("values")
    if not isinstance(values, list):
        raise PrometheusUnavailableError(
            "bad_response", f"query {name!r}: range series lacks values"
        )
    return [_point(v, target, name, promql) for v in values]


def _labels(series: Mapping[str, Any]) -> dict[str, str]:
    metric = series.get("metric", {})
    return dict(metric) if isinstance(metric, dict) else {}


def _describe(label_sets: Sequence[Mapping[str, str]], limit: int = 3) -> str:
    shown = ["{" + ", ".join(f'{k}="{v}"' for k, v in sorted(ls.items())) + "}"
             for ls in label_sets[:limit]]
    more = f" and {len(label_sets) - limit} more" if len(label_sets) > limit else ""
    return ", ".join(shown) + more


def _step_param(step_ms: int) -> str:
    return f"{step_ms // 1000}" if step_ms % 1000 == 0 else f"{step_ms / 1000:.3f}"


def _runs(mask: np.ndarray[Any, np.dtype[np.bool_]]) -> list[tuple[int, int]]:
    """Half-open index ranges ``[a, b)`` where ``mask`` is True."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(float(t), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
