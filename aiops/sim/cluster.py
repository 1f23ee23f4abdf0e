"""A simulated deployment of one LLM model server with continuous batching.

``ClusterSim`` is the embedded cluster: the simulator's ``aiops simulate``, the gym
environment the PPO agent trains in, and the daemon's ``sim`` backend all drive it. It keeps
what Kubernetes would keep (replicas starting, ready, draining; the pod template's batch
size) in Python, and hands the per-request work to the compiled kernel in ``kernel.py``.

What it models, and why:

* New replicas become ready after the profile's cold start; until then they cost money and
  serve nothing — the reason reactive autoscalers are late on GPU fleets.
* Removed replicas drain: their running requests finish, nothing is dropped, and they cost
  until the last one is done. Replicas still starting are removed first, as the ReplicaSet
  controller deletes not-ready pods first.
* A batch-size change (``--max-num-seqs``) is a rolling update with maxSurge 25% and
  maxUnavailable 0: new pods at the new size start, and an old one drains each time a new
  one is ready. Changing the batch size is therefore not free, as on a real cluster.
* Cost is GPU-seconds of every replica that exists (starting, ready or draining).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from aiops.sim import kernel as kn
from aiops.sim.profiles import Profile
from aiops.sim.workloads import Workload
from aiops.types import FloatArray, Snapshot

# Histogram buckets (seconds) of vLLM's TTFT and TPOT metrics, so simulated scrapes look real.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


@dataclass(frozen=True)
class SloSpec:
    """Per-request service-level objective (defaults: interactive chat/code completion)."""

    ttft_s: float = 0.5
    tpot_s: float = 0.05


def feasible_mask(profile: Profile, context_tokens: npt.ArrayLike,
                  slo: SloSpec | None = None) -> npt.NDArray[np.bool_]:
    """Which requests could meet the SLO at all: served alone on an idle, ready replica.

    A prompt whose prefill alone (``ttft_overhead_s + context / prefill_tokens_per_s``)
    outlasts the TTFT objective misses it on any fleet, however large; so does every request
    when the decode step's fixed cost (``decode_t0_s``, the kernel's floor on TPOT) is above
    the TPOT objective. SLO attainment "over feasible requests" is measured over this mask:
    the target a scaler can reach. A request outside it can never meet the SLO in the
    simulator, so the attainment over all requests is never above the feasible one.
    """
    slo = slo or SloSpec()
    ctx = np.asarray(context_tokens, dtype=np.float64)
    prefill_ok = profile.ttft_overhead_s + ctx / profile.prefill_tokens_per_s <= slo.ttft_s
    mask: npt.NDArray[np.bool_] = prefill_ok & (profile.decode_t0_s <= slo.tpot_s)
    return mask


@dataclass
class _Draining:
    end: float


@dataclass
class _Starting:
    ready_at: float
    batch: int


@dataclass(frozen=True)
class SimResult:
    """The figures ``aiops simulate`` prints for one policy."""

    requests: int
    gpu_hours: float
    cost_usd: float
    slo_attainment: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p99_s: float
    scale_ups: int
    scale_downs: int
    max_replicas: int
    unfinished: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    # Attainment over the requests that could meet the SLO on an idle replica
    # (:func:`feasible_mask`), and how many could not (they count as missed above).
    slo_attainment_feasible: float = 1.0
    infeasible_requests: int = 0

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "gpu_hours": round(self.gpu_hours, 4),
            "cost_usd": round(self.cost_usd, 2),
            "slo_attainment": round(self.slo_attainment, 5),
            "slo_attainment_feasible": round(self.slo_attainment_feasible, 5),
            "infeasible_requests": self.infeasible_requests,
            "ttft_p50_s": round(self.ttft_p50_s, 4),
            "ttft_p99_s": round(self.ttft_p99_s, 4),
            "tpot_p99_s": round(self.tpot_p99_s, 5),
            "scale_ups": self.scale_ups,
            "scale_downs": self.scale_downs,
            "max_replicas": self.max_replicas,
            "requests": self.requests,
        }
        if self.unfinished:
            out["unfinished"] = self.unfinished
        return out


class ClusterSim:
    """One simulated Deployment serving one workload. Time starts at 0 (workload time)."""

    def __init__(
        self,
        profile: Profile,
        workload: Workload,
        *,
        replicas: int,
        batch_size: int | None = None,
        dt: float = 0.5,
        slo: SloSpec | None = None,
        time_offset: float = 0.0,
    ) -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        self.profile = profile
        self.workload = workload
        self.slo = slo or SloSpec()
        self.dt = float(dt)
        self.time_offset = time_offset  # added to snapshot times (a trace's real clock)
        self.batch_size = batch_size or profile.default_batch_size
        if self.batch_size not in profile.batch_sizes:
            raise ValueError(
                f"batch size {self.batch_size} is not one of {list(profile.batch_sizes)}"
            )
        n = len(workload)
        self._arr = np.ascontiguousarray(workload.arrivals, dtype=np.float64)
        self._ctx = np.ascontiguousarray(workload.context_tokens, dtype=np.float64)
        self._feasible = feasible_mask(profile, self._ctx, self.slo)
        self._gen = np.ascontiguousarray(np.maximum(workload.generated_tokens, 1), dtype=np.float64)
        # A request that could never fit one replica's KV cache is truncated to fit, as a
        # real server rejects or truncates it; otherwise it would block the queue forever.
        self._need = np.minimum(self._ctx + self._gen, 0.95 * profile.kv_cache_tokens)
        self.start = np.full(n, np.nan)
        self.ttft = np.full(n, np.nan)
        self.tpot = np.full(n, np.nan)
        self.done = np.full(n, np.nan)
        self._st = np.zeros(kn.ST_SIZE)
        longest = float(
            profile.ttft_overhead_s
            + (self._ctx.max() / profile.prefill_tokens_per_s if n else 0.0)
            + (self._gen.max() if n else 1.0) * profile.step_time(max(profile.batch_sizes)) * 2.0
        )
        size = kn.ring_size(self.dt, longest)
        self._ring_done = np.zeros(size)
        self._ring_kv = np.zeros(size)
        self._ring_gen = np.zeros(size)
        self._prof = np.array([profile.decode_t0_s, profile.decode_k_s,
                               profile.prefill_tokens_per_s, profile.ttft_overhead_s])
        self._ready: list[int] = [self.batch_size] * replicas
        self._desired = replicas
        self._starting: list[_Starting] = []
        self._draining: list[_Draining] = []
        self.gpu_seconds = 0.0
        self.scale_ups = 0
        self.scale_downs = 0
        self.max_replicas = replicas
        self._last_bins = np.zeros((0, kn.B_COLS))
        self._window_qhead = 0
        self._hist_upto = 0
        self._ttft_hist = np.zeros(len(TTFT_BUCKETS) + 1)
        self._tpot_hist = np.zeros(len(TPOT_BUCKETS) + 1)
        self._ttft_sum = 0.0
        self._tpot_sum = 0.0

    # ----------------------------------------------------------------- state
    @property
    def time(self) -> float:
        return float(self._st[kn.ST_BIN]) * self.dt

    @property
    def desired_replicas(self) -> int:
        """spec.replicas: pods the Deployment asks for (a rollout's surge not included)."""
        return self._desired

    @property
    def ready_replicas(self) -> int:
        return len(self._ready)

    @property
    def starting_replicas(self) -> int:
        return len(self._starting)

    @property
    def draining_replicas(self) -> int:
        return len(self._draining)

    @property
    def requests_waiting(self) -> int:
        return int(self._st[kn.ST_ARRIVED] - self._st[kn.ST_QHEAD])

    @property
    def requests_running(self) -> float:
        return float(self._st[kn.ST_RUNNING])

    @property
    def finished(self) -> bool:
        """All requests arrived, admitted and completed."""
        return (
            int(self._st[kn.ST_QHEAD]) >= len(self._arr)
            and self._st[kn.ST_RUNNING] < 1e-6
            and not self._draining_work()
        )

    def _draining_work(self) -> bool:
        return any(d.end > self.time for d in self._draining)

    # ------------------------------------------------------------ actuation
    def scale(self, replicas: int) -> None:
        """Set spec.replicas, as the scale subresource does."""
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        current = self.desired_replicas
        self._desired = replicas
        if replicas > current:
            self.scale_ups += 1
            for _ in range(replicas - current):
                self._starting.append(_Starting(self.time + self.profile.cold_start_s,
                                                self.batch_size))
        elif replicas < current:
            self.scale_downs += 1
            self._remove(current - replicas)
        self.max_replicas = max(self.max_replicas, len(self._ready) + len(self._starting))

    def set_batch_size(self, batch: int) -> None:
        """Change ``--max-num-seqs`` in the pod template: starts a rolling update."""
        if batch not in self.profile.batch_sizes:
            raise ValueError(f"batch size {batch} is not one of {list(self.profile.batch_sizes)}")
        if batch == self.batch_size:
            return
        self.batch_size = batch
        # Pods not ready yet are recreated at once with the new template.
        for s in self._starting:
            s.batch = batch
        self._progress_rollout()

    def _remove(self, count: int) -> None:
        # Newest starting pods go first, then old-template ready pods, then the newest ready.
        while count > 0 and self._starting:
            self._starting.pop()
            count -= 1
        if count <= 0 or not self._ready:
            return
        count = min(count, len(self._ready))
        self._ready.sort(key=lambda b: b == self.batch_size)  # old template first
        self._drain(count)
        del self._ready[:count]

    def _drain(self, count: int) -> None:
        """Move ``count`` ready replicas' share of running work into draining replicas."""
        ready = len(self._ready)
        frac = count / ready
        end = self.time
        nz = np.nonzero(self._ring_done)[0]
        if nz.size and self._st[kn.ST_RUNNING] > 1e-9:
            b = int(self._st[kn.ST_BIN])
            offs = (nz - b) % self._ring_done.shape[0]
            end = (b + int(offs.max()) + 1) * self.dt
        keep = 1.0 - frac
        self._ring_done *= keep
        self._ring_kv *= keep
        self._ring_gen *= keep
        self._st[kn.ST_RUNNING] *= keep
        self._st[kn.ST_KV] *= keep
        for _ in range(count):
            self._draining.append(_Draining(end))

    def _progress_rollout(self) -> None:
        """maxSurge 25%, maxUnavailable 0: surge new pods, drain old ones as new ones are ready."""
        desired = self.desired_replicas
        old_ready = sum(1 for b in self._ready if b != self.batch_size)
        if old_ready == 0:
            return
        new_ready = len(self._ready) - old_ready
        surge = max(1, math.ceil(0.25 * desired))
        # Drain old pods while the total ready stays >= desired.
        excess = len(self._ready) - desired
        if excess > 0 and new_ready > 0:
            n = min(excess, old_ready)
            self._ready.sort(key=lambda b: b == self.batch_size)
            self._drain(n)
            del self._ready[:n]
            old_ready -= n
        total = len(self._ready) + len(self._starting)
        room = desired + surge - total
        needed_new = old_ready - len(self._starting)
        for _ in range(max(0, min(room, needed_new))):
            self._starting.append(_Starting(self.time + self.profile.cold_start_s, self.batch_size))
        self.max_replicas = max(self.max_replicas, len(self._ready) + len(self._starting))

    # ------------------------------------------------------------- advance
    def step(self, seconds: float) -> None:
        """Advance the simulation by ``seconds`` (rounded to whole bins)."""
        nbins = max(1, round(seconds / self.dt))
        bins = np.empty((nbins, kn.B_COLS))
        self._window_qhead = int(self._st[kn.ST_QHEAD])
        done = 0
        while done < nbins:
            t = self.time
            # Replica events at or before now.
            if self._starting and min(s.ready_at for s in self._starting) <= t + 1e-9:
                now_ready = [s for s in self._starting if s.ready_at <= t + 1e-9]
                self._starting = [s for s in self._starting if s.ready_at > t + 1e-9]
                self._ready.extend(s.batch for s in now_ready)
                self._progress_rollout()
            if self._draining:
                self._draining = [d for d in self._draining if d.end > t + 1e-9]
            # Run until the next replica event or the end of the step.
            chunk = nbins - done
            if self._starting:
                nxt = min(s.ready_at for s in self._starting)
                chunk = min(chunk, max(1, math.ceil((nxt - t) / self.dt - 1e-9)))
            if self._draining:
                nxt = min(d.end for d in self._draining)
                chunk = min(chunk, max(1, math.ceil((nxt - t) / self.dt - 1e-9)))
            self._run(chunk, bins[done:done + chunk])
            done += chunk
        self._last_bins = bins

    def _run(self, nbins: int, out: np.ndarray) -> None:
        ready = len(self._ready)
        slots = float(sum(self._ready))
        kvcap = ready * self.profile.kv_cache_tokens
        pods = ready + len(self._starting) + len(self._draining)
        self.gpu_seconds += pods * self.profile.gpus_per_replica * nbins * self.dt
        kn.advance(nbins, self.dt, self._arr, self._ctx, self._gen, self._need,
                  self.start, self.ttft, self.tpot, self.done, self._st,
                  self._ring_done, self._ring_kv, self._ring_gen,
                  float(ready), slots, float(kvcap), self._prof, out)

    def finish(self, max_seconds: float = 3600.0, step: float = 15.0) -> None:
        """Keep running after the workload ends until every request is served (bounded)."""
        limit = self.time + max_seconds
        while not self.finished and self.time < limit:
            self.step(step)

    # ------------------------------------------------------------ observe
    def snapshot(self) -> Snapshot:
        """What Prometheus would show about the last step (sums over ready pods)."""
        bins = self._last_bins
        window = max(len(bins), 1) * self.dt
        qhead = int(self._st[kn.ST_QHEAD])
        ready = len(self._ready)
        if len(bins):
            arrived = bins[:, kn.B_ARRIVED].sum()
            prompt = bins[:, kn.B_PROMPT_TOKENS].sum()
            gen = bins[:, kn.B_GEN_TOKENS].sum()
        else:
            arrived = prompt = gen = 0.0
        ttft50, ttft99 = kn.window_quantiles(self.ttft, self._window_qhead, qhead, 0.5, 0.99)
        _, tpot99 = kn.window_quantiles(self.tpot, self._window_qhead, qhead, 0.5, 0.99)
        kv = self._st[kn.ST_KV] / (ready * self.profile.kv_cache_tokens) if ready else 0.0
        return Snapshot(
            time=self.time + self.time_offset,
            replicas=self.desired_replicas,
            ready_replicas=ready,
            batch_size=self.batch_size,
            requests_running=float(self._st[kn.ST_RUNNING]),
            requests_waiting=float(self.requests_waiting),
            kv_cache_usage=float(min(kv, 1.0)),
            arrival_rate=float(arrived / window),
            prompt_tokens_rate=float(prompt / window),
            generation_tokens_rate=float(gen / window),
            ttft_p50=float(ttft50),
            ttft_p99=float(ttft99),
            tpot_p99=float(tpot99),
            starting_replicas=len(self._starting),
        )

    def window_slo(self) -> tuple[int, int]:
        """Feasible requests (:func:`feasible_mask`) admitted during the last step, and how
        many of them missed the SLO. The infeasible ones miss whatever the fleet does, so
        they carry no signal for a scaler being trained — only noise."""
        lo, hi = self._window_qhead, int(self._st[kn.ST_QHEAD])
        if hi <= lo:
            return 0, 0
        feasible = self._feasible[lo:hi]
        miss = (self.ttft[lo:hi] > self.slo.ttft_s) | (self.tpot[lo:hi] > self.slo.tpot_s)
        return int(np.count_nonzero(feasible)), int(np.count_nonzero(miss & feasible))

    def unserved(self) -> int:
        """Requests that have arrived (or are still to arrive) and were never admitted."""
        return len(self._arr) - int(self._st[kn.ST_QHEAD])

    def prometheus_metrics(self) -> dict[str, float | dict[str, float]]:
        """Cumulative vLLM and kube-state-metrics series as a scrape would see them.

        Histograms are ``{"le": count}`` maps (cumulative, with ``+Inf``), names as vLLM
        exports them, so the daemon's queries run unchanged against the simulator.
        """
        qhead = int(self._st[kn.ST_QHEAD])
        if qhead > self._hist_upto:
            sl = slice(self._hist_upto, qhead)
            tt = self.ttft[sl]
            tp = self.tpot[sl]
            self._ttft_hist += np.bincount(np.searchsorted(TTFT_BUCKETS, tt),
                                           minlength=len(TTFT_BUCKETS) + 1)
            self._tpot_hist += np.bincount(np.searchsorted(TPOT_BUCKETS, tp),
                                           minlength=len(TPOT_BUCKETS) + 1)
            self._ttft_sum += float(tt.sum())
            self._tpot_sum += float(tp.sum())
            self._hist_upto = qhead
        ready = len(self._ready)
        completed = int(np.count_nonzero(self.done[:qhead] <= self.time))
        kv = self._st[kn.ST_KV] / (ready * self.profile.kv_cache_tokens) if ready else 0.0

        def cumulative(buckets: tuple[float, ...], hist: FloatArray) -> dict[str, float]:
            c = np.cumsum(hist)
            out = {repr(float(b)): float(c[i]) for i, b in enumerate(buckets)}
            out["+Inf"] = float(c[-1])
            return out

        return {
            "vllm:num_requests_running": float(self._st[kn.ST_RUNNING]),
            "vllm:num_requests_waiting": float(self.requests_waiting),
            "vllm:kv_cache_usage_perc": float(min(kv, 1.0)),
            "vllm:gpu_cache_usage_perc": float(min(kv, 1.0)),
            "vllm:request_success_total": float(completed),
            "vllm:prompt_tokens_total": float(self._ctx[:qhead].sum()),
            "vllm:generation_tokens_total": float(
                self._gen[:qhead][self.done[:qhead] <= self.time].sum()),
            "vllm:time_to_first_token_seconds_bucket": cumulative(TTFT_BUCKETS, self._ttft_hist),
            "vllm:time_to_first_token_seconds_sum": self._ttft_sum,
            "vllm:time_to_first_token_seconds_count": float(self._ttft_hist.sum()),
            "vllm:time_per_output_token_seconds_bucket": cumulative(TPOT_BUCKETS, self._tpot_hist),
            "vllm:time_per_output_token_seconds_sum": self._tpot_sum,
            "vllm:time_per_output_token_seconds_count": float(self._tpot_hist.sum()),
            "kube_deployment_spec_replicas": float(self.desired_replicas),
            "kube_deployment_status_replicas_ready": float(ready),
            "kube_deployment_status_replicas": float(ready + len(self._starting)),
        }

    def result(self) -> SimResult:
        """Per-request accounting over the whole workload."""
        n = len(self._arr)
        served = ~np.isnan(self.ttft)
        unfinished = int(n - served.sum())
        ok = served & (self.ttft <= self.slo.ttft_s) & (self.tpot <= self.slo.tpot_s)
        # A request that was never served missed its SLO: nothing is silently dropped.
        attainment = float(ok.sum() / n) if n else 1.0
        feasible = self._feasible
        n_feasible = int(feasible.sum())
        attainment_feasible = float((ok & feasible).sum() / n_feasible) if n_feasible else 1.0
        tt = self.ttft[served]
        tp = self.tpot[served]
        ttft50 = float(np.quantile(tt, 0.5)) if tt.size else math.nan
        ttft99 = float(np.quantile(tt, 0.99)) if tt.size else math.nan
        tpot99 = float(np.quantile(tp, 0.99)) if tp.size else math.nan
        if unfinished:
            ttft99 = math.inf
        gpu_hours = self.gpu_seconds / 3600.0
        return SimResult(
            requests=n,
            gpu_hours=gpu_hours,
            cost_usd=gpu_hours * self.profile.gpu_hour_usd,
            slo_attainment=attainment,
            ttft_p50_s=ttft50,
            ttft_p99_s=ttft99,
            tpot_p99_s=tpot99,
            scale_ups=self.scale_ups,
            scale_downs=self.scale_downs,
            max_replicas=self.max_replicas,
            unfinished=unfinished,
            slo_attainment_feasible=attainment_feasible,
            infeasible_requests=n - n_feasible,
        )
