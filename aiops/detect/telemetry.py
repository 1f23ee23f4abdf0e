"""Is this tick's telemetry believable? Per-metric priors and cross-metric physics, per target.

A learned anomaly detector says "unusual"; it cannot say "impossible". The metrics of one
vLLM Deployment obey rules that hold whatever the load does, and a broken exporter breaks
them while a real surge or a real outage does not. Each rule below is a property of the
*telemetry*, so the guardrails may hold on it (never scale down on numbers that cannot be
true). Every finding names the rule, the metrics and the numbers.

Per-metric priors (the type of a metric says what it can do):

- **missing**: a load or usage metric that had values and now has none (NaN). vLLM exports
  its gauges and counters as long as a pod runs; latency quantiles are NaN legitimately
  (no request finished in the window) and never count as missing.
- **impossible**: outside the metric's range (a negative rate, KV usage above 1), not
  finite (``+Inf``), more running sequences than the pods have slots (``pods x
  --max-num-seqs``), sequences running in an empty KV cache, or a KV cache in use with no
  sequence running (its blocks belong to running sequences).
- **frozen**: the same value again. A rate computed from counters or a usage fraction that
  changes on almost every tick does not repeat by chance; how often each metric repeats
  inside its range is learned per target, and a run of ``r`` repeats is judged by its
  probability ``p ** r`` under that rate, jointly for metrics that froze at the same tick
  (a stale scrape freezes all of them at once). Flagged when that probability is below
  ``frozen_p``. A value at a bound is no evidence (an empty queue, an idle service, every
  slot busy: states a metric rests in), nor is an optional metric (a latency quantile is
  constant whenever the batch is: the step time is).
- **doubled**: a count gauge (sequences running, requests waiting) summed over pods that
  each count twice is even on every tick; a live one is even about as often as this target
  has shown (learned like the repeat rate, one half before anything is seen). A run of even
  readings is judged by its probability like a run of repeats. Needs no traffic to speak
  of: one sequence running is a reading.
- **stuck at an idle value**: the arrival rate reading 0 on ``zero_ticks`` ticks while
  prompts were prefilled on each, without moving in between.
- **exporters against pods**: the sums add one series per scraped pod, so the number of
  series (``Snapshot.pods_reporting``) must match the pods. Twice the pods on a steady
  fleet is every pod counted twice; fewer than the ready pods, a pod's load left out.
- **samples older than usual**: the age of the oldest vLLM sample
  (``Snapshot.sample_age_s``) cycles within the scrape interval while scrapes run, and
  grows once one stops. Older than this target's usual ages (learned) by two ticks and by
  the usual age again is a finding on every metric (the whole page is old); by half a
  tick, a doubt.

Cross-metric physics (log-ratios that load does not move):

- tokens per request in and out: ``prompt_tokens_rate / arrival_rate`` and
  ``generation_tokens_rate / arrival_rate``; a surge brings more requests *and* their
  tokens;
- KV per running sequence: ``kv_cache_usage x ready / requests_running``; a mean and a sum
  that must move together (a doubled scrape doubles the sum, not the mean);
- time in system (Little's law): ``(running + waiting) / arrival_rate`` may grow without
  bound (a queue, a drain) but cannot fall far below its usual floor (the requests take as
  long as they take); a counter reset read through ``rate(sum(...))`` makes the rates jump
  a hundredfold while the gauges stay;
- a latency quantile is part of a request's time in system: ``ttft_p99`` (or ``tpot_p99``
  times the tokens per request) far above ``latency_factor`` times the longest time in
  system of the last minute, on two ticks in a row, is a unit change; so is, on a quiet
  service, a latency longer than the system has been busy (a scrape read it empty while
  the request behind the quantile must have been in it);
- a queue that does not move while every slot is busy and TTFT is far above anything seen:
  the queue metric is stuck (with a full batch, new requests wait, and TTFT grows because
  they do; with free slots a high TTFT is slow prefill, a health matter);
- Little's law as a bound, needing nothing learnt: ``running + waiting >= arrival_rate x
  ttft_p50 / 2`` (the mean time in system is at least the mean TTFT, at least half its
  median); broken while the queue metric stands still, the queue metric is stuck.

Each ratio's normal band is learned from this target's own good ticks: its shape (median
and 0.5%/99.5% quantiles) over the last ``window`` ticks, for a two-sided ratio centred on
the median of the latest ``min_points`` (the request mix wanders over hours; a telemetry
fault is a step). A
value beyond ``break_spread`` times the band's half-width is a break at once; beyond
``confirm_spread`` times it must be so twice in a row (one odd scrape is noise, two are a
fault). Ratios are judged only when both sides count enough events to be meaningful
(``min_events``), so an outage (everything at zero) is never a fault; on a quiet service
the sides are pooled over up to ``pool_ticks`` ticks until they do.

Not finding a fault is not evidence that the numbers are live (the first tick of a stale
scrape looks like a quiet one), and removing capacity needs evidence. So each tick also lists
its *doubts* (``TelemetryChecks.doubts``): what is suspicious but not yet a finding. A run
of repeats whose probability is below ``hold_p`` but not yet below ``frozen_p``, a ratio
beyond its band once (a finding needs two ticks) or drifting (its CUSUM above zero), a
latency beyond Little's law once, the Little's-law bound broken with the queue still moving,
a metric that has never had a value, a rate reading 0 while another counts requests or
tokens, count gauges even more often than chance allows (below ``hold_p``), a page on which
no metric changed since the last tick (for ``still_s``: an idle service and a stopped
scrape read the same until the ingest's freshness limit), samples older than usual. A
ratio off, or a rate read 0 beside work, stays in doubt until the evidence clears it (the
ratio judged right again; the rate moving, or every rate and gauge at 0 together, except
for a rate already found stuck at 0: idle ticks read the same whether it is stuck or not),
so a fault that shows only on busy ticks is not forgotten on the quiet ones between. The
guardrails hold a scale-down on a tick with doubts (``unverified_telemetry``) and raise no
alarm.

Nothing is learned from a tick with findings, so a fault does not become the new normal;
after ``relearn_after`` ticks of one broken ratio without a break in between, the ratio
starts learning afresh (a real change of the request mix, a new model version). Memory is
fixed: a ring buffer per ratio and a few numbers per metric.

What values cannot tell: a scrape that stops in the middle of an idle stretch serves the
idle page it would serve anyway; the sample timestamps are what catch it (the age rule
from the second tick, the ingest's freshness limit for good).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from aiops.detect.base import DetectorState, FloatArray, JSONScalar

Role = Literal["load", "health", "usage"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a target: its role, the values it can take, and whether NaN is normal.

    ``optional``: NaN is a normal answer (latency quantiles with no finished request, a GPU
    exporter that is not installed), never "missing". ``learned``: whether a per-metric
    detector scores it too (False: it serves the checks only, as the median TTFT serves
    Little's law).
    """

    name: str
    role: Role
    lower: float = -math.inf
    upper: float = math.inf
    optional: bool = False
    learned: bool = True


@dataclass(frozen=True)
class Capacity:
    """What the Deployment is, this tick, and what its scrape was: bounds running
    sequences, scales KV usage, says how many exporters the sums should add up and how old
    the samples behind them are."""

    ready_replicas: int
    replicas: int
    batch_size: int  # --max-num-seqs per pod; 0 when unknown
    starting: int = 0  # pods asked for, not ready yet (their exporters may be up)
    reporting: float = math.nan  # exporters scraped (series of one gauge); NaN: unknown
    sample_age: float = math.nan  # age (s) of the oldest vLLM sample; NaN: unknown


@dataclass(frozen=True)
class Finding:
    """Why one metric's value cannot be trusted this tick."""

    metric: str
    rule: str  # missing | impossible | frozen | relation name | queue_stuck
    detail: str


@dataclass(frozen=True)
class Relation:
    """A log-ratio of products of metric sums that load does not move (module docstring).

    ``num`` and ``den`` are factors, each a sum of metrics; ``kv`` stands for
    ``kv_cache_usage x ready_replicas`` (KV in replica units). ``side`` is which way a break
    may go: ``"both"``, or ``"low"`` when the ratio may rise without bound for real reasons
    and only a fall is impossible. ``min_factor``: a ratio off by less never breaks,
    whatever its band, because real traffic can move it that far (see :data:`RELATIONS`).
    """

    name: str
    num: tuple[tuple[str, ...], ...]
    den: tuple[tuple[str, ...], ...]
    side: Literal["both", "low"]
    what: str
    min_factor: float
    queue_free: bool = False  # judged only while nothing waits (see RELATIONS)
    sparse: bool = False  # judged from one event a side, not ``min_events`` (see RELATIONS)
    balanced: bool = False  # judged only while the number in the system holds (RELATIONS)
    tick_mean: bool = False  # count gauges read as their mean over the tick (RELATIONS)

    @property
    def metrics(self) -> tuple[str, ...]:
        names = [m for f in (*self.num, *self.den) for m in f]
        return tuple(dict.fromkeys("kv_cache_usage" if m == "kv" else m for m in names))


# Tokens are counted where requests are served, requests where they arrive (or finish): the
# two agree only when no real queue stands in between, so per-request ratios are judged
# only when the queue has held less than a tenth of a tick's arrivals for a while. A queue
# metric that reads empty while requests pile up is then caught by them, which is what a
# stuck queue looks like.
#
# The smallest break of each ratio is what real traffic cannot do. Tokens per request: a
# new client with other prompts moves the mean a few-fold, so 4x (a unit change or a lost
# counter is orders of magnitude). KV per sequence moves with prompt length too, so it is
# taken per prompt token, which a change of mix does not move and a doubled scrape halves
# (the sums double, the KV mean does not): 1.5x. Time in system: a surge within one tick
# lowers it until the new requests have been in the system a while, up to its size, so 4x
# (a counter reset read through rate(sum()) is a hundredfold). The ratios need
# ``min_events`` requests, tokens and sequences a tick: one request's prompt is not a mean.
# Generated tokens come from every request in the system during the tick, arrivals only from
# the new ones: the two agree when about as many requests leave as arrive. When the traffic
# stops at once (a service gap, a client outage), the requests still in flight generate a
# tick's tokens for a handful of arrivals; so tokens out per request is judged only while
# the number in the system moved by less than half a tick's arrivals (``balanced``).
# Time in system alone is judged from a single request in the system, so that a thousandfold
# rate is caught on a quiet service too; its one-sided 4x margin leaves room for the noise.
# Little's law relates the *mean* number in the system to the mean arrival rate, and a rate
# is a tick's mean while a gauge is read at the tick's end: when traffic stops in the middle
# of a tick, the rate still counts the first half's arrivals and the gauge has drained, and
# the ratio falls to a third of its usual for real (a client outage). So the counts are read
# as the mean of the tick's two ends (``tick_mean``), which steady traffic leaves unchanged.
RELATIONS: tuple[Relation, ...] = (
    Relation("tokens_per_request_in", (("prompt_tokens_rate",),), (("arrival_rate",),),
             "both", "prompt tokens per request", 4.0, queue_free=True),
    Relation("tokens_per_request_out", (("generation_tokens_rate",),), (("arrival_rate",),),
             "both", "generated tokens per request", 4.0, queue_free=True, balanced=True),
    Relation("kv_per_prompt_token", (("kv",), ("arrival_rate",)),
             (("requests_running",), ("prompt_tokens_rate",)), "both",
             "KV per running sequence over prompt tokens per request", 1.5, queue_free=True),
    Relation("time_in_system", (("requests_running", "requests_waiting"),),
             (("arrival_rate",),), "low", "seconds in system (Little's law)", 4.0,
             sparse=True, tick_mean=True),
)

_RATE_METRICS = ("arrival_rate", "prompt_tokens_rate", "generation_tokens_rate")
_ZERO_WITNESS = {"arrival_rate": "prompt_tokens_rate"}
"""A rate, and the rate that cannot count tick after tick while it reads 0: a prefilled
prompt belongs to a request that arrived (a gateway's counter, the simulator) or that
finishes within its latency (vLLM's completions), so prompts prefilled on several ticks
with no request arriving nor finishing in between is a stuck arrival rate. (The other
way round is no rule: requests finish and generate for minutes after the last prompt.)"""
_COUNT_METRICS = ("requests_running", "requests_waiting")
"""Gauges that count (sequences, requests) summed over the pods: integers, when read."""
_LATENCY_METRICS = ("ttft_p99", "tpot_p99")


class TelemetryChecks:
    """The rules of the module docstring, for the metrics of one target, one tick at a time.

    Parameters (ticks are the daemon's, 15 s by default):
        frozen_p: probability under the learned repeat rates below which a run of identical
            values is a frozen metric (1e-6: at one test per metric per tick, one false
            call in about a month of 15-s ticks for ten metrics).
        memory: ticks over which repeat rates are learned (exponential forgetting; 5760 is
            a day at 15 s, enough to have seen both busy and quiet hours).
        window: good ticks in each ratio's band (1000: about four hours at 15 s).
        min_points: good ticks before a ratio is judged (40: ten minutes).
        break_spread / confirm_spread: multiples of the band's half-width for an immediate
            break (4) and for a break on two ticks in a row (2). With Gaussian noise the
            half-width is 2.6 sigma, so 2x is 5 sigma; the heavier tails of real token
            counts are why two ticks are asked for below 4x.
        min_events: events (requests, tokens, sequences) a count or a rate must stand for
            before its repeat is evidence or a ratio of it is judged (10: below that, equal
            counts in two scrapes are common, and one request's prompt is not a mean).
        cusum_h: how many standard deviations beyond a relation's ``min_factor`` must
            accumulate before a lasting shift is a break (10: a shift that is one band-sigma
            beyond it is called after ten ticks; the noise of a stable ratio rarely leaves
            the allowance at all).
        latency_factor: a latency p99 above this many times the time in system is not a
            latency (20; a p99 of several times the mean is common in a queue).
        stuck_factor: a queue is stuck when it repeats while ``ttft_p99`` is above this
            many times the highest (99.5%) TTFT of good ticks (3).
        relearn_after: ticks one ratio may stay broken before it is learnt afresh (240:
            an hour at 15 s; long enough for an operator to be told, short enough that a
            real change of the request mix does not freeze scale-down for a day).
        settle: ticks after a queue stood (more than a tenth of a tick's arrivals waiting)
            before per-request ratios are judged again (8: two minutes, longer than most
            requests take, so what was admitted from the queue has finished).
        hold_p: probability of a run of repeats below which the run is a doubt that holds
            a scale-down for the tick, though not yet an alarm (0.01: such a doubt comes by
            chance on about one tick in a hundred per metric at most, and costs only that
            tick's scale-down: the next tick decides again).
        little_slack: how many times the requests the gauges show Little's law must ask
            for before its bound counts as broken (2: gauges read at one instant against a
            rate and a median over the window; a queue half drained within the window
            stays inside).
        still_s: seconds an unchanged page stays a doubt (120: ``prometheus.stale_after_s``
            by default; beyond it the ingest refuses a stopped scrape by its timestamps, and
            a longer doubt would hold every real outage's scale-down).
        zero_ticks: ticks the arrival rate may read 0 beside prefills before it is found
            stuck (3: a request prefilled just after a scrape shows a tick late; three such
            ticks with no arrival in between do not happen by chance).
        pool_ticks: most ticks a ratio's sides are pooled over to count ``min_events``
            (8: two minutes, within which a fault still shows on a service with a few
            requests a minute).
        window_s: the ingest's rate window (``prometheus.rate_window_s``, 60 s): latency
            quantiles cover the requests of that window.
        quantile_slack: how far a quantile read from a histogram may sit above the true
            value (4: vLLM's widest latency bucket spans 160-640 s, and
            ``histogram_quantile`` interpolates anywhere inside it).
        pods_grace: ticks a pod may be ready and not yet scraped, or gone and still
            scraped (8: two minutes, for service discovery to see a new pod and for a
            removed one to drain its requests).
        age_window: ticks of sample ages the usual age is learned from (240: an hour at
            15 s). The usual age is their 90% quantile: a scrape interval longer than the
            tick shows as a cycle of ages and is learned, an occasional missed scrape
            (under one tick in ten) is not, and a changed scrape interval is learned within
            a tenth of the window.
        age_ticks: sample ages seen before they are judged (8: two minutes; a stopped
            scrape before then is left to the ingest's freshness limit).
    """

    def __init__(self, metrics: Sequence[MetricSpec], *, frozen_p: float = 1e-6,
                 memory: int = 5760, window: int = 1000, min_points: int = 40,
                 break_spread: float = 4.0, confirm_spread: float = 2.0,
                 min_events: float = 10.0,
                 cusum_h: float = 10.0, latency_factor: float = 20.0,
                 stuck_factor: float = 3.0,
                 relearn_after: int = 240, settle: int = 8, hold_p: float = 0.01,
                 little_slack: float = 2.0, still_s: float = 120.0,
                 zero_ticks: int = 3, pool_ticks: int = 8, window_s: float = 60.0,
                 quantile_slack: float = 4.0, pods_grace: int = 8,
                 age_window: int = 240, age_ticks: int = 8) -> None:
        if not (0 < frozen_p < 1 and memory >= 10 and window >= min_points >= 5
                and break_spread >= confirm_spread > 0 and min_events >= 0
                and cusum_h > 0 and latency_factor > 0 and stuck_factor > 1
                and relearn_after >= 1 and frozen_p <= hold_p < 1 and little_slack >= 1
                and still_s >= 0 and zero_ticks >= 1 and pool_ticks >= 1
                and window_s >= 0 and quantile_slack >= 1 and pods_grace >= 1
                and age_window >= age_ticks >= 1):
            raise ValueError("need 0 < frozen_p < 1, memory >= 10, window >= min_points >= 5, "
                             "break_spread >= confirm_spread > 0, "
                             "latency_factor > 0, stuck_factor > 1, relearn_after >= 1, "
                             "frozen_p <= hold_p < 1, little_slack >= 1, still_s >= 0, "
                             "zero_ticks >= 1, pool_ticks >= 1, window_s >= 0, "
                             "quantile_slack >= 1, pods_grace >= 1, "
                             "age_window >= age_ticks >= 1")
        self.specs = {m.name: m for m in metrics}
        self.frozen_log_p = math.log(frozen_p)
        self.hold_log_p = math.log(hold_p)
        self.little_slack = little_slack
        self.still_s, self.zero_ticks = still_s, zero_ticks
        self.pool_ticks = pool_ticks
        self.window_s, self.quantile_slack = window_s, quantile_slack
        self.doubts: list[str] = []  # this tick's reasons the telemetry is not verified
        self.suspects: dict[str, str] = {}  # doubts that last until evidence clears them
        self.decay = math.exp(-1.0 / memory)
        self.window, self.min_points = window, min_points
        self.break_spread, self.confirm_spread = break_spread, confirm_spread
        self.min_events = min_events
        self.latency_factor, self.stuck_factor = latency_factor, stuck_factor
        self.cusum_h = cusum_h
        self.relearn_after = relearn_after
        self.settle = settle
        self.queue_share = 0.1
        names = list(self.specs)
        self.names = names
        k = len(names)
        # per metric: previous value, repeat run length, the tick the run started, ever seen
        self.prev = np.full(k, np.nan)
        self.run = np.zeros(k)
        self.run_start = np.zeros(k)
        self.same = np.zeros(k)  # identical values in a row, bounds included
        self.seen = np.zeros(k)  # 1 once the metric has had a finite value
        # decayed counts of observations and repeats inside the range (not at a bound), and
        # the repeats of the current run, counted when it ends (tainted: a finding meanwhile)
        self.obs = np.zeros(k)
        self.rep = np.zeros(k)
        self.pend = np.zeros(k)
        self.tainted = np.zeros(k, dtype=bool)
        self.relations = tuple(r for r in RELATIONS if self._usable(r))
        n_rel = len(self.relations)
        self.buf = np.full((n_rel, window), np.nan)  # ring of good-tick log-ratios
        self.head = np.zeros(n_rel, dtype=np.int64)
        self.filled = np.zeros(n_rel, dtype=np.int64)
        self.pending = np.zeros(n_rel)  # -1/+1: beyond confirm on the previous tick (side)
        self.broken_for = np.zeros(n_rel)  # consecutive broken ticks
        self.cus_lo = np.zeros(n_rel)  # CUSUM of falls beyond min_factor (in sigmas)
        self.cus_hi = np.zeros(n_rel)  # and of rises
        width = max((len(r.num) + len(r.den) for r in self.relations), default=0)
        self.pool_sum = np.zeros((n_rel, width))  # factor values summed over the pool
        self.pool_ev = np.zeros((n_rel, width))  # and the events they count
        self.pool_n = np.zeros(n_rel, dtype=np.int64)  # ticks in the pool
        self.ttft_buf = np.full(window, np.nan)  # good-tick ttft_p99, for the stuck queue
        self.ttft_head = 0
        self.ttft_wait = np.full(settle, np.nan)  # good-tick TTFTs not yet in the band
        self.recent_w = np.full(4, np.nan)  # time in system, last four ticks
        self.prev_inside = math.nan  # running + waiting at the previous tick
        self.latency_over: set[str] = set()  # latencies over their bound last tick
        self.ticks = 0
        self.last_queued = -10**9  # last tick with requests waiting
        self.last_t = math.nan
        self.good = {n: math.nan for n in names}  # last value of each metric on a good tick
        self.page = np.full(k, np.nan)  # the previous tick's values, NaN included
        self.page_since = math.nan  # when the page last changed
        self.zero_run = dict.fromkeys(_ZERO_WITNESS, 0)  # ticks read 0 beside its witness
        self.carried = ""  # the doubt an idle stretch carries (see _carry)
        self.uncarried: set[str] = set()  # this tick's doubts an idle page may clear
        self.drained: set[str] = set()  # zero-rate suspects raised by traffic ending
        self.empty_at = np.full(32, np.nan)  # times the system last read empty, newest first
        self.pods_hist = np.full((pods_grace, 2), np.nan)  # (pods, ready) per tick, newest first
        self.ages = np.full(age_window, np.nan)  # sample ages, a ring
        self.age_head = 0
        self.age_ticks = age_ticks
        # per count gauge: decayed readings (not 0) and even ones, the current run of even
        # readings (counted when it ends), and whether a finding came during it
        self.par_obs = np.zeros(len(_COUNT_METRICS))
        self.par_even = np.zeros(len(_COUNT_METRICS))
        self.par_run = np.zeros(len(_COUNT_METRICS))
        self.par_done = np.zeros(len(_COUNT_METRICS))  # the run an odd reading just ended
        self.par_tainted = np.zeros(len(_COUNT_METRICS), dtype=bool)

    def _usable(self, r: Relation) -> bool:
        return set(r.metrics) <= set(self.specs)

    # ------------------------------------------------------------------------- the tick
    def update(self, time: float, values: Mapping[str, float],
               capacity: Capacity | None = None) -> list[Finding]:
        """The findings of this tick (empty when the telemetry is believable)."""
        dt = time - self.last_t if math.isfinite(self.last_t) and time > self.last_t else 0.0
        self.last_t = time
        self.ticks += 1
        v = np.array([float(values.get(n, math.nan)) for n in self.names])
        found: dict[str, Finding] = {}
        self.doubts = []
        self.uncarried = set()
        self._priors(v, capacity, found)
        self._frozen(v, capacity, dt, found)
        ratios = self._relations(v, capacity, dt, found)
        self._latency(v, time, dt, found)
        self._stuck_queue(v, capacity, found)
        self._little(v, dt, found)
        self._zero_load(v, dt, found)
        self._unchanged(v, time)
        self._parity(v, capacity, found)
        self._exporters(capacity, found)
        self._sample_age(capacity, dt, found)
        self.doubts.extend(d for d in self.suspects.values() if d not in self.doubts)
        self._carry(v, time, found)
        good = not found
        self._learn_repeats(v, capacity, dt, good)
        self._learn_parity(v, capacity, good)
        self._learn_ttft(v, good)
        if good:  # nothing is learnt from a tick with a finding
            for k, x in ratios.items():
                self._learn_relation(k, x)
            for i, n in enumerate(self.names):
                if math.isfinite(v[i]):
                    self.good[n] = float(v[i])
        return sorted(found.values(), key=lambda f: f.metric)

    # ---------------------------------------------------------------- per-metric priors
    def _priors(self, v: FloatArray, cap: Capacity | None, found: dict[str, Finding]) -> None:
        for i, n in enumerate(self.names):
            spec = self.specs[n]
            x = v[i]
            if math.isnan(x):
                if spec.optional or spec.role == "health":
                    continue
                if self.seen[i]:
                    found[n] = Finding(n, "missing", f"{n} has no value (it had one before): "
                                       "the series vanished (scrape gap, renamed metric)")
                else:
                    self.doubts.append(f"{n} has never had a value")
                continue
            self.seen[i] = 1.0
            if not math.isfinite(x) or not spec.lower <= x <= spec.upper:
                found[n] = Finding(n, "impossible", f"impossible value {x:g} for {n} "
                                   f"(range [{spec.lower:g}, {spec.upper:g}])")
        if {"requests_running", "kv_cache_usage"} <= set(self.specs):
            run = values_of(v, self.names, "requests_running")
            kv = values_of(v, self.names, "kv_cache_usage")
            if run >= 1 and kv == 0 and "kv_cache_usage" not in found:
                found["kv_cache_usage"] = Finding(
                    "kv_cache_usage", "impossible", f"kv_cache_usage is 0 while {run:g} "
                    "sequences run (each holds KV blocks): one of the two is wrong")
            elif run == 0 and kv > 0 and "requests_running" not in found:
                found["requests_running"] = Finding(
                    "requests_running", "impossible", f"no sequence runs but KV usage is "
                    f"{kv:g} (blocks are held by running sequences): one of the two is wrong")
            # Either finding stays a doubt until a tick shows both live together: sequences
            # running in a KV cache in use. Ticks with nothing running at the scrape (most,
            # on a quiet service) read the same whether one of the two is stuck or not.
            if {"kv_cache_usage", "requests_running"} & found.keys():
                self.suspects["kv_pair"] = ("sequences running and KV usage disagreed, "
                                            "and have not been seen together since")
            elif run >= 1 and kv > 0:
                self.suspects.pop("kv_pair", None)
        slots = self._slots(cap)
        if "requests_running" in self.specs and slots is not None:
            x = float(values_of(v, self.names, "requests_running"))
            if math.isfinite(x) and x > slots * 1.05 + 1:
                found.setdefault("requests_running", Finding(
                    "requests_running", "impossible",
                    f"{x:g} running sequences but only {slots:g} slots "
                    "(pods x --max-num-seqs)"))

    @staticmethod
    def _slots(cap: Capacity | None) -> float | None:
        if cap is None or cap.batch_size <= 0:
            return None
        pods = max(cap.ready_replicas, cap.replicas)
        return float(pods * cap.batch_size) if pods > 0 else None

    # ----------------------------------------------------------------------- repeats
    def _at_bound(self, i: int, x: float, cap: Capacity | None) -> bool:
        """At the metric's floor or ceiling (running: all ready slots busy), where a metric
        rests legitimately: an empty queue, an idle service, a saturated batch."""
        spec = self.specs[self.names[i]]
        if x in (0.0, spec.lower, spec.upper):
            return True
        if self.names[i] != "requests_running" or cap is None or cap.batch_size <= 0:
            return False
        # within one sequence of full: one finishing between scrapes is not a free slot
        return x >= cap.ready_replicas * cap.batch_size - 1

    def _p_repeat(self, i: int) -> float:
        """Probability that metric ``i`` repeats a value inside its range, learned on this
        target: the Krichevsky-Trofimov estimate (repeats + 1/2) / (observations + 1)."""
        return float((self.rep[i] + 0.5) / (self.obs[i] + 1.0))

    def _frozen(self, v: FloatArray, cap: Capacity | None, dt: float,
                found: dict[str, Finding]) -> None:
        groups: dict[float, list[int]] = {}
        for i in range(len(self.names)):
            x, p = v[i], self.prev[i]
            name = self.names[i]
            evidence = (not self.specs[name].optional and not self._at_bound(i, x, cap)
                        and self._enough(name, x, dt))
            self.same[i] = self.same[i] + 1 if math.isfinite(x) and x == p else 0
            if math.isfinite(x) and x == p and evidence:
                if self.run[i] == 0:
                    self.run_start[i] = self.ticks
                self.run[i] += 1
                groups.setdefault(float(self.run_start[i]), []).append(i)
            else:
                self.run[i] = 0
        for members in groups.values():
            log_p = sum(self.run[i] * math.log(self._p_repeat(i)) for i in members)
            if self.frozen_log_p <= log_p < self.hold_log_p:
                self.doubts.append(
                    f"{', '.join(self.names[i] for i in members)} repeated "
                    f"{int(max(self.run[i] for i in members))} tick(s) (probability "
                    f"{math.exp(log_p):.1e})")
            if log_p < self.frozen_log_p:
                names = [self.names[i] for i in members]
                for i in members:
                    n = self.names[i]
                    with_ = f" (with {', '.join(m for m in names if m != n)})" if (
                        len(names) > 1) else ""
                    found.setdefault(n, Finding(
                        n, "frozen", f"{n} repeated {v[i]:g} for {int(self.run[i])} ticks"
                        f"{with_}: probability {math.exp(log_p):.1e} for this target "
                        "(stale scrape or a stuck exporter)"))

    def _learn_repeats(self, v: FloatArray, cap: Capacity | None, dt: float,
                       good: bool) -> None:
        """Count observations and repeats inside the range. A run of repeats is counted
        only when it ends without having been called frozen (and on good ticks only), so
        the first repeats of a fault never teach that repeats are normal."""
        if good:
            self.obs *= self.decay
            self.rep *= self.decay
        for i in np.flatnonzero(np.isfinite(v) & np.isfinite(self.prev)):
            x = float(v[i])
            if self._at_bound(int(i), x, cap) or not self._enough(self.names[i], x, dt):
                continue
            if x == self.prev[i]:
                self.pend[i] += 1.0
                self.tainted[i] = self.tainted[i] or not good
                continue
            if good:
                self.obs[i] += 1.0
                if not self.tainted[i]:
                    self.obs[i] += self.pend[i]
                    self.rep[i] += self.pend[i]
            self.pend[i], self.tainted[i] = 0.0, False
        self.prev = np.where(np.isnan(v), self.prev, v)

    # --------------------------------------------------------------------- relations
    def _factor(self, names: tuple[str, ...], v: FloatArray, cap: Capacity | None,
                dt: float, events: float) -> tuple[float, bool]:
        """A sum of metrics and whether it counts enough events to be judged."""
        if names == ("kv",):
            kv = values_of(v, self.names, "kv_cache_usage")
            ready = cap.ready_replicas if cap is not None else 0
            return kv * ready, ready > 0 and kv > 0
        x = sum(values_of(v, self.names, m) for m in names)
        return x, self._enough(names[0], x, dt, events)

    def _enough(self, name: str, x: float, dt: float, events: float | None = None) -> bool:
        """Whether ``x`` counts ``events`` (``min_events`` by default) in one tick:
        requests or tokens for a rate, sequences for a count."""
        need = self.min_events if events is None else events
        if name in _RATE_METRICS:
            return dt > 0 and x * dt >= need
        if name in _COUNT_METRICS:
            return x >= need
        return x > 0

    def _relations(self, v: FloatArray, cap: Capacity | None, dt: float,
                   found: dict[str, Finding]) -> dict[int, float]:
        """Judge every relation whose pool counts enough events; return the log-ratios of
        those within their band."""
        within: dict[int, float] = {}
        queued = self._queued(v, dt)
        balanced = self._balanced(v, dt)
        for k, rel in enumerate(self.relations):
            if (rel.queue_free and queued) or (rel.balanced and not balanced):
                self._drop_pool(k)
                self.pending[k] = 0
                continue
            pooled = self._pool(k, rel, v, cap, dt)
            if pooled is None:
                continue
            a, b, dense = pooled
            x = math.log(a / b)
            verdict = self._judge(k, rel, x)
            if verdict is None:
                within[k] = x
                # a doubt: off once with events enough to mean it, or drifting half-way
                if (self.pending[k] != 0 and dense) or max(
                        self.cus_lo[k], self.cus_hi[k]) > self.cusum_h / 2:
                    self.suspects[rel.name] = (f"{rel.what} off its usual "
                                               f"({math.exp(x):.3g}), not seen right since")
                else:
                    self.suspects.pop(rel.name, None)
                continue
            self.suspects[rel.name] = f"{rel.what} broken, not seen right since"
            self.broken_for[k] += 1
            if self.broken_for[k] > self.relearn_after:  # a lasting change: learn it anew
                self.suspects.pop(rel.name, None)
                self.filled[k] = self.head[k] = 0  # the band reads buf[:filled]
                self.broken_for[k] = self.pending[k] = self.cus_lo[k] = self.cus_hi[k] = 0
                continue
            center, factor = verdict
            suspect = self._suspect(rel.metrics, v)
            found.setdefault(suspect, Finding(
                suspect, rel.name,
                f"{rel.what} is {math.exp(x):.3g}, {factor:.3g}x its usual "
                f"{math.exp(center):.3g}: {', '.join(rel.metrics)} disagree "
                f"({suspect} moved most)"))
        return within

    def _pool(self, k: int, rel: Relation, v: FloatArray, cap: Capacity | None,
              dt: float) -> tuple[float, float, bool] | None:
        """Add this tick to relation ``k``'s pool; once every factor of the pool counts
        enough events, return the ratio's two sides (each factor's mean over the pooled
        ticks) and whether they count ``min_events`` (``dense``; a sparse relation is
        judged from one event), and start a new pool.

        At steady traffic every tick counts enough and is judged alone. At a few requests a
        minute no tick does, yet a ratio of the sums over a few ticks is as good a mean as
        one busy tick's: this is what lets a doubled scrape or a unit change show on a
        quiet service. A pool lasts at most ``pool_ticks``; a tick that is not finite, or
        that a gate excludes (a queue, a drain), empties it."""
        factors = (*rel.num, *rel.den)
        values = [self._factor(f, v, cap, dt, 0.0)[0] for f in factors]
        if rel.tick_mean:  # the previous reading is the tick's other end (self.prev)
            values = [(x + self._factor(f, self.prev, cap, dt, 0.0)[0]) / 2
                      if f[0] in _COUNT_METRICS else x
                      for f, x in zip(factors, values, strict=True)]
        if dt <= 0 or not all(math.isfinite(x) and x >= 0 for x in values):
            self._drop_pool(k)
            self.pending[k] = 0
            return None
        if self.pool_n[k] >= self.pool_ticks:
            self._drop_pool(k)
        n = len(factors)
        self.pool_sum[k, :n] += values
        self.pool_ev[k, :n] += [x * dt if f[0] in _RATE_METRICS else x
                                for f, x in zip(factors, values, strict=True)]
        self.pool_n[k] += 1
        events = self.pool_ev[k, :n]
        if not all(e > 0 for e in events):
            return None
        need = 1.0 if rel.sparse else self.min_events
        counted = [f == ("kv",) or e >= need for f, e in zip(factors, events, strict=True)]
        if not all(counted):
            return None
        dense = all(f == ("kv",) or e >= self.min_events
                    for f, e in zip(factors, events, strict=True))
        means = self.pool_sum[k, :n] / self.pool_n[k]
        a = float(np.prod(means[:len(rel.num)]))
        b = float(np.prod(means[len(rel.num):]))
        self._drop_pool(k)
        return a, b, dense

    def _drop_pool(self, k: int) -> None:
        self.pool_sum[k] = 0.0
        self.pool_ev[k] = 0.0
        self.pool_n[k] = 0

    def _counts(self, v: FloatArray, cap: Capacity | None) -> list[tuple[int, float]]:
        """``(index, value)`` of the count gauges read this tick as a count inside their
        range: not 0 (even by nature), not every slot busy (the count is then the slots',
        even whenever pods x batch size is)."""
        out = []
        for j, m in enumerate(_COUNT_METRICS):
            if m not in self.specs:
                continue
            i = self.names.index(m)
            x = float(v[i])
            if math.isfinite(x) and x == round(x) and not self._at_bound(i, x, cap):
                out.append((j, x))
        return out

    def _parity(self, v: FloatArray, cap: Capacity | None,
                found: dict[str, Finding]) -> None:
        """Every pod counted twice (a doubled scrape) makes each count gauge even on every
        tick; a live sum of sequences is even about half the time. The run of even
        readings (0 reads as nothing) is judged like a run of repeats: its probability
        under this target's learned share of even readings, jointly for the gauges (a
        doubled scrape doubles them all), a doubt below ``hold_p``, a finding below
        ``frozen_p``. Needs no band and no traffic: one sequence running is a reading,
        which is what tells a doubled scrape on a quiet service, where the KV ratio counts
        too few sequences to judge."""
        read = self._counts(v, cap)
        for j, x in read:
            if x % 2 == 0:
                self.par_run[j] += 1
            else:
                self.par_done[j], self.par_run[j] = self.par_run[j], 0
        log_p = sum(self.par_run[j] * math.log(self._p_even(j))
                    for j in range(len(_COUNT_METRICS)) if self.par_run[j] > 0)
        if log_p >= self.hold_log_p:
            return
        runs = ", ".join(f"{m} {int(self.par_run[j])}" for j, m in enumerate(_COUNT_METRICS)
                         if self.par_run[j] > 0)
        # a finding on a tick that read a count; between readings (an idle tick) the run
        # stands unrefuted, a doubt
        if log_p < self.frozen_log_p and read and "requests_running" not in found:
            found["requests_running"] = Finding(
                "requests_running", "doubled", f"even on every reading ({runs} in a row): "
                f"probability {math.exp(log_p):.1e} for this target; each pod is counted "
                "twice (a doubled scrape)")
        else:
            self.doubts.append(f"count gauges even on every reading ({runs} in a row, "
                               f"probability {math.exp(log_p):.1e})")

    def _p_even(self, j: int) -> float:
        """Share of even readings of count gauge ``j`` on this target (Krichevsky-Trofimov:
        one half before any reading)."""
        return float((self.par_even[j] + 0.5) / (self.par_obs[j] + 1.0))

    def _learn_parity(self, v: FloatArray, cap: Capacity | None, good: bool) -> None:
        """A run of even readings is learnt when an odd one ends it, and only when no
        finding came during it, so a doubled scrape never teaches that counts are even."""
        if good:
            self.par_obs *= self.decay
            self.par_even *= self.decay
        for j, x in self._counts(v, cap):
            self.par_tainted[j] = self.par_tainted[j] or not good
            if x % 2 == 0:
                continue
            if good and not self.par_tainted[j]:
                # the run just ended was counted in par_run before this odd reading reset it
                self.par_obs[j] += self.par_done[j] + 1.0
                self.par_even[j] += self.par_done[j]
            self.par_tainted[j] = False

    def _zero_load(self, v: FloatArray, dt: float, found: dict[str, Finding]) -> None:
        """A rate reading 0 while another counts ``min_events`` in the tick: each counts
        the same requests (arrived, prefilled, generating), so the zero is in doubt until
        it moves, or until every rate and gauge reads 0 together (an idle service is
        consistent). Not a finding on one tick: completions, prompts and generated tokens
        do part for a tick at low traffic (a long request generating, nothing new to
        prefill).

        Some pairs cannot part for longer (:data:`_ZERO_WITNESS`): a rate that read 0 on
        ``zero_ticks`` ticks while its witness counted, without moving in between, is stuck
        at an idle value. That is a finding on each such tick, and its doubt outlasts the
        idle ticks that follow (they read the same whether the service is idle or the
        metric stuck); only the rate moving clears it."""
        rates = [m for m in _RATE_METRICS if m in self.specs]
        x = {m: values_of(v, self.names, m) for m in rates}
        for m, witness in _ZERO_WITNESS.items():
            if m not in x or witness not in self.specs:
                continue
            w = values_of(v, self.names, witness)
            if x[m] > 0:
                self.zero_run[m] = 0
            elif x[m] == 0 and self._enough(witness, w, dt):
                self.zero_run[m] += 1
                if self.zero_run[m] >= self.zero_ticks and m not in found:
                    found[m] = Finding(
                        m, "frozen", f"{m} read 0 on {self.zero_run[m]} ticks while "
                        f"{witness} counted (now {w * dt:.0f} a tick) and has not moved "
                        "since: stuck at an idle value")
        if self._idle(v):
            for m in rates:
                if self.zero_run.get(m, 0) < self.zero_ticks:
                    self.suspects.pop(f"zero:{m}", None)
            return
        for m in rates:
            if x[m] > 0:
                self.suspects.pop(f"zero:{m}", None)
                continue
            busy = [o for o in rates if o != m and self._enough(o, x[o], dt)]
            if x[m] == 0 and busy:
                self.suspects[f"zero:{m}"] = (
                    f"{m} read 0 while {busy[0]} counted {x[busy[0]] * dt:.0f} a tick, "
                    "and has not moved since")
                # only rates that outlast it count: traffic ending (in-flight requests
                # generating, finishing), which the idle ticks after it confirm. So does its
                # witness on the first tick the rate reads 0 after reading traffic: the
                # last arrivals' prompts are prefilled after a window that counted them
                # closed. A rate already at 0 before is not traffic ending: it may be stuck
                # there since an idle stretch, and what it hid has gone into the policy's
                # memory of the load, which an idle page cannot clear.
                # (self.page is still the previous tick's: _unchanged comes after this)
                ending = (values_of(self.page, self.names, m) > 0
                          and self.zero_run.get(m, 0) <= 1)
                if _ZERO_WITNESS.get(m) in busy and not ending:
                    self.drained.discard(f"zero:{m}")
                else:
                    self.drained.add(f"zero:{m}")
        self.uncarried.update(d for k, d in self.suspects.items() if k in self.drained)

    def _unchanged(self, v: FloatArray, time: float) -> None:
        """Not one metric changed since the last tick. An idle service reads the same page
        every tick (zeros, no latency), and so does a series whose scrapes stopped:
        Prometheus returns its last sample for its lookback (five minutes), and only the
        sample's timestamp tells. The daemon's ingest reads it, and refuses a snapshot
        whose newest sample is older than ``prometheus.stale_after_s`` (120 s by default,
        which ``still_s`` follows). So an unchanged page vouches for nothing until it has
        stood that long; after that a stopped scrape would have been refused, and what is
        left is an idle service. (A scrape that stops partway through an idle stretch is
        unseen by this, and no value can tell it; the timestamps do.) Not longer: a real
        outage or a service gap reads the same, and must be scaled down. (Not carried
        through an idle stretch by :meth:`_carry`: it is about the scrape, not the values,
        and the ingest's freshness limit bounds it.)"""
        if np.array_equal(v, self.page, equal_nan=True) and math.isfinite(self.page_since):
            still = time - self.page_since
            if still < self.still_s:
                doubt = (f"no metric changed for {still:.0f} s: an idle service or a stopped "
                         f"scrape, which the ingest refuses only after {self.still_s:g} s")
                self.doubts.append(doubt)
                self.uncarried.add(doubt)
        else:
            self.page_since = time
        self.page = v.copy()

    def _exporters(self, cap: Capacity | None, found: dict[str, Finding]) -> None:
        """As many exporters scraped as there are pods. Every sum adds one series per
        scraped pod, so a pod scraped twice (a ServiceMonitor beside a PodMonitor) doubles
        them all, and a ready pod not scraped drops its load out of them, which is how a
        scale-down would be decided on load that is not there.

        Pods come and go: a new pod is scraped once service discovery sees it, a removed
        one while it drains. So the count is judged against the pods of the last
        ``pods_grace`` ticks: more exporters than the most pods of that span, or fewer
        than the pods ready now, is a doubt. Exactly twice the pods on a fleet that has not
        changed for that span is every pod counted twice, and fewer exporters than the
        fewest pods ready in that span is a pod left out (a failed scrape ends its series at
        once): both are findings."""
        self.pods_hist = np.roll(self.pods_hist, 1, axis=0)
        if cap is None or not math.isfinite(cap.reporting):
            self.pods_hist[0] = np.nan
            return
        pods, ready = cap.ready_replicas + cap.starting, cap.ready_replicas
        self.pods_hist[0] = (pods, ready)
        n = cap.reporting
        span = self.pods_hist[np.isfinite(self.pods_hist[:, 0])]
        most, fewest = float(span[:, 0].max()), float(span[:, 1].min())
        steady = len(span) == len(self.pods_hist) and most == float(span[:, 0].min())
        summed = [m for m in (*_COUNT_METRICS, *_RATE_METRICS) if m in self.specs]
        if n > most:
            if steady and ready >= 1 and n == 2 * pods:
                for m in summed:  # every sum is wrong, not one metric
                    found.setdefault(m, Finding(
                        m, "doubled", f"{n:g} exporters scraped for {pods} pods: every pod "
                        "is counted twice in every sum (two scrape jobs?)"))
            else:
                self.doubts.append(f"{n:g} exporters scraped for {pods} pods (at most "
                                   f"{most:g} lately): pods counted twice, or draining")
        elif n < ready:
            if n < fewest and steady:
                for m in summed:
                    found.setdefault(m, Finding(
                        m, "missing", f"{n:g} exporters scraped for {ready} pods ready for "
                        "minutes: a pod's load is missing from every sum"))
            else:
                self.doubts.append(f"{n:g} exporters scraped for {ready} ready pods: a "
                                   "pod's load may be missing from the sums")

    def _sample_age(self, cap: Capacity | None, dt: float,
                    found: dict[str, Finding]) -> None:
        """Samples older than this target's usual: a scrape has stopped. Prometheus keeps
        serving a stopped series' last sample for five minutes, and on an idle service that
        page reads exactly like the live one, so until the ingest refuses it
        (``prometheus.stale_after_s``) only its age tells; a scale-down on it would be
        decided on numbers nobody scraped.

        The usual age is learned, not configured: a 15-s scrape read every 15 s shows one
        age again and again, a 60-s scrape four in a cycle. Older by half a tick is a
        doubt, so a stopped scrape holds scale-downs from its second tick at the latest and
        a late scrape costs a tick's scale-down. Older by two ticks and by the usual age
        again is two scrapes missed in a row at the least, whatever the interval: a finding
        on every metric, since the whole page is that old. Neither is carried through an
        idle stretch (:meth:`_carry`): fresh samples clear it, and the ingest's limit
        bounds it."""
        age = cap.sample_age if cap is not None else math.nan
        if not math.isfinite(age):
            return
        seen = self.ages[np.isfinite(self.ages)]
        if dt > 0 and len(seen) >= self.age_ticks:
            usual = float(np.quantile(seen, 0.9))
            why = (f"the oldest vLLM sample is {age:.0f} s old, its usual {usual:.0f} s: "
                   "a stopped scrape (Prometheus serves a stopped series' last sample)")
            if age > usual + max(2 * dt, usual):
                for m, spec in self.specs.items():
                    if not spec.optional:
                        found.setdefault(m, Finding(m, "stale", why))
            elif age > usual + dt / 2:
                self.doubts.append(why)
                self.uncarried.add(why)
        self.ages[self.age_head] = age
        self.age_head = (self.age_head + 1) % len(self.ages)

    def _idle(self, v: FloatArray) -> bool:
        """Every rate and count gauge reads 0: a page no check can judge."""
        names = [m for m in (*_RATE_METRICS, *_COUNT_METRICS) if m in self.specs]
        return bool(names) and all(values_of(v, self.names, m) == 0 for m in names)

    def _carry(self, v: FloatArray, time: float, found: Mapping[str, Finding]) -> None:
        """A doubt or a finding on the last tick with traffic outlasts the idle ticks after it.

        An idle page (every rate and count at 0) reads the same whether the service is idle
        or the fault is still there: a flatline at 0, a ×1000 latency with no request to
        time, a doubled 0. So it cannot clear what the last tick with traffic left in
        doubt, and a scale-down on it would be decided on telemetry last seen wrong. Only a
        tick with traffic and nothing found or doubted clears it. Not carried: what an idle
        page confirms (``uncarried``: the unchanged page, bounded by the ingest's freshness
        limit; a rate at 0 beside only the rates that outlast it, or beside its witness on
        the first tick after it read traffic, which is traffic ending) and what is about
        the scrape, not the values (old samples: fresh ones clear them)."""
        if self._idle(v):
            if self.carried:
                self.doubts.append(self.carried)
            return
        reasons = [f.detail for f in found.values() if f.rule != "stale"] or [
            d for d in self.doubts if d not in self.uncarried]
        self.carried = (f"telemetry in doubt on the last tick with traffic ({time:.0f} s: "
                        f"{reasons[0]}), and idle since: an idle page cannot clear it"
                        if reasons else "")

    def _balanced(self, v: FloatArray, dt: float) -> bool:
        """Whether the number in the system moved by less than half a tick's arrivals
        (``min_events`` at least) since the last tick: about as many left as arrived."""
        if not {"requests_running", "requests_waiting", "arrival_rate"} <= set(self.specs):
            return True
        inside = sum(values_of(v, self.names, m) for m in _COUNT_METRICS)
        before, self.prev_inside = self.prev_inside, inside
        flow = values_of(v, self.names, "arrival_rate") * dt
        return abs(inside - before) <= max(self.min_events, 0.5 * flow)

    def _queued(self, v: FloatArray, dt: float) -> bool:
        """Whether a real queue (more than ``queue_share`` of a tick's arrivals) stood in
        the last ``settle`` ticks: what it held is served, and counted, after it drains.
        A few requests waiting for a moment do not part arrivals from admissions."""
        if not {"requests_waiting", "arrival_rate"} <= set(self.specs):
            return False
        waiting = values_of(v, self.names, "requests_waiting")
        flow = values_of(v, self.names, "arrival_rate") * dt
        if not (waiting <= self.queue_share * flow):  # a real queue, or unknown (NaN)
            self.last_queued = self.ticks
        return self.ticks - self.last_queued <= self.settle

    def _judge(self, k: int, rel: Relation, x: float) -> tuple[float, float] | None:
        """``(center, factor)`` when relation ``k`` is broken at ``x``, else None.

        Three tiers on the band of good ticks: beyond ``break_spread`` half-widths at once;
        beyond ``confirm_spread`` on two ticks in a row; and a lasting shift beyond the
        relation's ``min_factor`` that is smaller than the band is wide (a doubled scrape
        at low traffic, where counting noise is large), accumulated by a CUSUM in units of
        the band's robust standard deviation until it passes ``cusum_h``.
        """
        n = int(self.filled[k])
        if n < self.min_points:
            self.pending[k] = 0
            return None
        data = self.buf[k, :n]
        middle = float(np.median(data))
        lo, hi = (float(q) for q in np.quantile(data, (0.005, 0.995)))
        sigma = max(1.4826 * float(np.median(np.abs(data - middle))), 1e-3)
        # the band's shape from the whole window; a two-sided ratio's center from the
        # latest good ticks (the request mix wanders over hours, a telemetry fault is a
        # step). A one-sided one keeps the window's: what it may do without bound (a queue
        # that builds) is learnt too, and must not become the floor it is judged by.
        center = middle
        if rel.side == "both":
            recent = self.buf[k, (int(self.head[k]) - 1 - np.arange(self.min_points))
                              % self.window]
            center = float(np.median(recent))
            lo, hi = lo - middle + center, hi - middle + center
        dev = x - center
        allow = math.log(rel.min_factor)
        # capped at twice the alarm level, so that the alarm ends soon after the shift
        cap = 2.0 * self.cusum_h
        self.cus_lo[k] = min(cap, max(0.0, self.cus_lo[k] + (-dev - allow) / sigma))
        self.cus_hi[k] = 0.0 if rel.side == "low" else min(
            cap, max(0.0, self.cus_hi[k] + (dev - allow) / sigma))
        half = max((center - lo) if dev < 0 else (hi - center), 1e-3)
        side = -1.0 if dev < 0 else 1.0
        lasting = max(self.cus_lo[k], self.cus_hi[k]) > self.cusum_h
        if (rel.side == "low" and side > 0) or abs(dev) < allow:
            self.pending[k] = 0
            return (center, math.exp(dev)) if lasting else None
        if abs(dev) >= self.break_spread * half:
            self.pending[k] = side
            return center, math.exp(dev)
        if abs(dev) >= self.confirm_spread * half:
            confirmed = self.pending[k] == side
            self.pending[k] = side
            return (center, math.exp(dev)) if confirmed or lasting else None
        self.pending[k] = 0
        return (center, math.exp(dev)) if lasting else None

    def _learn_relation(self, k: int, x: float) -> None:
        self.broken_for[k] = 0
        if self.pending[k] != 0 or self.cus_lo[k] > 0 or self.cus_hi[k] > 0:
            return  # beyond the band or drifting out of it: wait before learning it
        h = int(self.head[k])
        self.buf[k, h] = x
        self.head[k] = (h + 1) % self.window
        self.filled[k] = min(self.filled[k] + 1, self.window)

    def _suspect(self, metrics: Sequence[str], v: FloatArray) -> str:
        """The metric that moved most since the last good tick, in log terms (a count moving
        from 0 to 5 is a smaller move than a rate multiplied by 1000)."""
        best, name = -1.0, metrics[0]
        for m in metrics:
            now, before = values_of(v, self.names, m), self.good.get(m, math.nan)
            eps = 0.01 if self.specs[m].upper <= 1.0 else 1.0  # fractions move in hundredths
            if not (now >= 0 and before >= 0):
                continue
            move = abs(math.log((now + eps) / (before + eps)))
            if move > best:
                best, name = move, m
        return name

    # ---------------------------------------------------------- latency and the queue
    def _time_in_system(self, v: FloatArray) -> float:
        if not {"requests_running", "arrival_rate"} <= set(self.specs):
            return math.nan
        rate = values_of(v, self.names, "arrival_rate")
        inside = self._inside(v)
        return inside / rate if rate > 0 and inside >= 0 else math.nan

    def _latency(self, v: FloatArray, time: float, dt: float,
                 found: dict[str, Finding]) -> None:
        # the largest time in system over the last four ticks: gauges are read at one
        # instant, latencies over a window, and a burst may have left between the two
        self.recent_w = np.roll(self.recent_w, 1)
        self.recent_w[0] = self._time_in_system(v)
        w = float(np.nanmax(self.recent_w)) if np.isfinite(self.recent_w).any() else math.nan
        over: dict[str, str] = {}
        # with another finding the time in system itself may be the lie
        if math.isfinite(w) and w > 0 and not found:
            per_request = 1.0  # a token gap is a share of its request's time: divide
            if {"generation_tokens_rate", "arrival_rate"} <= set(self.specs):
                gen = values_of(v, self.names, "generation_tokens_rate")
                rate = values_of(v, self.names, "arrival_rate")
                if rate > 0 and math.isfinite(gen):
                    per_request = max(1.0, gen / rate)
            for m in _LATENCY_METRICS:
                if m not in self.specs:
                    continue
                x = values_of(v, self.names, m)
                share = w if m == "ttft_p99" else w / per_request
                if math.isfinite(x) and x > self.latency_factor * share + 1.0:
                    over[m] = (f"{m} is {x:g} s but requests spend at most {w:.3g} s in the "
                               "system (Little's law): a latency cannot exceed its share of "
                               "that this far (unit change?)")
        if not found:
            self._emptied(v, time, dt, over)
        for m, why in over.items():
            if m not in self.latency_over:
                self.doubts.append(f"{m} {values_of(v, self.names, m):g} s is beyond the "
                                   "time in system once")
            elif m not in found:  # two ticks in a row
                found[m] = Finding(m, "latency_unit", why)
        self.latency_over = set(over)
        if self._inside(v) == 0 and not found:  # a gauge stuck at 0 is no empty system
            self.empty_at = np.roll(self.empty_at, 1)
            self.empty_at[0] = time

    def _inside(self, v: FloatArray) -> float:
        """Requests in the system (running + waiting) at the scrape; NaN when unknown."""
        if "requests_running" not in self.specs:
            return math.nan
        inside = values_of(v, self.names, "requests_running")
        if "requests_waiting" in self.specs:
            inside += values_of(v, self.names, "requests_waiting")
        return inside

    def _emptied(self, v: FloatArray, time: float, dt: float, over: dict[str, str]) -> None:
        """A latency longer than the system has been busy. A p99 TTFT (or token gap) of
        ``x`` read now belongs to a request whose first token (or next token) came within
        the last rate window, so it was in the system through ``[now - x, now - window]``:
        no scrape in that span can have read the system empty. This needs no traffic to
        speak of, which is where the time in system above says nothing: on a quiet service
        the gauges read 0 between requests, and one request's latency is the quantile.
        A quantile read from a histogram lies anywhere in its bucket, up to
        ``quantile_slack`` times the true value, so only readings that much older count."""
        newest = time - self.window_s - dt  # readings after this may predate the request
        for m in _LATENCY_METRICS:
            if m not in self.specs or m in over:
                continue
            x = values_of(v, self.names, m)
            if not math.isfinite(x) or x <= 0:
                continue
            oldest = time - x / self.quantile_slack
            empty = self.empty_at[(self.empty_at >= oldest) & (self.empty_at <= newest)]
            if len(empty):
                over[m] = (f"{m} is {x:g} s but the system read empty {time - empty[0]:.0f} s "
                           "ago, inside the span that request must have been served in "
                           "(unit change?)")

    def _stuck_queue(self, v: FloatArray, cap: Capacity | None,
                     found: dict[str, Finding]) -> None:
        """Requests can only wait when the batch is full (every slot busy, or the KV cache
        nearly so). A full batch, TTFT far above anything seen, and a queue metric that
        does not move: the queue metric is stuck. (TTFT up with free slots is slow
        prefill, a health problem, not a hidden queue.)"""
        if not {"requests_waiting", "ttft_p99", "requests_running"} <= set(self.specs):
            return
        i = self.names.index("requests_waiting")
        ttft = values_of(v, self.names, "ttft_p99")
        known = self.ttft_buf[np.isfinite(self.ttft_buf)]
        if len(known) < self.min_points or not math.isfinite(ttft) or self.same[i] < 2:
            return
        running = values_of(v, self.names, "requests_running")
        kv = values_of(v, self.names, "kv_cache_usage") if "kv_cache_usage" in self.specs \
            else math.nan
        full = kv >= 0.9 or (cap is not None and cap.batch_size > 0 and cap.ready_replicas > 0
                             and running >= cap.ready_replicas * cap.batch_size - 1)
        top = float(np.quantile(known, 0.995))
        if full and ttft > self.stuck_factor * top and "requests_waiting" not in found:
            found["requests_waiting"] = Finding(
                "requests_waiting", "queue_stuck",
                f"requests_waiting stuck at {v[i]:g} for {int(self.same[i])} ticks while "
                f"every slot is busy and ttft_p99 is {ttft:.3g} s, {ttft / top:.1f}x the "
                f"highest usual ({top:.3g} s): requests wait where the queue metric does "
                "not show")

    def _little(self, v: FloatArray, dt: float, found: dict[str, Finding]) -> None:
        """Little's law bounds how few requests can be in the system.

        ``L = arrival_rate x W``, and the mean time in system ``W`` is at least the mean
        TTFT, itself at least half the median TTFT (a non-negative quantity's median is at
        most twice its mean: Markov's inequality). So ``running + waiting >= arrival_rate x
        ttft_p50 / 2`` whatever the load, the model or the scheduler. The gauges are read at
        one instant and the rate and the median over the window, so a queue that drained
        within the window may break the bound for a tick: the test asks for more than
        ``little_slack`` times the requests the gauges show plus ``min_events``, and a break
        alone is a doubt. With the queue metric unmoved for two ticks it is a finding (a
        real queue that drains moves): the requests the TTFT says are waiting are missing
        from the queue metric. Skipped when another rule already found one of its inputs
        wrong (a unit change of the arrival rate breaks the bound too).
        """
        need = ("requests_running", "requests_waiting", "arrival_rate", "ttft_p50")
        if dt <= 0 or not set(need) <= set(self.specs) or any(m in found for m in need
                                                                if m != "requests_waiting"):
            return
        running, waiting, rate, p50 = (values_of(v, self.names, m) for m in need)
        inside = running + waiting
        if not (rate > 0 and p50 > 0 and inside >= 0 and math.isfinite(rate * p50)):
            return
        implied = rate * p50 / 2.0
        if implied <= self.little_slack * inside + self.min_events:
            return
        i = self.names.index("requests_waiting")
        if self.same[i] >= 2 and "requests_waiting" not in found:
            found["requests_waiting"] = Finding(
                "requests_waiting", "queue_stuck",
                f"requests_waiting stuck at {waiting:g} for {int(self.same[i])} ticks while "
                f"Little's law puts at least {implied:.0f} requests in the system (arrivals "
                f"{rate:.3g}/s x half the median TTFT {p50:.3g} s) and the gauges show "
                f"{inside:g}: requests wait where the queue metric does not show")
        else:
            self.doubts.append(f"the gauges show {inside:g} requests in the system, Little's "
                               f"law at least {implied:.0f}")

    def _learn_ttft(self, v: FloatArray, good: bool) -> None:
        """TTFT joins the band ``settle`` good ticks late, and not at all when a finding
        comes first: the first ticks of a fault are not yet known to be one."""
        if not good:
            self.ttft_wait[:] = np.nan
            return
        if "ttft_p99" not in self.specs:
            return
        old = self.ttft_wait[0]
        self.ttft_wait = np.roll(self.ttft_wait, -1)
        self.ttft_wait[-1] = values_of(v, self.names, "ttft_p99")
        if math.isfinite(old):
            self.ttft_buf[self.ttft_head] = old
            self.ttft_head = (self.ttft_head + 1) % self.window

    # -------------------------------------------------------------------------- state
    def state(self) -> DetectorState:
        meta: dict[str, JSONScalar] = {"ticks": self.ticks, "last_t": self.last_t,
                                       "ttft_head": self.ttft_head,
                                       "prev_inside": self.prev_inside,
                                       "last_queued": self.last_queued,
                                       "page_since": self.page_since,
                                       "carried": self.carried,
                                       "drained": ",".join(sorted(self.drained))}
        meta.update({f"good.{n}": x for n, x in self.good.items()})
        meta.update({f"suspect.{k}": d for k, d in self.suspects.items()})
        meta.update({f"zero_run.{k}": n for k, n in self.zero_run.items()})
        return DetectorState(name="telemetry", params={}, meta=meta, arrays={
            "prev": self.prev.copy(), "run": self.run.copy(), "run_start": self.run_start.copy(),
            "same": self.same.copy(),
            "seen": self.seen.copy(), "obs": self.obs.copy(), "rep": self.rep.copy(),
            "pend": self.pend.copy(), "tainted": self.tainted.astype(np.float64),
            "buf": self.buf.copy(), "head": self.head.astype(np.float64),
            "filled": self.filled.astype(np.float64), "pending": self.pending.copy(),
            "broken_for": self.broken_for.copy(), "ttft_buf": self.ttft_buf.copy(),
            "cus_lo": self.cus_lo.copy(), "cus_hi": self.cus_hi.copy(),
            "pool_sum": self.pool_sum.copy(), "pool_ev": self.pool_ev.copy(),
            "pool_n": self.pool_n.astype(np.float64),
            "ttft_wait": self.ttft_wait.copy(),
            "recent_w": self.recent_w.copy(), "page": self.page.copy(),
            "empty_at": self.empty_at.copy(), "pods_hist": self.pods_hist.copy(),
            "par_obs": self.par_obs.copy(), "par_even": self.par_even.copy(),
            "par_run": self.par_run.copy(), "par_done": self.par_done.copy(),
            "par_tainted": self.par_tainted.astype(np.float64),
            "ages": self.ages.copy(), "age_head": np.array([float(self.age_head)]),
            "latency_over": np.array([float(m in self.latency_over)
                                      for m in _LATENCY_METRICS])})

    def load(self, st: DetectorState) -> None:
        a = st.arrays
        if a["buf"].shape != self.buf.shape or a["obs"].shape != self.obs.shape:
            raise ValueError("saved telemetry checks are for other metrics or another window")
        self.prev, self.run, self.run_start = a["prev"], a["run"], a["run_start"]
        self.same = a["same"]
        self.seen, self.obs, self.rep, self.buf = a["seen"], a["obs"], a["rep"], a["buf"]
        self.pend, self.tainted = a["pend"], a["tainted"].astype(bool)
        self.head = a["head"].astype(np.int64)
        self.filled = a["filled"].astype(np.int64)
        self.pending, self.broken_for, self.ttft_buf = a["pending"], a["broken_for"], a["ttft_buf"]
        self.recent_w = a["recent_w"]
        if "empty_at" in a:
            self.empty_at = a["empty_at"]
        if "pods_hist" in a and a["pods_hist"].shape == self.pods_hist.shape:
            self.pods_hist = a["pods_hist"]
        if "ages" in a and a["ages"].shape == self.ages.shape:
            self.ages, self.age_head = a["ages"], int(a["age_head"][0])
        self.page = a["page"] if "page" in a else np.full(len(self.names), np.nan)
        if "par_obs" in a:
            self.par_obs, self.par_even = a["par_obs"], a["par_even"]
            self.par_run, self.par_done = a["par_run"], a["par_done"]
            self.par_tainted = a["par_tainted"].astype(bool)
        self.cus_lo, self.cus_hi = a["cus_lo"], a["cus_hi"]
        if "pool_n" in a:
            self.pool_sum, self.pool_ev = a["pool_sum"], a["pool_ev"]
            self.pool_n = a["pool_n"].astype(np.int64)
        self.ttft_wait = a["ttft_wait"]
        self.latency_over = {m for m, x in zip(_LATENCY_METRICS, a["latency_over"], strict=True)
                             if x}
        m = st.meta
        self.ticks = int(_num(m["ticks"]))
        self.last_t = _num(m["last_t"])
        self.ttft_head = int(_num(m["ttft_head"]))
        self.last_queued = int(_num(m["last_queued"]))
        self.prev_inside = _num(m.get("prev_inside"))
        self.page_since = _num(m.get("page_since"))
        self.carried = str(m.get("carried") or "")
        self.drained = {k for k in str(m.get("drained") or "").split(",") if k}
        self.zero_run = {k: int(_num(m.get(f"zero_run.{k}", 0))) for k in _ZERO_WITNESS}
        self.good = {n: _num(m.get(f"good.{n}")) for n in self.names}
        self.suspects = {k[len("suspect."):]: str(d) for k, d in m.items()
                         if k.startswith("suspect.")}


def values_of(v: FloatArray, names: Sequence[str], name: str) -> float:
    """The value of metric ``name`` in the tick vector ``v``."""
    return float(v[names.index(name)])


def _num(x: JSONScalar) -> float:
    return math.nan if x is None else float(x)
