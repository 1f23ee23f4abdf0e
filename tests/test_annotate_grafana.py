"""Grafana annotations against a loopback Grafana, and the queue that keeps them off the tick."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.grafana import FakeGrafana
from fakes.loopback import refusing_port

from aiops.annotate.base import QueuedAnnotator
from aiops.annotate.grafana import GrafanaAnnotator
from aiops.config import GrafanaConfig, TargetConfig
from aiops.types import Clamp, Decision, Recommendation

T0 = 1_700_000_000.5
TARGET = TargetConfig(name="llama", namespace="ml", deployment="llama-8b",
                      policy="ppo:path=policies/default")
TOKEN = "glsa_test_token"


def decision(replicas: int = 5, prev: int = 3, *, t: float = T0, dry_run: bool = False,
             clamps: tuple[Clamp, ...] = (), rec: int | None = None) -> Decision:
    return Decision(time=t, target="llama", replicas=replicas, batch_size=64,
                    previous_replicas=prev, previous_batch_size=64,
                    recommendation=Recommendation(replicas if rec is None else rec,
                                                  reason="forecast p90 above capacity",
                                                  details={"forecast_p90_rps": 41.25}),
                    clamps=clamps, dry_run=dry_run)


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    with FakeGrafana(token=TOKEN) as g:
        yield g


def annotator(g: FakeGrafana, **kw: Any) -> GrafanaAnnotator:
    cfg_kw: dict[str, Any] = {"url": g.url + "/", "dashboard_uid": "aiops-main",
                              "token_env": "GRAFANA_TOKEN", "timeout_s": 1.0}
    cfg_kw.update(kw.pop("cfg", {}))
    return GrafanaAnnotator(GrafanaConfig(**cfg_kw), environ={"GRAFANA_TOKEN": TOKEN}, **kw)


def test_the_request_has_the_documented_shape(grafana: FakeGrafana) -> None:
    clamp = Clamp("max_step_up", 9, 5, "at most 2 up per tick")
    assert annotator(grafana).annotate(TARGET, decision(5, rec=9, clamps=(clamp,)))
    (req,) = grafana.requests
    assert req.status == 200
    assert (req.method, req.path) == ("POST", "/api/annotations")
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["content-type"] == "application/json"
    body = req.body
    assert set(body) == {"dashboardUID", "time", "tags", "text"}
    assert body["dashboardUID"] == "aiops-main"
    assert body["time"] == 1_700_000_000_500  # epoch milliseconds, an integer
    assert body["tags"] == ["aiops", "target:llama", "namespace:ml", "policy:ppo",
                            "action:scale-up", "reason:AIOpsScaled", "enforce",
                            "rule:max_step_up"]
    assert "replicas 3→5" in body["text"]
    assert "forecast p90 above capacity" in body["text"]
    assert "max_step_up 9→5" in body["text"]
    assert "forecast_p90_rps=41.25" in body["text"]


def test_without_a_dashboard_uid_the_annotation_is_organisation_wide(
        grafana: FakeGrafana) -> None:
    assert annotator(grafana, cfg={"dashboard_uid": None}).annotate(TARGET, decision())
    assert "dashboardUID" not in grafana.requests[0].body


def test_the_token_file_wins_and_is_re_read(grafana: FakeGrafana, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old-token\n")
    ann = annotator(grafana, cfg={"token_file": path})
    assert not ann.annotate(TARGET, decision())  # Grafana says 401: logged, not raised
    assert grafana.requests[-1].headers["authorization"] == "Bearer old-token"
    assert grafana.requests[-1].status == 401
    path.write_text(TOKEN + "\n")  # the Secret was rotated
    assert ann.annotate(TARGET, decision())
    assert grafana.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_an_unreadable_token_file_fails_without_a_request(grafana: FakeGrafana,
                                                          tmp_path: Path) -> None:
    ann = annotator(grafana, cfg={"token_file": tmp_path / "missing"})
    assert not ann.annotate(TARGET, decision())
    assert grafana.requests == []


def test_server_errors_return_false(grafana: FakeGrafana) -> None:
    grafana.fail_next(500)
    ann = annotator(grafana)
    assert not ann.annotate(TARGET, decision())
    assert ann.annotate(TARGET, decision())  # a failure is not remembered as sent


def test_a_hanging_grafana_is_given_up_after_the_timeout(grafana: FakeGrafana) -> None:
    release = threading.Event()
    grafana.hold = release
    try:
        assert not annotator(grafana, cfg={"timeout_s": 0.3}).annotate(TARGET, decision())
        (req,) = grafana.requests
        assert req.status == 0  # the annotator gave up before Grafana answered
    finally:
        release.set()


def test_grafana_down_returns_false_at_once(caplog: pytest.LogCaptureFixture) -> None:
    sock, port = refusing_port()
    with sock:
        ann = GrafanaAnnotator(GrafanaConfig(url=f"http://127.0.0.1:{port}", timeout_s=30.0),
                               environ={})
        assert not ann.annotate(TARGET, decision())
    # refused, not timed out: the request never waited for the 30-s timeout
    assert "Connection refused" in caplog.text


def test_a_standing_situation_is_annotated_once_per_repeat_interval(
        grafana: FakeGrafana) -> None:
    ann = annotator(grafana, repeat_after_s=600)
    for i in range(10):  # a dry-run recommendation every 15 s
        assert ann.annotate(TARGET, decision(dry_run=True, t=T0 + 15 * i))
    assert len(grafana.annotations) == 1
    assert "dry-run" in grafana.annotations[0]["tags"]
    assert ann.annotate(TARGET, decision(6, dry_run=True, t=T0 + 150))  # new numbers
    assert ann.annotate(TARGET, decision(6, dry_run=True, t=T0 + 150 + 600))  # repeat due
    assert len(grafana.annotations) == 3


def test_quiet_ticks_post_nothing(grafana: FakeGrafana) -> None:
    assert annotator(grafana).annotate(TARGET, decision(3, prev=3))
    assert grafana.requests == []


# --------------------------------------------------------------------------- the queue
class Flaky:
    """An annotator that fails ``fail`` times, then succeeds; can block until released."""

    name = "flaky"

    def __init__(self, fail: int = 0, block: threading.Event | None = None) -> None:
        self.fail = fail
        self.block = block
        self.calls = 0

    def annotate(self, target: TargetConfig, decision: Decision) -> bool:
        if self.block is not None:
            self.block.wait(5)
        self.calls += 1
        if self.calls <= self.fail:
            if self.calls == 1:
                raise RuntimeError("a bug in someone's annotator")
            return False
        return True


def test_the_queue_retries_then_counts() -> None:
    q = QueuedAnnotator(Flaky(fail=2), retries=2, backoff_s=0.01)
    assert q.annotate(TARGET, decision())
    assert q.flush(5)
    assert q.stats() == {"sent": 1, "failed": 0, "dropped": 0, "queued": 0}
    q.close()
    q2 = QueuedAnnotator(Flaky(fail=10), retries=1, backoff_s=0.01)
    q2.annotate(TARGET, decision())
    assert q2.flush(5)
    assert q2.stats()["failed"] == 1 and q2.inner.calls == 2  # type: ignore[attr-defined]
    q2.close()


def test_a_full_queue_drops_and_counts_without_blocking_the_tick() -> None:
    release = threading.Event()
    inner = Flaky(block=release)
    q = QueuedAnnotator(inner, maxsize=2, retries=0)
    results = [q.annotate(TARGET, decision(t=T0 + i)) for i in range(6)]
    # The calls returned while the worker is still stuck in its first annotation: the tick
    # never waits for the channel (a synchronous call would have finished one by now).
    assert inner.calls == 0 and not release.is_set()
    # one in the worker's hands, two queued, the rest dropped
    assert results.count(False) == q.stats()["dropped"] >= 3
    release.set()
    assert q.flush(5)
    q.close()
    assert q.stats()["sent"] == results.count(True)
    assert not q.annotate(TARGET, decision())  # closed


def test_a_bug_while_building_the_annotation_returns_false(grafana: FakeGrafana) -> None:
    bad = Decision(time=T0, target="llama", replicas=5, batch_size=64, previous_replicas=3,
                   previous_batch_size=64,
                   recommendation=Recommendation(5, details={"x": "not a number"}))  # type: ignore[dict-item]
    assert not annotator(grafana).annotate(TARGET, bad)
    assert grafana.requests == []
