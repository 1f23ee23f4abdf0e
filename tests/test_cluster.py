"""Queueing sanity of the simulated cluster: the behaviour its verdicts rest on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aiops.errors import InputError
from aiops.sim.cluster import ClusterSim, SloSpec, feasible_mask
from aiops.sim.profiles import Profile, available_profiles, load_profile
from aiops.sim.workloads import Workload

PROFILE = load_profile("llama3-8b-a100")


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


def run(sim: ClusterSim, seconds: float, step: float = 15.0) -> list[np.ndarray]:
    bins = []
    while sim.time < seconds - 1e-9:
        sim.step(step)
        bins.append(sim._last_bins.copy())
    return bins


def test_under_capacity_queue_stays_bounded_and_ttft_is_the_prefill_time() -> None:
    w = poisson_workload(10.0, 1200.0)
    sim = ClusterSim(PROFILE, w, replicas=4)
    run(sim, 1200.0)
    sim.finish()
    res = sim.result()
    prefill = PROFILE.ttft_overhead_s + 500 / PROFILE.prefill_tokens_per_s
    assert res.unfinished == 0
    assert res.ttft_p50_s == pytest.approx(prefill, rel=0.25)
    assert res.slo_attainment > 0.99
    assert np.nanmax(sim.ttft) < 1.0


def test_over_capacity_the_queue_grows() -> None:
    # One replica decodes ~2,300 tokens/s at batch 64; 40 req/s x 100 tokens needs 4,000.
    w = poisson_workload(40.0, 900.0)
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
    bins = np.concatenate(run(sim, 1800.0))
    sim.finish()
    # Time-average requests in the system over the whole run...
    in_system = (bins[:, 5] + bins[:, 6]).mean()
    # ...equals the arrival rate times the mean time in the system.
    sojourn = float(np.mean(sim.done - w.arrivals))
    rate = len(w) / 1800.0
    assert in_system == pytest.approx(rate * sojourn, rel=0.1)


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


def test_scale_down_drains_and_drops_nothing() -> None:
    w = poisson_workload(30.0, 600.0, gen=400)
    sim = ClusterSim(PROFILE, w, replicas=6)
    run(sim, 300.0)
    running_before = sim.requests_running
    sim.scale(1)
    assert sim.draining_replicas == 5
    assert sim.requests_running == pytest.approx(running_before / 6, rel=1e-6)
    sim.step(15.0)
    # The drained replicas still cost: more than one pod's worth over that step.
    cost_after = sim.gpu_seconds
    assert cost_after > 6 * 300.0 + 1 * 15.0
    sim.finish(max_seconds=36000)
    res = sim.result()
    assert res.unfinished == 0
    assert not np.isnan(sim.ttft).any()
    assert (sim.done >= w.arrivals).all()


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
    assert sim._ready == [128] * 4
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


def test_kv_cache_limits_admission() -> None:
    # Requests of 100k tokens: only 4 fit a 420k-token cache, whatever the batch size.
    w = Workload(name="long", arrivals=np.zeros(10), context_tokens=np.full(10, 95_000),
                 generated_tokens=np.full(10, 5000), duration=60.0, meta={})
    sim = ClusterSim(PROFILE, w, replicas=1)
    sim.step(40.0)  # four prefills of ~7 s each are done; none has finished decoding
    assert sim.requests_running == 4
    assert sim.snapshot().kv_cache_usage > 0.9


def test_shipped_profiles_load_and_match_their_published_figures() -> None:
    assert {"llama3-8b-a100", "llama3-70b-a100x4"} <= set(available_profiles())
    p = load_profile("llama3-8b-a100")
    assert 2000 <= p.decode_tokens_per_s(64) <= 2600  # ~2,300 tokens/s at batch 64
    unloaded_ttft = p.ttft_overhead_s + 300 / p.prefill_tokens_per_s
    assert 0.03 <= unloaded_ttft <= 0.05  # ~40 ms
    assert 60 <= p.cold_start_s <= 120
    big = load_profile("llama3-70b-a100x4")
    assert big.gpus_per_replica == 4
    assert all(p.sources for p in (p, big))


def test_bad_profile_names_the_problem(tmp_path: object) -> None:
    with pytest.raises(InputError, match="unknown profile 'nope'"):
        load_profile("nope")
    from pathlib import Path

    path = Path(str(tmp_path)) / "p.yaml"
    path.write_text("name: x\n")
    with pytest.raises(InputError, match="missing profile key"):
        load_profile(str(path))
    with pytest.raises(InputError, match="default_batch_size"):
        Profile(name="x", model="m", gpu="g", gpus_per_replica=1, gpu_hour_usd=1,
                decode_t0_s=0.01, decode_k_s=0.0, prefill_tokens_per_s=1, ttft_overhead_s=0,
                kv_cache_tokens=1, cold_start_s=0, batch_sizes=(8,), default_batch_size=16)


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


def test_feasible_attainment_excludes_prompts_no_fleet_can_prefill_in_time() -> None:
    # TTFT 0.5 s: at 14k prompt tokens/s and 20 ms overhead the limit is 6,720 tokens.
    limit = (0.5 - PROFILE.ttft_overhead_s) * PROFILE.prefill_tokens_per_s
    w = poisson_workload(2.0, 600.0, seed=4)
    ctx = np.array(w.context_tokens)
    long_at = np.arange(3, len(w), 50)  # every 50th request has an over-long prompt
    ctx[long_at] = int(limit) + 500
    ctx[long_at[::2] + 1] = int(limit) - 1500  # long, feasible with some margin
    w = Workload(name="some-long", arrivals=w.arrivals, context_tokens=ctx,
                 generated_tokens=w.generated_tokens, duration=w.duration, meta={})
    mask = feasible_mask(PROFILE, w.context_tokens)
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
    w = poisson_workload(40.0, 600.0)  # one replica cannot keep up: the queue grows
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
    # A TPOT objective below the decode step's fixed cost is unreachable for every request.
    slow = SloSpec(tpot_s=0.5 * PROFILE.decode_t0_s)
    assert not feasible_mask(PROFILE, ctx, slow).any()
