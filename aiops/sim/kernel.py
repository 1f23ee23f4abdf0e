"""The inner loop of the simulated cluster, compiled with numba.

Why a compiled kernel: the PPO agent trains on millions of decisions, and each 15-second
decision of a 50 requests/s deployment moves about 750 requests through admission. A Python
loop per request would give a few hundred decisions per second; this kernel gives thousands.
The function is written in the subset of Python numba compiles (arrays and scalars only), so
``NUMBA_DISABLE_JIT=1`` runs the very same code as plain Python for debugging.

The model (fluid in aggregate, exact per request):

* Time advances in bins of ``dt`` seconds. Departures are collected in a ring buffer indexed
  by bin and applied at the start of their bin.
* Requests queue FIFO in front of the deployment (a gateway or the Service spreading load
  evenly). A request is admitted when a batch slot (``--max-num-seqs``) is free on the ready
  replicas and its KV cache need (prompt + output tokens) fits in the free KV cache.
* Prefill work of the whole deployment is one FIFO server of rate ``P * ready`` tokens/s:
  a burst of long prompts queues for prefill even when batch slots are free, which is what
  drives TTFT on bursty code-completion traffic. The request's own prefill then takes
  ``context / P`` on its replica.
* Each admitted request decodes at ``(t0 + k * n) * (1 + s)`` seconds per token, where ``n``
  is the running sequences per ready replica and ``s`` the share of the previous bin spent in
  prefill (chunked prefill steals decode time). The rate is fixed at admission.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Indices into the scalar state vector ``st``.
ST_QHEAD = 0  # index of the first request not yet admitted (FIFO queue head)
ST_ARRIVED = 1  # index one past the last request that has arrived
ST_RUNNING = 2  # running sequences on ready replicas (float: draining removes a share)
ST_KV = 3  # KV cache tokens held by those sequences
ST_PBUSY = 4  # time at which the deployment's prefill server becomes free
ST_PSHARE = 5  # share of the last bin's time spent in prefill, 0..1
ST_BIN = 6  # absolute index of the next bin to simulate
ST_SIZE = 8

# Columns of the per-bin output matrix.
B_ARRIVED = 0
B_ADMITTED = 1
B_COMPLETED = 2
B_PROMPT_TOKENS = 3
B_GEN_TOKENS = 4
B_RUNNING = 5
B_WAITING = 6
B_KV_USED = 7
B_COLS = 8


@njit(cache=True)
def advance(
    nbins: int,
    dt: float,
    arrivals: np.ndarray,
    context: np.ndarray,
    generated: np.ndarray,
    need: np.ndarray,
    out_start: np.ndarray,
    out_ttft: np.ndarray,
    out_tpot: np.ndarray,
    out_done: np.ndarray,
    st: np.ndarray,
    ring_done: np.ndarray,
    ring_kv: np.ndarray,
    ring_gen: np.ndarray,
    ready: float,
    slots: float,
    kvcap: float,
    prof: np.ndarray,
    bins_out: np.ndarray,
) -> None:
    """Simulate ``nbins`` bins from the state in ``st``; write per-bin figures to ``bins_out``.

    The replica set is constant over the call (``ready`` replicas with ``slots`` batch slots
    and ``kvcap`` KV tokens in all): the caller splits time at replica events.

    ``prof`` holds ``[t0, k, prefill_tokens_per_s, ttft_overhead_s]``.
    """
    t0 = prof[0]
    k = prof[1]
    prate = prof[2]
    overhead = prof[3]
    nreq = arrivals.shape[0]
    ring = ring_done.shape[0]
    qhead = int(st[ST_QHEAD])
    arrived = int(st[ST_ARRIVED])
    running = st[ST_RUNNING]
    kv_used = st[ST_KV]
    pbusy = st[ST_PBUSY]
    pshare = st[ST_PSHARE]
    b = int(st[ST_BIN])
    for i in range(nbins):
        tb = b * dt
        te = tb + dt
        slot = b % ring
        done = ring_done[slot]
        running -= done
        kv_used -= ring_kv[slot]
        gen_done = ring_gen[slot]
        ring_done[slot] = 0.0
        ring_kv[slot] = 0.0
        ring_gen[slot] = 0.0
        if running < 1e-9:
            running = 0.0
        if kv_used < 1e-6:
            kv_used = 0.0
        first_arrival = arrived
        while arrived < nreq and arrivals[arrived] < te:
            arrived += 1
        free = slots - running
        kv_free = kvcap - kv_used
        admitted = 0
        prompt_tokens = 0.0
        prefill_work = 0.0
        if ready > 0.0:
            cluster_rate = prate * ready
            step_slow = 1.0 + pshare
            while qhead < arrived and free >= 1.0 and need[qhead] <= kv_free:
                a = arrivals[qhead]
                s = a
                s = max(s, tb)
                s = max(s, pbusy)
                if s >= te:
                    break
                ctx = context[qhead]
                pbusy = s + ctx / cluster_rate
                prefill_work += ctx / cluster_rate
                ttft = (s - a) + overhead + ctx / prate
                n = (running + 1.0) / ready
                tpot = (t0 + k * n) * step_slow
                finish = a + ttft + generated[qhead] * tpot
                fb = math.floor(finish / dt)
                if fb <= b:
                    fb = b + 1
                if fb - b >= ring:
                    fb = b + ring - 1
                fslot = fb % ring
                ring_done[fslot] += 1.0
                ring_kv[fslot] += need[qhead]
                ring_gen[fslot] += generated[qhead]
                out_start[qhead] = s
                out_ttft[qhead] = ttft
                out_tpot[qhead] = tpot
                out_done[qhead] = finish
                running += 1.0
                kv_used += need[qhead]
                free -= 1.0
                kv_free -= need[qhead]
                prompt_tokens += ctx
                admitted += 1
                qhead += 1
        pshare = prefill_work / dt
        pshare = min(pshare, 1.0)
        bins_out[i, B_ARRIVED] = arrived - first_arrival
        bins_out[i, B_ADMITTED] = admitted
        bins_out[i, B_COMPLETED] = done
        bins_out[i, B_PROMPT_TOKENS] = prompt_tokens
        bins_out[i, B_GEN_TOKENS] = gen_done
        bins_out[i, B_RUNNING] = running
        bins_out[i, B_WAITING] = arrived - qhead
        bins_out[i, B_KV_USED] = kv_used
        b += 1
    st[ST_QHEAD] = qhead
    st[ST_ARRIVED] = arrived
    st[ST_RUNNING] = running
    st[ST_KV] = kv_used
    st[ST_PBUSY] = pbusy
    st[ST_PSHARE] = pshare
    st[ST_BIN] = b


@njit(cache=True)
def window_quantiles(
    values: np.ndarray, lo: int, hi: int, q1: float, q2: float
) -> tuple[float, float]:
    """Two quantiles of ``values[lo:hi]`` (NaN when empty), nearest-rank on a sorted copy."""
    n = hi - lo
    if n <= 0:
        return math.nan, math.nan
    v = np.sort(values[lo:hi])
    i1 = int(q1 * (n - 1) + 0.5)
    i2 = int(q2 * (n - 1) + 0.5)
    return v[i1], v[i2]


def ring_size(dt: float, longest_request_s: float) -> int:
    """Bins the departure ring must span: the longest request plus a margin."""
    return int(np.ceil(longest_request_s / dt)) + 4
