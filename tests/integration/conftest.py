"""Fixtures that run the real Prometheus server (Debian's ``prometheus`` package).

``prometheus_tools`` finds ``prometheus`` and ``promtool`` (``scripts/prometheus.sh install``
puts them there). Without them the integration tests are skipped with the reason, except in
CI (``CI`` or ``AIOPS_REQUIRE_TOOLS`` set, see tests/fakes/tools.py), where a missing server
must fail the run rather than pass it silently.

``start_prometheus`` backfills an OpenMetrics text with ``promtool tsdb create-blocks-from
openmetrics`` into a fresh data directory, starts Prometheus on a loopback port the OS picks
(tests/fakes/prometheus.py), waits for ``/-/ready`` and returns its URL. Every server it
started is stopped at the end of the session, whatever happened.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes.prometheus import (
    PrometheusError,
    PrometheusServer,
    prometheus_binary,
    promtool_binary,
)

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


@pytest.fixture(scope="session")
def prometheus_tools() -> PrometheusTools:
    prometheus, promtool = prometheus_binary(), promtool_binary()
    out = subprocess.run([prometheus, "--version"], capture_output=True, text=True,
                         timeout=30, check=False)
    m = re.search(r"version (\S+)", out.stdout + out.stderr)
    return PrometheusTools(prometheus, promtool, m.group(1) if m else "unknown")


@pytest.fixture(scope="session")
def start_prometheus(
    prometheus_tools: PrometheusTools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str, str], RunningPrometheus]]:
    """Factory: ``start_prometheus(openmetrics_text, name) -> RunningPrometheus``."""
    servers: list[PrometheusServer] = []

    def start(openmetrics: str, name: str) -> RunningPrometheus:
        root = tmp_path_factory.mktemp(f"prometheus-{name}")
        server = PrometheusServer(
            prometheus_tools.prometheus, root, MINIMAL_CONFIG,
            # Backfilled samples are up to an hour old: keep them whatever their age. The
            # default lookback (5m), spelled out: staleness tests depend on it.
            args=("--storage.tsdb.retention.time=3650d", "--query.lookback-delta=5m"))
        om_file = root / "backfill.om"
        om_file.write_text(openmetrics)
        backfill = subprocess.run(
            [prometheus_tools.promtool, "tsdb", "create-blocks-from", "openmetrics",
             str(om_file), str(server.data_dir)],
            capture_output=True, text=True, timeout=300, check=False,
        )
        if backfill.returncode != 0:
            pytest.fail(f"promtool backfill failed ({backfill.returncode}):\n"
                        f"{backfill.stdout[-2000:]}\n{backfill.stderr[-2000:]}", pytrace=False)
        servers.append(server)
        try:
            url = server.start()
        except PrometheusError as exc:
            pytest.fail(str(exc), pytrace=False)
        return RunningPrometheus(url, server.data_dir, server.log, prometheus_tools.version)

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
