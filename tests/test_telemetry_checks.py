"""Telemetry checks that keep a scale-down from resting on numbers no one can vouch for.

Each test drives ``TelemetryChecks`` tick by tick with generated
traffic and names the rule it exercises: a rate stuck at an idle value, an unchanged page,
counts that are always even, ratios pooled over quiet ticks, and a band centred on the
latest good ticks.
"""

from __future__ import annotations

import math

import numpy as np
from fakes.vllm import traffic

from aiops.detect.multivariate import VLLM_METRICS, Capacity
from aiops.detect.telemetry import Finding, TelemetryChecks

STEP = 15.0
CAP = Capacity(ready_replicas=8, replicas=8, batch_size=64)
ZERO_PAGE = {"arrival_rate": 0.0, "prompt_tokens_rate": 0.0, "generation_tokens_rate": 0.0,
             "requests_running": 0.0, "requests_waiting": 0.0, "kv_cache_usage": 0.0,
             "gpu_utilization": math.nan, "ttft_p99": math.nan, "tpot_p99": math.nan,
             "ttft_p50": math.nan}


def feed(checks: TelemetryChecks, rows: list[dict[str, float]], start: int = 0,
         capacity: Capacity | None = CAP) -> list[tuple[list[Finding], list[str]]]:
    """Each tick's findings and doubts."""
    out = []
    for k, row in enumerate(rows):
        found = checks.update(STEP * (start + k), row, capacity)
        out.append((found, list(checks.doubts)))
    return out


def doubts_with(ticks: list[tuple[list[Finding], list[str]]], text: str) -> list[bool]:
    return [any(text in d for d in doubts) for _, doubts in ticks]


def found_on(ticks: list[tuple[list[Finding], list[str]]], metric: str) -> list[bool]:
    return [any(f.metric == metric for f in found) for found, _ in ticks]


def test_an_arrival_rate_stuck_at_zero_beside_prefills_is_found_and_not_forgotten_when_idle(
        ) -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    feed(checks, traffic(200))
    stuck = traffic(4, seed=1)
    for row in stuck:
        row["arrival_rate"] = 0.0  # flat at an idle value while prompts are prefilled
    ticks = feed(checks, stuck, start=200)
    assert found_on(ticks, "arrival_rate") == [False, False, True, True]
    # then the service goes idle: every metric reads 0, as it would with the rate stuck
    idle = feed(checks, [dict(ZERO_PAGE) for _ in range(6)], start=204)
    assert all(doubts_with(idle, "arrival_rate read 0"))
    back = feed(checks, traffic(2, seed=2), start=210)  # it moves: the doubt is cleared
    assert not any(doubts_with(back, "arrival_rate read 0"))


def test_a_doubt_on_the_last_tick_with_traffic_outlasts_the_idle_ticks_after_it() -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    feed(checks, traffic(200))
    (row,) = traffic(1, seed=1)
    row["prompt_tokens_rate"] *= 2  # twice the usual prompt per request: a unit, or a mix?
    (tick,) = feed(checks, [row], start=200)
    assert not tick[0] and any("off its usual" in d for d in tick[1])
    # idle pages cannot judge a ratio (no request to count tokens of), so they keep the
    # doubt, past the unchanged page's freshness limit too
    idle = feed(checks, [dict(ZERO_PAGE) for _ in range(12)], start=201)
    assert all(doubts_with(idle, "idle since"))
    assert not any(found for found, _ in idle)  # a doubt, never an alarm
    # a tick with traffic and nothing wrong clears it; the idle stretch after that is free
    # once the unchanged page has stood for the ingest's freshness limit
    feed(checks, traffic(1, seed=2), start=213)
    after = feed(checks, [dict(ZERO_PAGE) for _ in range(10)], start=214)
    assert not any(doubts_with(after, "idle since"))
    assert not any(doubts for _, doubts in after[8:])


def test_an_unchanged_page_vouches_for_nothing_until_the_freshness_limit() -> None:
    checks = TelemetryChecks(VLLM_METRICS, still_s=120.0)
    feed(checks, traffic(200))
    ticks = feed(checks, [dict(ZERO_PAGE) for _ in range(12)], start=200)
    unchanged = doubts_with(ticks, "no metric changed")
    # the first idle page changed from the busy one; it then stands 15..105 s unvouched,
    # and from 120 s on a stopped scrape would have been refused by the ingest
    assert unchanged == [False] + [True] * 7 + [False] * 4
    assert not any(found for found, _ in ticks)  # a doubt, never an alarm


def test_counts_even_on_every_reading_are_a_doubled_scrape_even_on_a_quiet_service() -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    quiet = traffic(600, rate=0.4)  # two sequences running on average: no ratio is judged
    ticks = feed(checks, quiet, capacity=None)
    assert not any(found for found, _ in ticks[200:])
    assert np.mean(doubts_with(ticks[200:], "even on every reading")) < 0.02
    doubled = traffic(60, rate=0.4, seed=1)
    for row in doubled:
        for m in ("arrival_rate", "prompt_tokens_rate", "generation_tokens_rate",
                  "requests_running", "requests_waiting"):
            row[m] *= 2.0
    ticks = feed(checks, doubled, start=600, capacity=None)
    readings = np.cumsum([row["requests_running"] > 0 for row in doubled])
    doubt = doubts_with(ticks, "even on every reading")
    found = found_on(ticks, "requests_running")
    first = doubt.index(True)
    assert readings[first] <= 8  # a few even readings make a doubt (p < 0.01)
    assert all(doubt[k] or found[k] for k in range(first, 60))  # held from then on
    assert any(found)  # and about twenty a finding


def test_ratios_are_judged_over_pooled_ticks_on_a_quiet_service() -> None:
    # six requests a tick: no single tick counts the ten a per-request ratio needs
    rows = traffic(400, rate=0.4, integer_counts=False) + traffic(
        20, rate=0.4, seed=1, integer_counts=False)
    for row in rows[400:]:
        row["prompt_tokens_rate"] *= 10.0  # a unit change of the prompt counter
    pooled = feed(TelemetryChecks(VLLM_METRICS), rows)
    single = feed(TelemetryChecks(VLLM_METRICS, pool_ticks=1), rows)
    assert any(found_on(pooled[400:], "prompt_tokens_rate"))
    assert not any(found_on(single[400:], "prompt_tokens_rate"))
    assert not any(found for found, _ in pooled[:400])


def test_a_ratio_is_judged_from_its_latest_level_when_the_mix_wanders() -> None:
    # KV per sequence doubles over the window (longer conversations), then every pod is
    # counted twice: from the band's middle, a quarter of the way back, the halving looks
    # like hardly any change; from the latest ticks' level it is the step it is
    rows = traffic(1000, kv_drift=2.0, integer_counts=False) + traffic(
        20, seed=1, integer_counts=False)
    for row in rows[1000:]:
        row["kv_cache_usage"] *= 2.0
        for m in ("arrival_rate", "prompt_tokens_rate", "generation_tokens_rate",
                  "requests_running", "requests_waiting"):
            row[m] *= 2.0
    ticks = feed(TelemetryChecks(VLLM_METRICS), rows)
    assert not any(found for found, _ in ticks[:1000])
    doubted = [bool(doubts) for _, doubts in ticks[1000:]]
    flagged = [bool(found) for found, _ in ticks[1000:]]
    assert any(doubted[:8]) and any(flagged[:15]), (doubted, flagged)


def test_every_slot_busy_for_minutes_is_no_doubled_scrape() -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    feed(checks, traffic(200))
    full = traffic(80, seed=1)
    for k, row in enumerate(full):
        # a saturated fleet: every slot busy (8 pods x 64), the cache nearly full
        row.update(requests_running=float(8 * 64), kv_cache_usage=0.9 + 0.001 * (k % 7))
    ticks = feed(checks, full, start=200)
    assert not any(doubts_with(ticks, "even on every reading"))
    assert not any(found_on(ticks, "requests_running"))


def test_a_queue_that_builds_for_twenty_minutes_then_drains_is_no_fault() -> None:
    # time in system may rise without bound; what it rose to is learnt, and must not become
    # the floor that the drained queue is judged by
    checks = TelemetryChecks(VLLM_METRICS)
    feed(checks, traffic(300))
    rows = traffic(90, seed=1)
    for k, row in enumerate(rows[:80]):
        row["requests_waiting"] = 37.0 * (k + 1)  # twenty minutes of a growing queue
    for k, row in enumerate(rows[80:]):
        row["requests_waiting"] = max(0.0, 2960.0 - 741.0 * (k + 1))  # drained in a minute
    ticks = feed(checks, rows, start=300)
    assert not any(found for found, _ in ticks), [f for f, _ in ticks if f][:1]


def test_a_latency_longer_than_the_system_has_been_busy_is_a_unit_change() -> None:
    # a quiet service: a request now and then, the gauges reading 0 between them
    def quiet(ttft: float) -> dict[str, float]:
        return {**ZERO_PAGE, "arrival_rate": 0.2, "prompt_tokens_rate": 100.0,
                "generation_tokens_rate": 40.0, "ttft_p50": ttft, "ttft_p99": ttft}

    checks = TelemetryChecks(VLLM_METRICS)
    rows = [quiet(0.4) if k % 6 == 0 else dict(ZERO_PAGE) for k in range(240)]
    normal = feed(checks, rows)
    assert not any(found for found, _ in normal) and not any(doubts_with(normal, "ttft"))
    # the TTFT exporter switches to milliseconds: 400 "s", though the gauges read the
    # system empty two minutes ago, inside the span that request must have waited in
    ticks = feed(checks, [quiet(400.0), quiet(420.0)], start=240)
    assert doubts_with(ticks, "ttft_p99 400 s is beyond") == [True, False]
    assert found_on(ticks, "ttft_p99") == [False, True]


def test_a_long_ttft_behind_a_queue_that_never_emptied_is_no_fault() -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    feed(checks, traffic(200))
    # overload: 400 requests queued for ten minutes, the oldest waiting 400 s
    rows = traffic(40, seed=1)
    for k, row in enumerate(rows):
        row.update(requests_waiting=400.0 + k, ttft_p99=400.0, ttft_p50=200.0)
    ticks = feed(checks, rows, start=200)
    assert not any(found_on(ticks, "ttft_p99"))
    assert not any(doubts_with(ticks, "ttft_p99"))


def test_running_stuck_at_zero_beside_kv_in_use_stays_in_doubt_on_quiet_ticks() -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    feed(checks, traffic(200, rate=0.4))
    # requests_running flat at 0 on a quiet service: caught on a tick whose KV is in use,
    # and the ticks after it with nothing in the cache (the sequence finished) cannot
    # tell a stuck gauge from an empty batch
    rows = [{**ZERO_PAGE, "arrival_rate": 0.4, "prompt_tokens_rate": 200.0,
             "generation_tokens_rate": 80.0, "kv_cache_usage": kv}
            for kv in (0.0004, 0.0, 0.0, 0.0, 0.0)]
    ticks = feed(checks, rows, start=200)
    assert found_on(ticks, "requests_running") == [True, False, False, False, False]
    assert all(doubts_with(ticks[1:], "disagreed"))
    # sequences running in a KV cache in use: both live again
    (row,) = traffic(1, seed=3, rate=0.4)
    row.update(requests_running=2.0, kv_cache_usage=0.0016)
    (tick,) = feed(checks, [row], start=205)
    assert not any("disagreed" in d for d in tick[1])


def _fleet(pods: int, reporting: float, starting: int = 0) -> Capacity:
    return Capacity(ready_replicas=pods, replicas=pods + starting, batch_size=64,
                    starting=starting, reporting=reporting)


def test_every_pod_scraped_twice_is_found_at_once_even_on_an_idle_service() -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    for k in range(20):
        checks.update(STEP * k, ZERO_PAGE, _fleet(4, 4.0))
    # a PodMonitor added beside the ServiceMonitor: eight series for four pods, while
    # every sum still reads 0 (nothing to double)
    found = checks.update(STEP * 20, ZERO_PAGE, _fleet(4, 8.0))
    assert {f.rule for f in found} == {"doubled"}
    assert "requests_running" in {f.metric for f in found}


def test_pods_draining_after_a_scale_down_are_no_fault() -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    for k in range(20):
        checks.update(STEP * k, ZERO_PAGE, _fleet(8, 8.0))
    # scaled from 8 to 4: the four removed pods are scraped while they drain
    ticks = [checks.update(STEP * (20 + k), ZERO_PAGE, _fleet(4, 8.0)) for k in range(3)]
    assert not any(ticks)
    # within the grace the pods of the span explain the series: not even a doubt
    assert not any("exporters" in d for d in checks.doubts)


def test_a_ready_pod_never_scraped_is_missing_from_the_sums() -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    rows = traffic(30)
    ticks = [checks.update(STEP * k, row, _fleet(4, 3.0 if k >= 10 else 4.0))
             for k, row in enumerate(rows)]
    rules = [{f.rule for f in found} for found in ticks]
    # four pods ready for minutes, and from tick 10 one of them is not scraped
    assert not any(rules[:10])
    assert all("missing" in r for r in rules[10:])
    # a pod that has just become ready may not be scraped yet: a doubt, not a finding
    checks.update(STEP * 30, ZERO_PAGE, _fleet(5, 4.0))
    assert any("exporters scraped for 5 ready pods" in d for d in checks.doubts)


def test_the_last_arrivals_prefilled_a_tick_late_leave_no_doubt_for_the_idle_after_them(
        ) -> None:
    # traffic stops at once: the window that ends after the last arrival counts none, and
    # counts their prompts, prefilled just after it. Idle pages follow, and are idle.
    checks = TelemetryChecks(VLLM_METRICS)
    feed(checks, traffic(200))
    (row,) = traffic(1, seed=1)
    row.update(arrival_rate=0.0)
    (tick,) = feed(checks, [row], start=200)
    assert not tick[0] and any("arrival_rate read 0" in d for d in tick[1])
    idle = feed(checks, [dict(ZERO_PAGE) for _ in range(12)], start=201)
    assert not any(doubts_with(idle, "idle since"))
    assert not any(doubts for _, doubts in idle[8:])  # nothing once the page has stood


def test_an_arrival_rate_at_0_since_an_idle_stretch_beside_prefills_stays_in_doubt_when_idle(
        ) -> None:
    # not traffic ending: the rate read 0 before the prompts came, so it may be stuck
    # there, and a policy has taken the traffic it hid for none
    checks = TelemetryChecks(VLLM_METRICS)
    feed(checks, traffic(200))
    feed(checks, [dict(ZERO_PAGE) for _ in range(3)], start=200)
    (row,) = traffic(1, seed=1)
    row.update(arrival_rate=0.0)
    (tick,) = feed(checks, [row], start=203)
    assert not tick[0] and any("arrival_rate read 0" in d for d in tick[1])
    idle = feed(checks, [dict(ZERO_PAGE) for _ in range(12)], start=204)
    assert all(doubts_with(idle, "idle since"))


def test_traffic_ending_leaves_no_doubt_for_the_idle_stretch_after_it() -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    feed(checks, traffic(200))
    # the clients stop: no request arrives and no prompt is prefilled, while the requests
    # still in flight generate their last tokens
    (drain,) = traffic(1, seed=1)
    drain.update(arrival_rate=0.0, prompt_tokens_rate=0.0, requests_running=0.0,
                 kv_cache_usage=0.0)
    (tick,) = feed(checks, [drain], start=200)
    assert any("arrival_rate read 0" in d for d in tick[1])  # this tick is held
    idle = feed(checks, [dict(ZERO_PAGE) for _ in range(12)], start=201)
    assert not any(doubts_with(idle, "idle since"))
    assert not any(doubts for _, doubts in idle[8:])  # free past the freshness limit


def test_traffic_that_stops_in_the_middle_of_a_tick_breaks_no_littles_law() -> None:
    """A rate is the tick's mean and a gauge its end: when the clients stop halfway through
    a tick, the rate still counts half a tick of arrivals while every request has left, and
    the time in the system read from the end alone falls far below its usual. That is a
    client outage, not a broken exporter, and its idle stretch must not be held."""
    checks = TelemetryChecks(VLLM_METRICS)
    rows = traffic(200)
    feed(checks, rows)
    last = rows[-1]
    (stop,) = traffic(1, seed=1)
    stop.update(arrival_rate=last["arrival_rate"] / 2,
                prompt_tokens_rate=last["prompt_tokens_rate"] / 2,
                requests_running=1.0, kv_cache_usage=0.0008)  # all but one request has left
    ticks = feed(checks, [stop], start=200)
    ticks += feed(checks, [dict(ZERO_PAGE) for _ in range(12)], start=201)
    assert not any(doubts_with(ticks, "Little's law"))
    assert not any(f.rule == "time_in_system" for found, _ in ticks for f in found)
    assert not any(doubts for _, doubts in ticks[9:])  # free past the freshness limit


def test_more_exporters_than_pods_but_not_twice_as_many_is_a_doubt() -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    for k in range(20):
        checks.update(STEP * k, ZERO_PAGE, _fleet(4, 4.0))
    # six series for four pods that have not changed: some counted twice, or a stray job
    assert not checks.update(STEP * 20, ZERO_PAGE, _fleet(4, 6.0))
    assert any("6 exporters scraped for 4 pods" in d for d in checks.doubts)


def _feed_aged(checks: TelemetryChecks, rows: list[dict[str, float]], ages: list[float],
               start: int = 0) -> list[tuple[list[Finding], list[str]]]:
    """Like :func:`feed`, with the oldest sample's age of each tick."""
    out = []
    for k, (row, age) in enumerate(zip(rows, ages, strict=True)):
        cap = Capacity(ready_replicas=8, replicas=8, batch_size=64, sample_age=age)
        found = checks.update(STEP * (start + k), row, cap)
        out.append((found, list(checks.doubts)))
    return out


def test_a_scrape_that_stops_on_an_idle_service_is_told_by_its_samples_age() -> None:
    # the values cannot tell: the stopped scrape serves the idle page the service serves
    checks = TelemetryChecks(VLLM_METRICS)
    feed(checks, traffic(100))
    live = [8.0, 23.0] * 20  # a 30-s scrape read every 15 s: two ages in a cycle
    idle = _feed_aged(checks, [dict(ZERO_PAGE) for _ in live], live, start=100)
    assert not any(doubts for _, doubts in idle[12:])  # the idle page stood past 120 s
    stopped = [38.0, 53.0, 68.0, 83.0]
    ticks = _feed_aged(checks, [dict(ZERO_PAGE) for _ in stopped], stopped, start=140)
    old = doubts_with(ticks, "oldest vLLM sample")
    # half a tick beyond the usual 23 s is a doubt; two ticks and 23 s more, a finding
    assert old == [True, True, False, False]
    assert found_on(ticks, "arrival_rate") == [False, False, True, True]
    assert {f.rule for f in ticks[2][0]} == {"stale"}
    # once the samples are fresh again, nothing is carried into the idle stretch
    after = _feed_aged(checks, [dict(ZERO_PAGE) for _ in range(4)], [8.0, 23.0] * 2,
                       start=144)
    assert not any(found for found, _ in after) and not any(d for _, d in after)


def test_a_scrape_slower_than_the_tick_is_learned_and_one_late_scrape_is_only_a_doubt(
        ) -> None:
    checks = TelemetryChecks(VLLM_METRICS)
    cycle = [5.0, 20.0, 35.0, 50.0] * 50  # a 60-s scrape read every 15 s
    ticks = _feed_aged(checks, traffic(200), cycle)
    assert not any(doubts_with(ticks, "oldest vLLM sample"))
    late = [5.0, 20.0, 35.0, 50.0, 65.0, 80.0, 5.0]  # one scrape 30 s late
    ticks = _feed_aged(checks, traffic(7, seed=1), late, start=200)
    assert doubts_with(ticks, "oldest vLLM sample") == [False] * 4 + [True, True, False]
    assert not any(found for found, _ in ticks)
    # the second missed scrape in a row is a finding
    stopped = [5.0, 20.0, 35.0, 50.0, 65.0, 80.0, 95.0, 110.0]
    ticks = _feed_aged(checks, traffic(8, seed=2), stopped, start=207)
    assert found_on(ticks, "arrival_rate") == [False] * 7 + [True]
