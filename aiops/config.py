"""The daemon's configuration: a typed tree, loaded from YAML plus environment, checked at start.

Why pydantic and why so strict: a typo in an autoscaler's config (``max_replica: 4``) that is
silently ignored is an outage waiting to happen. Unknown keys are errors, every number has
bounds, and an error names the field and the line of the YAML file it came from. Secrets are
never in the file itself (token files or environment variables) and are masked when the
config is logged at start.

Environment overrides: ``AIOPS_<SECTION>__<FIELD>=value`` (double underscore between levels),
e.g. ``AIOPS_PROMETHEUS__URL=http://prometheus:9090`` or ``AIOPS_DRY_RUN=false``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aiops.errors import InputError

ENV_PREFIX = "AIOPS_"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SloConfig(_Model):
    """Per-request objectives; defaults suit interactive chat and code completion."""

    ttft_s: float = Field(0.5, gt=0, description="time to first token, seconds")
    tpot_s: float = Field(0.05, gt=0, description="time per output token, seconds")


class BatchSizeVia(_Model):
    """How the batch size (vLLM ``--max-num-seqs``) is set in the pod template.

    ``arg``: a container argument ``<arg>=N`` (or ``<arg> N``); ``env``: an environment
    variable. Exactly one of them.
    """

    arg: str | None = "--max-num-seqs"
    env: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> BatchSizeVia:
        if (self.arg is None) == (self.env is None):
            raise ValueError("set exactly one of 'arg' or 'env'")
        return self


class TargetConfig(_Model):
    """One Deployment that aiops sizes."""

    name: str = Field(min_length=1, description="name used in metrics, events and logs")
    namespace: str = Field("default", min_length=1)
    deployment: str = Field(min_length=1)
    container: str = Field("vllm", min_length=1)
    profile: str = Field("llama3-8b-a100", description="simulator profile: cold start, capacity")
    slo: SloConfig = SloConfig()
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(8, ge=1)
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    tune_batch_size: bool = Field(False, description="let aiops change --max-num-seqs")
    batch_size_via: BatchSizeVia = BatchSizeVia()
    policy: str = Field("predictive", description="hpa | keda | predictive | ppo[:path=DIR]")
    queries: dict[str, str] = Field(default_factory=dict, description="PromQL overrides by name")
    model_name: str | None = Field(None, description="value of vLLM's model_name label")

    @model_validator(mode="after")
    def _bounds(self) -> TargetConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})"
            )
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError("batch_sizes must be a non-empty list of positive integers")
        return self

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.deployment}"


def _check_url(url: str | None) -> str | None:
    """An HTTP(S) URL with a host: a typo here would otherwise surface as a connection error
    on the first tick, far from the line that caused it."""
    if url is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    return url


class PrometheusConfig(_Model):
    url: str = "http://localhost:9090"
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(2, ge=0, description="retries of a failed query within one tick")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    bearer_token_file: Path | None = None
    bearer_token_env: str | None = None
    basic_auth_user: str | None = None
    basic_auth_password_env: str | None = None
    verify_tls: bool = True
    stale_after_s: float = Field(120.0, gt=0, description="a sample older than this is stale")
    rate_window_s: float = Field(60.0, gt=0, description="window of rate() and quantiles")

    _url = field_validator("url")(_check_url)

    def auth_conflict(self) -> str | None:
        """What is wrong with the combination of credentials set, or None. Also asked by
        the Prometheus source, which may be handed a config built without validation."""
        if self.bearer_token_file is not None and self.bearer_token_env is not None:
            return "set bearer_token_file or bearer_token_env, not both"
        bearer = self.bearer_token_file is not None or self.bearer_token_env is not None
        if bearer and self.basic_auth_user is not None:
            return "set bearer token or basic auth, not both"
        if self.basic_auth_password_env is not None and self.basic_auth_user is None:
            return "basic_auth_password_env needs basic_auth_user"
        return None

    @model_validator(mode="after")
    def _auth(self) -> PrometheusConfig:
        problem = self.auth_conflict()
        if problem is not None:
            raise ValueError(problem)
        return self


class KubernetesConfig(_Model):
    """In-cluster service account (the default), or a kubeconfig file for running outside."""

    in_cluster: bool = True
    kubeconfig: Path | None = None
    context: str | None = None
    request_timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _source(self) -> KubernetesConfig:
        if self.in_cluster and (self.kubeconfig is not None or self.context is not None):
            raise ValueError("kubeconfig/context are used only with in_cluster: false")
        return self


class GrafanaConfig(_Model):
    url: str | None = Field(None, description="unset: no Grafana annotations")
    token_file: Path | None = None
    token_env: str | None = "GRAFANA_TOKEN"
    dashboard_uid: str | None = None
    tags: tuple[str, ...] = ("aiops",)
    timeout_s: float = Field(5.0, gt=0)

    _url = field_validator("url")(_check_url)


class LeaderElectionConfig(_Model):
    """A coordination.k8s.io Lease: only the holder acts; the standby takes over on expiry."""

    enabled: bool = True
    lease_name: str = "aiops-leader"
    namespace: str = "aiops"
    lease_duration_s: float = Field(15.0, gt=0)
    renew_deadline_s: float = Field(10.0, gt=0)
    retry_period_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _timing(self) -> LeaderElectionConfig:
        if not self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError(
                "need retry_period_s < renew_deadline_s < lease_duration_s "
                f"(got {self.retry_period_s}, {self.renew_deadline_s}, {self.lease_duration_s})"
            )
        return self


class GuardrailsConfig(_Model):
    """Limits that every policy's recommendation passes, in this order (see guardrails.py)."""

    max_step_up: int = Field(4, ge=1, description="replicas added per tick at most")
    max_step_down: int = Field(1, ge=1, description="replicas removed per tick at most")
    scale_down_stabilization_s: float = Field(300.0, ge=0)
    cooldown_s: float = Field(60.0, ge=0, description="after a change, no change the other way")
    batch_change_interval_s: float = Field(1800.0, ge=0)
    min_ready_for_batch_change: int = Field(2, ge=1)
    max_failures: int = Field(3, ge=1, description="failed reads before the fallback applies")
    fallback: Literal["hold", "fixed"] = "hold"
    fallback_replicas: int | None = Field(None, ge=0)
    anomaly_freeze: bool = True
    scale_down_min_attainment: float | None = Field(
        0.99, gt=0, le=1, description="a scale-down needs at least this share of the tick's "
        "finished requests within the SLO (null: no such check)")
    gpu_budget: int | None = Field(None, ge=1, description="GPUs across all targets at most")

    @model_validator(mode="after")
    def _fallback(self) -> GuardrailsConfig:
        if self.fallback == "fixed" and self.fallback_replicas is None:
            raise ValueError("fallback 'fixed' needs fallback_replicas")
        return self


class DetectConfig(_Model):
    detector: str = "default"
    threshold: float = Field(0.9, gt=0, le=1)


class ForecastConfig(_Model):
    model: str = "auto"
    step_s: float = Field(60.0, gt=0, description="resolution of the load history")
    history_s: float = Field(7 * 86400.0, gt=0, description="history read at (re)fit")
    refit_interval_s: float = Field(3600.0, gt=0)


class SimBackendConfig(_Model):
    """The embedded simulated cluster, for ``backend: sim``."""

    workload: str = "synthetic:diurnal-bursty"
    rate_scale: float = Field(1.0, gt=0)
    seed: int = 0


class DaemonConfig(_Model):
    interval_s: float = Field(15.0, gt=0, description="seconds between ticks")
    http_host: str = "0.0.0.0"
    http_port: int = Field(8080, ge=0, le=65535)
    log_format: Literal["json", "text"] = "json"


class Config(_Model):
    backend: Literal["kubernetes", "sim"] = "kubernetes"
    dry_run: bool = True
    targets: tuple[TargetConfig, ...]
    prometheus: PrometheusConfig = PrometheusConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    grafana: GrafanaConfig = GrafanaConfig()
    leader_election: LeaderElectionConfig = LeaderElectionConfig()
    guardrails: GuardrailsConfig = GuardrailsConfig()
    detect: DetectConfig = DetectConfig()
    forecast: ForecastConfig = ForecastConfig()
    sim: SimBackendConfig = SimBackendConfig()
    daemon: DaemonConfig = DaemonConfig()

    @field_validator("targets")
    @classmethod
    def _unique(cls, targets: tuple[TargetConfig, ...]) -> tuple[TargetConfig, ...]:
        # Checked here rather than with min_length: a length constraint is also reported
        # when one target is invalid (the failed item is dropped), a second, false error.
        if not targets:
            raise ValueError("give at least one target (a list of deployments to size)")
        seen: set[str] = set()
        for t in targets:
            if t.name in seen:
                raise ValueError(f"target name {t.name!r} is used twice")
            seen.add(t.name)
        return targets

    def masked(self) -> dict[str, Any]:
        """The config as a dict, safe to log.

        Secrets never live in the file (token files and environment variable names only),
        but a URL may carry ``user:password@``: that part is replaced by ``***@``.
        """
        data = self.model_dump(mode="json")
        for section in ("prometheus", "grafana"):
            url = data[section].get("url")
            if isinstance(url, str) and "@" in url.split("//", 1)[-1].split("/", 1)[0]:
                scheme, _, rest = url.rpartition("//")
                data[section]["url"] = f"{scheme}//***@{rest.split('@', 1)[1]}"
        return data


# --------------------------------------------------------------------------- loading
def _unwrap_configmap(text: str, source: str) -> tuple[str, int]:
    """The config document in ``text`` and the lines before it.

    ``deploy/`` ships the config inside a Kubernetes ConfigMap manifest (its one ``*.yaml``
    data key), and that is the file a user edits and checks; validating the manifest itself
    would only report ``apiVersion`` as an unknown field. Lines stay counted in the manifest.
    Anything that is not a ConfigMap is returned as it is."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return text, 0  # reported by the caller, with its line
    if not isinstance(node, yaml.MappingNode):
        return text, 0
    top = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
    kind = top.get("kind")
    if not (isinstance(kind, yaml.ScalarNode) and kind.value == "ConfigMap"):
        return text, 0
    data = top.get("data")
    entries = data.value if isinstance(data, yaml.MappingNode) else []
    docs = [(k, v) for k, v in entries
            if isinstance(k, yaml.ScalarNode) and k.value.endswith((".yaml", ".yml"))]
    if len(docs) != 1 or not isinstance(docs[0][1], yaml.ScalarNode):
        found = ", ".join(k.value for k, _ in docs) or "none"
        raise InputError("a Kubernetes ConfigMap: aiops reads the config from its one *.yaml "
                         f"data key (found: {found}); give that ConfigMap or the config file "
                         "itself", path=source, line=kind.start_mark.line + 1)
    value = docs[0][1]
    # A block scalar (``config.yaml: |``) starts on the line after its key, unindented
    # line for line; a quoted one has no such mapping, so lines point at its key.
    offset = value.start_mark.line + 1 if value.style in ("|", ">") else value.start_mark.line
    return str(value.value), offset


def _line_index(text: str) -> dict[tuple[str | int, ...], int]:
    """Map every key path in the YAML document to its 1-based line number."""
    index: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        # A key's own line wins over its value's (``guardrails:`` rather than its first field).
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                index[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return index


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        if parts[0] not in Config.model_fields:
            # AIOPS_* variables that are not config (e.g. AIOPS_REQUIRE_PROMETHEUS for the
            # tests) are not overrides; a typo inside a section still fails validation.
            continue
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value) if value else value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def parse_config(text: str, *, source: str = "<config>",
                 environ: dict[str, str] | None = None) -> Config:
    """Validate a YAML document (plus environment overrides) into a Config."""
    text, offset = _unwrap_configmap(text, source)
    try:
        raw = yaml.safe_load(text)
        lines = {k: n + offset for k, n in _line_index(text).items()}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 + offset if mark is not None else None
        raise InputError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=source,
                         line=line) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError("the config must be a mapping at the top level", path=source, line=1)
    overrides = _env_overrides(dict(os.environ) if environ is None else environ)
    try:
        return Config.model_validate(_merge(raw, overrides))
    except ValidationError as exc:
        problems = []
        first_line: int | None = None
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "(top level)"
            line = None
            for n in range(len(loc), -1, -1):
                if loc[:n] in lines:
                    line = lines[loc[:n]]
                    break
            if first_line is None:
                first_line = line
            where = f" (line {line})" if line else ""
            problems.append(f"{field}{where}: {describe_error(err)}")
        raise InputError("invalid config: " + "; ".join(problems), path=source,
                         line=first_line) from None


_PLAIN = (
    ("Value error, ", ""),
    ("Input should be a valid integer, unable to parse string as an integer",
     "expected a whole number"),
    ("Input should be a valid integer, got a number with a fractional part",
     "expected a whole number"),
    ("Input should be a valid number, unable to parse string as a number", "expected a number"),
    ("Input should be a valid boolean, unable to interpret input", "expected true or false"),
    ("Input should be ", "expected "),
)


def plain_message(text: str) -> str:
    """A validation library's message in the words of the rest of aiops (no "Value error,"
    or "Input should be" prefixes)."""
    for old, new in _PLAIN:
        text = text.replace(old, new)
    return text


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """The fields allowed where ``loc``'s last key was found (for "unknown field" errors)."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        ann = info.annotation
        for arg in (*getattr(ann, "__args__", ()), ann):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
                break
        else:
            return []
    return sorted(getattr(model, "model_fields", {}))


def describe_error(err: Any) -> str:
    """One pydantic error as a sentence that says what is expected."""
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    given = err.get("input")
    shown = repr(given) if isinstance(given, str | int | float | bool) else None
    got = f", got {shown}" if shown is not None else ""
    if kind == "extra_forbidden":
        known = _known_fields(tuple(err["loc"]))
        return "unknown field" + (f"; known here: {', '.join(known)}" if known else "")
    if kind == "missing":
        return "required; give a value"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number{got}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number{got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false{got}"
    if kind == "literal_error" and "expected" in ctx:
        return f"expected {ctx['expected']}{got}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()), "")
        return f"must be {bounds[kind]} {limit}{got}"
    if kind in ("tuple_type", "list_type", "set_type"):
        return f"expected a list, e.g. [32, 64]{got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping of fields (key: value lines){got}"
    if kind == "string_type":
        return f"expected text{got}"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return plain_message(str(err.get("msg", "invalid")))


def config_lines(path: str | Path) -> dict[tuple[str | int, ...], int]:
    """Each key path of a config file (``("targets", 0, "policy")``) and its 1-based line;
    empty when the file cannot be read again. For checks that run after validation."""
    try:
        text, offset = _unwrap_configmap(Path(path).read_text(encoding="utf-8"), str(path))
        return {k: n + offset for k, n in _line_index(text).items()}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, InputError):
        return {}


def load_config(path: str | Path, *, environ: dict[str, str] | None = None) -> Config:
    p = Path(path)
    if p.is_dir():
        raise InputError("is a folder; give the path of a YAML config file", path=str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read config: {exc.strerror}", path=str(p)) from None
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[:exc.start].count(b"\n") + 1
        raise InputError("not a text file: a config is YAML in UTF-8 (byte "
                         f"{exc.start} is not UTF-8)", path=str(p), line=line) from None
    return parse_config(text, source=str(p), environ=environ)
