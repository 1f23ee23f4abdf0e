"""The simulated server and cluster: the behaviour every verdict of aiops rests on."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from aiops.errors import InputError
from aiops.sim import kernel as kn
from aiops.sim.cluster import ClusterSim, SloSpec, feasible_mask
from aiops.sim.profiles import IterationModel, Profile, available_profiles, load_profile
from aiops.sim.stream import WorkloadStream
from aiops.sim.workloads import Workload

PROFILE = load_profile("llama3-8b-a100")
IT = PROFILE.iteration


def poisson_workload(rate: float, duration: float, *, ctx: int = 500, gen: int = 100,
                     seed: int = 1) -> Workload:
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate * duration))
    arrivals = np.sort(rng.uniform(0.0, duration, n))
    return Workload(
        name=f"poisson-{rate}",
        arrivals=arrivals,
        context_tokens=np.full(n, ctx, dtype=np.int64),
        generated_tokens=np.full(n, gen, dtype=np.int64),
        duration=duration,
        meta={},
    )


def requests(arrivals: list[float], ctx: list[int], gen: list[int],
             duration: float = 60.0) -> Workload:
    return Workload("few", np.array(arrivals, dtype=float), np.array(ctx), np.array(gen),
                    duration)


def run(sim: ClusterSim, seconds: float, step: float = 15.0) -> list[float]:
    """Step to ``seconds``; requests in the system (running + waiting) after each step."""
    in_system = []
    while sim.time < seconds - 1e-9:
        sim.step(step)
        snap = sim.snapshot()
        in_system.append(snap.requests_running + snap.requests_waiting)
    return in_system


# ------------------------------------------------------------------ one request, by hand


def test_a_lone_request_takes_its_prefill_then_one_decode_step_per_token() -> None:
    w = requests([1.0], [1000], [50])
    sim = ClusterSim(PROFILE, w, replicas=1)
    sim.finish()
    prefill = float(IT.prefill_step(1000, 0.0))
    # The first token comes with the iteration that completes the prompt.
    assert sim.ttft[0] == pytest.approx(PROFILE.api_overhead_s + prefill, rel=1e-9)
    # 49 decode steps, each attending to the prompt and the tokens so far.
    steps = [float(IT.decode_step(1, 1000 + g)) for g in range(1, 50)]
    assert sim.tpot[0] == pytest.approx(np.mean(steps), rel=1e-9)
    assert sim.done[0] == pytest.approx(1.0 + PROFILE.api_overhead_s + prefill + sum(steps))


def test_a_prompt_longer_than_the_budget_is_prefilled_in_chunks() -> None:
    budget = PROFILE.max_num_batched_tokens
    w = requests([0.0], [2 * budget + 100], [2])
    sim = ClusterSim(PROFILE, w, replicas=1)
    sim.finish()
    chunks = [(budget, 0), (budget, budget), (100, 2 * budget)]
    expect = PROFILE.api_overhead_s + sum(
        float(IT.prefill_step(c, k, emitting=1.0 if k == 2 * budget else 0.0))
        for c, k in chunks)
    assert sim.ttft[0] == pytest.approx(expect, rel=1e-9)
    assert sim.ttft[0] == pytest.approx(float(PROFILE.idle_ttft(2 * budget + 100)), rel=1e-9)


def test_a_decode_step_that_carries_a_prompt_chunk_lasts_as_long_as_the_chunk() -> None:
    # A long decode is running when a 2,000-token prompt arrives: the decode's next
    # iteration carries the chunk, so that step takes the chunk's time, not a decode step's.
    w = requests([0.0, 0.3], [200, 2000], [200, 5])
    sim = ClusterSim(PROFILE, w, replicas=1)
    sim.finish()
    alone = ClusterSim(PROFILE, requests([0.0], [200], [200]), replicas=1)
    alone.finish()
    mixed = float(IT.linear(1 + 2000) + IT.chunk_attention(2000, 0))
    # The decoding request's mean step grew by about the mixed step's extra time / 199.
    extra = (sim.tpot[0] - alone.tpot[0]) * 199
    assert extra == pytest.approx(mixed - float(IT.linear(1)), rel=0.05)
    assert mixed > 10 * float(IT.decode_step(1, 400))


def test_prefill_first_pauses_decodes_and_chunked_prefill_does_not() -> None:
    w = requests([0.0, 0.5, 0.55, 0.6], [200, 6000, 6000, 6000], [400, 2, 2, 2])
    results = {}
    for sched, budget in (("chunked-prefill", 2048), ("prefill-first", 8192)):
        prof = PROFILE.with_changes(scheduler=sched, max_num_batched_tokens=budget)
        sim = ClusterSim(prof, w, replicas=1)
        sim.finish()
        results[sched] = (sim.tpot[0], sim.ttft[1:].mean())
    # Prefill first: the decoding request stalls for whole 6k prompts, the prompts go fast.
    assert results["prefill-first"][1] < results["chunked-prefill"][1]
    # Chunked: the decode is never stalled for a whole prompt, only for a chunk at a time,
    # but it carries more of them.
    assert results["chunked-prefill"][0] != pytest.approx(results["prefill-first"][0])


def test_kv_cache_limits_admission_and_a_full_cache_preempts() -> None:
    # Prompts of 95k tokens: only 4 fit a 420k-token cache, whatever the batch size. Each
    # takes ~25 s to prefill (its later chunks attend to ~90k tokens each).
    w = Workload(name="long", arrivals=np.zeros(10), context_tokens=np.full(10, 95_000),
                 generated_tokens=np.full(10, 12_000), duration=60.0, meta={})
    sim = ClusterSim(PROFILE, w, replicas=1)
    sim.step(150.0)
    assert sim.requests_running == 4
    assert sim.requests_waiting == 6
    assert sim.snapshot().kv_cache_usage > 0.85
    # Their outputs grow the cache past its size: decodes must preempt to go on.
    sim.finish(max_seconds=36000)
    res = sim.result()
    assert res.unfinished == 0
    assert res.preemptions > 0


def test_merging_a_prompt_iteration_with_the_decode_segment_after_it_changes_nothing(
) -> None:
    """The kernel applies a prompt-carrying iteration at once when nothing outside the
    replica can see it; per-request results must be exactly those of applying it at its
    end (the P_MERGE switch turns the shortcut off)."""
    w = poisson_workload(12.0, 600.0, ctx=900, gen=60, seed=7)
    outs = []
    for merge in (1.0, 0.0):
        sim = ClusterSim(PROFILE, w, replicas=2)
        sim._pf[kn.P_MERGE] = merge
        run(sim, 600.0)
        sim.finish()
        outs.append((sim.ttft.copy(), sim.tpot.copy(), int(sim._st[kn.G_EVENTS])))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert outs[0][2] < outs[1][2]  # the shortcut did take events away


# ------------------------------------------------------------------ queueing


def test_under_capacity_the_queue_stays_bounded_and_ttft_is_the_prefill_time() -> None:
    w = poisson_workload(10.0, 1200.0)
    sim = ClusterSim(PROFILE, w, replicas=4)
    in_system = run(sim, 1200.0)
    sim.finish()
    res = sim.result()
    assert res.unfinished == 0
    assert res.ttft_p50_s == pytest.approx(float(PROFILE.idle_ttft(500)), rel=0.5)
    assert res.slo_attainment > 0.99
    assert max(in_system) < 100


def test_over_capacity_the_queue_grows() -> None:
    w = poisson_workload(60.0, 900.0)
    sim = ClusterSim(PROFILE, w, replicas=1)
    waiting = []
    while sim.time < 900.0:
        sim.step(15.0)
        waiting.append(sim.snapshot().requests_waiting)
    third = len(waiting) // 3
    assert np.mean(waiting[-third:]) > 3 * np.mean(waiting[:third]) > 0
    assert sim.snapshot().requests_running == pytest.approx(64, abs=1)  # the batch is full
    sim.finish(max_seconds=7200)
    assert sim.result().slo_attainment < 0.2


def test_littles_law_holds() -> None:
    w = poisson_workload(25.0, 1800.0, gen=150)
    sim = ClusterSim(PROFILE, w, replicas=3)
    in_system = run(sim, 1800.0, step=5.0)
    sim.finish()
    sojourn = float(np.mean(sim.done - w.arrivals))
    rate = len(w) / 1800.0
    assert float(np.mean(in_system)) == pytest.approx(rate * sojourn, rel=0.1)


@pytest.mark.parametrize("routing", ["least-outstanding", "least-waiting", "round-robin"])
def test_every_routing_serves_every_request(routing: str) -> None:
    w = poisson_workload(20.0, 300.0)
    sim = ClusterSim(PROFILE, w, replicas=3, routing=routing)
    run(sim, 300.0)
    sim.finish()
    assert sim.result().unfinished == 0


def test_least_outstanding_spreads_light_load_and_least_waiting_piles_it_up() -> None:
    """Vidur's LOR counts only queued requests and breaks ties to the first replica, so at
    light load one replica gets nearly everything; a least-request balancer does not."""
    w = poisson_workload(6.0, 600.0, ctx=300, gen=200)
    tpot = {}
    for routing in ("least-outstanding", "least-waiting"):
        sim = ClusterSim(PROFILE, w, replicas=4, routing=routing)
        run(sim, 600.0)
        sim.finish()
        tpot[routing] = float(np.nanmean(sim.tpot))
    assert tpot["least-waiting"] > 1.1 * tpot["least-outstanding"]


# ------------------------------------------------------------------ Kubernetes side


def test_cold_start_delays_readiness_and_costs_meanwhile() -> None:
    w = poisson_workload(1.0, 600.0)
    sim = ClusterSim(PROFILE, w, replicas=1)
    sim.scale(3)
    ready = []
    while sim.time < 300.0:
        sim.step(15.0)
        ready.append((sim.time, sim.ready_replicas))
    before = [r for t, r in ready if t < PROFILE.cold_start_s]
    after = [r for t, r in ready if t >= PROFILE.cold_start_s + 1.0]
    assert set(before) == {1}
    assert set(after) == {3}
    # Three pods for 300 s were paid for, starting or not.
    assert sim.gpu_seconds == pytest.approx(3 * 300.0)


def test_requests_arriving_with_no_ready_replica_wait_at_the_gateway() -> None:
    w = requests([1.0, 2.0, 3.0], [100, 100, 100], [5, 5, 5], duration=200.0)
    sim = ClusterSim(PROFILE, w, replicas=0)
    sim.scale(1)
    sim.step(30.0)
    assert sim.requests_waiting == 3
    sim.finish()
    assert sim.ttft[0] == pytest.approx(PROFILE.cold_start_s - 1.0, abs=0.5)
    assert sim.result().unfinished == 0


def test_scale_down_drains_and_drops_nothing() -> None:
    w = poisson_workload(30.0, 600.0, gen=400)
    sim = ClusterSim(PROFILE, w, replicas=6)
    run(sim, 300.0)
    sim.scale(1)
    assert sim.draining_replicas == 5
    assert sim.ready_replicas == 1
    sim.step(15.0)
    # The drained replicas still cost: more than one pod's worth over that step.
    assert sim.gpu_seconds > 6 * 300.0 + 1 * 15.0
    sim.finish(max_seconds=36000)
    res = sim.result()
    assert res.unfinished == 0
    assert sim.draining_replicas == 0
    assert not np.isnan(sim.ttft).any()
    assert (sim.done >= w.arrivals).all()


def test_an_idle_replica_removed_stops_costing_at_once() -> None:
    w = requests([500.0], [100], [5], duration=600.0)
    sim = ClusterSim(PROFILE, w, replicas=3)
    sim.step(60.0)
    sim.scale(1)
    assert sim.draining_replicas == 0
    sim.step(60.0)
    assert sim.gpu_seconds == pytest.approx(3 * 60.0 + 1 * 60.0)


def test_scale_down_removes_starting_pods_first() -> None:
    w = poisson_workload(1.0, 300.0)
    sim = ClusterSim(PROFILE, w, replicas=2)
    sim.scale(5)
    assert sim.starting_replicas == 3
    sim.scale(3)
    assert (sim.ready_replicas, sim.starting_replicas, sim.draining_replicas) == (2, 1, 0)


def test_batch_size_change_is_a_rolling_update() -> None:
    w = poisson_workload(5.0, 900.0)
    sim = ClusterSim(PROFILE, w, replicas=4, batch_size=64)
    sim.set_batch_size(128)
    assert sim.starting_replicas == 1  # maxSurge 25% of 4, maxUnavailable 0
    assert sim.ready_replicas == 4
    seen_ready = []
    while sim.time < 900.0:
        sim.step(15.0)
        seen_ready.append(sim.ready_replicas)
    assert min(seen_ready) >= 4  # never below the desired count
    assert sim.replica_batch_sizes() == [128] * 4
    assert sim.desired_replicas == 4


def test_same_workload_same_result() -> None:
    a = ClusterSim(PROFILE, poisson_workload(20.0, 600.0, seed=3), replicas=2)
    b = ClusterSim(PROFILE, poisson_workload(20.0, 600.0, seed=3), replicas=2)
    for sim in (a, b):
        run(sim, 600.0)
        sim.scale(3)
        sim.finish()
    assert a.result() == b.result()
    np.testing.assert_array_equal(a.ttft, b.ttft)


def test_prometheus_metrics_use_vllm_names_and_count_every_request() -> None:
    w = poisson_workload(5.0, 300.0)
    sim = ClusterSim(PROFILE, w, replicas=2)
    run(sim, 300.0)
    sim.finish()
    m = sim.prometheus_metrics()
    hist = m["vllm:time_to_first_token_seconds_bucket"]
    assert isinstance(hist, dict)
    counts = list(hist.values())
    assert counts == sorted(counts)  # cumulative buckets
    assert hist["+Inf"] == len(w)
    assert m["vllm:request_success_total"] == len(w)
    assert m["kube_deployment_status_replicas_ready"] == 2
    assert m["vllm:prompt_tokens_total"] == 500 * len(w)
    assert m["vllm:generation_tokens_total"] == 100 * len(w)


def test_tpot_is_exported_per_request_and_per_output_token() -> None:
    """vLLM exports TPOT twice: once per finished request, once per inter-token gap. A reply
    of n tokens is one count in the first and n - 1 in the second (one output token: no
    TPOT in either); every histogram fills the same whether scraped all along or only at
    the end (a first scrape while requests run counts the TTFTs they already had)."""
    rng = np.random.default_rng(4)
    n = 600
    gen = rng.choice([1, 2, 3, 40, 300], size=n)
    w = Workload(name="mixed", arrivals=np.sort(rng.uniform(0.0, 120.0, n)),
                 context_tokens=rng.integers(50, 3000, n), generated_tokens=gen,
                 duration=120.0, meta={})
    scraped: dict[bool, dict[str, float | dict[str, float]]] = {}
    for along in (True, False):
        sim = ClusterSim(PROFILE, w, replicas=2)
        while sim.time < 120.0 - 1e-9:
            sim.step(15.0)
            if along:
                sim.prometheus_metrics()
        sim.finish()
        scraped[along] = sim.prometheus_metrics()
        tpot = sim.tpot
        has = ~np.isnan(tpot)
        assert has.sum() == (gen > 1).sum()
        m = scraped[along]
        assert m["vllm:request_time_per_output_token_seconds_count"] == has.sum()
        assert m["vllm:time_per_output_token_seconds_count"] == (gen[has] - 1).sum()
        assert m["vllm:request_time_per_output_token_seconds_sum"] == pytest.approx(
            tpot[has].sum())
        assert m["vllm:time_per_output_token_seconds_sum"] == pytest.approx(
            (tpot[has] * (gen[has] - 1)).sum())
        slow = tpot[has] > 0.05
        per_token = m["vllm:time_per_output_token_seconds_bucket"]
        per_request = m["vllm:request_time_per_output_token_seconds_bucket"]
        assert isinstance(per_token, dict) and isinstance(per_request, dict)
        assert per_request["0.05"] == (~slow).sum()
        assert per_token["0.05"] == (gen[has][~slow] - 1).sum()
    assert len([name for name in scraped[True] if "time_per_output_token" in name]) == 6
    for name, value in scraped[True].items():
        expect = scraped[False][name]
        if isinstance(value, dict):
            assert isinstance(expect, dict) and value.keys() == expect.keys(), name
            assert list(value.values()) == pytest.approx(list(expect.values())), name
        else:
            assert value == pytest.approx(expect), name


# ------------------------------------------------------------------ bounded memory


def test_a_stream_replays_exactly_like_the_workload_in_memory() -> None:
    """Window by window, with per-request arrays off, gives the same counts and (within the
    sketch's accuracy) the same percentiles as holding every request."""
    w = poisson_workload(30.0, 1800.0, ctx=700, gen=80, seed=5)
    full = ClusterSim(PROFILE, w, replicas=3)
    streamed = ClusterSim(PROFILE, WorkloadStream(w), replicas=3, chunk_s=120.0)
    for sim in (full, streamed):
        run(sim, 1800.0)
        sim.scale(2)
        sim.finish()
    a, b = full.result(), streamed.result()
    assert not streamed.keep_requests
    for key in ("requests", "unfinished", "slo_attainment", "slo_attainment_feasible",
                "gpu_hours", "scale_ups", "scale_downs", "max_replicas", "preemptions"):
        assert getattr(a, key) == getattr(b, key), key
    for key in ("ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s"):
        assert getattr(b, key) == pytest.approx(getattr(a, key), rel=0.01), key


def test_the_chunk_size_of_a_stream_changes_nothing() -> None:
    w = poisson_workload(20.0, 900.0, seed=9)
    results = []
    for chunk in (37.0, 900.0):
        sim = ClusterSim(PROFILE, WorkloadStream(w), replicas=2, chunk_s=chunk)
        run(sim, 900.0)
        sim.finish()
        results.append(sim.result())
    assert results[0] == results[1]


def test_the_request_ring_grows_under_a_backlog_and_loses_nothing() -> None:
    w = poisson_workload(300.0, 600.0, ctx=200, gen=20, seed=2)  # ~180k requests
    sim = ClusterSim(PROFILE, WorkloadStream(w), replicas=1)
    run(sim, 600.0)
    sim.scale(40)
    sim.finish(max_seconds=36000)
    assert sim.result().unfinished == 0
    assert sim.result().requests == len(w)


# ------------------------------------------------------------------ profiles


def test_shipped_profiles_load_and_keep_their_sources() -> None:
    assert {"llama3-8b-a100", "llama3-8b-a100-pull", "llama3-70b-a100x4"} <= set(
        available_profiles())
    p = load_profile("llama3-8b-a100")
    assert 60 <= p.cold_start_s <= 120
    assert load_profile("llama3-8b-a100-pull").cold_start_s == 300
    assert load_profile("llama3-8b-a100-pull").iteration == p.iteration
    big = load_profile("llama3-70b-a100x4")
    assert big.gpus_per_replica == 4
    assert all(x.sources and x.fit.get("command") for x in (p, big))


def test_the_8b_profile_is_never_faster_than_vidurs_gpu_time() -> None:
    """Vidur's A100 figures, summed over the layers, are a lower bound: decode about 10.2 ms
    + 29.9 us per sequence + 86.8 ns per KV token, prefill 10,700-13,000 tokens/s."""
    for n in (1, 8, 32, 64):
        for ctx in (256, 1024, 4096):
            gpu_only = 10.2e-3 + 29.9e-6 * n + 86.8e-9 * n * ctx
            step = float(IT.decode_step(n, n * ctx))
            assert 0.9 * gpu_only <= step <= 1.35 * gpu_only, (n, ctx)
    assert 9000 <= PROFILE.prefill_tokens_per_s() <= 13000


def test_bad_profile_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown profile 'nope'"):
        load_profile("nope")
    path = tmp_path / "p.yaml"
    path.write_text("name: x\n")
    with pytest.raises(InputError, match="missing profile key"):
        load_profile(str(path))
    path.write_text("name: x\nmodel: m\ngpu: g\ngpus_per_replica: 1\ngpu_hour_usd: 1\n"
                    "decode_t0_s: 0.01\ndecode_k_s: 0.001\nprefill_tokens_per_s: 9000\n")
    with pytest.raises(InputError, match=r"old profile format.*aiops profile fit"):
        load_profile(str(path))
    it = IterationModel(linear_tokens=((1, 0.01), (100, 0.02)))
    with pytest.raises(InputError, match="default_batch_size"):
        Profile(name="x", model="m", gpu="g", gpus_per_replica=1, gpu_hour_usd=1,
                kv_cache_tokens=1, cold_start_s=0, batch_sizes=(8,), default_batch_size=16,
                iteration=it)
    with pytest.raises(InputError, match="scheduler must be one of"):
        PROFILE.with_changes(scheduler="fifo")
    with pytest.raises(InputError, match="increasing"):
        IterationModel(linear_tokens=((100, 0.01), (1, 0.02)))


def test_capacity_estimate_is_what_the_simulator_sustains() -> None:
    """Both sides: three replicas serve three replicas' estimated capacity within the SLO,
    and half as much again overloads them (an estimate far below what the simulator
    sustains would pass the first check alone and oversize every fleet)."""
    cap = PROFILE.replica_capacity_rps(64, 500, 100)
    assert math.isfinite(cap) and cap > 0

    def attainment(rate: float) -> float:
        sim = ClusterSim(PROFILE, poisson_workload(rate, 900.0), replicas=3)
        run(sim, 900.0)
        sim.finish()
        return sim.result().slo_attainment

    assert attainment(3 * cap) > 0.95
    assert attainment(1.5 * 3 * cap) < 0.5


def test_the_capacity_moves_continuously_with_the_mix() -> None:
    """Near the TTFT limit capacity is steep; a planner that follows a live mix must not see
    it jump where the cached measurements' rounding changes."""
    def at(prompt: float) -> float:
        return PROFILE.replica_capacity_rps(64, prompt, 28.0)

    lo, hi = at(2000.0), at(2100.0)
    assert hi < 0.8 * lo  # steep here: the case that matters
    assert at(2050.0) == pytest.approx((lo + hi) / 2)  # between two measured mixes
    assert abs(at(2099.9) - at(2100.1)) < 0.01 * hi  # either side of a boundary
    assert abs(at(2049.9) - at(2050.1)) < 0.01 * hi  # where rounding once switched


# ------------------------------------------------------------------ feasibility


def test_feasible_attainment_excludes_prompts_no_fleet_can_prefill_in_time() -> None:
    ctx_grid = np.arange(100, 20000, 50)
    limit = int(ctx_grid[PROFILE.idle_ttft(ctx_grid) <= 0.5].max())
    w = poisson_workload(2.0, 600.0, seed=4)
    ctx = np.array(w.context_tokens)
    long_at = np.arange(3, len(w), 50)  # every 50th request has an over-long prompt
    ctx[long_at] = limit + 200
    ctx[long_at[::2] + 1] = limit - 1500  # long, feasible with some margin
    w = Workload(name="some-long", arrivals=w.arrivals, context_tokens=ctx,
                 generated_tokens=w.generated_tokens, duration=w.duration, meta={})
    mask = feasible_mask(PROFILE, w.context_tokens, None, w.generated_tokens)
    assert int((~mask).sum()) == len(long_at)
    sim = ClusterSim(PROFILE, w, replicas=4)  # far more than 2 req/s needs: no queueing
    run(sim, 600.0)
    sim.finish()
    res = sim.result()
    n = len(w)
    assert res.infeasible_requests == len(long_at)
    assert res.slo_attainment_feasible == 1.0
    assert res.slo_attainment == pytest.approx((n - len(long_at)) / n)
    d = res.as_dict()
    assert d["infeasible_requests"] == len(long_at)
    assert d["slo_attainment_feasible"] == 1.0


def test_feasible_attainment_still_counts_feasible_misses_and_unserved() -> None:
    w = poisson_workload(60.0, 600.0)  # one replica cannot keep up: the queue grows
    sim = ClusterSim(PROFILE, w, replicas=1)
    run(sim, 600.0)
    res = sim.result()  # no finish(): part of the queue was never served
    assert res.unfinished > 0
    assert res.infeasible_requests == 0
    assert res.slo_attainment_feasible == pytest.approx(res.slo_attainment)
    assert res.slo_attainment_feasible < 0.5


def test_feasible_mask_uses_the_slo_and_the_decode_step() -> None:
    ctx = np.array([100, 3000, 7000])
    assert feasible_mask(PROFILE, ctx).tolist() == [True, True, False]
    assert feasible_mask(PROFILE, ctx, SloSpec(ttft_s=0.2)).tolist() == [True, False, False]
    # A TPOT objective below a lone decode step is unreachable for every multi-token request.
    slow = SloSpec(tpot_s=0.5 * float(IT.decode_step(1, 100)))
    assert not feasible_mask(PROFILE, ctx, slow, np.full(3, 10)).any()
    assert feasible_mask(PROFILE, ctx[:1], slow, np.ones(1)).all()  # one token: no TPOT
