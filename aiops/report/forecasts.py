"""The forecasts of a replay, made on the daemon's schedule and computed ahead, in parallel.

What the daemon does (``Controller._forecast`` and ``Controller.refit``): the decisions'
arrival rates are averaged into steps of ``forecast.step_s`` seconds, each completed step is
handed to the model's cheap ``update``, the model predicts, and every
``forecast.refit_interval_s`` it is refitted on the history kept (``forecast.history_s``).
A fit that fails leaves the previous model in use. :class:`ScheduledForecast` does exactly
that on a replay, one decision at a time.

Why it matters: a week of 15-s decisions is 40,000 decisions. A fit of ``auto`` (a backtest
of several models) takes seconds to a minute and a prediction of its ensemble ~10 ms, so
refitting, or even predicting, at every decision turns a minute of replay into half an hour.
Here a prediction is made once per completed step (with no new data the model's answer is
the same) and fits happen only on the schedule.

Why ahead of the replay: the arrival rate is the workload's, whatever the policy does, so
the forecast at decision ``i`` depends only on the rates up to ``i``. Between two scheduled
refits the forecasts depend only on the refit and the rates, so the stretches are
independent jobs: :func:`precompute` runs them on a process pool and the replay reads them
back (:class:`ForecastLookup`), the results equal to the sequential run's. A refit that
fails hands over to the previous stretch's model, as in the daemon; the job then starts
from the last refit that succeeded.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiops.forecast.steps import StepAverager
from aiops.types import FloatArray, Forecast, Snapshot

log = logging.getLogger(__name__)

MAX_FAILURES_KEPT = 20
"""Failure messages kept; a forecaster failing all week would otherwise fill the memory."""


@dataclass(frozen=True)
class Schedule:
    """How the replay forecasts. Seconds; ``min_points`` counts forecast steps."""

    model: str
    step_s: float
    lead_s: float  # the cold start: how far ahead the plan looks
    refit_s: float
    history_s: float = 7 * 86400.0
    min_points: int = 8
    interval_s: float = 15.0  # between decisions

    def __post_init__(self) -> None:
        if not (self.step_s > 0 and self.refit_s > 0 and self.history_s > 0
                and self.interval_s > 0):
            raise ValueError("step_s, refit_s, history_s and interval_s must be > 0")

    @property
    def horizon(self) -> int:
        """The daemon's horizon: one cold start plus one decision, in whole steps, plus one."""
        return max(2, math.ceil((self.lead_s + self.interval_s) / self.step_s) + 1)


class ScheduledForecast:
    """Forecasts for a replay, made as the daemon makes them (module docstring).

    Call it as the runner's ``forecast_fn(snapshot, past)``, or :meth:`step` with a time and
    a rate. ``observe`` feeds a decision's rate without fitting or predicting: how a job
    that starts at a later refit catches up with the history cheaply.
    """

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        keep = max(int(schedule.history_s / schedule.step_s), schedule.min_points)
        self.history = StepAverager(schedule.step_s, keep)
        self.fits = 0
        self.fit_times: list[float] = []
        self.failures: list[str] = []
        self.failure_count = 0
        self.first_fit_failed = False
        self._next_fit = -math.inf
        self._fc: Any = None
        self._cached: Forecast | None = None
        self._stale = False

    def __call__(self, snap: Snapshot, past: FloatArray) -> Forecast | None:
        return self.step(snap.time, snap.arrival_rate)

    def fit_due(self, t: float) -> bool:
        """Whether a decision at ``t`` (after its rate is observed) refits."""
        return len(self.history.times) >= self.schedule.min_points and t >= self._next_fit

    def observe(self, t: float, rate: float) -> bool:
        """Take a decision's rate, fit nothing; True when this decision would have refitted."""
        if math.isfinite(rate):
            self.history.add(t, rate)
        if self.fit_due(t):
            self._next_fit = t + self.schedule.refit_s
            return True
        return False

    def step(self, t: float, rate: float) -> Forecast | None:
        """The forecast the policy sees at the decision at ``t``, after observing ``rate``."""
        closed = self.history.add(t, rate) if math.isfinite(rate) else None
        refitted = False
        if self.fit_due(t):
            refitted = self._refit(t)
        if not refitted and closed is not None and self._fc is not None:
            try:
                self._fc.update(np.array([closed[0]]), np.array([closed[1]]))
                self._stale = True
            except Exception as exc:  # a model that cannot follow waits for the next refit
                self._fail(t, exc)
                self._fc = None
        if self._fc is None:
            return None
        if self._stale:
            self._stale = False
            try:
                self._cached = self._fc.predict(self.schedule.horizon)
            except Exception as exc:
                self._fail(t, exc)
                self._cached = None
        return self._cached

    def _refit(self, t: float) -> bool:
        from aiops.forecast.base import make_from_spec

        self._next_fit = t + self.schedule.refit_s
        try:
            fc = make_from_spec(self.schedule.model).fit(np.array(self.history.times),
                                                          np.array(self.history.values))
        except Exception as exc:  # keep the previous model, as the daemon does
            self._fail(t, exc)
            if self.fits == 0:
                self.first_fit_failed = True
            return False
        self._fc = fc
        self._stale = True
        self.fits += 1
        self.fit_times.append(t)
        return True

    def _fail(self, t: float, exc: Exception) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(f"t={t:.0f}s: {exc}")


# --------------------------------------------------------------------------- ahead of time
@dataclass
class Forecasts:
    """Every decision's forecast (None before the first fit), and how they were made."""

    schedule: Schedule
    times: FloatArray
    forecasts: list[Forecast | None]
    fits: int = 0
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0


def refit_decisions(schedule: Schedule, times: FloatArray, rates: FloatArray) -> list[int]:
    """Indices of the decisions that refit: the schedule depends on the rates only."""
    probe = ScheduledForecast(schedule)
    return [i for i, (t, r) in enumerate(zip(times, rates, strict=True))
            if probe.observe(float(t), float(r))]


@dataclass(frozen=True)
class _Job:
    schedule: Schedule
    times: FloatArray
    rates: FloatArray
    refits: tuple[int, ...]  # every refit decision of the replay
    index: int  # this job emits decisions [refits[index], refits[index + 1])


@dataclass
class _JobResult:
    index: int
    forecasts: list[Forecast | None]
    fits: int
    failures: list[str]
    failure_count: int


def _run_job(job: _Job) -> _JobResult:
    """One stretch between refits. If its refit fails, the previous stretch's model carries
    on (as in the sequential run): start again one refit earlier, emitting the same range."""
    lo = job.refits[job.index]
    hi = job.refits[job.index + 1] if job.index + 1 < len(job.refits) else len(job.times)
    start = job.index
    while True:
        first = job.refits[start]
        sf = ScheduledForecast(job.schedule)
        out: list[Forecast | None] = []
        fits_before = failures_before = kept_before = 0
        for i in range(hi):
            t, r = float(job.times[i]), float(job.rates[i])
            if i < first:
                sf.observe(t, r)
                continue
            if i == lo:  # count only what this job's own range did
                fits_before, failures_before = sf.fits, sf.failure_count
                kept_before = len(sf.failures)
            fc = sf.step(t, r)
            if i >= lo:
                out.append(fc)
        if not sf.first_fit_failed or start == 0:
            return _JobResult(job.index, out, sf.fits - fits_before,
                              sf.failures[kept_before:], sf.failure_count - failures_before)
        start -= 1


def _worker_init(threads: int) -> None:
    # Several forecasting processes on few cores: one thread each keeps torch and BLAS from
    # fighting over the cores (set before the forecasters import them).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


WORKER_MEMORY_BYTES = 700 * 2**20
"""Resident memory of one forecasting process: 640-680 MiB measured for ``auto`` on a week
of one-minute steps (torch, Prophet and statsforecast loaded), rounded up."""


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cgroup_cpus() -> float | None:
    """CPUs the container may use (cgroup v2 ``cpu.max``, else v1 CFS quota); None: no cap."""
    text = _read("/sys/fs/cgroup/cpu.max")
    if text:
        quota, _, period = text.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota_s, period_s = (_read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                         _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    if quota_s and period_s and int(quota_s) > 0:
        return int(quota_s) / int(period_s)
    return None


def _available_memory() -> float | None:
    """Bytes this process could still take: the cgroup's limit minus its use, or the
    machine's available memory, whichever is smaller; None when neither can be read."""
    found: list[float] = []
    for limit_p, used_p in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                            ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                             "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, used = _read(limit_p), _read(used_p)
        if limit and used and limit.isdigit() and used.isdigit() and int(limit) < 2**60:
            found.append(int(limit) - int(used))
            break
    meminfo = _read("/proc/meminfo") or ""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            found.append(int(line.split()[1]) * 1024)
    return min(found) if found else None


def default_jobs() -> int:
    """Processes for :func:`precompute`: the CPUs this process may use (its affinity and its
    container's quota), and no more than the free memory holds. In aiops' own pod (1.5 GiB,
    the daemon using ~0.8) that is one: the forecasts are then computed in this process."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        cpus = float(os.cpu_count() or 1)
    quota = _cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    memory = _available_memory()
    if memory is not None:
        cpus = min(cpus, memory // WORKER_MEMORY_BYTES)
    return max(1, int(cpus))


def precompute(schedule: Schedule, times: Sequence[float] | FloatArray,
               rates: Sequence[float] | FloatArray, *, jobs: int = 1,
               on_job: Callable[[int, int], None] | None = None) -> Forecasts:
    """Every decision's forecast, as :class:`ScheduledForecast` would give it in order.

    ``times`` and ``rates`` are the decisions' times and observed arrival rates. ``jobs``
    processes share the stretches between refits (1: in this process). ``on_job(done,
    total)`` reports progress.
    """
    return start(schedule, times, rates, jobs=jobs, on_job=on_job).result()


def start(schedule: Schedule, times: Sequence[float] | FloatArray,
          rates: Sequence[float] | FloatArray, *, jobs: int = 1,
          on_job: Callable[[int, int], None] | None = None) -> Pending:
    """:func:`precompute`, started: with ``jobs`` > 1 the pool works while the caller goes on
    (the report replays the baselines and the fixed fleets meanwhile); ``result()`` waits."""
    t = np.asarray(times, dtype=np.float64)
    r = np.asarray(rates, dtype=np.float64)
    refits = tuple(refit_decisions(schedule, t, r))
    work = [_Job(schedule, t, r, refits, k) for k in range(len(refits))]
    return Pending(schedule, t, refits, work, jobs, on_job)


class Pending:
    """Forecasts being computed: on a process pool, or in this process when asked for."""

    def __init__(self, schedule: Schedule, times: FloatArray, refits: tuple[int, ...],
                 work: list[_Job], jobs: int,
                 on_job: Callable[[int, int], None] | None) -> None:
        self.schedule, self.times, self.refits, self.work = schedule, times, refits, work
        self.on_job = on_job
        self.done: list[_JobResult] = []
        self._pool: Any = None
        self._futures: list[Any] = []
        if jobs > 1 and len(work) > 1:
            self._submit(min(jobs, len(work)))

    def _progress(self) -> None:
        if self.on_job is not None:
            self.on_job(len(self.done), len(self.work))

    def _submit(self, n: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent may hold threads (torch, numba) a fork copies dead.
        ctx = multiprocessing.get_context("spawn")
        try:
            self._pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx,
                                             initializer=_worker_init,
                                             initargs=(max(1, default_jobs() // n),))
            # Longest first: the last stretches fit on the longest history.
            for job in sorted(self.work, key=lambda j: -j.index):
                self._futures.append(self._pool.submit(_run_job, job))
        except (OSError, RuntimeError) as exc:
            log.warning("no forecast process pool (%s); computing in this process", exc)
            self._close()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def cancel(self) -> None:
        """Stop the pool (jobs not started are dropped); for a caller giving up."""
        self._close()

    def result(self) -> Forecasts:
        """Wait for the pool, compute what it did not in this process, and assemble. A pool
        that breaks never fails the report: its unfinished jobs run here."""
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        try:
            for fut in as_completed(self._futures):
                self.done.append(fut.result())
                self._progress()
        except (BrokenProcessPool, OSError, RuntimeError) as exc:
            log.warning("forecast process pool failed (%s); computing the rest in this "
                        "process", exc)
        finally:
            self._close()
        finished = {d.index for d in self.done}
        for job in self.work:
            if job.index not in finished:
                self.done.append(_run_job(job))
                self._progress()
        out = Forecasts(self.schedule, self.times, [None] * len(self.times))
        for res in sorted(self.done, key=lambda x: x.index):
            lo = self.refits[res.index]
            out.forecasts[lo:lo + len(res.forecasts)] = res.forecasts
            out.fits += res.fits
            out.failure_count += res.failure_count
            room = MAX_FAILURES_KEPT - len(out.failures)
            out.failures.extend(res.failures[:max(room, 0)])
        return out


class ForecastLookup:
    """The runner's ``forecast_fn`` reading :func:`precompute`'s answers, decision by decision.

    Checks that the replay asks at the decisions and rates they were computed for: the
    arrival rate does not depend on the policy, and a simulator that made it depend would
    silently mix two workloads' forecasts.
    """

    def __init__(self, pre: Forecasts, rates: FloatArray) -> None:
        self.pre = pre
        self.rates = np.asarray(rates, dtype=np.float64)
        self._i = 0

    def __call__(self, snap: Snapshot, past: FloatArray) -> Forecast | None:
        i = self._i
        self._i += 1
        if i >= len(self.pre.times) or abs(self.pre.times[i] - snap.time) > 1e-6:
            raise RuntimeError(f"forecast asked at t={snap.time:g} s, decision {i} was "
                               "computed for another time")
        rate = snap.arrival_rate
        want = self.rates[i]
        if not (rate == want or (math.isnan(rate) and math.isnan(want))
                or abs(rate - want) <= 1e-9 * max(1.0, abs(want))):
            raise RuntimeError(f"the arrival rate at t={snap.time:g} s differs between the "
                               f"replays ({rate!r} vs {want!r})")
        return self.pre.forecasts[i]
