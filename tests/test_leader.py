"""Leader election: two candidates, one Lease on the loopback API server, a simulated clock.

Time only moves when a test moves it, so "after the lease expires" is exact, and races are
staged with the server's hook (the other candidate writes while this one's request is in
flight), so the 409 comes from the server's real resourceVersion check. The server enforces
the shipped RBAC (deny by default), so the Lease's name and namespace are the shipped ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.apiserver import MICRO_TIME, FakeApiServer, Fault, RecordedRequest

from aiops.actuate.leader import LeaderElector, micro_time
from aiops.clock import SimClock
from aiops.config import KubernetesConfig, LeaderElectionConfig
from aiops.errors import PermanentError, TransientError

CFG = LeaderElectionConfig(lease_name="aiops-leader", namespace="aiops",
                           lease_duration_s=15, renew_deadline_s=10, retry_period_s=2)
T0 = 1_700_000_000.0


@pytest.fixture
def server(apiserver: FakeApiServer) -> FakeApiServer:
    """HTTPS, tokens and the shipped RBAC: the Role allows exactly this Lease."""
    return apiserver


@pytest.fixture
def clock() -> SimClock:
    return SimClock(T0)


def candidate(server: FakeApiServer, clock: SimClock, identity: str) -> LeaderElector:
    return LeaderElector(CFG, server.api_client(), clock=clock, identity=identity,
                         request_timeout_s=2.0)


def spec(server: FakeApiServer) -> dict[str, object]:
    lease = server.lease("aiops", "aiops-leader")
    assert lease is not None
    return dict(lease["spec"])


def test_micro_time_always_has_six_fractional_digits() -> None:
    assert micro_time(0.0) == "1970-01-01T00:00:00.000000Z"
    assert MICRO_TIME.match(micro_time(T0 + 0.25))


def test_the_first_candidate_creates_the_lease_and_the_second_stands_by(
        server: FakeApiServer, clock: SimClock) -> None:
    a, b = candidate(server, clock, "a"), candidate(server, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.is_leader and not b.is_leader
    assert b.holder == "a"
    s = spec(server)
    assert s == {"holderIdentity": "a", "leaseDurationSeconds": 15,
                 "acquireTime": micro_time(T0), "renewTime": micro_time(T0),
                 "leaseTransitions": 0}
    (create,) = server.find("POST")
    assert create.path == "/apis/coordination.k8s.io/v1/namespaces/aiops/leases"


def test_renewal_moves_renew_time_only(server: FakeApiServer, clock: SimClock) -> None:
    a = candidate(server, clock, "a")
    a.try_acquire_or_renew()
    clock.advance(2)
    assert a.try_acquire_or_renew()
    s = spec(server)
    assert s["renewTime"] == micro_time(T0 + 2)
    assert s["acquireTime"] == micro_time(T0)
    assert s["leaseTransitions"] == 0
    (renew,) = server.find("PUT")
    assert renew.body["metadata"]["resourceVersion"]  # conditional on what was read


def test_the_standby_takes_over_only_after_the_lease_expired(server: FakeApiServer,
                                                             clock: SimClock) -> None:
    a, b = candidate(server, clock, "a"), candidate(server, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    clock.advance(5)
    a.try_acquire_or_renew()  # last renewal at T0+5; then a dies
    b.try_acquire_or_renew()  # b sees the record move at T0+5
    clock.advance(9)
    assert a.is_leader  # within its renew deadline (10 s)
    clock.advance(1)
    assert not a.is_leader  # renew deadline passed: a steps down by itself
    clock.advance(4.5)  # T0+19.5: 14.5 s since b saw a renew, lease is 15 s
    assert not b.try_acquire_or_renew()
    assert spec(server)["holderIdentity"] == "a"
    clock.advance(1)
    assert b.try_acquire_or_renew()
    s = spec(server)
    assert s["holderIdentity"] == "b"
    assert s["leaseTransitions"] == 1
    assert s["acquireTime"] == micro_time(clock.now())
    assert not a.try_acquire_or_renew()  # a comes back: b holds a valid lease


def test_never_two_leaders_over_a_long_run(server: FakeApiServer, clock: SimClock) -> None:
    a, b = candidate(server, clock, "a"), candidate(server, clock, "b")
    alive = {"a": True, "b": True}
    leaders_seen = set()
    for step in range(60):
        if step == 20:
            alive["a"] = False  # a crashes
        if step == 45:
            alive["a"] = True  # and restarts
        for name, c in (("a", a), ("b", b)):
            if alive[name]:
                c.try_acquire_or_renew()
        assert not (a.is_leader and b.is_leader)
        leaders_seen |= {n for n, c in (("a", a), ("b", b)) if c.is_leader}
        clock.advance(2)
    assert leaders_seen == {"a", "b"}
    assert b.is_leader  # a, restarted, did not take the lease back


def test_a_race_for_an_expired_lease_has_one_winner(server: FakeApiServer,
                                                    clock: SimClock) -> None:
    old, a, b = (candidate(server, clock, n) for n in ("old", "a", "b"))
    old.try_acquire_or_renew()
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    clock.advance(16)  # old is gone; both see it expired

    def a_wins_first(req: RecordedRequest) -> None:
        if req.method == "PUT" and req.body["spec"]["holderIdentity"] == "b":
            server.hook = None
            assert a.try_acquire_or_renew()  # a's PUT lands while b's is in flight

    server.hook = a_wins_first
    assert not b.try_acquire_or_renew()
    assert a.is_leader and not b.is_leader
    puts = {r.body["spec"]["holderIdentity"]: r.status for r in server.find("PUT")}
    assert puts == {"a": 200, "b": 409}
    assert spec(server)["holderIdentity"] == "a"
    assert spec(server)["leaseTransitions"] == 1


def test_a_race_to_create_the_lease_has_one_winner(server: FakeApiServer,
                                                   clock: SimClock) -> None:
    a, b = candidate(server, clock, "a"), candidate(server, clock, "b")

    def a_creates_first(req: RecordedRequest) -> None:
        if req.method == "POST" and req.body["spec"]["holderIdentity"] == "b":
            server.hook = None
            assert a.try_acquire_or_renew()

    server.hook = a_creates_first
    assert not b.try_acquire_or_renew()
    assert a.is_leader and not b.is_leader
    posts = {r.body["spec"]["holderIdentity"]: r.status for r in server.find("POST")}
    assert posts == {"a": 201, "b": 409}


def test_release_lets_the_standby_take_over_at_once(server: FakeApiServer,
                                                    clock: SimClock) -> None:
    a = candidate(server, clock, "a")
    a.try_acquire_or_renew()
    clock.advance(3)
    a.release()
    assert not a.is_leader and a.last_error is None
    s = spec(server)
    assert s["holderIdentity"] == "" and s["leaseDurationSeconds"] == 1
    fresh = candidate(server, clock, "b")  # never saw the lease before
    assert fresh.try_acquire_or_renew()
    assert spec(server)["leaseTransitions"] == 1


def test_api_errors_keep_leadership_only_until_the_renew_deadline(
        server: FakeApiServer, clock: SimClock) -> None:
    a = candidate(server, clock, "a")
    a.try_acquire_or_renew()
    server.inject(Fault(status=500, path="/leases", times=None))
    clock.advance(4)
    assert a.try_acquire_or_renew()  # failed, but the last renewal is 4 s old
    assert isinstance(a.last_error, TransientError)
    clock.advance(6)
    assert not a.try_acquire_or_renew()
    assert not a.is_leader


def test_forbidden_leases_are_a_permanent_error_naming_the_permission(
        server: FakeApiServer, clock: SimClock) -> None:
    server.deny("create", "leases")
    a = candidate(server, clock, "a")
    assert not a.try_acquire_or_renew()
    assert isinstance(a.last_error, PermanentError)
    assert "grant verb 'create' on resource 'leases' in apiGroup coordination.k8s.io" in str(
        a.last_error)


def test_a_malformed_lease_does_not_raise(server: FakeApiServer, clock: SimClock) -> None:
    a = candidate(server, clock, "a")
    a.try_acquire_or_renew()
    server.objects[("leases", "aiops", "aiops-leader")]["spec"]["leaseTransitions"] = "many"
    clock.advance(2)
    assert a.try_acquire_or_renew()  # still within its renew deadline
    assert isinstance(a.last_error, TransientError)
    assert "election round failed" in str(a.last_error)


def test_from_config_builds_its_own_client(server: FakeApiServer, clock: SimClock,
                                           tmp_path: Path) -> None:
    kube = KubernetesConfig(in_cluster=False, kubeconfig=server.write_kubeconfig(
        tmp_path / "kubeconfig"), request_timeout_s=30)
    a = LeaderElector.from_config(CFG, kube, clock=clock, identity="pod-a")
    assert a.timeout_s == CFG.retry_period_s  # a renewal may not eat the renew deadline
    assert a.try_acquire_or_renew()
    assert spec(server)["holderIdentity"] == "pod-a"
    assert server.requests[-1].headers["authorization"] == "Bearer kubeconfig-token"


def test_a_lease_the_role_does_not_name_is_created_but_never_renewed(
        server: FakeApiServer, clock: SimClock) -> None:
    """The shipped Role lets anyone create a Lease (create cannot be limited by name) but
    get and update only aiops-leader: a daemon configured with another name must not
    believe it leads past its renew deadline."""
    other = LeaderElectionConfig(lease_name="not-in-the-role", namespace="aiops",
                                 lease_duration_s=15, renew_deadline_s=10, retry_period_s=2)
    a = LeaderElector(other, server.api_client(), clock=clock, identity="a",
                      request_timeout_s=2.0)
    assert not a.try_acquire_or_renew()  # the get is forbidden before anything is created
    assert isinstance(a.last_error, PermanentError)
    assert "grant verb 'get' on resource 'leases'" in str(a.last_error)
    assert [r.status for r in server.requests] == [403]
