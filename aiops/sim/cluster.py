"""A simulated Deployment of one LLM model server: replicas, their lifecycle, and the metrics.

``ClusterSim`` is the embedded cluster: ``aiops simulate``, the gym environment the PPO agent
trains in, the oracle and the daemon's ``sim`` backend all drive it. It keeps what Kubernetes
would keep (pods starting, ready, draining; the pod template's batch size) in Python and hands
the servers' work — every replica, iteration by iteration — to the compiled kernel in
``kernel.py``.

What it models, and why:

* New replicas become ready after the profile's cold start; until then they cost money and
  serve nothing — the reason reactive autoscalers are late on GPU fleets.
* Removed replicas drain: the router stops sending them requests, they finish what they hold
  (queued requests included: those are in-flight HTTP requests), and cost until they do.
  Replicas still starting are removed first, as the ReplicaSet controller deletes not-ready
  pods first; then pods of an old template, then the newest.
* A batch-size change (``--max-num-seqs``) is a rolling update with maxSurge 25% and
  maxUnavailable 0: new pods at the new size start, and an old one drains each time a new
  one is ready. Changing the batch size is therefore not free, as on a real cluster.
* Requests that arrive while no replica is ready wait at the gateway and are routed when one
  becomes ready.
* Cost is GPU-seconds of every pod that exists (starting, ready or draining).

Memory does not grow with the length of a replay: requests come from a
:class:`~aiops.sim.stream.RequestStream` window by window into a ring buffer, finished
requests are folded into counters and streaming quantile sketches (DDSketch, within 0.2 % at
any percentile, deterministic; see ``summary.py``), and only an in-memory
``Workload`` keeps per-request results (``keep_requests``) for tests and the oracle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from aiops.sim import kernel as kn
from aiops.sim.profiles import ROUTINGS, Profile
from aiops.sim.stream import DEFAULT_CHUNK_S, Chunk, RequestStream, as_stream
from aiops.sim.summary import LatencySketch
from aiops.sim.workloads import Workload
from aiops.types import FloatArray, Snapshot

# Histogram buckets (seconds) of vLLM's TTFT and TPOT metrics, so simulated scrapes look real.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
PROMPT_BUCKETS = tuple(float(m * 10 ** k) for k in range(5) for m in (1, 2, 5))
"""vLLM's prompt-length buckets (1, 2, 5, 10, ... tokens: its 1-2-5 series)."""

LOG_ROWS = 1 << 16
"""Rows of the kernel's completion and first-token logs: drained into the sketches when full
or when results are read, so a 15-second step costs no Python work per request."""

RING_ROWS = 1 << 16
"""Initial rows of the request ring (~6 MB): five minutes of a 200 requests/s service."""

LOAD_AHEAD_S = 300.0
"""Requests are loaded into the ring this far ahead of the simulated time, in one batch, so the
per-request work of loading happens once per five simulated minutes, not once per step."""

STATS_BIN_S = 15.0
"""Width of the per-arrival-time attainment bins the oracle plans with (one decision)."""


@dataclass(frozen=True)
class SloSpec:
    """Per-request service-level objective (defaults: interactive chat/code completion)."""

    ttft_s: float = 0.5
    tpot_s: float = 0.05


def feasible_mask(profile: Profile, context_tokens: npt.ArrayLike,
                  slo: SloSpec | None = None,
                  generated_tokens: npt.ArrayLike | None = None) -> npt.NDArray[np.bool_]:
    """Which requests could meet the SLO at all: served alone on an idle, ready replica.

    A prompt whose prefill alone (the API overhead plus its chunks on an idle replica)
    outlasts the TTFT objective misses it on any fleet, however large; so does a request
    whose decode step with nothing else in the batch is above the TPOT objective. SLO
    attainment "over feasible requests" is measured over this mask: the target a scaler can
    reach. Every figure (simulate, the oracle, the bench, training) uses this one definition.
    """
    slo = slo or SloSpec()
    ctx = np.asarray(context_tokens, dtype=np.float64)
    gen = (np.ones_like(ctx) if generated_tokens is None
           else np.asarray(generated_tokens, dtype=np.float64))
    ttft_ok = profile.idle_ttft(ctx) <= slo.ttft_s
    tpot = profile.iteration.decode_step(1.0, ctx + 0.5 * gen)
    tpot_ok = (gen <= 1.0) | (tpot <= slo.tpot_s)
    mask: npt.NDArray[np.bool_] = np.asarray(ttft_ok & tpot_ok)
    return mask


def _exact(x: FloatArray, qs: tuple[float, ...]) -> list[float]:
    """``np.quantile(x, qs)`` (linear interpolation) with one partition instead of a sort."""
    n = x.size
    if n == 0:
        return [math.nan] * len(qs)
    pos = [q * (n - 1) for q in qs]
    kth = sorted({math.floor(p) for p in pos} | {min(math.floor(p) + 1, n - 1) for p in pos})
    part = np.partition(x, kth)
    out = []
    for p in pos:
        lo = math.floor(p)
        hi = min(lo + 1, n - 1)
        out.append(float(part[lo] + (p - lo) * (part[hi] - part[lo])))
    return out


@dataclass
class _Pod:
    """One pod of the Deployment. ``slot`` is its replica index in the kernel once ready."""

    batch: int
    created: float
    ready_at: float
    state: str = "starting"  # starting | ready | draining | gone
    slot: int = -1
    ended: float = math.inf


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
    ttft_p90_s: float = math.nan
    tpot_p50_s: float = math.nan
    preemptions: int = 0

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "gpu_hours": round(self.gpu_hours, 4),
            "cost_usd": round(self.cost_usd, 2),
            "slo_attainment": round(self.slo_attainment, 5),
            "slo_attainment_feasible": round(self.slo_attainment_feasible, 5),
            "infeasible_requests": self.infeasible_requests,
            "ttft_p50_s": round(self.ttft_p50_s, 4),
            "ttft_p90_s": round(self.ttft_p90_s, 4),
            "ttft_p99_s": round(self.ttft_p99_s, 4),
            "tpot_p50_s": round(self.tpot_p50_s, 5),
            "tpot_p99_s": round(self.tpot_p99_s, 5),
            "scale_ups": self.scale_ups,
            "scale_downs": self.scale_downs,
            "max_replicas": self.max_replicas,
            "requests": self.requests,
            "preemptions": self.preemptions,
        }
        if self.unfinished:
            out["unfinished"] = self.unfinished
        return out


class ClusterSim:
    """One simulated Deployment serving one workload. Time starts at 0 (workload time).

    ``keep_requests`` (default: on for an in-memory Workload, off for a stream) keeps every
    request's TTFT, TPOT and finish time in arrays indexed like the workload (``ttft``,
    ``tpot``, ``done``); without it, memory stays bounded however long the replay.
    ``routing`` (one of :data:`~aiops.sim.profiles.ROUTINGS`) overrides the profile's.
    ``tpot`` is NaN for a request with a single output token (it never decodes).
    """

    def __init__(
        self,
        profile: Profile,
        workload: Workload | RequestStream,
        *,
        replicas: int,
        batch_size: int | None = None,
        slo: SloSpec | None = None,
        time_offset: float = 0.0,
        keep_requests: bool | None = None,
        routing: str | None = None,
        chunk_s: float = DEFAULT_CHUNK_S,
        stats_bin_s: float = STATS_BIN_S,
    ) -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        routing = routing or profile.routing
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, got {routing!r}")
        self.profile = profile
        self.stream = as_stream(workload)
        self.workload = workload
        self.duration = float(self.stream.duration)
        self.slo = slo or SloSpec()
        self.time_offset = time_offset  # added to snapshot times (a trace's real clock)
        self.batch_size = batch_size or profile.default_batch_size
        if self.batch_size not in profile.batch_sizes:
            raise ValueError(
                f"batch size {self.batch_size} is not one of {list(profile.batch_sizes)}"
            )
        in_memory = isinstance(workload, Workload)
        self.keep_requests = in_memory if keep_requests is None else keep_requests
        n_known = len(workload) if isinstance(workload, Workload) else 0
        self._chunks = self.stream.chunks(chunk_s)
        self._pending: Chunk | None = None
        self._pending_pos = 0
        self._stream_done = False
        self._loaded = 0  # requests loaded into the ring so far (the next id)
        self._loaded_upto = -math.inf  # every request reaching the engine before this is loaded
        self._feasible_limits: tuple[float, float] | None = None
        self._feasible_loaded = 0

        # Kernel state.
        it = profile.iteration
        xs, ys = it.table
        self._tx = np.ascontiguousarray(xs)
        self._ty = np.ascontiguousarray(ys)
        dense = max(profile.max_num_batched_tokens, 4096) + max(profile.batch_sizes) + 1
        self._lt = np.ascontiguousarray(it.linear(np.arange(dense, dtype=np.float64)))
        self._pf = np.zeros(kn.P_SIZE)
        self._pf[kn.P_OVH] = it.overhead_s
        self._pf[kn.P_OVH_SEQ] = it.per_sequence_s
        self._pf[kn.P_DEC0] = it.decode_fixed_s
        self._pf[kn.P_DEC_SEQ] = it.decode_per_sequence_s
        self._pf[kn.P_DEC_KV] = it.decode_per_kv_token_s
        self._pf[kn.P_PF0] = it.prefill_fixed_s
        self._pf[kn.P_PF_TOK] = it.prefill_per_token_s
        self._pf[kn.P_PF_KV] = it.prefill_per_token_kv_s
        self._pf[kn.P_PF_SQ] = it.prefill_per_token_sq_s
        self._pf[kn.P_BUDGET] = profile.max_num_batched_tokens
        self._pf[kn.P_SCHED] = (kn.SCHED_CHUNKED if profile.scheduler == "chunked-prefill"
                                else kn.SCHED_PREFILL_FIRST)
        self._pf[kn.P_API] = profile.api_overhead_s
        self._pf[kn.P_ROUTE] = {"least-outstanding": kn.ROUTE_LEAST_OUTSTANDING,
                                "least-waiting": kn.ROUTE_LEAST_WAITING,
                                "round-robin": kn.ROUTE_ROUND_ROBIN}[routing]
        self._pf[kn.P_WATERMARK] = profile.watermark
        self._pf[kn.P_TTFT_SLO] = self.slo.ttft_s
        self._pf[kn.P_TPOT_SLO] = self.slo.tpot_s
        self._pf[kn.P_MERGE] = 1.0
        cap = RING_ROWS  # grows when a backlog holds more requests in flight
        self._rf = np.zeros((cap, kn.F_SIZE))
        self._rq = np.zeros((cap, kn.I_SIZE), dtype=np.int64)
        self._st = np.zeros(kn.G_SIZE)
        self._width = max(profile.batch_sizes)
        self._alloc_replicas(max(8, replicas * 2))
        rows = min(LOG_ROWS, max(4096, 4 * self._width, n_known + 1)) if in_memory else LOG_ROWS
        self._clog = np.zeros((rows, kn.C_SIZE))
        self._flog = np.zeros(rows)

        # Per-request results (in-memory workloads) and streaming summaries.
        if self.keep_requests:
            self._ttft = np.full(n_known, np.nan)
            self._tpot = np.full(n_known, np.nan)
            self._done = np.full(n_known, np.nan)
        self._ttft_sketch = LatencySketch()
        self._tpot_sketch = LatencySketch()
        self.stats_bin_s = float(stats_bin_s)
        nbins = max(1, math.ceil(self.duration / self.stats_bin_s) + 1)
        self._bin_feasible = np.zeros(nbins)  # feasible requests loaded, by arrival bin
        self._bin_ok = np.zeros(nbins)  # feasible requests that met the SLO, by arrival bin
        self._ttft_hist = np.zeros(len(TTFT_BUCKETS) + 1)
        self._tpot_hist = np.zeros(len(TPOT_BUCKETS) + 1)  # one count per request
        self._itl_hist = np.zeros(len(TPOT_BUCKETS) + 1)  # one count per inter-token gap
        self._ttft_sum = 0.0
        self._tpot_sum = 0.0
        self._itl_sum = 0.0
        self._prompt_hist = np.zeros(len(PROMPT_BUCKETS) + 1)
        self._prompt_sum = 0.0
        self._scraped = False  # histograms are kept once prometheus_metrics() was called
        self._win_ttft: list[FloatArray] = []  # window values drained before the window ended
        self._win_tpot: list[FloatArray] = []
        self._win_f0 = 0  # log rows where the current window starts
        self._win_c0 = 0
        self._win_start = 0.0
        self._win_counters = self._st.copy()
        self._win_busy = 0.0
        self._totals = np.zeros(6)

        # Pods.
        self._pods: list[_Pod] = []  # every pod that exists (gone ones leave)
        self._starting_count = 0
        self._draining_count = 0
        self._desired = replicas
        self.gpu_seconds = 0.0
        self._cost_upto = 0.0
        self.scale_ups = 0
        self.scale_downs = 0
        self.max_replicas = replicas
        for _ in range(replicas):
            pod = _Pod(self.batch_size, 0.0, 0.0, state="ready")
            self._pods.append(pod)
            self._make_ready(pod, 0.0)

    # ----------------------------------------------------------------- kernel arrays
    _rr: npt.NDArray[np.float64]
    _ri: npt.NDArray[np.int64]
    _hk: npt.NDArray[np.float64]
    _hid: npt.NDArray[np.int64]
    _pfl: npt.NDArray[np.int64]

    def _alloc_replicas(self, n: int) -> None:
        size = 1 << max(3, math.ceil(math.log2(max(n, 2))))
        old = getattr(self, "_rr", None)
        rr = np.zeros((size, kn.R_SIZE))
        ri = np.zeros((size, kn.RI_SIZE), dtype=np.int64)
        hk = np.zeros((size, self._width))
        hid = np.zeros((size, self._width), dtype=np.int64)
        pfl = np.zeros((size, self._width), dtype=np.int64)
        rr[:, kn.R_NEXT] = math.inf
        rr[:, kn.R_GONE] = math.nan
        if old is not None:
            k = old.shape[0]
            rr[:k] = old
            ri[:k] = self._ri
            hk[:k] = self._hk
            hid[:k] = self._hid
            pfl[:k] = self._pfl
        self._rr, self._ri, self._hk, self._hid, self._pfl = rr, ri, hk, hid, pfl
        self._tt = np.full(2 * size, math.inf)
        self._ti = np.zeros(2 * size, dtype=np.int64)
        for r in range(size):
            kn.tree_set(self._tt, self._ti, r, float(rr[r, kn.R_NEXT]))
        self._free_slots = [r for r in range(size - 1, -1, -1)
                            if ri[r, kn.RSTATE] == kn.RS_NONE]
        self._nrep = max((r + 1 for r in range(size) if ri[r, kn.RSTATE] != kn.RS_NONE),
                         default=0)

    def _grow_ring(self) -> None:
        old_rf, old_rq = self._rf, self._rq
        old_mask = old_rf.shape[0] - 1
        cap = old_rf.shape[0] * 2
        rf = np.zeros((cap, kn.F_SIZE))
        rq = np.zeros((cap, kn.I_SIZE), dtype=np.int64)
        ids = np.arange(int(self._st[kn.G_LOW]), self._loaded, dtype=np.int64)
        rf[ids & (cap - 1)] = old_rf[ids & old_mask]
        rq[ids & (cap - 1)] = old_rq[ids & old_mask]
        self._rf, self._rq = rf, rq

    # ----------------------------------------------------------------- loading requests
    def _next_chunk(self) -> bool:
        while True:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._stream_done = True
                self._pending = None
                return False
            if len(chunk):
                self._pending = chunk
                self._pending_pos = 0
                return True

    def _load_until(self, t: float) -> None:
        """Make sure every request reaching the engine by ``t`` is in the ring: if one is
        not, load up to ``LOAD_AHEAD_S`` beyond ``t`` in one batch (growing the ring when the
        requests in flight fill it, which only a backlog does)."""
        api = self.profile.api_overhead_s
        if self._loaded_upto >= t:
            return
        upto = t + LOAD_AHEAD_S
        while not self._exhausted():
            chunk = self._pending
            assert chunk is not None
            pos = self._pending_pos
            if chunk.arrivals[pos] + api > upto:
                break
            end = int(np.searchsorted(chunk.arrivals, upto - api, side="right"))
            while self._loaded - int(self._st[kn.G_LOW]) + (end - pos) > self._rf.shape[0]:
                self._grow_ring()
            self._append(chunk, pos, end)
            self._pending_pos = end
        self._loaded_upto = upto

    def _append(self, chunk: Chunk, lo: int, hi: int) -> None:
        n = hi - lo
        if n <= 0:
            return
        cap = self._rf.shape[0]
        ctx = chunk.context_tokens[lo:hi].astype(np.float64)
        gen = np.maximum(chunk.generated_tokens[lo:hi], 1).astype(np.float64)
        # A request that could never fit one replica's KV cache is cut to fit, as a server
        # rejects or truncates it; otherwise it would block its queue forever.
        kvmax = 0.9 * self.profile.kv_cache_tokens
        np.minimum(ctx, 0.8 * kvmax, out=ctx)
        gen = np.maximum(np.minimum(gen, kvmax - ctx), 1.0)
        feas = self._feasible(ctx, gen)
        arr = chunk.arrivals[lo:hi]
        rows = np.zeros((n, kn.F_SIZE))
        rows[:, kn.F_ARR] = arr
        rows[:, kn.F_CTX] = ctx
        rows[:, kn.F_GEN] = gen
        rows[:, kn.F_FIRST] = np.nan
        rows[:, kn.F_FIN] = np.nan
        rows[:, kn.F_PTOT] = ctx
        rows[:, kn.F_FEAS] = feas
        # Ids are consecutive: their slots are at most two contiguous runs of the ring.
        first = self._loaded & (cap - 1)
        done = 0
        while done < n:
            a = (first + done) & (cap - 1)
            k = min(n - done, cap - a)
            self._rf[a:a + k] = rows[done:done + k]
            q = self._rq[a:a + k]
            q[:] = 0
            q[:, kn.I_NEXT] = -1
            done += k
        self._loaded += n
        self._feasible_loaded += int(feas.sum())
        self._bin_feasible += np.bincount(self._bin_of(arr), weights=feas,
                                          minlength=len(self._bin_feasible))
        self._st[kn.G_TAIL_ID] = self._loaded

    # ----------------------------------------------------------------- state
    @property
    def time(self) -> float:
        return float(self._st[kn.G_TIME])

    @property
    def desired_replicas(self) -> int:
        """spec.replicas: pods the Deployment asks for (a rollout's surge not included)."""
        return self._desired

    @property
    def ready_replicas(self) -> int:
        return sum(1 for p in self._pods if p.state == "ready")

    @property
    def starting_replicas(self) -> int:
        return self._n_starting

    @property
    def _n_starting(self) -> int:
        return self._starting_count

    @property
    def draining_replicas(self) -> int:
        return self._draining_count

    def replica_batch_sizes(self) -> list[int]:
        """``--max-num-seqs`` of each ready pod (a rollout shows old and new side by side)."""
        return [p.batch for p in self._pods if p.state == "ready"]

    def _ready_slots(self) -> list[int]:
        return [p.slot for p in self._pods if p.state == "ready"]

    @property
    def requests_waiting(self) -> int:
        slots = self._ready_slots()
        return int(self._ri[slots, kn.Q_LEN].sum() + self._st[kn.G_GW_LEN])

    @property
    def requests_running(self) -> float:
        slots = self._ready_slots()
        return float(self._ri[slots, kn.N_DEC].sum() + self._ri[slots, kn.N_PF].sum())

    @property
    def finished(self) -> bool:
        """Every request of the workload arrived and completed, and no pod is draining."""
        return (self._exhausted()
                and int(self._st[kn.G_COMPLETED]) >= self._loaded
                and self._draining_count == 0)

    def _exhausted(self) -> bool:
        """No request is left to load from the workload."""
        if self._pending is not None and self._pending_pos < len(self._pending):
            return False
        return self._stream_done or not self._next_chunk()

    # ------------------------------------------------------------ actuation
    def scale(self, replicas: int) -> None:
        """Set spec.replicas, as the scale subresource does."""
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        current = self._desired
        self._desired = replicas
        now = self.time
        if replicas > current:
            self.scale_ups += 1
            for _ in range(replicas - current):
                self._add_starting(now)
        elif replicas < current:
            self.scale_downs += 1
            self._remove(current - replicas)
        self._note_max()

    def _add_starting(self, now: float) -> None:
        self._pods.append(_Pod(self.batch_size, now, now + self.profile.cold_start_s))
        self._starting_count += 1

    def _note_max(self) -> None:
        alive = sum(1 for p in self._pods if p.state in ("starting", "ready"))
        self.max_replicas = max(self.max_replicas, alive)

    def set_batch_size(self, batch: int) -> None:
        """Change ``--max-num-seqs`` in the pod template: starts a rolling update."""
        if batch not in self.profile.batch_sizes:
            raise ValueError(f"batch size {batch} is not one of {list(self.profile.batch_sizes)}")
        if batch == self.batch_size:
            return
        self.batch_size = batch
        # Pods not ready yet are recreated at once with the new template.
        for p in self._pods:
            if p.state == "starting":
                p.batch = batch
        self._progress_rollout()

    def _remove(self, count: int) -> None:
        now = self.time
        starting = [p for p in self._pods if p.state == "starting"]
        for p in reversed(starting):  # newest first
            if count <= 0:
                return
            self._end_pod(p, now)
            count -= 1
        ready = [p for p in self._pods if p.state == "ready"]
        # old template first, then the newest
        ready.sort(key=lambda p: (p.batch == self.batch_size, -p.created))
        for p in ready[:count]:
            self._drain(p)

    def _end_pod(self, p: _Pod, t: float) -> None:
        self._charge(t)
        if p.state == "starting":
            self._starting_count -= 1
        p.state = "gone"
        p.ended = t
        self._pods.remove(p)

    def _drain(self, p: _Pod) -> None:
        p.state = "draining"
        self._draining_count += 1
        r = p.slot
        self._ri[r, kn.RSTATE] = kn.RS_DRAINING
        if (self._ri[r, kn.KIND] == kn.K_IDLE and self._ri[r, kn.Q_LEN] == 0
                and self._ri[r, kn.N_DEC] == 0 and self._ri[r, kn.N_PF] == 0):
            self._release(p, self.time)

    def _release(self, p: _Pod, t: float) -> None:
        """A drained pod is gone: charge it up to ``t`` and free its kernel slot."""
        self._charge(self.time)
        # the kernel may report a drain that ended before ``self.time``: refund the rest
        self.gpu_seconds -= max(0.0, self.time - t) * self.profile.gpus_per_replica
        r = p.slot
        self._ri[r] = 0
        self._rr[r] = 0.0
        self._rr[r, kn.R_NEXT] = math.inf
        self._rr[r, kn.R_GONE] = math.nan
        kn.tree_set(self._tt, self._ti, r, math.inf)
        self._free_slots.append(r)
        p.state = "gone"
        self._draining_count -= 1
        p.ended = t
        self._pods.remove(p)

    def _make_ready(self, p: _Pod, t: float) -> None:
        if not self._free_slots:
            self._alloc_replicas(self._rr.shape[0] * 2)
        r = self._free_slots.pop()
        p.slot = r
        if p.state == "starting":
            self._starting_count -= 1
        p.state = "ready"
        self._rr[r] = 0.0
        self._rr[r, kn.R_NEXT] = math.inf
        self._rr[r, kn.R_GONE] = math.nan
        self._rr[r, kn.R_KVCAP] = self.profile.kv_cache_tokens
        self._ri[r] = 0
        self._ri[r, kn.RSTATE] = kn.RS_READY
        self._ri[r, kn.BATCH] = p.batch
        self._ri[r, kn.KIND] = kn.K_IDLE
        kn.tree_set(self._tt, self._ti, r, math.inf)
        self._nrep = max(self._nrep, r + 1)
        if self._st[kn.G_GW_LEN] > 0:
            kn.dispatch_gateway(self._rf, self._rq, self._rr, self._ri, self._hk, self._hid,
                                self._pfl, self._st, self._pf, self._tx, self._ty, self._lt,
                                self._tt, self._ti, self._clog, self._flog, self._nrep,
                                self._rf.shape[0] - 1, t)

    def _progress_rollout(self) -> None:
        """maxSurge 25%, maxUnavailable 0: surge new pods, drain old ones as new ones are ready."""
        desired = self._desired
        ready = [p for p in self._pods if p.state == "ready"]
        old = [p for p in ready if p.batch != self.batch_size]
        if not old:
            return
        new_ready = len(ready) - len(old)
        surge = max(1, math.ceil(0.25 * desired))
        excess = len(ready) - desired
        if excess > 0 and new_ready > 0:
            n = min(excess, len(old))
            old.sort(key=lambda p: -p.created)
            for p in old[:n]:
                self._drain(p)
            old = old[n:]
        starting = [p for p in self._pods if p.state == "starting"]
        total = len([p for p in self._pods if p.state == "ready"]) + len(starting)
        room = desired + surge - total
        needed_new = len(old) - len(starting)
        now = self.time
        for _ in range(max(0, min(room, needed_new))):
            self._add_starting(now)
        self._note_max()

    # ------------------------------------------------------------- cost
    def _charge(self, t: float) -> None:
        """GPU-seconds of every pod that exists, from the last charge up to ``t``."""
        if t > self._cost_upto:
            pods = len(self._pods)  # gone pods leave the list
            self.gpu_seconds += pods * self.profile.gpus_per_replica * (t - self._cost_upto)
            self._cost_upto = t

    # ------------------------------------------------------------- advance
    def step(self, seconds: float) -> None:
        """Advance the simulation by ``seconds``."""
        self._win_ttft.clear()
        self._win_tpot.clear()
        self._win_f0 = int(self._st[kn.G_NFIRST_LOG])
        self._win_c0 = int(self._st[kn.G_NCOMP_LOG])
        self._win_start = self.time
        self._win_counters = self._st.copy()
        kn.fleet_totals(self._rr, self._ri, self._nrep, self._totals)
        self._win_busy = float(self._totals[5])
        self._run_until(self.time + seconds)

    def _run_until(self, t_end: float) -> None:
        while True:
            now = self.time
            starting = [p for p in self._pods if p.state == "starting"] if self._any_starting(
            ) else []
            nxt = min((p.ready_at for p in starting), default=math.inf)
            if nxt <= now + 1e-9:
                for p in starting:
                    if p.ready_at <= now + 1e-9:
                        self._make_ready(p, now)
                self._progress_rollout()
                continue
            horizon = min(t_end, nxt)
            self._load_until(horizon)
            while True:
                code = kn.advance(horizon, self._rf, self._rq, self._rr, self._ri, self._hk,
                                  self._hid, self._pfl, self._st, self._pf, self._tx, self._ty,
                                  self._lt, self._tt, self._ti, self._clog, self._flog,
                                  self._nrep)
                if code == kn.DONE:
                    break
                self._drain_logs()
            self._charge(self.time)
            self._collect_gone()
            if horizon >= t_end:
                return

    def _any_starting(self) -> bool:
        return self._starting_count > 0

    def _collect_gone(self) -> None:
        if self._draining_count == 0:
            return
        for p in [p for p in self._pods if p.state == "draining"]:
            if self._ri[p.slot, kn.RSTATE] == kn.RS_GONE:
                self._release(p, float(self._rr[p.slot, kn.R_GONE]))

    def _feasible(self, ctx: FloatArray, gen: FloatArray) -> FloatArray:
        """:func:`feasible_mask` as 1.0/0.0, through thresholds found once: the idle TTFT
        grows with the prompt and the lone decode step with the tokens held."""
        if self._feasible_limits is None:
            self._feasible_limits = self.profile.feasible_limits(self.slo.ttft_s,
                                                                 self.slo.tpot_s)
        max_ctx, max_held = self._feasible_limits
        ok = (ctx <= max_ctx) & ((gen <= 1.0) | (ctx + 0.5 * gen <= max_held))
        out: FloatArray = ok.astype(np.float64)
        return out

    def _bin_of(self, arrivals: FloatArray) -> npt.NDArray[np.int64]:
        b: npt.NDArray[np.int64] = np.minimum((arrivals // self.stats_bin_s).astype(np.int64),
                                              len(self._bin_ok) - 1)
        return b

    def _drain_logs(self) -> None:
        """Fold the kernel's logs into the summaries and empty them (the current window's
        rows are kept aside for :meth:`snapshot`). Percentile sketches only without
        per-request arrays (those give exact percentiles); vLLM's histograms only once
        someone scrapes (:meth:`prometheus_metrics`)."""
        nf = int(self._st[kn.G_NFIRST_LOG])
        if nf:
            ttft = self._flog[:nf]  # a view: the kernel writes again only after this
            self._win_ttft.append(ttft[self._win_f0:].copy())
            self._win_f0 = 0
            self._st[kn.G_NFIRST_LOG] = 0
            if not self.keep_requests:
                self._ttft_sketch.update(ttft)
            if self._scraped:
                self._ttft_hist += np.bincount(np.searchsorted(TTFT_BUCKETS, ttft),
                                               minlength=len(TTFT_BUCKETS) + 1)
                self._ttft_sum += float(ttft.sum())
        nc = int(self._st[kn.G_NCOMP_LOG])
        if nc:
            log = self._clog[:nc]
            tpot = log[:, kn.C_TPOT]
            self._win_tpot.append(tpot[self._win_c0:].copy())
            self._win_c0 = 0
            self._st[kn.G_NCOMP_LOG] = 0
            tp = tpot[~np.isnan(tpot)]
            if tp.size and not self.keep_requests:
                self._tpot_sketch.update(tp)
            if self._scraped:
                self._prompt_hist += np.bincount(
                    np.searchsorted(PROMPT_BUCKETS, log[:, kn.C_CTX]),
                    minlength=len(PROMPT_BUCKETS) + 1)
                self._prompt_sum += float(log[:, kn.C_CTX].sum())
            if tp.size and self._scraped:
                self._add_tpot(tp, log[~np.isnan(tpot), kn.C_GEN] - 1.0)
            ids = log[:, kn.C_ID].astype(np.int64)
            good = (log[:, kn.C_OK] > 0) & (log[:, kn.C_FEAS] > 0)
            if good.any():
                b = self._bin_of(log[good, kn.C_ARR])
                self._bin_ok += np.bincount(b, minlength=len(self._bin_ok))
            if self.keep_requests:
                self._ttft[ids] = log[:, kn.C_TTFT]
                self._tpot[ids] = tpot
                self._done[ids] = log[:, kn.C_FIN]

    @property
    def ttft(self) -> FloatArray:
        """Each request's TTFT in seconds, NaN until served (``keep_requests`` only)."""
        self._drain_logs()
        return self._ttft

    @property
    def tpot(self) -> FloatArray:
        """Each request's TPOT in seconds, NaN until finished or with one output token."""
        self._drain_logs()
        return self._tpot

    @property
    def done(self) -> FloatArray:
        """Each request's finish time in seconds, NaN until finished."""
        self._drain_logs()
        return self._done

    def finish(self, max_seconds: float = 3600.0, step: float = 15.0) -> None:
        """Keep running after the workload ends until every request is served (bounded)."""
        limit = self.time + max_seconds
        while not self.finished and self.time < limit:
            self.step(step)

    # ------------------------------------------------------------ observe
    def _window(self, key: int) -> float:
        return float(self._st[key] - self._win_counters[key])

    def snapshot(self) -> Snapshot:
        """What Prometheus would show about the last step (sums over ready pods)."""
        window = max(self.time - self._win_start, 1e-9)
        totals = self._totals
        kn.fleet_totals(self._rr, self._ri, self._nrep, totals)
        ready = int(totals[0])
        ttft = self._flog[self._win_f0:int(self._st[kn.G_NFIRST_LOG])]
        tpot = self._clog[self._win_c0:int(self._st[kn.G_NCOMP_LOG]), kn.C_TPOT]
        if self._win_ttft:
            ttft = np.concatenate([*self._win_ttft, ttft])
        if self._win_tpot:
            tpot = np.concatenate([*self._win_tpot, tpot])
        ttft50, ttft99 = kn.two_quantiles(np.ascontiguousarray(ttft), 0.5, 0.99, False)
        _, tpot99 = kn.two_quantiles(np.ascontiguousarray(tpot), 0.5, 0.99, True)
        kv = totals[3] / (ready * self.profile.kv_cache_tokens) if ready else 0.0
        busy = float(totals[5]) - self._win_busy
        pods = ready + int(totals[4])
        util = min(1.0, busy / (window * pods)) if pods else math.nan
        feasible, missed = self.window_slo()
        return Snapshot(
            time=self.time + self.time_offset,
            replicas=self._desired,
            ready_replicas=ready,
            batch_size=self.batch_size,
            requests_running=float(totals[1]),
            requests_waiting=float(totals[2] + self._st[kn.G_GW_LEN]),
            kv_cache_usage=float(min(kv, 1.0)),
            arrival_rate=self._window(kn.G_ARRIVED) / window,
            prompt_tokens_rate=self._window(kn.G_PREFILL_TOKENS) / window,
            generation_tokens_rate=self._window(kn.G_GEN_TOKENS) / window,
            ttft_p50=float(ttft50),
            ttft_p99=float(ttft99),
            tpot_p99=float(tpot99),
            starting_replicas=self._n_starting,
            gpu_utilization=util,
            slo_attainment=(1.0 - missed / feasible) if feasible else math.nan,
            requests_finished=self._window(kn.G_COMPLETED),
            pods_reporting=float(ready),  # every ready pod's exporter, scraped once
        )

    def window_slo(self) -> tuple[int, int]:
        """Feasible requests (:func:`feasible_mask`) that finished during the last step, and
        how many of them missed the SLO. The infeasible ones miss whatever the fleet does, so
        they carry no signal for a scaler being trained — only noise."""
        done = int(self._window(kn.G_FEAS_DONE))
        return done, done - int(self._window(kn.G_OK_FEAS))

    @property
    def requests_total(self) -> int:
        """Requests of the workload: all of them for a Workload, those loaded so far (all,
        once it is over) for a stream."""
        return len(self.workload) if isinstance(self.workload, Workload) else self._loaded

    def slo_counts(self) -> tuple[int, int]:
        """Feasible requests finished so far, and how many of them missed the SLO."""
        done = int(self._st[kn.G_FEAS_DONE])
        return done, done - int(self._st[kn.G_OK_FEAS])

    def unserved(self) -> int:
        """Requests of the workload not finished yet (arrived or still to arrive)."""
        return self.requests_total - int(self._st[kn.G_COMPLETED])

    def attainment_by_arrival(self) -> tuple[FloatArray, FloatArray]:
        """Per ``stats_bin_s`` of arrival time: the feasible requests that arrived, and those of
        them that met the SLO (unfinished ones did not), for planning in hindsight."""
        self._drain_logs()
        return self._bin_feasible.copy(), self._bin_ok.copy()

    def prometheus_metrics(self) -> dict[str, float | dict[str, float]]:
        """Cumulative vLLM and kube-state-metrics series as a scrape would see them.

        Histograms are ``{"le": count}`` maps (cumulative, with ``+Inf``), names as vLLM
        exports them, so the daemon's queries run unchanged against the simulator.
        """
        if not self._scraped:
            # Histograms start with the first scrape, as a real server's metrics start with
            # its process: counts before it are folded in once, from the per-request
            # arrays where there are some.
            self._drain_logs()
            self._scraped = True
            if self.keep_requests:
                self._backfill_histograms()
        self._drain_logs()
        slots = self._ready_slots()
        ready = len(slots)
        kv_used = float(self._rr[slots, kn.R_KVDEC].sum() + self._rr[slots, kn.R_KVPF].sum())
        kv = kv_used / (ready * self.profile.kv_cache_tokens) if ready else 0.0

        def cumulative(buckets: tuple[float, ...], hist: FloatArray) -> dict[str, float]:
            c = np.cumsum(hist)
            out = {repr(float(b)): float(c[i]) for i, b in enumerate(buckets)}
            out["+Inf"] = float(c[-1])
            return out

        return {
            "vllm:num_requests_running": self.requests_running,
            "vllm:num_requests_waiting": float(self.requests_waiting),
            "vllm:kv_cache_usage_perc": float(min(kv, 1.0)),
            "vllm:gpu_cache_usage_perc": float(min(kv, 1.0)),
            "vllm:request_success_total": float(self._st[kn.G_COMPLETED]),
            "vllm:prompt_tokens_total": float(self._st[kn.G_PREFILL_TOKENS]),
            "vllm:generation_tokens_total": float(self._st[kn.G_GEN_TOKENS]),
            "vllm:num_preemptions_total": float(self._st[kn.G_PREEMPTED]),
            "vllm:time_to_first_token_seconds_bucket": cumulative(TTFT_BUCKETS, self._ttft_hist),
            "vllm:time_to_first_token_seconds_sum": self._ttft_sum,
            "vllm:time_to_first_token_seconds_count": float(self._ttft_hist.sum()),
            "vllm:time_per_output_token_seconds_bucket": cumulative(TPOT_BUCKETS, self._itl_hist),
            "vllm:time_per_output_token_seconds_sum": self._itl_sum,
            "vllm:time_per_output_token_seconds_count": float(self._itl_hist.sum()),
            "vllm:request_time_per_output_token_seconds_bucket":
                cumulative(TPOT_BUCKETS, self._tpot_hist),
            "vllm:request_time_per_output_token_seconds_sum": self._tpot_sum,
            "vllm:request_time_per_output_token_seconds_count": float(self._tpot_hist.sum()),
            "vllm:request_prompt_tokens_bucket": cumulative(PROMPT_BUCKETS, self._prompt_hist),
            "vllm:request_prompt_tokens_sum": self._prompt_sum,
            "vllm:request_prompt_tokens_count": float(self._prompt_hist.sum()),
            "kube_deployment_spec_replicas": float(self.desired_replicas),
            "kube_deployment_status_replicas_ready": float(ready),
            "kube_deployment_status_replicas": float(ready + self.starting_replicas),
        }

    def _add_tpot(self, tpot: FloatArray, gaps: FloatArray) -> None:
        """Fold finished requests' TPOTs into both of vLLM's TPOT histograms: the
        per-request one (``request_time_per_output_token_seconds``, each request once) and
        the per-token one (``time_per_output_token_seconds``, each of a request's ``gaps``
        inter-token gaps once). The simulator knows a request's mean gap, not each gap, so
        every gap counts at the mean. The two differ where it matters to an objective set
        per request: a reply of three tokens slowed by another prompt's prefill counts once
        in the first, and in the second as two gaps against a long reply's hundreds."""
        bins = np.searchsorted(TPOT_BUCKETS, tpot)
        self._tpot_hist += np.bincount(bins, minlength=len(TPOT_BUCKETS) + 1)
        self._tpot_sum += float(tpot.sum())
        self._itl_hist += np.bincount(bins, weights=gaps, minlength=len(TPOT_BUCKETS) + 1)
        self._itl_sum += float((tpot * gaps).sum())

    def _backfill_histograms(self) -> None:
        # vLLM observes a TTFT at the first token: requests still running have theirs in
        # the server's histogram, though not yet in the per-request arrays.
        ids = np.arange(int(self._st[kn.G_LOW]), self._loaded, dtype=np.int64)
        slots = ids & (self._rf.shape[0] - 1)
        running = ((self._rq[slots, kn.I_STATE] != kn.S_DONE)
                   & ~np.isnan(self._rf[slots, kn.F_FIRST]))
        tt = np.concatenate([self._ttft[~np.isnan(self._ttft)],
                             self._rf[slots[running], kn.F_FIRST]
                             - self._rf[slots[running], kn.F_ARR]])
        self._ttft_hist += np.bincount(np.searchsorted(TTFT_BUCKETS, tt),
                                       minlength=len(TTFT_BUCKETS) + 1)
        self._ttft_sum += float(tt.sum())
        if isinstance(self.workload, Workload):  # per-request arrays index its requests
            has_tpot = ~np.isnan(self._tpot)
            self._add_tpot(self._tpot[has_tpot],
                           self.workload.generated_tokens[has_tpot] - 1.0)
            ctx = self.workload.context_tokens[~np.isnan(self._done)]
            self._prompt_hist += np.bincount(np.searchsorted(PROMPT_BUCKETS, ctx),
                                             minlength=len(PROMPT_BUCKETS) + 1)
            self._prompt_sum += float(ctx.sum())

    def result(self) -> SimResult:
        """Per-request accounting over the whole workload."""
        self._drain_logs()
        n = self.requests_total
        completed = int(self._st[kn.G_COMPLETED])
        unfinished = n - completed
        ok = float(self._st[kn.G_OK])
        # A request that was never served missed its SLO: nothing is silently dropped.
        attainment = ok / n if n else 1.0
        n_feasible = self._feasible_loaded + self._feasible_unloaded()
        ok_feas = float(self._st[kn.G_OK_FEAS])
        attainment_feasible = ok_feas / n_feasible if n_feasible else 1.0
        q = self._quantiles()
        gpu_hours = self.gpu_seconds / 3600.0
        return SimResult(
            requests=n,
            gpu_hours=gpu_hours,
            cost_usd=gpu_hours * self.profile.gpu_hour_usd,
            slo_attainment=attainment,
            ttft_p50_s=q["ttft50"],
            ttft_p99_s=math.inf if unfinished else q["ttft99"],
            tpot_p99_s=q["tpot99"],
            scale_ups=self.scale_ups,
            scale_downs=self.scale_downs,
            max_replicas=self.max_replicas,
            unfinished=unfinished,
            slo_attainment_feasible=attainment_feasible,
            infeasible_requests=n - n_feasible,
            ttft_p90_s=q["ttft90"],
            tpot_p50_s=q["tpot50"],
            preemptions=int(self._st[kn.G_PREEMPTED]),
        )

    def _feasible_unloaded(self) -> int:
        """Feasible requests of an in-memory workload not loaded yet (never arrived)."""
        if not isinstance(self.workload, Workload) or self._loaded >= len(self.workload):
            return 0
        w = self.workload
        rest = slice(self._loaded, len(w))
        return int(feasible_mask(self.profile, w.context_tokens[rest], self.slo,
                                 w.generated_tokens[rest]).sum())

    def _quantiles(self) -> dict[str, float]:
        """Exact quantiles with per-request arrays, the sketches' otherwise."""
        if self.keep_requests:
            tt = self._ttft[~np.isnan(self._ttft)]
            tp = self._tpot[~np.isnan(self._tpot)]
            q_tt = _exact(tt, (0.5, 0.9, 0.99))
            q_tp = _exact(tp, (0.5, 0.99))
            return {"ttft50": q_tt[0], "ttft90": q_tt[1], "ttft99": q_tt[2],
                    "tpot50": q_tp[0], "tpot99": q_tp[1]}
        out: dict[str, float] = {}
        for key, sk, p in (("ttft50", self._ttft_sketch, 0.5), ("ttft90", self._ttft_sketch, 0.9),
                           ("ttft99", self._ttft_sketch, 0.99), ("tpot50", self._tpot_sketch, 0.5),
                           ("tpot99", self._tpot_sketch, 0.99)):
            out[key] = sk.quantile(p)
        return out
