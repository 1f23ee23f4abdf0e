"""A real Prometheus server process (Debian's ``prometheus``) on a loopback port the OS picks.

Prometheus is started with ``--web.listen-address=127.0.0.1:0`` and the port is read from its
own "Listening on" log line, so no port is probed, freed and hoped for. The data directory
outlives the process: :meth:`PrometheusServer.kill` and a second :meth:`start` are a crash
and a restart (on another port) of the same server, with its TSDB.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .tools import find

READY_TIMEOUT_S = 60.0
LISTENING = re.compile(r'msg="?Listening on"?.*?address="?(?:[\d.]+|\[::1?\]):(\d+)')


def prometheus_binary() -> str:
    return find("prometheus", env="AIOPS_PROMETHEUS_BIN", install="scripts/prometheus.sh install")


def promtool_binary() -> str:
    return find("promtool", env="AIOPS_PROMTOOL_BIN", install="scripts/prometheus.sh install")


class PrometheusError(Exception):
    """The server did not start or become ready; the message ends with its log."""


@dataclass
class PrometheusServer:
    """``start()`` runs it, ``url`` is where it answers, ``stop()``/``kill()`` end it."""

    binary: str
    root: Path  # holds prometheus.yml, data/ and prometheus.log
    config: str  # the prometheus.yml text
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0
    _log_offset: int = field(default=0, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start (or restart) the server and wait until it is ready; returns its URL."""
        if self.proc is not None and self.proc.poll() is None:
            raise PrometheusError("already running")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "prometheus.yml").write_text(self.config)
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.root / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.data_dir}", "--web.listen-address=127.0.0.1:0",
                 "--log.level=info", *self.args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + READY_TIMEOUT_S
        self.port = 0
        while time.monotonic() < deadline and self.proc.poll() is None:
            if not self.port:
                m = LISTENING.search(self._new_log())
                self.port = int(m.group(1)) if m else 0
            if self.port and self._ready():
                return self.url
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"Prometheus did not become ready:\n{self.tail()}")

    def _new_log(self) -> str:
        with self.log.open("rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode("utf-8", "replace")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
