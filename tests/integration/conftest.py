"""Fixtures that run the real Prometheus server (Debian's ``prometheus`` package).

``prometheus_tools`` finds ``prometheus`` and ``promtool`` (``scripts/prometheus.sh install``
puts them there). Without them the integration tests are skipped with the reason, except in
CI (``CI`` or ``AIOPS_REQUIRE_PROMETHEUS`` set), where a missing server must fail the run
rather than pass it silently.

``start_prometheus`` backfills an OpenMetrics text with ``promtool tsdb create-blocks-from
openmetrics`` into a fresh data directory, starts Prometheus on a free loopback port, waits
for ``/-/ready`` and returns its URL. Every server it started is stopped at the end of the
session, whatever happened.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0

MINIMAL_CONFIG = """\
# No scrape jobs: every sample comes from the backfilled blocks.
global:
  scrape_interval: 15s
  evaluation_interval: 15s
"""


@dataclass(frozen=True)
class PrometheusTools:
    prometheus: str
    promtool: str
    version: str  # e.g. "2.42.0+ds"


@dataclass(frozen=True)
class RunningPrometheus:
    url: str
    data_dir: Path
    log: Path
    version: str


def _required() -> bool:
    return any(os.environ.get(v, "").strip().lower() not in ("", "0", "false")
               for v in ("CI", "AIOPS_REQUIRE_PROMETHEUS"))


@pytest.fixture(scope="session")
def prometheus_tools() -> PrometheusTools:
    prometheus = os.environ.get("AIOPS_PROMETHEUS_BIN") or shutil.which("prometheus")
    promtool = os.environ.get("AIOPS_PROMTOOL_BIN") or shutil.which("promtool")
    if not prometheus or not promtool:
        reason = ("the Prometheus server is not installed (prometheus/promtool not on PATH); "
                  "install it with: scripts/prometheus.sh install")
        if _required():
            pytest.fail(reason + " — CI must run the integration tests", pytrace=False)
        pytest.skip(reason)
    out = subprocess.run([prometheus, "--version"], capture_output=True, text=True,
                         timeout=30, check=False)
    m = re.search(r"version (\S+)", out.stdout + out.stderr)
    return PrometheusTools(prometheus, promtool, m.group(1) if m else "unknown")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def start_prometheus(
    prometheus_tools: PrometheusTools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str, str], RunningPrometheus]]:
    """Factory: ``start_prometheus(openmetrics_text, name) -> RunningPrometheus``."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(openmetrics: str, name: str) -> RunningPrometheus:
        root = tmp_path_factory.mktemp(f"prometheus-{name}")
        data_dir, om_file = root / "data", root / "backfill.om"
        om_file.write_text(openmetrics)
        backfill = subprocess.run(
            [prometheus_tools.promtool, "tsdb", "create-blocks-from", "openmetrics",
             str(om_file), str(data_dir)],
            capture_output=True, text=True, timeout=300, check=False,
        )
        if backfill.returncode != 0:
            pytest.fail(f"promtool backfill failed ({backfill.returncode}):\n"
                        f"{backfill.stdout[-2000:]}\n{backfill.stderr[-2000:]}", pytrace=False)
        config = root / "prometheus.yml"
        config.write_text(MINIMAL_CONFIG)
        log = root / "prometheus.log"
        last_error = ""
        for _ in range(3):  # a free port can be taken between probe and bind: try another
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    [prometheus_tools.prometheus,
                     f"--config.file={config}",
                     f"--storage.tsdb.path={data_dir}",
                     # Backfilled samples are up to an hour old: keep them whatever their age.
                     "--storage.tsdb.retention.time=3650d",
                     f"--web.listen-address=127.0.0.1:{port}",
                     # The default (5m), spelled out: staleness tests depend on it.
                     "--query.lookback-delta=5m",
                     "--log.level=info"],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
            procs.append(proc)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                if _ready(url):
                    return RunningPrometheus(url, data_dir, log, prometheus_tools.version)
                time.sleep(0.2)
            _stop(proc)
            last_error = _tail(log)
        pytest.fail(f"Prometheus did not become ready on {url}:\n{last_error}", pytrace=False)

    try:
        yield start
    finally:
        for proc in procs:
            _stop(proc)
