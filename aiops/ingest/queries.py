"""Named PromQL for one target: vLLM, kube-state-metrics and DCGM, each overridable by name.

Why named queries: operators' Prometheus setups differ (relabelling, recording rules, an
HA kube-state-metrics, a gateway that knows the true arrival rate). Every number aiops reads
has a name here, a default that works with the stock exporters, and can be replaced per
target in the config (``targets[].queries: {name: promql}``) without touching code.

Templates use Grafana-style variables, because ``{}`` is PromQL's own syntax and ``$`` is
not used by PromQL (regexes are anchored, so ``$`` is never needed in a matcher):

==================  ===========================================================================
``$namespace``      the target's namespace, raw
``$deployment``     the Deployment's name, raw
``$model_name``     vLLM's ``model_name`` label value, escaped for a PromQL string
``$pod_regex``      RE2 regex of the Deployment's pods (``<deployment>-<hash>-<5 chars>``),
                    escaped for a PromQL string
``$vllm``           label matchers of the target's vLLM series: namespace, pod regex and,
                    when ``model_name`` is set, the model
``$pods``           namespace and pod regex only (DCGM, which has no ``model_name`` label)
``$kube``           kube-state-metrics matchers: ``namespace`` and ``deployment``
``$window``         the rate window as a PromQL duration, e.g. ``60s``
``$ttft_le``        the ``le`` label of vLLM's TTFT bucket at the target's TTFT objective
``$tpot_le``        the same for TPOT
``$prompt_le``      the ``le`` label of vLLM's prompt-length bucket at the longest prompt the
                    target's profile can prefill within the TTFT objective (rounded down to
                    vLLM's 1-2-5 buckets)
==================  ===========================================================================

``${name}`` works too, ``$$`` is a literal ``$``, and an unknown ``$name`` is an
``InputError`` naming the query (a typo must not silently widen a selector).

Units match :class:`aiops.types.Snapshot`: counts, requests/s, tokens/s, seconds, and
fractions in [0, 1] (DCGM reports percent, the query divides by 100).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiops.config import TargetConfig
from aiops.errors import InputError

DEFAULT_RATE_WINDOW_S = 60.0
"""Window of ``rate()`` and of the latency histograms. Four times the usual 15 s scrape
interval: ``rate()`` needs two samples in its window, and four tolerate a missed scrape
without the series vanishing, while staying short enough to see a burst within a tick."""


@dataclass(frozen=True)
class QuerySpec:
    """One named query and how its answer is to be judged.

    ``required``: an empty answer is a ``DataQualityError`` (otherwise the value is NaN).
    ``nan_ok``: NaN is a legitimate answer ("no request finished in the window": the
    latency quantiles), not a ``not_finite`` error. ``zero_without_pods``: when the
    Deployment has no ready replica there are no vLLM series at all, and the true value is
    zero (nothing running, nothing served), not "unknown".
    """

    name: str
    template: str
    unit: str
    doc: str
    required: bool = True
    nan_ok: bool = False
    zero_without_pods: bool = False


def _vllm_hist(q: str, metric: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({metric}{{$vllm}}[$window])))"


_SPECS: tuple[QuerySpec, ...] = (
    # kube-state-metrics. Not aggregated on purpose: two series for one Deployment (a
    # second kube-state-metrics scraped, a duplicated job) must surface as
    # ``multiple_series`` instead of being summed into twice the replicas.
    QuerySpec("kube_sample_time", "min(timestamp(kube_deployment_spec_replicas{$kube}))",
              "Unix s", "oldest kube-state-metrics sample of the target (staleness check)"),
    QuerySpec("replicas", "kube_deployment_spec_replicas{$kube}", "replicas",
              "spec.replicas: what the Deployment asks for"),
    QuerySpec("ready_replicas", "kube_deployment_status_replicas_ready{$kube}", "replicas",
              "ready pods"),
    QuerySpec("total_replicas", "kube_deployment_status_replicas{$kube}", "replicas",
              "pods that exist (ready or starting); starting = total - ready",
              required=False),
    # vLLM, summed over the Deployment's pods (the Snapshot's definitions).
    QuerySpec("vllm_sample_time", "min(timestamp(vllm:num_requests_running{$vllm}))",
              "Unix s", "oldest vLLM sample of the target (staleness check)",
              zero_without_pods=True),
    QuerySpec("requests_running", "sum(vllm:num_requests_running{$vllm})", "requests",
              "requests in the running batches", zero_without_pods=True),
    QuerySpec("requests_waiting", "sum(vllm:num_requests_waiting{$vllm})", "requests",
              "requests queued for admission", zero_without_pods=True),
    # How many exporters the sums add up: one series of a gauge per scraped pod. A pod
    # scraped twice (a ServiceMonitor beside a PodMonitor) doubles every sum, and a ready
    # pod not scraped drops out of them; either shows here against the ready count.
    QuerySpec("pods_reporting", "count(vllm:num_requests_running{$vllm})", "pods",
              "vLLM exporters scraped (series of one gauge)", required=False,
              zero_without_pods=True),
    # vLLM deprecated gpu_cache_usage_perc for kv_cache_usage_perc (vLLM PR 18354, 2025)
    # and later stopped emitting the old name by default; both are 0..1 despite "perc".
    # ``or`` takes the new one when present, the old one otherwise.
    QuerySpec("kv_cache_usage",
              "avg(vllm:kv_cache_usage_perc{$vllm}) or avg(vllm:gpu_cache_usage_perc{$vllm})",
              "fraction", "mean KV-cache usage over the pods", zero_without_pods=True),
    # vLLM has no arrivals counter; completions per second equal arrivals in steady state
    # and lag them by one request latency in a ramp. A gateway's request counter is the
    # better source where there is one: override ``arrival_rate``.
    QuerySpec("arrival_rate", "sum(rate(vllm:request_success_total{$vllm}[$window]))",
              "requests/s", "finished requests per second (all finished_reason values)",
              zero_without_pods=True),
    QuerySpec("prompt_tokens_rate", "sum(rate(vllm:prompt_tokens_total{$vllm}[$window]))",
              "tokens/s", "prompt tokens prefilled per second", zero_without_pods=True),
    QuerySpec("generation_tokens_rate",
              "sum(rate(vllm:generation_tokens_total{$vllm}[$window]))",
              "tokens/s", "tokens generated per second", zero_without_pods=True),
    QuerySpec("ttft_p50", _vllm_hist("0.5", "vllm:time_to_first_token_seconds_bucket"), "s",
              "median time to first token over the window", required=False, nan_ok=True),
    QuerySpec("ttft_p99", _vllm_hist("0.99", "vllm:time_to_first_token_seconds_bucket"), "s",
              "p99 time to first token over the window", required=False, nan_ok=True),
    # TPOT per request where vLLM exports it (request_time_per_output_token_seconds, in
    # recent releases), per output token otherwise. An objective on TPOT is set per request, and the
    # two differ most where misses are hardest to buy: a reply of three tokens whose gaps
    # took in another prompt's prefill misses as a request but weighs two tokens among
    # thousands, so a controller fed the per-token share aims at a kinder number than the
    # objective it is judged by.
    QuerySpec("tpot_p99",
              _vllm_hist("0.99", "vllm:request_time_per_output_token_seconds_bucket")
              + " or " + _vllm_hist("0.99", "vllm:time_per_output_token_seconds_bucket"), "s",
              "p99 time per output token over the window (per request where exported)",
              required=False, nan_ok=True),
    # SLO attainment over the window from vLLM's histograms, for policies that learn from
    # it: the share of first tokens within the TTFT objective, of requests (else of output
    # tokens, see above) within the TPOT objective, and of prompts too long for any replica
    # to meet TTFT (they miss on any fleet). An objective that is not a bucket boundary
    # gives no series: NaN.
    QuerySpec("ttft_ok",
              "sum(rate(vllm:time_to_first_token_seconds_bucket{$vllm,le=\"$ttft_le\"}"
              "[$window])) / sum(rate(vllm:time_to_first_token_seconds_count{$vllm}[$window]))",
              "fraction", "share of first tokens within the TTFT objective",
              required=False, nan_ok=True),
    QuerySpec("tpot_ok",
              "sum(rate(vllm:request_time_per_output_token_seconds_bucket{$vllm,"
              "le=\"$tpot_le\"}[$window])) / sum(rate("
              "vllm:request_time_per_output_token_seconds_count{$vllm}[$window])) or "
              "sum(rate(vllm:time_per_output_token_seconds_bucket{$vllm,le=\"$tpot_le\"}"
              "[$window])) / sum(rate(vllm:time_per_output_token_seconds_count{$vllm}"
              "[$window]))",
              "fraction", "share of requests (else of output tokens) within the TPOT objective",
              required=False, nan_ok=True),
    QuerySpec("long_prompts",
              "1 - sum(rate(vllm:request_prompt_tokens_bucket{$vllm,le=\"$prompt_le\"}"
              "[$window])) / sum(rate(vllm:request_prompt_tokens_count{$vllm}[$window]))",
              "fraction", "share of prompts too long to meet the TTFT objective on any fleet",
              required=False, nan_ok=True),
    # DCGM exporter: optional (not every cluster runs it), percent -> fraction.
    QuerySpec("gpu_utilization", "avg(DCGM_FI_DEV_GPU_UTIL{$pods}) / 100", "fraction",
              "mean GPU utilisation of the pods' GPUs", required=False),
    # vLLM does not export --max-num-seqs; no default. Set it to read the batch size from
    # your own series (e.g. a kube-state-metrics custom resource metric).
    QuerySpec("batch_size", "", "sequences", "--max-num-seqs of the running pods",
              required=False),
)

QUERIES: Mapping[str, QuerySpec] = {s.name: s for s in _SPECS}
"""Every named query, by name, in the order a snapshot reads them."""

METRIC_NAMES: tuple[str, ...] = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:request_success_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:time_per_output_token_seconds_bucket",
    "vllm:time_to_first_token_seconds_count",
    "vllm:time_per_output_token_seconds_count",
    "vllm:request_time_per_output_token_seconds_bucket",
    "vllm:request_time_per_output_token_seconds_count",
    "vllm:request_prompt_tokens_bucket",
    "vllm:request_prompt_tokens_count",
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_ready",
    "kube_deployment_status_replicas",
    "DCGM_FI_DEV_GPU_UTIL",
)
"""Every series name the default queries read, so the Grafana dashboard, the alert rules
and the simulator's exported names can be checked against one list."""

_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))"
)
_RE2_SPECIAL = set("\\.+*?()|[]{}^$")
POD_SUFFIX_REGEX = "-[a-z0-9]+-[a-z0-9]{5}"
"""A Deployment's pods are ``<deployment>-<pod-template-hash>-<5 random chars>``. Matching
the two dash-separated parts exactly keeps Deployment ``vllm`` from catching the pods of
``vllm-large`` (whose name has one more part)."""


def promql_string(value: str) -> str:
    """Escape ``value`` for the inside of a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def regex_escape(value: str) -> str:
    """Escape RE2 metacharacters (``.`` in a Deployment name must not match any char)."""
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in value)


def duration(seconds: float) -> str:
    """A PromQL duration: whole seconds as ``60s``, anything finer in milliseconds."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"a PromQL duration must be a positive number of seconds, got {seconds}")
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def le_label(value: float) -> str:
    """A bucket bound as the Prometheus client writes it in ``le`` (0.5 -> "0.5",
    5000 -> "5000.0"): the label must match character for character."""
    return repr(float(value))


def longest_feasible_bucket(target: TargetConfig) -> float:
    """The largest of vLLM's 1-2-5 prompt-length buckets at or under the longest prompt the
    target's profile prefills within its TTFT objective (1 when the profile is unknown)."""
    from aiops.errors import InputError
    from aiops.sim.profiles import load_profile

    try:
        limit, _ = load_profile(target.profile).feasible_limits(target.slo.ttft_s,
                                                                target.slo.tpot_s)
    except InputError:
        return 1.0
    best = 1.0
    k = 0
    while True:
        for m in (1.0, 2.0, 5.0):
            b = m * 10.0 ** k
            if b > limit:
                return best
            best = b
        k += 1


def variables(target: TargetConfig, *, window_s: float = DEFAULT_RATE_WINDOW_S) -> dict[str, str]:
    """The template variables of ``target`` (see the module docstring)."""
    ns = promql_string(target.namespace)
    pod_regex = promql_string(regex_escape(target.deployment) + POD_SUFFIX_REGEX)
    pods = f'namespace="{ns}",pod=~"{pod_regex}"'
    vllm = pods
    out = {
        "namespace": target.namespace,
        "deployment": target.deployment,
        "pod_regex": pod_regex,
        "pods": pods,
        "kube": f'namespace="{ns}",deployment="{promql_string(target.deployment)}"',
        "window": duration(window_s),
        "ttft_le": le_label(target.slo.ttft_s),
        "tpot_le": le_label(target.slo.tpot_s),
        "prompt_le": le_label(longest_feasible_bucket(target)),
    }
    if target.model_name is not None:
        out["model_name"] = promql_string(target.model_name)
        vllm += f',model_name="{out["model_name"]}"'
    out["vllm"] = vllm
    return out


def expand(template: str, values: Mapping[str, str], *, where: str) -> str:
    """Substitute ``$name`` / ``${name}`` / ``$$``; ``where`` names the query in errors."""

    def sub(m: re.Match[str]) -> str:
        if m.group("dollar"):
            return "$"
        name = m.group("braced") or m.group("named")
        if name in values:
            return values[name]
        if name == "model_name":
            raise InputError(f"{where} uses $model_name but the target sets no model_name")
        known = ", ".join("$" + k for k in sorted({*values, "model_name"}))
        raise InputError(f"{where} uses unknown variable ${name}; known: {known}")

    return _VAR.sub(sub, template)


def _where(target: TargetConfig, name: str, overridden: bool) -> str:
    origin = f"targets[{target.name}].queries.{name}" if overridden else f"default query {name!r}"
    return f"{origin} (target {target.name!r}, {target.key})"


def validate_overrides(target: TargetConfig) -> None:
    """Check ``target.queries`` at start-up: known names, known variables, required ones set.

    Raises ``InputError`` naming the target and the query, so ``aiops validate-config``
    can catch a typo before the daemon reads a single metric.
    """
    render_all(target)


def render(
    name: str, target: TargetConfig, *, window_s: float = DEFAULT_RATE_WINDOW_S
) -> str:
    """The PromQL of query ``name`` for ``target`` (override if any); ``""`` = disabled."""
    spec = QUERIES.get(name)
    if spec is None:
        raise InputError(f"unknown query name {name!r}; known: {', '.join(QUERIES)}")
    unknown = sorted(set(target.queries) - set(QUERIES))
    if unknown:
        raise InputError(
            f"target {target.name!r}: unknown query override(s) {', '.join(map(repr, unknown))}"
            f" in queries; known: {', '.join(QUERIES)}"
        )
    overridden = name in target.queries
    template = target.queries[name] if overridden else spec.template
    if not template.strip():
        if spec.required:
            raise InputError(
                f"{_where(target, name, overridden)}: query {name!r} is required and "
                "cannot be empty"
            )
        return ""
    return expand(template, variables(target, window_s=window_s),
                  where=_where(target, name, overridden)).strip()


def render_all(
    target: TargetConfig, *, window_s: float = DEFAULT_RATE_WINDOW_S
) -> dict[str, str]:
    """Every query for ``target``, by name; disabled optional queries are ``""``."""
    return {name: render(name, target, window_s=window_s) for name in QUERIES}
