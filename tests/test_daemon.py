"""The process around the controller: HTTP endpoints, leadership, the `aiops run` command."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from aiops.cli import app
from aiops.clock import SimClock
from aiops.config import parse_config
from aiops.controller import Controller
from aiops.daemon import Daemon, Health, serve_http
from aiops.sim.backend import SimBackend
from aiops.sim.workloads import resolve_workload
from aiops.telemetry import Telemetry

CONFIG = """
backend: sim
dry_run: false
daemon: {interval_s: 15, http_port: 0}
leader_election: {enabled: false}
targets:
  - {name: a, deployment: a, policy: hpa, max_replicas: 16}
"""


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def make_daemon(leader: object = None) -> tuple[Daemon, SimClock, Telemetry]:
    cfg = parse_config(CONFIG, environ={})
    clock = SimClock(0.0)
    backend = SimBackend(cfg, clock, duration=3600.0)
    tel = Telemetry(CollectorRegistry())
    ctl = Controller(cfg, backend, backend, clock, tel)
    return Daemon(cfg, ctl, clock, tel, leader=leader), clock, tel  # type: ignore[arg-type]


def test_http_endpoints_serve_metrics_health_and_readiness() -> None:
    daemon, clock, tel = make_daemon()
    server = serve_http("127.0.0.1", 0, tel, daemon.health)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert get(base + "/readyz")[0] == 503  # no tick yet
        assert get(base + "/healthz")[0] == 200
        clock.advance(15.0)
        daemon.tick_job()
        assert get(base + "/readyz")[0] == 200
        code, body = get(base + "/metrics")
        assert code == 200
        assert 'aiops_ticks_total{outcome="ok",target="a"} 1.0' in body
        assert "aiops_decided_replicas" in body
        assert get(base + "/nope")[0] == 404
    finally:
        server.shutdown()


def test_health_reports_a_stalled_loop() -> None:
    now = [0.0]
    h = Health(15.0, monotonic=lambda: now[0])
    h.beat()
    now[0] = 60.0
    assert h.alive()
    now[0] = 200.0  # no tick for 3 intervals and 30 s of grace
    assert not h.alive()


class FlakyLeader:
    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.released = False

    def try_acquire_or_renew(self) -> bool:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def release(self) -> None:
        self.released = True


def test_only_the_leader_ticks_and_a_lease_error_means_standby() -> None:
    leader = FlakyLeader([False, True, RuntimeError("API server down")])  # type: ignore[list-item]
    daemon, clock, tel = make_daemon(leader)
    daemon.lease_job()
    clock.advance(15.0)
    daemon.tick_job()
    assert tel.registry.get_sample_value("aiops_ticks_total",
                                         {"target": "a", "outcome": "standby"}) == 1
    assert tel.registry.get_sample_value("aiops_leader") == 0
    daemon.lease_job()
    clock.advance(15.0)
    daemon.tick_job()
    assert tel.registry.get_sample_value("aiops_ticks_total",
                                         {"target": "a", "outcome": "ok"}) == 1
    assert tel.registry.get_sample_value("aiops_leader") == 1
    daemon.lease_job()  # renewal raised: never act without the lease
    assert not daemon.is_leader


def test_run_command_on_the_simulated_cluster(tmp_path: Path) -> None:
    cfg = tmp_path / "sim.yaml"
    cfg.write_text(CONFIG)
    res = CliRunner().invoke(app, ["run", "--config", str(cfg), "--duration", "10m",
                                   "--log-format", "text"])
    assert res.exit_code == 0, res.output
    assert "aiops on the simulated cluster, 0.17 h simulated (enforce)" in res.output
    table = [[c.strip() for c in line.strip()[1:-1].split("│" if "│" in line else "┃")]
             for line in res.output.splitlines() if line.startswith(("│", "┃"))]
    header, rows = table[0], []
    for line in table[1:]:  # a wrapped cell continues on lines whose first cell is empty
        if rows and not line[0]:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], line, strict=True)]
        else:
            rows.append(line)
    assert header[:4] == ["target", "policy", "GPU-hours", "SLO %"]
    (row,) = rows
    got = dict(zip(header, row, strict=True))
    assert (got["target"], got["policy"]) == ("a", "hpa")
    # The figures are this run's: every request of the first 10 simulated minutes of the
    # configured workload, on a fleet that existed for those 10 minutes.
    cfg = parse_config(CONFIG, environ={})
    workload = resolve_workload(cfg.sim.workload, rate_scale=cfg.sim.rate_scale,
                                seed=cfg.sim.seed, duration=600.0)
    assert int(got["requests"]) == len(workload) > 0
    gpu_hours = float(got["GPU-hours"])
    assert 600 / 3600 <= gpu_hours <= int(got["max replicas"]) * 900 / 3600
    assert 0 < float(got["SLO %"]) <= 100
    assert int(got["scale-ups"]) + int(got["scale-downs"]) >= 1


def test_run_with_json_logs_prints_only_json_lines(tmp_path: Path) -> None:
    """A log pipeline reads every line: the summary too is JSON, and the start-up line shows
    the format in use, not the config's."""
    cfg = tmp_path / "sim.yaml"
    cfg.write_text(CONFIG.replace("http_port: 0}", "http_port: 0, log_format: text}"))
    res = CliRunner().invoke(app, ["run", "--config", str(cfg), "--duration", "10m",
                                   "--log-format", "json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.output.splitlines() if line.strip()]
    start = next(x for x in lines if "starting" in x["msg"])
    assert start["config"]["daemon"]["log_format"] == "json"
    summary = [x for x in lines if x["msg"].startswith("aiops on the simulated cluster")]
    assert [x["target"] for x in summary] == ["a"]
    assert summary[0]["gpu_hours"] > 0 and 0 < summary[0]["slo_attainment"] <= 1


def test_dry_run_on_the_simulator_does_not_credit_the_policy(tmp_path: Path) -> None:
    cfg = tmp_path / "sim.yaml"
    cfg.write_text(CONFIG)
    res = CliRunner().invoke(app, ["run", "--config", str(cfg), "--duration", "10m",
                                   "--dry-run", "--log-format", "json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines() if line.strip()]
    (summary,) = [x for x in rows if x["msg"].startswith("aiops on the simulated cluster")]
    assert summary["policy"] == "unchanged fleet (dry-run; hpa only recommended)"
    assert summary["scale_ups"] == 0 and summary["scale_downs"] == 0


def test_run_command_rejects_a_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("targets: []\n")
    res = CliRunner().invoke(app, ["run", "--config", str(cfg)])
    assert res.exit_code == 2
    assert "bad.yaml" in res.output
