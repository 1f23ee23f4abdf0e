"""The report's figures: frozen dataclasses, the summary arithmetic and the JSON form.

Both renderers read the same objects: the HTML formats a field with the functions here, and
the JSON carries the field and, for every sentence, the exact text the HTML shows. So a
number can never say one thing on the page and another in the JSON, which is what a design
review (reading the page) and a CI bot (reading the JSON) both need.

Kept free of numpy, matplotlib and the simulator: the time series behind the plots live in
``aiops.report.build.Series`` and are referenced here only as an opaque attribute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # aiops.types imports numpy, which this module must not
    from aiops.types import Clamp

REPORT_FORMAT = 2
"""Version of the JSON layout; bumped when a key changes meaning or disappears. 2: the
summary's ``text`` is the recommendation (the verdict sentence moved to ``verdict_text``),
each target has a ``recommendation``, and the fixed-fleet row is the best size."""

ROLE_AIOPS = "aiops"
ROLE_RAN = "ran"
ROLE_STATIC = "static"
ROLE_HPA = "hpa"
ROLE_KEDA = "keda"
ROLES: tuple[str, ...] = (ROLE_AIOPS, ROLE_RAN, ROLE_STATIC, ROLE_HPA, ROLE_KEDA)
"""Table and chart order: the recommendation first, then what it is compared with."""

STATUS_OK = "ok"
STATUS_NO_DATA = "no_data"
STATUS_UNAVAILABLE = "unavailable"
STATUS_BAD_DATA = "bad_data"
STATUS_ERROR = "error"
STATUS_TEXT: Mapping[str, str] = {
    STATUS_OK: "evaluated",
    STATUS_NO_DATA: "no data",
    STATUS_UNAVAILABLE: "metrics unavailable",
    STATUS_BAD_DATA: "metrics unusable",
    STATUS_ERROR: "not evaluated",
}

SLO_TIE_PP = 0.5
"""Two SLO attainments within half a percentage point are "as good": the cheaper policy is
then the better one. Below that the simulator's own noise (Poisson arrivals, seed) decides."""


def finite_or_none(x: float | None) -> float | None:
    """JSON has no NaN or Infinity: a figure that is not a number is ``null``."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


# --------------------------------------------------------------------------- formatting
def fmt_gpu_hours(x: float) -> str:
    """GPU-hours: one decimal from 10 up, two below (a 1-hour trace costs a few GPU-hours)."""
    return f"{x:,.1f}" if abs(x) >= 10 else f"{x:.2f}"


def fmt_pct(x: float) -> str:
    """A share of something, in percent with one decimal (savings, coverage)."""
    return f"{x:.1f}"


def fmt_slo(x: float) -> str:
    """An SLO attainment (a fraction) as a percentage: always two decimals, on the page, in
    the sentences and on the plots alike, so 99.21% and 96.30% read side by side (the
    difference between 99% and 99.9% is what matters near the top)."""
    return f"{100 * x:.2f}%"


def fmt_change(saved: float, base: float) -> tuple[str, str]:
    """``("3.20 fewer", "−4.1%")`` or ``("1.00 more", "+25.0%")``: GPU-hours one option saves
    against another, with the word and the sign agreeing (``saved`` < 0 means more)."""
    amount = fmt_gpu_hours(abs(saved))
    if float(amount.replace(",", "")) == 0:
        return "the same", "±0%"
    pct = "" if base <= 0 else fmt_pct(abs(100 * saved / base)) + "%"
    if saved > 0:
        return f"{amount} fewer", f"−{pct}" if pct else ""
    return f"{amount} more", f"+{pct}" if pct else ""


def fmt_seconds(x: float | None) -> str:
    if x is None:
        return "∞"
    if x >= 10:
        return f"{x:,.1f}"
    return f"{x:.3f}"


def fmt_span(seconds: float) -> str:
    """A duration as people say it: "7 days", "3.5 hours", "57 minutes"."""
    if seconds >= 2 * 86400:
        days = seconds / 86400
        return f"{days:.0f} days" if abs(days - round(days)) < 0.05 else f"{days:.1f} days"
    if seconds >= 2 * 3600:
        hours = seconds / 3600
        return f"{hours:.0f} hours" if abs(hours - round(hours)) < 0.05 else f"{hours:.1f} hours"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute" + ("s" if minutes != 1 else "")


def fmt_time(t: float, start_unix: float | None) -> str:
    """A replay time (seconds from the start) as UTC when the source has a clock."""
    if start_unix is not None:
        return datetime.fromtimestamp(start_unix + t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    sign = "-" if t < 0 else "+"
    s = abs(round(t))
    return f"{sign}{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------- figures
@dataclass(frozen=True)
class PolicyFigures:
    """One policy's replay figures (``aiops.sim.cluster.SimResult``, JSON-safe).

    ``role`` says what the row stands for (``aiops``, ``ran``, ``static``, ``hpa``,
    ``keda``); ``spec`` is the policy spec that produced it. Latencies are ``None`` when
    they are not finite (some request was never served: the p99 is unbounded).
    """

    role: str
    label: str
    spec: str
    gpu_hours: float
    cost_usd: float
    slo_attainment: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p99_s: float | None
    scale_ups: int
    scale_downs: int
    max_replicas: int
    requests: int
    unfinished: int = 0

    def __post_init__(self) -> None:
        # Rounded once, here, to what the JSON carries: the page formats these very values,
        # so "99.565" can never show as 99.57% on the page and 99.56% from the JSON.
        for name, digits in self._DIGITS.items():
            object.__setattr__(self, name, _round(getattr(self, name), digits))

    _DIGITS: ClassVar[dict[str, int]] = {
        "gpu_hours": 4, "cost_usd": 2, "slo_attainment": 5, "ttft_p50_s": 4,
        "ttft_p99_s": 4, "tpot_p99_s": 5}

    def as_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "label": self.label,
            "spec": self.spec,
            "gpu_hours": self.gpu_hours,
            "cost_usd": self.cost_usd,
            "slo_attainment": self.slo_attainment,
            "ttft_p50_s": self.ttft_p50_s,
            "ttft_p99_s": self.ttft_p99_s,
            "tpot_p99_s": self.tpot_p99_s,
            "scale_ups": self.scale_ups,
            "scale_downs": self.scale_downs,
            "scale_actions": self.scale_ups + self.scale_downs,
            "max_replicas": self.max_replicas,
            "requests": self.requests,
            "unfinished": self.unfinished,
        }


def _round(x: float | None, digits: int) -> float | None:
    v = finite_or_none(x)
    return None if v is None else round(v, digits)


@dataclass(frozen=True)
class Verdict:
    """aiops against one baseline: the ten-second summary.

    ``baseline_label`` is how the sentence names the baseline ("what ran", "KEDA, the
    better of HPA and KEDA on SLO attainment"). GPU-hours are totals over ``span_s``; SLO
    attainments are fractions of requests (request-weighted when targets are summed).
    """

    span_s: float
    baseline_role: str
    baseline_label: str
    aiops_gpu_hours: float
    baseline_gpu_hours: float
    aiops_slo: float
    baseline_slo: float

    def __post_init__(self) -> None:
        # Rounded once to what the JSON carries, so the sentence formats the JSON's numbers.
        for name, digits in (("aiops_gpu_hours", 4), ("baseline_gpu_hours", 4),
                             ("aiops_slo", 5), ("baseline_slo", 5)):
            object.__setattr__(self, name, round(getattr(self, name), digits))

    @property
    def saved(self) -> float:
        """GPU-hours aiops would not have used (negative: it would have used more)."""
        return round(self.baseline_gpu_hours - self.aiops_gpu_hours, 4)

    @property
    def saved_pct(self) -> float | None:
        """``saved`` as a percentage of the baseline's GPU-hours; None for a zero baseline."""
        if self.baseline_gpu_hours <= 0:
            return None
        return round(100.0 * self.saved / self.baseline_gpu_hours, 3)

    def text(self) -> str:
        """"Over 7 days aiops would have used N fewer GPU-hours (−X%) than what ran, at SLO
        attainment Y% vs Z%." — signs spelled out, so nobody has to parse a minus."""
        words, pct = fmt_change(self.saved, self.baseline_gpu_hours)
        if words == "the same":
            change = "the same GPU-hours as"
        else:
            change = f"{words} GPU-hours{f' ({pct})' if pct else ''} than"
        return (f"Over {fmt_span(self.span_s)} aiops would have used {change} "
                f"{self.baseline_label}, at SLO attainment {fmt_slo(self.aiops_slo)} vs "
                f"{fmt_slo(self.baseline_slo)}.")

    def as_json(self) -> dict[str, Any]:
        return {
            "text": self.text(),
            "span_s": round(self.span_s, 3),
            "baseline": self.baseline_role,
            "baseline_label": self.baseline_label,
            "aiops_gpu_hours": self.aiops_gpu_hours,
            "baseline_gpu_hours": self.baseline_gpu_hours,
            "gpu_hours_saved": self.saved,
            "gpu_hours_saved_pct": self.saved_pct,
            "aiops_slo_attainment": self.aiops_slo,
            "baseline_slo_attainment": self.baseline_slo,
        }


def better_of(a: PolicyFigures, b: PolicyFigures) -> PolicyFigures:
    """The better of two baselines: higher SLO attainment, the cheaper one within a tie.

    SLO first because a cheaper baseline that drops requests is not one anybody would run;
    within :data:`SLO_TIE_PP` the cheaper one wins, so aiops is compared with the stronger
    opponent, not the weaker one.
    """
    if abs(a.slo_attainment - b.slo_attainment) * 100 <= SLO_TIE_PP:
        return a if a.gpu_hours <= b.gpu_hours else b
    return a if a.slo_attainment > b.slo_attainment else b


def verdict_for(policies: Sequence[PolicyFigures], span_s: float) -> Verdict | None:
    """aiops against what ran when it is known, else against the better of HPA and KEDA."""
    by_role = {p.role: p for p in policies}
    aiops = by_role.get(ROLE_AIOPS)
    if aiops is None:
        return None
    base = by_role.get(ROLE_RAN)
    label = "what ran"
    if base is None:
        hpa, keda = by_role.get(ROLE_HPA), by_role.get(ROLE_KEDA)
        if hpa is not None and keda is not None:
            base = better_of(hpa, keda)
            name = "the HPA" if base.role == ROLE_HPA else "KEDA"
            label = f"{name} (the better of HPA and KEDA)"
        elif hpa is not None or keda is not None:
            base = hpa or keda
            assert base is not None
            label = "the HPA" if base.role == ROLE_HPA else "KEDA"
        else:
            return None
    return Verdict(span_s, base.role, label, aiops.gpu_hours, base.gpu_hours,
                   aiops.slo_attainment, base.slo_attainment)


def overall_verdict(targets: Sequence[TargetReport]) -> Verdict | None:
    """Every evaluated target summed: GPU-hours added, SLO attainment weighted by requests.

    The baseline is each target's own (what ran where the replica history was read, the
    better of HPA/KEDA elsewhere); the label says so when they differ.
    """
    done = [t for t in targets if t.verdict is not None]
    if not done:
        return None
    if len(done) == 1:
        return done[0].verdict
    a_gpu = b_gpu = a_ok = b_ok = 0.0
    total = 0
    for t in done:
        v = t.verdict
        assert v is not None
        n = t.requests
        a_gpu += v.aiops_gpu_hours
        b_gpu += v.baseline_gpu_hours
        a_ok += v.aiops_slo * n
        b_ok += v.baseline_slo * n
        total += n
    roles = {t.verdict.baseline_role for t in done if t.verdict is not None}
    if roles == {ROLE_RAN}:
        role, label = ROLE_RAN, f"what ran on {len(done)} targets"
    else:
        role = "mixed" if len(roles) > 1 else roles.pop()
        label = (f"each target's baseline on {len(done)} targets (what ran where the replica "
                 "history was read, else the better of HPA and KEDA)")
    span = max(t.span_s for t in done)
    w = max(total, 1)
    return Verdict(span, role, label, a_gpu, b_gpu, a_ok / w, b_ok / w)


# --------------------------------------------------------------------------- the advice
ADVICE_NAMES: Mapping[str, str] = {ROLE_AIOPS: "aiops", ROLE_RAN: "what ran",
                                   ROLE_STATIC: "the fixed fleet", ROLE_HPA: "the HPA",
                                   ROLE_KEDA: "KEDA"}


SLO_MISS_USD = 0.005
"""Price of one request that misses its SLO, dollars: what the advice weighs a miss against
GPU cost with, and the default of ``aiops train --slo-miss-usd`` (its reasoning: a request
served too late is worth about what it cost to serve, a few tenths of a cent). The report
states the price it used; ``aiops recommend --slo-miss-usd`` changes it."""


def score_usd(p: PolicyFigures, slo_miss_usd: float) -> float:
    """GPU cost plus the price of every request that missed its SLO (as ``aiops train``
    scores an evaluation): one number that weighs service against cost."""
    return p.cost_usd + slo_miss_usd * (1.0 - p.slo_attainment) * p.requests


@dataclass(frozen=True)
class Advice:
    """The report's answer to "should I switch, and to what?", in one sentence.

    ``choice`` is the role recommended: among every option replayed (aiops, what ran, the
    best fixed fleet, the HPA, KEDA), the one with the lowest :func:`score_usd` — GPU cost
    plus ``slo_miss_usd`` for each request that missed its SLO. Neither cost alone (which
    rewards dropping requests) nor attainment alone (which buys the last tenth of a point at
    any price) answers the question; a price per miss weighs the two, and the report says
    which price it used. ``savings`` holds, per other option, the GPU-hours the choice saves
    (negative: it uses more).
    """

    choice: str
    text: str
    span_s: float
    gpu_hours: float
    slo_attainment: float
    slo_miss_usd: float = SLO_MISS_USD
    savings: Mapping[str, float] = field(default_factory=dict)
    scores: Mapping[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"choice": self.choice, "text": self.text, "span_s": round(self.span_s, 3),
                "gpu_hours": self.gpu_hours, "slo_attainment": self.slo_attainment,
                "slo_miss_usd": self.slo_miss_usd,
                "score_usd": {k: round(v, 2) for k, v in self.scores.items()},
                "gpu_hours_saved": {k: round(v, 4) for k, v in self.savings.items()}}

    def basis(self) -> str:
        """How the options were weighed, for the line under the headline."""
        return (f"Options are compared by GPU cost plus ${self.slo_miss_usd:g} for each request "
                "that misses its TTFT or TPOT objective (--slo-miss-usd).")


def choose(policies: Sequence[PolicyFigures],
           slo_miss_usd: float = SLO_MISS_USD) -> PolicyFigures | None:
    """The option with the lowest :func:`score_usd`; on equal scores, the order of ROLES
    (aiops, what ran, fixed, HPA, KEDA)."""
    if not policies:
        return None
    return min(policies, key=lambda p: (round(score_usd(p, slo_miss_usd), 6),
                                        ROLES.index(p.role) if p.role in ROLES else len(ROLES)))


def replicas_text(n: int) -> str:
    return f"{n} replica" + ("" if n == 1 else "s")


def _listing(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def advise(policies: Sequence[PolicyFigures], span_s: float, *, policy_text: str,
           fixed_replicas: int | None = None,
           slo_miss_usd: float = SLO_MISS_USD) -> Advice | None:
    """The one-sentence recommendation over the replayed options (see :class:`Advice`).

    ``policy_text`` says which aiops policy and settings were replayed ("predictive with its
    defaults, 1–12 replicas"); ``fixed_replicas`` is the size of the best fixed fleet. None
    without an aiops row: nothing to advise on.
    """
    by_role = {p.role: p for p in policies}
    aiops = by_role.get(ROLE_AIOPS)
    pick = choose(policies, slo_miss_usd)
    if aiops is None or pick is None:
        return None
    ran = ROLE_RAN in by_role
    fixed = "a fixed fleet" + (f" of {replicas_text(fixed_replicas)}" if fixed_replicas
                               else "")
    names = dict(ADVICE_NAMES)
    if fixed_replicas:
        names[ROLE_STATIC] = f"the best fixed fleet of {fixed_replicas}"
    if pick.role == ROLE_AIOPS:
        opener = f"{'Switch to' if ran else 'Run'} aiops with {policy_text}"
        subject = "it"
    elif pick.role == ROLE_STATIC:
        opener = f"{'Switch to' if ran else 'Run'} {fixed} rather than aiops with {policy_text}"
        subject = "the fixed fleet"
    elif pick.role == ROLE_RAN:
        opener = f"Keep what runs rather than switching to aiops with {policy_text}"
        subject = "what ran"
    else:
        who = "the HPA" if pick.role == ROLE_HPA else "KEDA"
        opener = (f"{'Switch to' if ran else 'Use'} {who} with its default settings rather "
                  f"than aiops with {policy_text}")
        subject = who
    others = [p for p in policies if p.role != pick.role]
    changes, slos, savings = [], [], {}
    for k, o in enumerate(others):
        saved = round(o.gpu_hours - pick.gpu_hours, 4)
        savings[o.role] = saved
        words, pct = fmt_change(saved, o.gpu_hours)
        unit = " GPU-hours" if k == 0 else ""
        name = names.get(o.role, o.label)
        if words == "the same":
            changes.append(f"the same{unit} as {name}")
        else:
            changes.append(f"{words}{unit} than {name}{f' ({pct})' if pct else ''}")
        slos.append(f"{ADVICE_NAMES.get(o.role, o.label)} {fmt_slo(o.slo_attainment)}")
    best_fixed = by_role.get(ROLE_STATIC)
    if pick.role == ROLE_STATIC:
        tail = ("; on this traffic the best fixed fleet costs less than autoscaling around it, "
                "missed requests included")
    elif pick.gpu_hours > aiops.gpu_hours:
        tail = (f"; aiops would use fewer GPU-hours but miss more requests "
                f"({fmt_slo(aiops.slo_attainment)} vs {fmt_slo(pick.slo_attainment)}), which "
                f"costs more at ${slo_miss_usd:g} a miss")
    elif pick.role == ROLE_AIOPS and best_fixed is not None:
        tail = ("; stay with a fixed fleet only where its best size costs less than "
                "autoscaling, which here it does not")
    else:
        tail = ""
    text = (f"{opener}: over {fmt_span(span_s)} {subject} would have used "
            f"{_listing(changes)}, at SLO attainment {fmt_slo(pick.slo_attainment)} "
            f"({', '.join(slos)}){tail}.")
    scores = {p.role: score_usd(p, slo_miss_usd) for p in policies}
    return Advice(pick.role, text, span_s, pick.gpu_hours, pick.slo_attainment, slo_miss_usd,
                  savings, scores)


# --------------------------------------------------------------------------- details
@dataclass(frozen=True)
class Change:
    """One change aiops would have made: replicas and/or batch size, with its reasons.

    ``time`` is seconds from the start of the replay (see :attr:`TargetReport.start_unix`).
    ``reason`` is the policy's own; ``clamps`` the guardrails that shaped the change.
    """

    time: float
    replicas_before: int
    replicas_after: int
    batch_before: int
    batch_after: int
    reason: str
    clamps: tuple[Clamp, ...] = ()

    @property
    def action(self) -> str:
        parts = []
        if self.replicas_after != self.replicas_before:
            parts.append(f"replicas {self.replicas_before}→{self.replicas_after}")
        if self.batch_after != self.batch_before:
            parts.append(f"batch {self.batch_before}→{self.batch_after}")
        return ", ".join(parts) or "none"

    def as_json(self, start_unix: float | None) -> dict[str, Any]:
        return {
            "time_s": round(self.time, 3),
            "time_unix": None if start_unix is None else round(start_unix + self.time, 3),
            "replicas_before": self.replicas_before,
            "replicas_after": self.replicas_after,
            "batch_before": self.batch_before,
            "batch_after": self.batch_after,
            "reason": self.reason,
            "guardrails": [asdict(c) for c in self.clamps],
        }


@dataclass(frozen=True)
class BatchOption:
    """One batch size (vLLM ``--max-num-seqs``) on the target's profile and traffic mix."""

    batch_size: int
    decode_tokens_per_s: float  # one replica, full batch
    tpot_s: float  # decode step time at a full batch
    capacity_rps: float  # requests/s one replica sustains within the SLO for this mix
    replicas_at_peak: int

    def as_json(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size,
                "decode_tokens_per_s": round(self.decode_tokens_per_s, 1),
                "tpot_s": round(self.tpot_s, 5),
                "capacity_rps": round(self.capacity_rps, 4),
                "replicas_at_peak": self.replicas_at_peak}


@dataclass(frozen=True)
class BatchAdvice:
    """The recommended batch size, why, and every alternative that was weighed."""

    current: int
    recommended: int
    reason: str
    tpot_slo_s: float
    peak_rps: float
    options: tuple[BatchOption, ...]
    current_known: bool = False

    def option(self, batch: int) -> BatchOption | None:
        return next((o for o in self.options if o.batch_size == batch), None)

    def as_json(self) -> dict[str, Any]:
        rec = self.option(self.recommended)
        return {
            "current": self.current,
            "current_known": self.current_known,
            "recommended": self.recommended,
            "expected_decode_tokens_per_s": None if rec is None else
            round(rec.decode_tokens_per_s, 1),
            "expected_tpot_s": None if rec is None else round(rec.tpot_s, 5),
            "tpot_slo_s": self.tpot_slo_s,
            "peak_rps": round(self.peak_rps, 4),
            "reason": self.reason,
            "options": [o.as_json() for o in self.options],
        }


@dataclass(frozen=True)
class ForecastInfo:
    """How the forecaster did during the replay (it saw only the past of each decision).

    ``coverage_80``: share of forecast steps whose observed mean load fell inside the
    p10-p90 band forecast ``lead_s`` before (0.8 is calibrated); ``mae_rps``: mean absolute
    error of the median forecast, requests/s. ``fits`` full fits happened, every
    ``refit_s`` seconds of the replay, on steps of ``step_s``; ``failed`` calls failed.
    """

    available: bool
    reason: str = ""
    model: str = ""
    lead_s: float = 0.0
    points: int = 0
    coverage_80: float | None = None
    mae_rps: float | None = None
    failures: tuple[str, ...] = ()
    fits: int = 0
    refit_s: float = 0.0
    step_s: float = 0.0
    failed: int = 0

    def schedule_text(self) -> str:
        """How often the model was fitted, in words ("fitted 6 times, every 28 hours")."""
        if not self.fits:
            return ""
        times = "once" if self.fits == 1 else f"{self.fits} times"
        every = "" if self.fits == 1 else f", every {fmt_span(self.refit_s)}"
        return f"fitted {times}{every} on {self.step_s:g}-s steps"

    def text(self) -> str:
        if not self.available:
            return f"forecast unavailable: {self.reason}"
        cov = "" if self.coverage_80 is None else (
            f"; the observed load fell inside the p10–p90 band {100 * self.coverage_80:.0f}% "
            "of the time (80% is calibrated)")
        mae = "" if self.mae_rps is None else f"; median off by {self.mae_rps:.2f} req/s on average"
        sched = self.schedule_text()
        fails = "" if not self.failed else f"; {self.failed} forecaster call(s) failed"
        return (f"forecast {self.model or 'model'} made {self.points} forecasts "
                f"{self.lead_s:.0f} s ahead from the past only"
                f"{f' ({sched})' if sched else ''}{cov}{mae}{fails}")

    def as_json(self) -> dict[str, Any]:
        return {"available": self.available, "reason": self.reason, "model": self.model,
                "lead_s": self.lead_s, "points": self.points,
                "coverage_80": _round(self.coverage_80, 4),
                "mae_rps": _round(self.mae_rps, 4), "failures": list(self.failures),
                "fits": self.fits, "refit_s": round(self.refit_s, 3),
                "step_s": self.step_s, "failed": self.failed, "text": self.text()}


@dataclass(frozen=True)
class AnomalyWindow:
    """A run of consecutive points at or above the threshold, seconds from the start."""

    start: float
    end: float
    peak_score: float


@dataclass(frozen=True)
class AnomalyInfo:
    """Streaming anomaly detection over the arrival-rate history (past only, per point)."""

    available: bool
    reason: str = ""
    detector: str = ""
    threshold: float = 0.9
    points: int = 0
    windows: tuple[AnomalyWindow, ...] = ()
    warmup: int = 0  # first points the detector scores 0 while it learns what is normal

    def text(self) -> str:
        if not self.available:
            return f"anomaly detection unavailable: {self.reason}"
        n = len(self.windows)
        warm = ""
        if self.warmup:
            warm = (f" (the first {min(self.warmup, self.points)} are its warm-up and score 0"
                    + ("; the history is shorter than that" if self.warmup >= self.points
                       else "") + ")")
        return (f"detector {self.detector} scored {self.points} points of the arrival rate"
                f"{warm}; {n} anomal{'y' if n == 1 else 'ies'} at score ≥ {self.threshold:g}")

    def as_json(self, start_unix: float | None) -> dict[str, Any]:
        return {
            "available": self.available, "reason": self.reason, "detector": self.detector,
            "threshold": self.threshold, "points": self.points, "warmup": self.warmup,
            "text": self.text(),
            "windows": [{"start_s": round(w.start, 3), "end_s": round(w.end, 3),
                         "start_unix": None if start_unix is None else round(
                             start_unix + w.start, 3),
                         "peak_score": round(w.peak_score, 4)} for w in self.windows],
        }


@dataclass(frozen=True)
class TargetReport:
    """One target's section. ``status`` other than ``ok`` means only ``message`` is filled.

    ``series`` holds the time series behind the plots (``aiops.report.build.Series``); it
    is not part of the JSON, which carries figures, not curves.
    """

    name: str
    status: str
    message: str = ""
    key: str = ""
    policy: str = ""
    profile: str = ""
    span_s: float = 0.0
    start_unix: float | None = None
    requests: int = 0
    workload: Mapping[str, object] = field(default_factory=dict)
    policies: tuple[PolicyFigures, ...] = ()
    verdict: Verdict | None = None
    batch: BatchAdvice | None = None
    forecast: ForecastInfo | None = None
    anomalies: AnomalyInfo | None = None
    changes: tuple[Change, ...] = ()
    guardrail_firings: Mapping[str, int] = field(default_factory=dict)
    observed: Mapping[str, float | None] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    series: Any = None
    advice: Advice | None = None
    simulate_note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def figures(self, role: str) -> PolicyFigures | None:
        return next((p for p in self.policies if p.role == role), None)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status,
                               "status_text": STATUS_TEXT.get(self.status, self.status),
                               "message": self.message, "key": self.key}
        if not self.ok:
            out["notes"] = list(self.notes)
            return out
        out.update({
            "policy": self.policy,
            "profile": self.profile,
            "span_s": round(self.span_s, 3),
            "start_unix": self.start_unix,
            "workload": _json_safe(self.workload),
            "summary": None if self.verdict is None else self.verdict.as_json(),
            "recommendation": None if self.advice is None else self.advice.as_json(),
            "simulate_note": self.simulate_note,
            "policies": [p.as_json() for p in self.policies],
            "batch": None if self.batch is None else self.batch.as_json(),
            "forecast": None if self.forecast is None else self.forecast.as_json(),
            "anomalies": None if self.anomalies is None else self.anomalies.as_json(
                self.start_unix),
            "changes": [c.as_json(self.start_unix) for c in self.changes],
            "guardrail_firings": dict(self.guardrail_firings),
            "observed": {k: _round(v, 6) for k, v in self.observed.items()},
            "notes": list(self.notes),
        })
        return out


@dataclass(frozen=True)
class Report:
    """The whole report: where the data came from, the overall verdict, every target."""

    generated_unix: float
    mode: str  # "prometheus" or "trace"
    source: str
    targets: tuple[TargetReport, ...]
    since_s: float | None = None
    settings: Mapping[str, object] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict | None:
        return overall_verdict(self.targets)

    def summary_text(self) -> str:
        """The headline: the recommendation in one sentence (every target's, together)."""
        advised = [t for t in self.targets if t.advice is not None]
        if len(self.targets) == 1 and advised:
            assert advised[0].advice is not None
            return advised[0].advice.text
        if advised:
            return _overall_advice(self.targets)
        v = self.verdict
        if v is not None:
            return v.text()
        failed = [t for t in self.targets if not t.ok]
        if failed and len(failed) == len(self.targets):
            return "No target could be evaluated: " + "; ".join(
                f"{t.name}: {STATUS_TEXT.get(t.status, t.status)}" for t in failed) + "."
        return "No comparison: the aiops policy could not be replayed on any target."

    @property
    def evaluated(self) -> int:
        """Targets with a replay of the aiops policy: what the report is for."""
        return sum(1 for t in self.targets if t.ok and t.verdict is not None)

    def as_json(self) -> dict[str, Any]:
        v = self.verdict
        summary: dict[str, Any] = {"text": self.summary_text()}
        if v is not None:
            summary = {**v.as_json(), "verdict_text": v.text(), "text": self.summary_text()}
        summary["targets_evaluated"] = sum(1 for t in self.targets if t.ok)
        summary["targets_failed"] = sum(1 for t in self.targets if not t.ok)
        return {
            "report": "aiops recommend",
            "format": REPORT_FORMAT,
            "generated_at": datetime.fromtimestamp(self.generated_unix, tz=UTC).isoformat(),
            "mode": self.mode,
            "source": self.source,
            "since_s": self.since_s,
            "settings": _json_safe(self.settings),
            "summary": summary,
            "targets": [t.as_json() for t in self.targets],
        }


_CHOICE_PHRASE: Mapping[str, str] = {
    ROLE_AIOPS: "switch {} to aiops", ROLE_STATIC: "run a fixed fleet for {}",
    ROLE_RAN: "keep what runs for {}", ROLE_HPA: "use the HPA for {}", ROLE_KEDA: "use KEDA for {}"}


def _overall_advice(targets: Sequence[TargetReport]) -> str:
    """Several targets: which to switch to what, and what the choices save together."""
    groups: dict[str, list[str]] = {}
    chosen = base = 0.0
    for t in targets:
        if t.advice is None or t.verdict is None:
            continue
        groups.setdefault(t.advice.choice, []).append(t.name)
        chosen += t.advice.gpu_hours
        base += t.verdict.baseline_gpu_hours
    phrases = [_CHOICE_PHRASE.get(role, "{}: " + role).format(_listing(names))
               for role, names in sorted(groups.items(), key=lambda kv: ROLES.index(kv[0])
                                         if kv[0] in ROLES else len(ROLES))]
    left = [t.name for t in targets if t.advice is None]
    skipped = f" ({_listing(left)} not evaluated)" if left else ""
    words, pct = fmt_change(round(base - chosen, 4), base)
    together = ("the same GPU-hours as" if words == "the same" else
                f"{words} GPU-hours{f' ({pct})' if pct else ''} than")
    first = phrases[0][0].upper() + phrases[0][1:]
    return (f"{_listing([first, *phrases[1:]])}{skipped}: together these choices would have "
            f"used {together} each target's baseline (what ran where it is known, else the "
            "better of the HPA and KEDA); each target's section says why.")


def _json_safe(value: object) -> Any:
    """Mappings and sequences with non-finite floats as ``null`` (strict JSON)."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)
