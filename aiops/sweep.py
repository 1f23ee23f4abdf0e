"""Sets of independent jobs — benchmark sweeps, one report per target, one training per seed —
on a local process pool or on a Ray cluster.

A sweep is a function applied to many jobs that do not depend on each other. This module
runs them through the executors the libraries provide, nothing of its own: the standard
library's :class:`~concurrent.futures.ProcessPoolExecutor` on this machine (the default; one
process runs the jobs in this process), or Ray's task API (``ray.remote`` / ``ray.wait``) on a
cluster with ``--ray ADDRESS`` (``auto`` for the cluster ``ray start`` made here). Ray is an
optional extra: ``pip install 'aiops-autoscaler[ray]'``.

Either way:

* a job that raises is reported with its label and the error, and the others go on
  (:class:`Outcome`); a local worker process that dies is replaced and the jobs it may have
  been running are tried once more before they are reported;
* results do not depend on where a job ran: every job is seeded by its own spec, so the
  local pool and Ray give the same results (a test checks it);
* progress is shown as jobs end, and a long job may report its own (:func:`report_progress`);
* jobs must be picklable and their function importable where they run (an ``aiops``
  function): on a Ray cluster every node needs aiops installed and the data paths the jobs
  name readable at the same place.

:func:`run_jobs` runs a list of jobs; :class:`Runner` is the same machinery for callers that
decide what to submit next from what has ended (the benchmark's bisections).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from aiops.errors import InputError

if TYPE_CHECKING:
    from rich.progress import Progress

    from aiops.config import Config
    from aiops.report.build import Overrides
    from aiops.report.model import Report
    from aiops.sim.stream import RequestStream
    from aiops.sim.workloads import Workload
    from aiops.train.evaluate import EvalSetup
    from aiops.train.ppo import TrainConfig

J = TypeVar("J")
R = TypeVar("R")

POLL_S = 0.5
"""How often a waiting runner looks at the jobs' own progress reports."""

RAY_EXTRA = "pip install 'aiops-autoscaler[ray]'"


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Outcome(Generic[J, R]):
    """One job's end: its result, or the error that ended it (``ExcType: message`` and the
    last lines of the traceback), with the seconds it took where it ran."""

    job: J
    label: str
    result: R | None
    error: str | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def _describe(exc: BaseException) -> str:
    tail = traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
    return f"{type(exc).__name__}: {exc}\n" + "".join(tail).rstrip()


# --------------------------------------------------------------------------- progress

_REPORT: list[Callable[[float, float, str], None] | None] = [None]  # the running job's sink


def report_progress(done: float, total: float, detail: str = "") -> None:
    """Called by a job, wherever it runs, to show how far it is (no-op outside a sweep or
    when nobody listens). Reports are throttled to a few a second."""
    sink = _REPORT[0]
    if sink is not None:
        sink(done, total, detail)


@dataclass
class _Sink:
    """Sends one job's progress to the runner: to a queue the parent drains (the local
    pool's ``multiprocessing.Manager`` queue, Ray's ``ray.util.queue.Queue``)."""

    queue: Any
    ticket: int
    last: float = field(default=-math.inf)

    def __call__(self, done: float, total: float, detail: str) -> None:
        now = time.monotonic()
        if now - self.last < POLL_S and done < total:
            return
        self.last = now
        with contextlib.suppress(Exception):  # a lost update only costs a progress bar tick
            self.queue.put_nowait((self.ticket, done, total, detail))


def _call(fn: Callable[[J], R], job: J, sink: Any) -> tuple[R | None, str | None, float]:
    """Where the job runs: ``fn(job)``, its error caught, timed."""
    t0 = time.perf_counter()
    previous, _REPORT[0] = _REPORT[0], sink
    try:
        return fn(job), None, time.perf_counter() - t0
    except Exception as exc:  # one job's failure must not end the sweep
        return None, _describe(exc), time.perf_counter() - t0
    finally:
        _REPORT[0] = previous


def _start_worker() -> None:
    """A pool worker's first act: start its process (forked with the parent's loaded data)."""


# --------------------------------------------------------------------------- the runner


class Runner(Generic[J, R]):
    """Runs ``fn`` on jobs submitted one by one; :meth:`next_done` returns them as they end.

    ``processes`` local worker processes (None: one per CPU, 1: in this process), or a Ray
    cluster at ``ray`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; ``local`` starts a
    private instance here; a Ray already initialised in this process is used as it is).
    Callers keep at most :attr:`slots` jobs in flight (:attr:`in_flight`), so that what
    they submit later is not stuck behind what the executor already holds.
    ``progress_queue`` lets jobs call :func:`report_progress` across processes.

    The local pool forks its workers when it starts (on entering the ``with``): data the
    parent loaded before that is inherited, not reloaded, and forking before any progress
    bar's thread runs is safe. When a local worker dies, the jobs that were in the pool
    are run again one at a time (:attr:`slots` is 1 meanwhile): one that kills its worker
    alone is reported, the others go on."""

    def __init__(self, fn: Callable[[J], R], *, processes: int | None = None,
                 ray: str | None = None, max_jobs: int | None = None,
                 progress_queue: bool = False) -> None:
        if ray is not None and processes is not None:
            raise InputError("--jobs sets the local processes; with --ray the cluster's CPUs "
                             "decide: give one of them")
        if processes is not None and processes < 1:
            raise InputError(f"--jobs must be >= 1, got {processes}")
        self.fn = fn
        self.ray_address = ray
        cpus = os.cpu_count() or 1
        local = processes if processes is not None else cpus
        self.processes = max(1, min(local, max_jobs)) if max_jobs else local
        self._slots = self.processes
        self._want_queue = progress_queue
        self._queue: Any = None
        self._manager: Any = None
        self._pool: ProcessPoolExecutor | None = None
        self._ray: Any = None
        self._ray_started = False
        self._remote: Any = None
        self._tickets = 0
        self._running: dict[Any, tuple[int, J, str]] = {}  # future or ref -> ticket, job
        self._inline: list[tuple[int, J, str]] = []
        # After a worker died: the jobs it may have taken down, run again one at a time.
        self._suspects: deque[tuple[int, J, str]] = deque()
        self._alone: int | None = None  # the ticket of the suspect running alone
        self.on_progress: Callable[[int, float, float, str], None] | None = None
        self.labels: dict[int, str] = {}

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def slots(self) -> int:
        """Jobs to keep in flight: the processes or the cluster's CPUs (1 while jobs lost
        with a dead worker are run again one at a time)."""
        return 1 if self._suspects or self._alone is not None else self._slots

    @property
    def where(self) -> str:
        if self.ray_address is not None:
            return f"Ray cluster {self.ray_address} ({self._slots} CPUs)"
        return "this process" if self.processes == 1 else f"{self.processes} local processes"

    def __enter__(self) -> Runner[J, R]:
        if self.ray_address is not None:
            self._start_ray()
        elif self.processes > 1:
            self._start_pool()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None
        if self._ray is not None and self._ray_started:
            self._ray.shutdown()
        self._ray = None

    def _start_pool(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        self._pool = ProcessPoolExecutor(self.processes, mp_context=ctx)
        self._pool.submit(_start_worker).result()  # fork every worker now, see the class
        if self._want_queue and self._manager is None:
            self._manager = (ctx or mp).Manager()
            self._queue = self._manager.Queue()

    def _start_ray(self) -> None:
        try:
            import ray
        except ImportError:
            raise InputError(f"--ray needs Ray, an optional extra: {RAY_EXTRA}") from None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"logging_level": "WARNING"}
            if self.ray_address == "local":
                kwargs |= {"include_dashboard": False}
            try:
                ray.init(address=self.ray_address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise InputError(f"--ray {self.ray_address}: cannot connect to a Ray cluster: "
                                 f"{exc}") from None
            self._ray_started = True
        self._ray = ray
        self._slots = max(1, int(self._ray.cluster_resources().get("CPU", 1)))
        self._remote = self._ray.remote(num_cpus=1, max_retries=1)(_call)
        if self._want_queue:
            from ray.util.queue import Queue

            self._queue = Queue()

    # -- jobs --------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._running) + len(self._inline) + len(self._suspects)

    def submit(self, job: J, label: str) -> int:
        """Hand ``job`` to the executor; returns its ticket (the order of submission)."""
        ticket = self._tickets
        self._tickets += 1
        self.labels[ticket] = label
        self._dispatch(ticket, job, label)
        return ticket

    def _sink(self, ticket: int) -> Any:
        return _Sink(self._queue, ticket) if self._queue is not None else None

    def _dispatch(self, ticket: int, job: J, label: str) -> None:
        if self._ray is not None:
            ref = self._remote.remote(self.fn, job, self._sink(ticket))
            self._running[ref] = (ticket, job, label)
        elif self._pool is not None:
            try:
                fut = self._pool.submit(_call, self.fn, job, self._sink(ticket))
            except BrokenProcessPool:  # a worker died before its future told us
                self._replace_pool([(ticket, job, label)])
                return
            self._running[fut] = (ticket, job, label)
        else:
            self._inline.append((ticket, job, label))

    def next_done(self) -> tuple[int, Outcome[J, R]]:
        """Block until a job ends; its ticket and outcome. Jobs' progress reports are
        passed to ``on_progress`` meanwhile."""
        if self._inline:
            ticket, job, label = self._inline.pop(0)
            sink = None
            if self.on_progress is not None:
                hook = self.on_progress

                def sink(done: float, total: float, detail: str, _t: int = ticket) -> None:
                    hook(_t, done, total, detail)
            result, error, wall = _call(self.fn, job, sink)
            return ticket, Outcome(job, label, result, error, wall)
        while True:
            if self._suspects and self._alone is None and not self._running:
                ticket, job, label = self._suspects.popleft()
                self._alone = ticket
                self._dispatch(ticket, job, label)
            if not self._running:
                raise RuntimeError("next_done() with no job submitted")
            self._drain()
            if self._ray is not None:
                ready, _ = self._ray.wait(list(self._running), num_returns=1, timeout=POLL_S)
                if ready:
                    return self._ray_outcome(ready[0])
                continue
            done, _ = wait(list(self._running), timeout=POLL_S, return_when=FIRST_COMPLETED)
            for fut in done:
                got = self._pool_outcome(fut)
                if got is not None:
                    return got
                break  # the pool was replaced: wait on the new one

    def _ray_outcome(self, ref: Any) -> tuple[int, Outcome[J, R]]:
        ticket, job, label = self._running.pop(ref)
        try:
            result, error, wall = self._ray.get(ref)
        except Exception as exc:  # the task's worker died twice, or the object was lost
            return ticket, Outcome(job, label, None, f"the Ray task failed: {_describe(exc)}")
        return ticket, Outcome(job, label, result, error, wall)

    def _pool_outcome(self, fut: Future[Any]) -> tuple[int, Outcome[J, R]] | None:
        ticket, job, label = self._running.pop(fut)
        alone, self._alone = self._alone == ticket, None if self._alone == ticket else self._alone
        try:
            result, error, wall = fut.result()
        except BrokenProcessPool:
            # A worker died (killed, out of memory, a crash in native code) and took every
            # job in the pool down with it. A new pool runs them again one at a time.
            if alone:  # it ran alone and its worker died: that job is the cause
                self._replace_pool([])
                return ticket, Outcome(job, label, None, "its worker process died while it "
                                       "ran (killed, out of memory or crashed)")
            self._replace_pool([(ticket, job, label)])
            return None
        return ticket, Outcome(job, label, result, error, wall)

    def _replace_pool(self, lost: list[tuple[int, J, str]]) -> None:
        """A new pool after a worker died; ``lost`` and every job still in the old pool are
        run again one at a time."""
        lost += [self._running.pop(f) for f in list(self._running)]
        self._alone = None  # the probation starts again with every lost job
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._start_pool()
        self._suspects.extend(sorted(lost, key=lambda item: item[0]))

    def _drain(self) -> None:
        if self._queue is None:
            return
        while True:
            try:
                ticket, done, total, detail = self._queue.get_nowait()
            except Exception:  # empty (queue.Empty, ray.util.queue.Empty)
                return
            if self.on_progress is not None:
                self.on_progress(ticket, done, total, detail)


# --------------------------------------------------------------------------- run a list


def run_jobs(fn: Callable[[J], R], jobs: Sequence[J], labels: Sequence[str], *,
             title: str, processes: int | None = None, ray: str | None = None,
             progress: Progress | None = None,
             on_done: Callable[[Outcome[J, R]], None] | None = None,
             job_progress: bool = False) -> list[Outcome[J, R]]:
    """Run every job; their outcomes in the order of ``jobs``.

    A progress bar (into ``progress`` if given, else one of its own on stderr) counts jobs
    as they end and names the last one; with ``job_progress`` each running job that calls
    :func:`report_progress` gets a bar too. A failed job is printed with its label as it
    fails and the others go on."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    out: list[Outcome[J, R] | None] = [None] * len(jobs)
    runner: Runner[J, R] = Runner(fn, processes=processes, ray=ray,
                                  max_jobs=len(jobs) or None, progress_queue=job_progress)
    own = progress is None
    with runner:
        bar = progress or RichProgress(
            TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        with bar if own else contextlib.nullcontext():
            task = bar.add_task(f"{title} ({runner.where})", total=len(jobs))
            per_job: dict[int, Any] = {}
            ended: set[int] = set()

            def on_progress(ticket: int, done: float, total: float, detail: str) -> None:
                if not job_progress or ticket in ended:  # a report read after its job ended
                    return
                if ticket not in per_job:
                    per_job[ticket] = bar.add_task(runner.labels[ticket][:40], total=total)
                text = f"{runner.labels[ticket]} {detail}".strip()[:40]
                bar.update(per_job[ticket], completed=min(done, total), total=total,
                           description=text)

            runner.on_progress = on_progress
            waiting = deque(zip(jobs, labels, strict=True))
            failures = 0
            for _ in range(len(jobs)):
                while waiting and runner.in_flight < runner.slots:
                    runner.submit(*waiting.popleft())
                ticket, outcome = runner.next_done()
                out[ticket] = outcome
                ended.add(ticket)
                if ticket in per_job:
                    bar.remove_task(per_job.pop(ticket))
                if not outcome.ok:
                    failures += 1
                    first = (outcome.error or "").splitlines()[0]
                    bar.console.print(f"[red]failed:[/] {outcome.label}: {first}",
                                      markup=True, highlight=False, soft_wrap=True)
                bar.update(task, advance=1, description=(
                    f"{title}: {outcome.label}"[:40] if not failures
                    else f"{title}: {failures} failed"))
                if on_done is not None:
                    on_done(outcome)
    return [o for o in out if o is not None]


# --------------------------------------------------------------------------- simulations


@dataclass(frozen=True)
class WorkloadRef:
    """A workload by the arguments of :func:`~aiops.sim.workloads.resolve_workload`, so a
    job can name it cheaply and every process builds the same one (seeded)."""

    spec: str
    rate_scale: float = 1.0
    time_scale: float = 1.0
    duration: float | None = None
    seed: int = 0

    def load(self) -> Workload | RequestStream:
        """Built once per process (a small LRU: a sweep's jobs reuse a few workloads); a
        ServeGen folder as a stream, anything else in memory."""
        cached = _WORKLOADS.get(self)
        if cached is None:
            from aiops.sim.workloads import resolve_source

            cached = resolve_source(self.spec, rate_scale=self.rate_scale,
                                      time_scale=self.time_scale, duration=self.duration,
                                      seed=self.seed)
            _WORKLOADS[self] = cached
            while len(_WORKLOADS) > WORKLOAD_CACHE:
                _WORKLOADS.popitem(last=False)
        else:
            _WORKLOADS.move_to_end(self)
        return cached


WORKLOAD_CACHE = 8
"""Workloads kept per process: a benchmark's handful, not a Ray worker's whole history."""

_WORKLOADS: OrderedDict[WorkloadRef, Workload | RequestStream] = OrderedDict()


@dataclass(frozen=True)
class SimJob:
    """One policy on one workload with one setup: a run of a benchmark sweep."""

    workload: WorkloadRef
    spec: str
    setup: EvalSetup
    ppo_dir: str | None = None


def run_sim_job(job: SimJob) -> dict[str, Any]:
    """The run's ``SimResult.as_dict()`` row with its ``spec`` and ``wall_s``; a spec that
    does not build (an unknown policy, a missing model) is ``{"spec", "error"}``."""
    from aiops.policy import make_policy
    from aiops.policy.base import PolicySpec
    from aiops.sim.runner import peak_replicas
    from aiops.train.evaluate import EvalWorkload, run_on

    t0 = time.perf_counter()
    w = job.workload.load()
    setup = job.setup
    ctx = setup.context(w)
    extras: dict[str, Any] = {"ppo_default_dir": job.ppo_dir} if job.ppo_dir else {}
    try:
        policy = make_policy(PolicySpec.parse(job.spec), ctx,
                             peak_replicas=peak_replicas(w, ctx), workload=w,
                             profile=setup.profile, slo=setup.slo, **extras)
    except InputError as err:
        return {"spec": job.spec, "error": str(err)}
    # A hindsight plan brings its own starting fleet; every other policy starts alike.
    result = run_on(policy, EvalWorkload(job.workload.spec, w), setup,
                    start=getattr(policy, "start_replicas", None))
    return {"spec": job.spec, **result.as_dict(), "wall_s": round(time.perf_counter() - t0, 2)}


# --------------------------------------------------------------------------- recommend


def prometheus_source(config: Config) -> Any:
    """The history source ``aiops recommend`` reads: the config's Prometheus."""
    from aiops.clock import WallClock
    from aiops.ingest.prometheus import PrometheusSource

    return PrometheusSource(config.prometheus, WallClock(),
                            rate_window_s=config.prometheus.rate_window_s)


@dataclass(frozen=True)
class RecommendJob:
    """One target of ``aiops recommend --config``: its history read and replayed where the
    job runs (so Prometheus must be reachable from there). ``source`` builds the history
    source there (an importable function: tests give a stub)."""

    config: Config
    target: str
    since_s: float
    now: float
    over: Overrides  # the command line's changes to every target
    source: Callable[[Config], Any] = prometheus_source


def run_recommend_job(job: RecommendJob) -> Report:
    """:func:`~aiops.report.build.report_from_prometheus` for one target."""
    from aiops.report.build import report_from_prometheus

    cfg = job.config.model_copy(update={"targets": [t for t in job.config.targets
                                                    if t.name == job.target]})
    source = job.source(cfg)

    def progress(target: str, row: str, done: float, total: float) -> None:
        report_progress(done, total, row)

    try:
        return report_from_prometheus(cfg, source, since_s=job.since_s, now=job.now,
                                      over=job.over, progress=progress)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def recommend_targets(config: Config, *, since_s: float, now: float,
                      processes: int | None = None, ray: str | None = None,
                      progress: Progress | None = None,
                      source: Callable[[Config], Any] = prometheus_source,
                      over: Overrides | None = None) -> Report:
    """The report of every target of ``config``, one job per target (see
    :func:`run_recommend_job`), assembled as :func:`report_from_prometheus` would: targets
    in the config's order, a target whose job failed reported as an error section."""
    from aiops.report.build import Overrides as _Overrides
    from aiops.report.model import STATUS_ERROR, Report, TargetReport

    over = over or _Overrides()
    jobs = [RecommendJob(config, t.name, since_s, now, over, source)
            for t in config.targets]
    outcomes = run_jobs(run_recommend_job, jobs, [f"target {t.name}" for t in
                                                  config.targets],
                        title="targets", processes=processes, ray=ray, progress=progress,
                        job_progress=True)
    targets: list[TargetReport] = []
    first: Report | None = None
    for t, o in zip(config.targets, outcomes, strict=True):
        if o.result is not None and o.result.targets:
            first = first or o.result
            targets.extend(o.result.targets)
        else:
            targets.append(TargetReport(name=t.name, key=t.key, status=STATUS_ERROR,
                                        message=(o.error or "no report").splitlines()[0]))
    if first is None:  # every job failed: the frame of the report from the config alone
        first = Report(generated_unix=time.time(), mode="prometheus",
                       source=config.prometheus.url, targets=(), since_s=since_s,
                       settings={"policy": over.policy})
    return replace(first, targets=tuple(targets))


# --------------------------------------------------------------------------- training


def parse_seeds(text: str) -> list[int]:
    """``0-3`` -> [0, 1, 2, 3]; ``1,4,7``; ``0-1,5``. Seeds are integers >= 0."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise InputError(f"--seeds {text!r}: expected a range like 0-3 or a list like "
                             "1,4,7") from None
        if a < 0 or b < a:
            raise InputError(f"--seeds {text!r}: {part.strip()!r} needs 0 <= first <= last")
        seeds += range(a, b + 1)
    if len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds {text!r} names a seed twice")
    return seeds


def seed_dir(output: Path, seed: int) -> Path:
    return output / f"seed-{seed}"


def run_train_job(cfg: TrainConfig) -> dict[str, Any]:
    """:func:`~aiops.train.ppo.train_ppo` for one seed, into ``cfg.output`` where it runs;
    returns the model's bytes and the meta so the caller can write them where it runs."""
    from aiops.policy.ppo import META_FILE, MODEL_FILE
    from aiops.train.ppo import train_ppo

    def progress(n: int, fields: dict[str, Any]) -> None:
        best = fields.get("best_usd")
        report_progress(n, cfg.timesteps, "" if best is None else f"best ${best:.2f}")

    report = train_ppo(cfg, progress=progress)
    return {"meta": report.meta,
            "model": (cfg.output / MODEL_FILE).read_bytes(),
            "meta_text": (cfg.output / META_FILE).read_text(encoding="utf-8"),
            "wall_s": report.wall_s, "steps_per_s": report.steps_per_s}


@dataclass(frozen=True)
class SeedSweep:
    """What ``aiops train --seeds`` did: each seed's key under the held-out rule, the seed
    kept, and the failures."""

    kept: int
    keys: dict[int, tuple[float, float, float]]
    metas: dict[int, dict[str, Any]]
    failed: dict[int, str]


def train_seeds(cfg: TrainConfig, seeds: Sequence[int], *, processes: int | None = None,
                ray: str | None = None) -> SeedSweep:
    """Train ``cfg`` once per seed (``OUTPUT/seed-N``), keep the best by the rule that picks
    checkpoints within a run (:func:`~aiops.train.ppo.selection_key` on each seed's kept
    checkpoint's held-out rows, ``--select`` and ``--slo-target`` as given) and copy it to
    ``OUTPUT``; ``OUTPUT/seeds.json`` records every seed's score and the choice. Each seed's
    ``meta.json`` holds the command that reproduces it (its own ``--seed`` and directory)."""
    import json

    from aiops.policy.ppo import META_FILE, MODEL_FILE
    from aiops.sim.profiles import load_profile
    from aiops.train.evaluate import load_eval_workloads
    from aiops.train.mix import WorkloadMix
    from aiops.train.ppo import reference_scores, selection_key

    # A bad file or profile is the user's input: say so once, before any seed starts.
    load_profile(cfg.profile)
    load_eval_workloads(cfg.eval_workloads)
    WorkloadMix(cfg.workloads, cfg.mix)
    jobs = [replace(cfg, seed=s, output=seed_dir(cfg.output, s)) for s in seeds]
    outcomes = run_jobs(run_train_job, jobs, [f"seed {s}" for s in seeds], title="seeds",
                        processes=processes, ray=ray, job_progress=True)
    keys: dict[int, tuple[float, float, float]] = {}
    metas: dict[int, dict[str, Any]] = {}
    failed: dict[int, str] = {}
    for s, job, o in zip(seeds, jobs, outcomes, strict=True):
        if o.result is None:
            failed[s] = o.error or "no result"
            continue
        job.output.mkdir(parents=True, exist_ok=True)
        (job.output / MODEL_FILE).write_bytes(o.result["model"])
        (job.output / META_FILE).write_text(o.result["meta_text"], encoding="utf-8")
        meta = o.result["meta"]
        table = meta["evaluation"]["table"]
        rows = {spec: r["ppo"] for spec, r in table.items() if "ppo" in r}
        reference = reference_scores(table) if cfg.selection == "relative" else None
        keys[s] = selection_key(rows, cfg.reward.slo_target, reference)
        metas[s] = meta
    if not keys:
        raise InputError("every seed failed: " + "; ".join(
            f"seed {s}: {e.splitlines()[0]}" for s, e in failed.items()))
    kept = min(keys, key=lambda s: (keys[s], s))
    for name in (MODEL_FILE, META_FILE):
        (cfg.output / name).write_bytes((seed_dir(cfg.output, kept) / name).read_bytes())
    record = {"rule": ("selection_key: " + (f"--slo-target {cfg.reward.slo_target:g}"
                                            if cfg.reward.slo_target is not None
                                            else f"--select {cfg.selection}")),
              "kept": kept,
              "seeds": {str(s): {"key": list(k), "dir": str(seed_dir(cfg.output, s)),
                                 "command": metas[s]["command"]} for s, k in keys.items()},
              "failed": {str(s): e for s, e in failed.items()}}
    (cfg.output / "seeds.json").write_text(json.dumps(record, indent=2) + "\n")
    return SeedSweep(kept, keys, metas, failed)

