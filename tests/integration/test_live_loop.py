"""The live loop end to end: ``aiops run`` (``backend: kubernetes``, the shipped enforce config)
against a real Prometheus scraping a simulated vLLM fleet every second, and the fake API
server whose replica count drives that fleet (tests/fakes/live.py has the wiring).

One run of about two minutes tells one story, checked as it happens:

1. a load step (6 → 30 requests/s on one replica of about 14) is followed by a scale-up
   within a bound derived below, explained by an Event, a Grafana annotation and a log line,
   by the holder of the Lease;
2. Prometheus is killed: the fleet is held (no scale-down, no change at all) while the load
   triples behind the daemon's back; Prometheus comes back on another port behind the same
   address and the daemon, seeing the new load, scales up again;
3. a SIGTERM arrives in the middle of a tick: the tick finishes (its state write lands after
   the signal) and only then is the Lease released; the process exits 0.

Throughout, no persisted scale leaves the guardrails (bounds, step sizes, cooldown).
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest
from fakes.apiserver import Fault
from fakes.kustomize import TARGET_DEPLOYMENT, TARGET_NS
from fakes.live import LiveLoop, LiveSettings, Phase, lease_holder, tick_synced_policy
from fakes.rbac import Rbac
from fakes.tls import TestCA

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Changes to the shipped target, all so that a fault could show within minutes:
# * a ceiling of 8 replicas (the shipped 4 leaves no room for a second scale-up);
# * the HPA inside ``predictive`` evaluates at every 2-s tick (as it does at the shipped
#   15-s tick), and it and the guardrails scale down after 10 s: with their 300 s, a daemon
#   that read a dead Prometheus as "no load" would not scale down before the outage ends,
#   and the check that the fleet is held could not fail.
HPA_DOWN_WINDOW_S = 10.0
_TICK_S = LiveSettings().interval_s
SETTINGS = LiveSettings(schedule=(Phase(0.0, 6.0), Phase(20.0, 30.0), Phase(45.0, 90.0)),
                        max_replicas=8, scale_down_stabilization_s=10.0,
                        policy=tick_synced_policy(_TICK_S, HPA_DOWN_WINDOW_S))


def scale_up_bound(loop: LiveLoop) -> float:
    """Seconds from a load step to the first scale-up it causes, at most.

    * the fleet fills: in-system requests pass the HPA's 0.7 x batch (+10 % tolerance)
      within one request's service time (prefill + every decode step at a full batch);
      the arrival rate the policy follows is vLLM's completions, which lag arrivals by
      that same service time;
    * the rate over ``rate_window_s`` rises from the old load to the new one across a
      whole window, and passes one replica's capacity somewhere inside it;
    * the next scrape (``scrape_interval_s``) puts it in Prometheus;
    * the next tick (``interval_s``; the policy, ``predictive`` acting as the HPA with no
      forecast yet, evaluates at every tick) sees it;
    * the tick's queries and the scale request, on a loaded CI machine: one more tick
      interval and 5 s.
    """
    p = loop.profile
    batch = p.default_batch_size
    ctx = loop.s.context_tokens
    service = (float(p.idle_ttft(ctx))
               + loop.s.generated_tokens * p.step_time(batch, ctx + loop.s.generated_tokens))
    return (service + loop.s.rate_window_s + loop.s.scrape_interval_s
            + 2 * loop.s.interval_s + 5.0)


def check_guardrails(loop: LiveLoop, cfg: dict[str, object]) -> None:
    """Every persisted scale: within the bounds, steps no larger than the guardrails allow,
    no reversal of direction within the cooldown, each with a resourceVersion precondition."""
    guard = cfg["guardrails"]
    target = cfg["targets"][0]  # type: ignore[index]
    assert isinstance(guard, dict) and isinstance(target, dict)
    current, last_t, last_dir = loop.s.start_replicas, -math.inf, 0
    for r in loop.api.find("PATCH", "/scale$"):
        assert not r.dry_run and r.body["metadata"]["resourceVersion"]
        if r.status != 200:
            continue
        new, t = int(r.body["spec"]["replicas"]), r.received
        assert target["min_replicas"] <= new <= target["max_replicas"], new
        assert new - current <= guard["max_step_up"], (current, new)
        assert current - new <= guard["max_step_down"], (current, new)
        direction = (new > current) - (new < current)
        if direction and last_dir and direction != last_dir:
            assert t - last_t >= guard["cooldown_s"], (current, new)
        if direction:
            current, last_t, last_dir = new, t, direction


def test_the_live_loop(tmp_path: Path, test_ca: TestCA, shipped_rbac: dict[str, Rbac]) -> None:
    loop = LiveLoop(tmp_path, SETTINGS, ca=test_ca, rbac=shipped_rbac["enforce"])
    with loop:
        cfg = loop.daemon_config()
        step = SETTINGS.schedule[1]

        # ------------------------------------------------ 1. a load step, a scale-up
        loop.wait_for("the Lease held by the daemon",
                      lambda: lease_holder(loop.api) == loop.identity, 60)
        loop.wait_for("the load step", lambda: loop.elapsed() >= step.start_s, 60)
        assert loop.replicas() == 1 and loop.scales() == []  # 6 req/s: one replica is enough
        bound = scale_up_bound(loop)
        took = loop.wait_for("a scale-up after the load step", lambda: loop.replicas() > 1,
                             bound + 10)
        first = loop.scales()[0]
        assert first[0] - step.start_s <= bound, (first, bound)
        loop.wait_for("its Event", lambda: any(
            e["reason"] == "AIOpsScaled" for e in loop.api.events(TARGET_NS)), 30)
        (scaled,) = [e for e in loop.api.events(TARGET_NS) if e["reason"] == "AIOpsScaled"]
        assert f"replicas 1→{first[1]}" in scaled["message"]
        assert scaled["involvedObject"]["name"] == TARGET_DEPLOYMENT
        assert scaled["involvedObject"]["uid"] == loop.api.deployment(
            TARGET_NS, TARGET_DEPLOYMENT)["metadata"]["uid"]
        loop.wait_for("its Grafana annotation", lambda: any(
            "action:scale-up" in a["tags"] for a in loop.grafana.annotations), 30)
        note = next(a for a in loop.grafana.annotations if "action:scale-up" in a["tags"])
        assert {"aiops", "enforce", "target:llama3-8b"} <= set(note["tags"])
        assert f"replicas 1→{first[1]}" in note["text"]
        assert any(d.event == "AIOpsScaled" and d.final == first[1] for d in loop.decisions())
        assert lease_holder(loop.api) == loop.identity
        print(f"scale-up {first[0] - step.start_s:.1f} s after the step (bound {bound:.1f} s; "
              f"seen after {took:.1f} s of waiting)")

        # ------------------------------------------------ 2. Prometheus dies and returns
        loop.wait_for("the first scale-up to be ready", lambda: loop.api.deployment(
            TARGET_NS, TARGET_DEPLOYMENT)["status"].get("readyReplicas") == first[1], 60)
        killed_at = loop.elapsed()
        loop.kill_prometheus()
        # A tick already past its queries may still act on what it read: let it finish.
        time.sleep(2 * SETTINGS.interval_s)
        held, scales_before, held_since = loop.replicas(), len(loop.scales()), time.time()
        rise = SETTINGS.schedule[2]
        # Dead through the rise, for max_failures + 2 ticks, and for longer than the
        # scale-down windows (policy and guardrail): time enough for a blind scale-down.
        guard = cfg["guardrails"]
        assert isinstance(guard, dict)
        dead_for = max(rise.start_s + 2.0 - loop.elapsed(),
                       (guard["max_failures"] + 2) * SETTINGS.interval_s,
                       guard["scale_down_stabilization_s"] + HPA_DOWN_WINDOW_S
                       + 3 * SETTINGS.interval_s)
        deadline = time.monotonic() + dead_for
        while time.monotonic() < deadline:
            assert loop.replicas() == held  # held: no blind scale-down, no guess either
            assert loop.daemon is not None and loop.daemon.poll() is None  # still running
            time.sleep(0.25)
        assert len(loop.scales()) == scales_before
        outage = [d for d in loop.decisions() if d.time >= held_since]
        assert outage and all(d.final == held for d in outage)
        assert any("data_hold" in d.rules or "fallback" in d.rules for d in outage)
        loop.restart_prometheus()
        restarted_at = loop.elapsed()
        assert loop.offered_rps() == rise.rate_rps  # 90 req/s: more than `held` can serve
        loop.wait_for("a scale-up once Prometheus is back", lambda: loop.replicas() > held,
                      bound + 15)
        print(f"Prometheus down {restarted_at - killed_at:.1f} s; resumed, scaled "
              f"{held}→{loop.replicas()} {loop.elapsed() - restarted_at:.1f} s after it "
              "came back")

        # ------------------------------------------------ 3. SIGTERM in the middle of a tick
        release = threading.Event()
        fault = loop.api.inject(Fault(hold=release, method="GET",
                                      path=f"/deployments/{TARGET_DEPLOYMENT}$"))
        loop.wait_for("a tick to start", lambda: fault.hits == 1, 30, poll_s=0.05)
        signalled = time.monotonic()
        loop.sigterm()
        try:
            loop.wait_for("the signal to be taken", lambda: any(
                line.get("msg", "").startswith("signal 15") for line in loop.log_lines()), 30)
            assert loop.daemon is not None and loop.daemon.poll() is None  # waits for the tick
        finally:
            release.set()
        assert loop.daemon is not None
        assert loop.daemon.wait(timeout=60) == 0
        after = [r for r in loop.api.requests if r.received >= signalled]
        states = [i for i, r in enumerate(after) if r.method == "PATCH"
                  and r.path.endswith(f"/deployments/{TARGET_DEPLOYMENT}")
                  and "aiops.io/state" in json.dumps(r.body)]
        releases = [i for i, r in enumerate(after) if r.method == "PUT" and "/leases/" in r.path
                    and r.body["spec"]["holderIdentity"] == ""]
        assert states and releases, [(r.method, r.path, r.status) for r in after]
        assert states[-1] < releases[0]  # the tick's last write, then the release
        assert after[releases[0]].status == 200
        assert lease_holder(loop.api) == ""
        check_guardrails(loop, cfg)
        assert loop.driver_errors == []
        forbidden = [f"{r.method} {r.path}" for r in loop.api.requests if r.status in (401, 403)]
        assert forbidden == []  # the shipped RBAC and the kubeconfig's token were enough
