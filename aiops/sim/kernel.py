"""The simulated cluster's inner loop: every replica, iteration by iteration, compiled (numba).

Why per iteration: a model server with continuous batching does its work in iterations
(forward passes). Each iteration carries the running sequences' decode tokens and, under a
per-iteration token budget (vLLM's ``max_num_batched_tokens``), chunks of waiting prompts;
how long it takes depends on what it carries: the tokens through the linear layers, the KV
cache the decoding sequences attend to, the prompt chunks' attention. A decode step that
carries a 2,000-token prompt chunk takes as long as the chunk does, so every sequence in the
batch waits for it. TTFT and TPOT under load, which decide SLO attainment and therefore every
autoscaling verdict, come from exactly that interplay; a model of averages misses it.

Why still fast: between two events that change a replica's batch (an arrival it can admit,
a sequence finishing, the KV cache filling up) its iterations are decode-only steps of the
same sequences, whose duration grows linearly with the KV they hold. Such a run is one
*segment* here, summed in closed form, however many iterations it spans; prompt-carrying
iterations are simulated one by one. The work per request is a few events, not one per
generated token, which keeps the gym environment at thousands of decisions per second.

Model of one replica (vLLM's V1 engine semantics; see ``Profile`` for the numbers):

* Requests reach a replica through the router at arrival (plus the API server's overhead)
  and wait in its FIFO queue. Routing sends each to the ready replica with the fewest
  outstanding requests (waiting plus running; ties to the lowest index), or in the mode
  ``ROUTE_LEAST_WAITING`` the fewest waiting ones, as Vidur's LOR scheduler does, or
  ``ROUTE_ROUND_ROBIN`` to each ready replica in turn.
* ``SCHED_CHUNKED`` (chunked prefill, vLLM's default): each iteration schedules every running
  decode (one token each), then the running partial prefills, then waiting requests in FIFO
  order, while the token budget, the batch cap (``--max-num-seqs``) and free KV allow. A
  prompt longer than what is left of the budget is split into chunks over iterations.
* ``SCHED_PREFILL_FIRST`` (vLLM without chunking): if waiting requests can be admitted, the
  iteration is a prefill of whole prompts (up to the budget; a longer prompt runs alone) and
  decodes pause; otherwise it is a decode step.
* KV cache in tokens: a sequence holds its prompt plus the tokens generated so far. A request
  is admitted only if its whole prompt fits above a watermark (its KV is reserved then, as
  vLLM's block manager did before per-chunk allocation; a partly prefilled prompt never
  stalls for memory); when a decode step would not fit, the most recently admitted running
  request is preempted (its KV freed, put back at the head of the queue to recompute prompt
  plus output so far), as vLLM does.
* The prefill iteration that completes a prompt emits the first token (TTFT ends there); each
  later decode iteration emits one more. TPOT is ``(finish - first token) / (output - 1)``,
  the mean of the iterations the request decoded in, stalls included.

Requests live in a ring buffer indexed by a global id (``id & (capacity - 1)``): the caller
appends requests window by window and the ring is reused once they complete, so memory does
not grow with the length of a replay. Finished requests are appended to a completion log the
caller drains; first tokens to a first-token log.

``NUMBA_DISABLE_JIT=1`` runs the very same code as plain Python for debugging. The functions
are compiled without numba's reference counting (``_nrt=False``): they allocate nothing, and
counting references to the dozen arrays passed down every call cost three quarters of the
time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit

INF = math.inf

_F = TypeVar("_F", bound=Callable[..., Any])


def _compiled(*, inline: bool = False) -> Callable[[_F], _F]:
    """numba's ``njit``, cached on disk, without reference counting (nothing here allocates),
    and inlined into its callers for the helpers called on every event (a quarter of the
    time; inlining ``schedule`` too would save a fifth more but quintuple the compile time,
    which every new machine pays once)."""
    options: dict[str, Any] = {"cache": True, "_nrt": False}
    if inline:
        options["inline"] = "always"
    return cast(Callable[[_F], _F], njit(**options))

# ---------------------------------------------------------------- profile vector ``pf``
P_OVH = 0  # per iteration: CPU scheduling, sampling set-up, LM head weights (s)
P_OVH_SEQ = 1  # per sequence emitting a token: sampling, LM head, detokenisation (s)
P_DEC0 = 2  # decode attention, fixed per iteration with decodes (s)
P_DEC_SEQ = 3  # decode attention per decoding sequence (s)
P_DEC_KV = 4  # decode attention per KV token held by the decoding sequences (s)
P_PF0 = 5  # prefill attention per chunk (s)
P_PF_TOK = 6  # prefill attention + KV write per chunk token (s)
P_PF_KV = 7  # prefill attention per (chunk token x earlier KV token of the same request) (s)
P_PF_SQ = 8  # prefill attention per chunk token squared (causal self-attention in the chunk)
P_BUDGET = 9  # max_num_batched_tokens
P_SCHED = 10  # SCHED_CHUNKED or SCHED_PREFILL_FIRST
P_API = 11  # seconds between a request's arrival and its reaching the engine's queue
P_ROUTE = 12  # ROUTE_LEAST_OUTSTANDING or ROUTE_LEAST_WAITING
P_WATERMARK = 13  # share of the KV cache new requests must leave free (vLLM: 0.01)
P_TTFT_SLO = 14  # SLO thresholds, to count attainment as requests finish
P_TPOT_SLO = 15
P_MERGE = 16  # 1: apply a prompt iteration at once when nothing outside can see it (tests: 0)
P_SIZE = 17

SCHED_CHUNKED = 0
SCHED_PREFILL_FIRST = 1
ROUTE_LEAST_OUTSTANDING = 0
ROUTE_LEAST_WAITING = 1
ROUTE_ROUND_ROBIN = 2

# ---------------------------------------------------------------- request records
F_ARR = 0  # arrival (s)
F_CTX = 1  # prompt tokens
F_GEN = 2  # output tokens
F_FIRST = 3  # time of the first token (NaN until then)
F_FIN = 4  # finish time (NaN until then)
F_DONEP = 5  # tokens of the current (re)prefill computed so far
F_PTOT = 6  # tokens the current (re)prefill computes: the prompt, plus output after preemption
F_GDONE = 7  # output tokens generated so far
F_FINIT = 8  # the replica's decode-iteration count at which the request finishes
F_FEAS = 9  # 1 if an idle replica could serve it within the SLO (set by the caller)
F_SCHED = 10  # tokens scheduled for it in the iteration in progress
F_SIZE = 11

I_REP = 0  # replica the router sent it to (-1: waiting at the gateway)
I_NEXT = 1  # next id in the same queue (-1: none)
I_STATE = 2  # S_* below
I_ORDER = 3  # admission stamp: the highest is preempted first
I_SIZE = 4

S_FUTURE = 0
S_QUEUED = 1
S_PREFILL = 2
S_DECODE = 3
S_DONE = 4

# ---------------------------------------------------------------- replica records
R_NEXT = 0  # time the current iteration or segment ends (inf: idle or not ready)
R_T0 = 1  # when it started
R_A = 2  # segment: first iteration's duration (s)
R_B = 3  # segment: growth of the duration per iteration (s)
R_M = 4  # segment: iterations it spans; single iteration: 1
R_KVDEC = 5  # KV tokens held by decoding sequences
R_KVPF = 6  # KV tokens reserved by sequences in prefill (their whole prompts)
R_KVCAP = 7  # KV capacity (tokens)
R_IT = 8  # decode iterations done (sequences' progress is counted against it)
R_BUSY = 9  # seconds spent iterating (utilisation)
R_GONE = 10  # when a draining replica finished its last request (NaN until then)
R_SIZE = 11

Q_HEAD = 0
Q_TAIL = 1
Q_LEN = 2
N_DEC = 3  # decoding sequences (size of this replica's heap)
N_PF = 4  # sequences in prefill (length of this replica's prefill list)
RSTATE = 5  # RS_* below
BATCH = 6  # --max-num-seqs
KIND = 7  # K_* below
RI_SIZE = 8

RS_NONE = 0  # a free slot, or a replica still starting (the caller keeps those)
RS_READY = 2
RS_DRAINING = 3  # removed: serves what it holds, takes nothing new
RS_GONE = 4  # drained: the caller frees the slot

K_IDLE = 0
K_SEGMENT = 1  # decode-only iterations summed in closed form
K_ITERATION = 2  # one iteration carrying prompt tokens

# ---------------------------------------------------------------- global state ``st``
G_NEXT_ID = 0  # next request to arrive
G_TAIL_ID = 1  # one past the last request loaded into the ring
G_LOW = 2  # every id below is done (ring slots below it may be reused)
G_GW_HEAD = 3  # gateway queue (no ready replica), linked through I_NEXT
G_GW_TAIL = 4
G_GW_LEN = 5
G_ORDER = 6  # admission stamp counter
G_TIME = 7  # simulated time reached
G_ARRIVED = 8  # cumulative counters from here on
G_PROMPT_ARRIVED = 9
G_PREFILL_TOKENS = 10
G_GEN_TOKENS = 11
G_COMPLETED = 12
G_PREEMPTED = 13
G_OK = 14
G_OK_FEAS = 15
G_FEAS_DONE = 16
G_NCOMP_LOG = 17  # rows in the completion log
G_NFIRST_LOG = 18  # rows in the first-token log
G_RR = 19  # round-robin position
G_EVENTS = 20  # events processed (arrivals and iteration/segment ends), for benchmarks
G_SIZE = 21

# completion log columns
C_ID = 0
C_TTFT = 1
C_TPOT = 2  # NaN for a request with one output token
C_OK = 3
C_FEAS = 4
C_ARR = 5
C_FIN = 6
C_CTX = 7  # prompt tokens (vLLM's prompt-length histogram)
C_GEN = 8  # output tokens (how many inter-token gaps vLLM's per-token TPOT histogram counts)
C_SIZE = 9

# ``advance`` return codes
DONE = 0
LOG_FULL = 1  # a log is full: drain it and call again


@_compiled(inline=True)
def linear_time(tokens: float, tx: np.ndarray, ty: np.ndarray, lt: np.ndarray) -> float:
    """Seconds the linear layers (projections, MLP, norms: everything but attention) take for
    ``tokens`` tokens in one iteration: the profile's table, linear in between and beyond.
    ``lt`` holds the same function at every whole token count below its length (the common
    case, looked up in one step)."""
    if tokens < lt.shape[0]:
        return float(lt[int(tokens)])
    n = tx.shape[0]
    if tokens <= tx[0]:
        return float(ty[0])
    if tokens >= tx[n - 1]:
        slope = (ty[n - 1] - ty[n - 2]) / (tx[n - 1] - tx[n - 2])
        return float(ty[n - 1] + slope * (tokens - tx[n - 1]))
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if tx[mid] <= tokens:
            lo = mid
        else:
            hi = mid
    w = (tokens - tx[lo]) / (tx[hi] - tx[lo])
    return float(ty[lo] + w * (ty[hi] - ty[lo]))


@_compiled(inline=True)
def chunk_time(pf: np.ndarray, chunk: float, earlier: float) -> float:
    """Attention time of one prompt chunk of ``chunk`` tokens after ``earlier`` tokens of the
    same request already in the KV cache."""
    return float(pf[P_PF0] + pf[P_PF_TOK] * chunk + pf[P_PF_KV] * chunk * earlier
                 + pf[P_PF_SQ] * chunk * chunk)


@_compiled(inline=True)
def decode_time(pf: np.ndarray, tx: np.ndarray, ty: np.ndarray, lt: np.ndarray, n: float,
                kv: float) -> float:
    """One decode-only iteration of ``n`` sequences holding ``kv`` KV tokens."""
    if n <= 0:
        return 0.0
    return float(pf[P_OVH] + pf[P_OVH_SEQ] * n + linear_time(n, tx, ty, lt)
                 + pf[P_DEC0] + pf[P_DEC_SEQ] * n + pf[P_DEC_KV] * kv)


@_compiled(inline=True)
def _seg_sum(a: float, b: float, m: float) -> float:
    """Duration of ``m`` iterations lasting ``a``, ``a + b``, ``a + 2b``..."""
    return m * a + b * m * (m - 1.0) * 0.5


@_compiled(inline=True)
def _seg_iters_until(a: float, b: float, x: float) -> float:
    """The fewest iterations (>= 1) of a segment whose summed duration reaches ``x``."""
    if x <= a:
        return 1.0
    m = 1.0
    if b <= 0.0:
        m = float(math.ceil(x / a - 1e-12))
    else:
        h = a - 0.5 * b
        m = float(math.ceil((-h + math.sqrt(h * h + 2.0 * b * x)) / b - 1e-9))
    m = max(m, 1.0)
    while _seg_sum(a, b, m) < x:
        m += 1.0
    while m > 1.0 and _seg_sum(a, b, m - 1.0) >= x:
        m -= 1.0
    return m


# ---------------------------------------------------------------- min-tree of next events


@_compiled(inline=True)
def tree_set(tt: np.ndarray, ti: np.ndarray, r: int, t: float) -> None:
    """Set replica ``r``'s next event time and restore the min along its path to the root."""
    size = tt.shape[0] // 2
    k = size + r
    tt[k] = t
    ti[k] = r
    k //= 2
    while k >= 1:
        a = 2 * k
        b = a + 1
        if tt[b] < tt[a] or (tt[b] == tt[a] and ti[b] < ti[a]):
            a = b
        tt[k] = tt[a]
        ti[k] = ti[a]
        k //= 2


# ---------------------------------------------------------------- per-replica heaps


@_compiled(inline=True)
def _heap_push(hk: np.ndarray, hid: np.ndarray, r: int, n: int, key: float, rid: int) -> None:
    k = n
    while k > 0:
        p = (k - 1) // 2
        if hk[r, p] <= key:
            break
        hk[r, k] = hk[r, p]
        hid[r, k] = hid[r, p]
        k = p
    hk[r, k] = key
    hid[r, k] = rid


@_compiled(inline=True)
def _heap_remove_at(hk: np.ndarray, hid: np.ndarray, r: int, n: int, pos: int) -> None:
    """Remove entry ``pos`` of a heap of ``n`` entries (``n - 1`` remain)."""
    last = n - 1
    if pos == last:
        return
    key = hk[r, last]
    rid = hid[r, last]
    k = pos
    # sift up
    while k > 0:
        p = (k - 1) // 2
        if hk[r, p] <= key:
            break
        hk[r, k] = hk[r, p]
        hid[r, k] = hid[r, p]
        k = p
    if k == pos:  # sift down
        while True:
            c = 2 * k + 1
            if c >= last:
                break
            if c + 1 < last and hk[r, c + 1] < hk[r, c]:
                c += 1
            if hk[r, c] >= key:
                break
            hk[r, k] = hk[r, c]
            hid[r, k] = hid[r, c]
            k = c
    hk[r, k] = key
    hid[r, k] = rid


# ---------------------------------------------------------------- queues


@_compiled(inline=True)
def _queue_push(ri: np.ndarray, rq: np.ndarray, r: int, slot_mask: int, rid: int,
                front: bool) -> None:
    s = rid & slot_mask
    if ri[r, Q_LEN] == 0:
        rq[s, I_NEXT] = -1
        ri[r, Q_HEAD] = rid
        ri[r, Q_TAIL] = rid
    elif front:
        rq[s, I_NEXT] = ri[r, Q_HEAD]
        ri[r, Q_HEAD] = rid
    else:
        rq[s, I_NEXT] = -1
        rq[ri[r, Q_TAIL] & slot_mask, I_NEXT] = rid
        ri[r, Q_TAIL] = rid
    ri[r, Q_LEN] += 1
    rq[s, I_REP] = r
    rq[s, I_STATE] = S_QUEUED


@_compiled(inline=True)
def _queue_pop(ri: np.ndarray, rq: np.ndarray, r: int, slot_mask: int) -> int:
    rid = ri[r, Q_HEAD]
    ri[r, Q_HEAD] = rq[rid & slot_mask, I_NEXT]
    ri[r, Q_LEN] -= 1
    return int(rid)


@_compiled(inline=True)
def _admit(ri: np.ndarray, rq: np.ndarray, rf: np.ndarray, rr: np.ndarray, st: np.ndarray,
           pfl: np.ndarray, r: int, mask: int, chunk: float, kv: float) -> None:
    """Move replica ``r``'s queue head into prefill with ``chunk`` tokens this iteration,
    reserving ``kv`` KV tokens (its whole remaining prompt): both schedulers admit so."""
    rid = _queue_pop(ri, rq, r, mask)
    s = rid & mask
    rq[s, I_STATE] = S_PREFILL
    rq[s, I_ORDER] = int(st[G_ORDER])
    st[G_ORDER] += 1.0
    pfl[r, ri[r, N_PF]] = rid
    ri[r, N_PF] += 1
    rf[s, F_SCHED] = chunk
    rr[r, R_KVPF] += kv


# ---------------------------------------------------------------- request completion


@_compiled(inline=True)
def _finish(rf: np.ndarray, rq: np.ndarray, st: np.ndarray, pf: np.ndarray, clog: np.ndarray,
            rid: int, mask: int, t: float) -> None:
    s = rid & mask
    rf[s, F_FIN] = t
    rq[s, I_STATE] = S_DONE
    gen = rf[s, F_GEN]
    ttft = rf[s, F_FIRST] - rf[s, F_ARR]
    if gen > 1.0:
        tpot = (t - rf[s, F_FIRST]) / (gen - 1.0)
        ok = 1.0 if (ttft <= pf[P_TTFT_SLO] and tpot <= pf[P_TPOT_SLO]) else 0.0
    else:  # a single token: no decode step, no TPOT
        tpot = math.nan
        ok = 1.0 if ttft <= pf[P_TTFT_SLO] else 0.0
    feas = rf[s, F_FEAS]
    st[G_COMPLETED] += 1.0
    st[G_OK] += ok
    st[G_OK_FEAS] += ok * feas
    st[G_FEAS_DONE] += feas
    k = int(st[G_NCOMP_LOG])
    clog[k, C_ID] = rid
    clog[k, C_TTFT] = ttft
    clog[k, C_TPOT] = tpot
    clog[k, C_OK] = ok
    clog[k, C_FEAS] = feas
    clog[k, C_ARR] = rf[s, F_ARR]
    clog[k, C_FIN] = t
    clog[k, C_CTX] = rf[s, F_CTX]
    clog[k, C_GEN] = rf[s, F_GEN]
    st[G_NCOMP_LOG] = k + 1
    low = int(st[G_LOW])
    tail = int(st[G_TAIL_ID])
    while low < tail and rq[low & mask, I_STATE] == S_DONE:
        low += 1
    st[G_LOW] = low


@_compiled(inline=True)
def _first_token(rf: np.ndarray, st: np.ndarray, flog: np.ndarray, s: int, t: float) -> None:
    if math.isnan(rf[s, F_FIRST]):
        rf[s, F_FIRST] = t
        k = int(st[G_NFIRST_LOG])
        flog[k] = t - rf[s, F_ARR]
        st[G_NFIRST_LOG] = k + 1


# ---------------------------------------------------------------- preemption


@_compiled()
def _preempt_one(rf: np.ndarray, rq: np.ndarray, rr: np.ndarray, ri: np.ndarray,
                 hk: np.ndarray, hid: np.ndarray, pfl: np.ndarray, st: np.ndarray,
                 r: int, mask: int) -> None:
    """Preempt the most recently admitted running request of replica ``r`` (recompute)."""
    best = -1
    where = 0  # 1: heap position, 2: prefill-list position
    pos = -1
    nd = ri[r, N_DEC]
    for k in range(nd):
        o = rq[hid[r, k] & mask, I_ORDER]
        if o > best:
            best = o
            where = 1
            pos = k
    npf = ri[r, N_PF]
    for k in range(npf):
        o = rq[pfl[r, k] & mask, I_ORDER]
        if o > best:
            best = o
            where = 2
            pos = k
    if where == 1:
        rid = int(hid[r, pos])
        s = rid & mask
        g = rf[s, F_GEN] - (rf[s, F_FINIT] - rr[r, R_IT])
        rr[r, R_KVDEC] -= rf[s, F_CTX] + g
        _heap_remove_at(hk, hid, r, nd, pos)
        ri[r, N_DEC] = nd - 1
        rf[s, F_GDONE] = g
    elif where == 2:
        rid = int(pfl[r, pos])
        s = rid & mask
        rr[r, R_KVPF] -= rf[s, F_PTOT]
        for k in range(pos, npf - 1):
            pfl[r, k] = pfl[r, k + 1]
        ri[r, N_PF] = npf - 1
    else:
        return
    rf[s, F_PTOT] = rf[s, F_CTX] + rf[s, F_GDONE]
    rf[s, F_DONEP] = 0.0
    rf[s, F_SCHED] = 0.0
    _queue_push(ri, rq, r, mask, rid, True)
    st[G_PREEMPTED] += 1.0


# ---------------------------------------------------------------- the scheduler


@_compiled()
def schedule(rf: np.ndarray, rq: np.ndarray, rr: np.ndarray, ri: np.ndarray,
             hk: np.ndarray, hid: np.ndarray, pfl: np.ndarray, st: np.ndarray,
             pf: np.ndarray, tx: np.ndarray, ty: np.ndarray, lt: np.ndarray, tt: np.ndarray,
             ti: np.ndarray, clog: np.ndarray, flog: np.ndarray, r: int, mask: int,
             t: float) -> None:
    """Start replica ``r``'s next iteration (or decode segment) at time ``t``."""
    cap = rr[r, R_KVCAP]
    budget = pf[P_BUDGET]
    batch = ri[r, BATCH]
    chunked = pf[P_SCHED] == SCHED_CHUNKED
    # Decodes need one KV token each: preempt the newest until they fit.
    while (ri[r, N_DEC] > 0 and rr[r, R_KVDEC] + rr[r, R_KVPF] + ri[r, N_DEC] > cap):
        _preempt_one(rf, rq, rr, ri, hk, hid, pfl, st, r, mask)
    nd = float(ri[r, N_DEC])
    free_kv = cap - rr[r, R_KVDEC] - rr[r, R_KVPF] - nd
    wm = pf[P_WATERMARK] * cap
    prefill_tokens = 0.0
    attn = 0.0
    emitting = 0.0  # prefills that finish their prompt in this iteration
    if chunked:
        left = budget - nd
        # running partial prefills first, in admission order
        for k in range(ri[r, N_PF]):
            s = pfl[r, k] & mask
            c = max(min(rf[s, F_PTOT] - rf[s, F_DONEP], left), 0.0)
            rf[s, F_SCHED] = c
            if c > 0.0:
                attn += chunk_time(pf, c, rf[s, F_DONEP])
                prefill_tokens += c
                left -= c
                if rf[s, F_DONEP] + c >= rf[s, F_PTOT]:
                    emitting += 1.0
        # then waiting requests, FIFO, while budget, batch slots and KV allow
        while (left > 0.0 and ri[r, Q_LEN] > 0
               and ri[r, N_DEC] + ri[r, N_PF] < batch):
            s = ri[r, Q_HEAD] & mask
            need = rf[s, F_PTOT] - rf[s, F_DONEP]
            if need > free_kv - wm:
                break
            c = min(need, left)
            _admit(ri, rq, rf, rr, st, pfl, r, mask, c, need)  # the whole prompt's KV
            attn += chunk_time(pf, c, rf[s, F_DONEP])
            prefill_tokens += c
            left -= c
            free_kv -= need
            if rf[s, F_DONEP] + c >= rf[s, F_PTOT]:
                emitting += 1.0
    else:
        # Prefill first: whole prompts while any can be admitted; decodes wait.
        left = budget
        first = True
        while ri[r, Q_LEN] > 0 and ri[r, N_DEC] + ri[r, N_PF] < batch:
            s = ri[r, Q_HEAD] & mask
            c = rf[s, F_PTOT] - rf[s, F_DONEP]
            if c > free_kv - wm or (c > left and not first):
                break
            _admit(ri, rq, rf, rr, st, pfl, r, mask, c, c)
            attn += chunk_time(pf, c, rf[s, F_DONEP])
            prefill_tokens += c
            left -= c
            free_kv -= c
            emitting += 1.0
            first = False
        if prefill_tokens > 0.0:
            nd = 0.0  # decodes sit this iteration out
    if prefill_tokens > 0.0:
        kv_dec = rr[r, R_KVDEC] if nd > 0 else 0.0
        dur = (pf[P_OVH] + pf[P_OVH_SEQ] * (nd + emitting)
               + linear_time(nd + prefill_tokens, tx, ty, lt) + attn)
        if nd > 0:
            dur += pf[P_DEC0] + pf[P_DEC_SEQ] * nd + pf[P_DEC_KV] * kv_dec
        ri[r, KIND] = K_ITERATION
        rr[r, R_T0] = t
        rr[r, R_M] = 1.0
        rr[r, R_A] = 1.0 if nd > 0 else 0.0  # whether decodes advance in this iteration
        t1 = t + dur
        if pf[P_MERGE] > 0.0 and _mergeable(rf, rr, ri, hk, pfl, r, mask, nd > 0):
            # Nothing this iteration does is visible outside the replica before it ends
            # (no request finishes in it, none waits to be admitted after it): apply it now,
            # stamped at its end, and go straight on to the decode segment that follows.
            # One event instead of two, with the same outcome.
            _end_of_work(rf, rq, rr, ri, hk, hid, pfl, st, pf, clog, flog, r, mask, t1)
            _start_segment(rr, ri, hk, pf, tx, ty, lt, tt, ti, r, t1)
            return
        rr[r, R_NEXT] = t1
        tree_set(tt, ti, r, t1)
        return
    _start_segment(rr, ri, hk, pf, tx, ty, lt, tt, ti, r, t)


@_compiled(inline=True)
def _mergeable(rf: np.ndarray, rr: np.ndarray, ri: np.ndarray, hk: np.ndarray,
               pfl: np.ndarray, r: int, mask: int, decodes_advance: bool) -> bool:
    """Whether replica ``r``'s prompt-carrying iteration just planned can be applied at once:
    every prompt in it completes without finishing its request, no decoding sequence finishes
    in it, and no waiting request could be admitted when it ends."""
    if decodes_advance and ri[r, N_DEC] > 0 and hk[r, 0] <= rr[r, R_IT] + 1.0:
        return False
    if ri[r, Q_LEN] > 0 and ri[r, N_DEC] + ri[r, N_PF] < ri[r, BATCH]:
        return False
    for k in range(ri[r, N_PF]):
        s = pfl[r, k] & mask
        c = rf[s, F_SCHED]
        if c <= 0.0 or rf[s, F_DONEP] + c < rf[s, F_PTOT]:
            return False
        if rf[s, F_GDONE] + 1.0 >= rf[s, F_GEN]:
            return False
    return True


@_compiled(inline=True)
def _start_segment(rr: np.ndarray, ri: np.ndarray, hk: np.ndarray, pf: np.ndarray,
                   tx: np.ndarray, ty: np.ndarray, lt: np.ndarray, tt: np.ndarray,
                   ti: np.ndarray, r: int, t: float) -> None:
    """From ``t``, decode-only iterations until the first sequence finishes or the KV cache
    fills up (idle if nothing decodes)."""
    if ri[r, N_DEC] == 0:
        ri[r, KIND] = K_IDLE
        rr[r, R_T0] = t
        rr[r, R_NEXT] = INF
        tree_set(tt, ti, r, INF)
        return
    cap = rr[r, R_KVCAP]
    nd = float(ri[r, N_DEC])
    a = decode_time(pf, tx, ty, lt, nd, rr[r, R_KVDEC])
    b = pf[P_DEC_KV] * nd
    m = hk[r, 0] - rr[r, R_IT]
    room = math.floor((cap - rr[r, R_KVDEC] - rr[r, R_KVPF]) / nd)
    m = max(1.0, min(m, room))
    ri[r, KIND] = K_SEGMENT
    rr[r, R_T0] = t
    rr[r, R_A] = a
    rr[r, R_B] = b
    rr[r, R_M] = m
    end = t + _seg_sum(a, b, m)
    rr[r, R_NEXT] = end
    tree_set(tt, ti, r, end)


@_compiled(inline=True)
def _end_of_work(rf: np.ndarray, rq: np.ndarray, rr: np.ndarray, ri: np.ndarray,
                 hk: np.ndarray, hid: np.ndarray, pfl: np.ndarray, st: np.ndarray,
                 pf: np.ndarray, clog: np.ndarray, flog: np.ndarray,
                 r: int, mask: int, t: float) -> None:
    """Apply what replica ``r``'s finished iteration or segment did."""
    kind = ri[r, KIND]
    rr[r, R_BUSY] += t - rr[r, R_T0]
    if kind == K_SEGMENT:
        m = rr[r, R_M]
        nd = float(ri[r, N_DEC])
        rr[r, R_IT] += m
        rr[r, R_KVDEC] += nd * m
        st[G_GEN_TOKENS] += nd * m
    elif kind == K_ITERATION:
        if rr[r, R_A] > 0.0:  # decodes advanced by one token
            nd = float(ri[r, N_DEC])
            rr[r, R_IT] += 1.0
            rr[r, R_KVDEC] += nd
            st[G_GEN_TOKENS] += nd
        # prompt chunks
        k = 0
        while k < ri[r, N_PF]:
            rid = int(pfl[r, k])
            s = rid & mask
            c = rf[s, F_SCHED]
            rf[s, F_SCHED] = 0.0
            st[G_PREFILL_TOKENS] += c
            rf[s, F_DONEP] += c
            if rf[s, F_DONEP] >= rf[s, F_PTOT]:
                # prompt done: this iteration emitted a token
                rr[r, R_KVPF] -= rf[s, F_PTOT]
                npf = ri[r, N_PF]
                for j in range(k, npf - 1):
                    pfl[r, j] = pfl[r, j + 1]
                ri[r, N_PF] = npf - 1
                _first_token(rf, st, flog, s, t)
                g = rf[s, F_GDONE] + 1.0
                rf[s, F_GDONE] = g
                st[G_GEN_TOKENS] += 1.0
                if g >= rf[s, F_GEN]:
                    _finish(rf, rq, st, pf, clog, rid, mask, t)
                else:
                    rq[s, I_STATE] = S_DECODE
                    fin = rr[r, R_IT] + (rf[s, F_GEN] - g)
                    rf[s, F_FINIT] = fin
                    rr[r, R_KVDEC] += rf[s, F_CTX] + g
                    _heap_push(hk, hid, r, ri[r, N_DEC], fin, rid)
                    ri[r, N_DEC] += 1
            else:
                k += 1
    # sequences that reached their last token
    it = rr[r, R_IT]
    while ri[r, N_DEC] > 0 and hk[r, 0] <= it:
        rid = int(hid[r, 0])
        s = rid & mask
        rr[r, R_KVDEC] -= rf[s, F_CTX] + rf[s, F_GEN]
        _heap_remove_at(hk, hid, r, ri[r, N_DEC], 0)
        ri[r, N_DEC] -= 1
        _finish(rf, rq, st, pf, clog, rid, mask, t)
    if ri[r, N_DEC] == 0 and rr[r, R_KVDEC] < 0.5:
        rr[r, R_KVDEC] = 0.0
    ri[r, KIND] = K_IDLE


@_compiled(inline=True)
def _cut_segment(rr: np.ndarray, tt: np.ndarray, ti: np.ndarray, r: int, t: float) -> None:
    """End replica ``r``'s decode segment at the first iteration boundary at or after ``t``,
    so the scheduler sees what arrived (an iteration in progress is never interrupted; a
    segment that has not started yet, after a merged prompt iteration, ends where it starts)."""
    t0 = rr[r, R_T0]
    m = _seg_iters_until(rr[r, R_A], rr[r, R_B], t - t0) if t > t0 else 0.0
    if m < rr[r, R_M]:
        rr[r, R_M] = m
        end = t0 + _seg_sum(rr[r, R_A], rr[r, R_B], m)
        rr[r, R_NEXT] = end
        tree_set(tt, ti, r, end)


@_compiled(inline=True)
def _route(rr: np.ndarray, ri: np.ndarray, pf: np.ndarray, st: np.ndarray, nrep: int) -> int:
    """The ready replica a new request goes to (-1: none is ready)."""
    mode = pf[P_ROUTE]
    if mode == ROUTE_ROUND_ROBIN:
        start = int(st[G_RR])
        for k in range(nrep):
            r = (start + k) % nrep
            if ri[r, RSTATE] == RS_READY:
                st[G_RR] = (r + 1) % nrep
                return r
        return -1
    best = -1
    best_load = INF
    waiting_only = mode == ROUTE_LEAST_WAITING
    for r in range(nrep):
        if ri[r, RSTATE] != RS_READY:
            continue
        load = float(ri[r, Q_LEN])
        if not waiting_only:
            load += ri[r, N_DEC] + ri[r, N_PF]
        if load < best_load:
            best_load = load
            best = r
    return best


@_compiled(inline=True)
def _deliver(rf: np.ndarray, rq: np.ndarray, rr: np.ndarray, ri: np.ndarray,
             hk: np.ndarray, hid: np.ndarray, pfl: np.ndarray, st: np.ndarray,
             pf: np.ndarray, tx: np.ndarray, ty: np.ndarray, lt: np.ndarray, tt: np.ndarray,
             ti: np.ndarray, clog: np.ndarray, flog: np.ndarray, r: int, rid: int, mask: int,
             t: float) -> None:
    """Put request ``rid`` in replica ``r``'s queue at time ``t`` and wake the replica."""
    _queue_push(ri, rq, r, mask, rid, False)
    kind = ri[r, KIND]
    if kind == K_IDLE:
        schedule(rf, rq, rr, ri, hk, hid, pfl, st, pf, tx, ty, lt, tt, ti, clog, flog, r, mask, t)
    elif kind == K_SEGMENT and ri[r, N_DEC] + ri[r, N_PF] < ri[r, BATCH]:
        _cut_segment(rr, tt, ti, r, t)


@_compiled()
def dispatch_gateway(rf: np.ndarray, rq: np.ndarray, rr: np.ndarray, ri: np.ndarray,
                     hk: np.ndarray, hid: np.ndarray, pfl: np.ndarray, st: np.ndarray,
                     pf: np.ndarray, tx: np.ndarray, ty: np.ndarray, lt: np.ndarray,
                     tt: np.ndarray, ti: np.ndarray, clog: np.ndarray, flog: np.ndarray,
                     nrep: int, mask: int, t: float) -> None:
    """Route the requests held at the gateway (they arrived while no replica was ready)."""
    while st[G_GW_LEN] > 0:
        r = _route(rr, ri, pf, st, nrep)
        if r < 0:
            return
        rid = int(st[G_GW_HEAD])
        st[G_GW_HEAD] = rq[rid & mask, I_NEXT]
        st[G_GW_LEN] -= 1.0
        _deliver(rf, rq, rr, ri, hk, hid, pfl, st, pf, tx, ty, lt, tt, ti, clog, flog, r, rid,
                 mask, t)


@_compiled()
def advance(t_end: float, rf: np.ndarray, rq: np.ndarray, rr: np.ndarray, ri: np.ndarray,
            hk: np.ndarray, hid: np.ndarray, pfl: np.ndarray, st: np.ndarray,
            pf: np.ndarray, tx: np.ndarray, ty: np.ndarray, lt: np.ndarray, tt: np.ndarray,
            ti: np.ndarray,
            clog: np.ndarray, flog: np.ndarray, nrep: int) -> int:
    """Run every replica and the arrivals up to ``t_end`` (or until a log is full).

    The caller loads every request arriving up to ``t_end`` into the ring first, or sets
    ``t_end`` no later than the first request it could not load yet.

    Events in time order: a replica's iteration or segment ends (then its scheduler starts
    the next one), or a request arrives (the router sends it to a replica, which wakes up or
    cuts its decode segment short). At equal times replicas go first, so a request arriving
    as a sequence finishes sees the freed slot.
    """
    mask = rf.shape[0] - 1
    api = pf[P_API]
    width = hk.shape[1]
    while True:
        # One event completes or starts at most ``width`` requests: stop while both logs
        # have that much room, so nothing is ever dropped.
        if (st[G_NCOMP_LOG] + width + 1 > clog.shape[0]
                or st[G_NFIRST_LOG] + width + 1 > flog.shape[0]):
            return LOG_FULL
        nid = int(st[G_NEXT_ID])
        ta = rf[nid & mask, F_ARR] + api if nid < int(st[G_TAIL_ID]) else INF
        tr = tt[1]
        st[G_EVENTS] += 1.0
        if tr <= ta and tr <= t_end:
            r = int(ti[1])
            t = tr
            st[G_TIME] = t
            _end_of_work(rf, rq, rr, ri, hk, hid, pfl, st, pf, clog, flog, r, mask, t)
            schedule(rf, rq, rr, ri, hk, hid, pfl, st, pf, tx, ty, lt, tt, ti, clog, flog, r,
                     mask, t)
            if ri[r, RSTATE] == RS_DRAINING and ri[r, KIND] == K_IDLE and ri[r, Q_LEN] == 0:
                ri[r, RSTATE] = RS_GONE
                rr[r, R_GONE] = t
            continue
        if ta <= t_end:
            t = ta
            st[G_TIME] = t
            s = nid & mask
            st[G_NEXT_ID] = nid + 1
            st[G_ARRIVED] += 1.0
            st[G_PROMPT_ARRIVED] += rf[s, F_CTX]
            r = _route(rr, ri, pf, st, nrep)
            if r < 0:
                rq[s, I_REP] = -1
                rq[s, I_NEXT] = -1
                rq[s, I_STATE] = S_QUEUED
                if st[G_GW_LEN] == 0:
                    st[G_GW_HEAD] = nid
                else:
                    rq[int(st[G_GW_TAIL]) & mask, I_NEXT] = nid
                st[G_GW_TAIL] = nid
                st[G_GW_LEN] += 1.0
            else:
                _deliver(rf, rq, rr, ri, hk, hid, pfl, st, pf, tx, ty, lt, tt, ti, clog, flog, r,
                         nid,                         mask, t)
            continue
        st[G_EVENTS] -= 1.0
        st[G_TIME] = t_end
        return DONE


@_compiled()
def fleet_totals(rr: np.ndarray, ri: np.ndarray, nrep: int, out: np.ndarray) -> None:
    """Sums over the ready replicas for a snapshot, in one pass: ``out`` gets ready replicas,
    running (decoding + prefilling), waiting, KV tokens held, draining replicas, and the
    busy seconds of every replica (for utilisation)."""
    ready = 0.0
    running = 0.0
    waiting = 0.0
    kv = 0.0
    draining = 0.0
    busy = 0.0
    for r in range(nrep):
        state = ri[r, RSTATE]
        busy += rr[r, R_BUSY]
        if state == RS_READY:
            ready += 1.0
            running += ri[r, N_DEC] + ri[r, N_PF]
            waiting += ri[r, Q_LEN]
            kv += rr[r, R_KVDEC] + rr[r, R_KVPF]
        elif state == RS_DRAINING:
            draining += 1.0
    out[0] = ready
    out[1] = running
    out[2] = waiting
    out[3] = kv
    out[4] = draining
    out[5] = busy


@njit(cache=True)
def two_quantiles(values: np.ndarray, q1: float, q2: float,
                  skip_nan: bool) -> tuple[float, float]:
    """Two quantiles of ``values`` as ``np.quantile`` computes them (linear interpolation),
    NaN when empty; NaN values skipped when ``skip_nan``. A partition, compiled: a snapshot
    asks every step, and numpy's call overhead on a few hundred values costs more than the
    selection itself."""
    n = values.shape[0]
    buf = np.empty(n)
    m = 0
    for i in range(n):
        v = values[i]
        if skip_nan and math.isnan(v):
            continue
        buf[m] = v
        m += 1
    if m == 0:
        return math.nan, math.nan
    p1 = q1 * (m - 1)
    p2 = q2 * (m - 1)
    kth = np.empty(4, dtype=np.int64)
    kth[0] = math.floor(p1)
    kth[1] = min(kth[0] + 1, m - 1)
    kth[2] = math.floor(p2)
    kth[3] = min(kth[2] + 1, m - 1)
    x = np.partition(buf[:m], np.sort(kth))
    out1 = x[kth[0]] + (p1 - kth[0]) * (x[kth[1]] - x[kth[0]])
    out2 = x[kth[2]] + (p2 - kth[2]) * (x[kth[3]] - x[kth[2]])
    return out1, out2
