"""The long-running process: schedules ticks and refits, holds the Lease, serves HTTP.

Two ways to run the same controller:

* live (``backend: kubernetes``): APScheduler runs the tick every ``daemon.interval_s``
  (never two at once: a slow tick delays the next instead of piling up), the refit of the
  forecasters every ``forecast.refit_interval_s``, and the Lease renewal every
  ``leader_election.retry_period_s``. Only the Lease holder ticks; the standby stays ready
  to take over.
* simulated (``backend: sim``): a plain loop on a simulated clock, as fast as the CPU allows,
  for ``--duration`` simulated seconds.

``/metrics`` serves the telemetry registry, ``/healthz`` says whether the loop is alive
(a tick finished within three intervals) and ``/readyz`` whether the first tick has run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aiops.clock import Clock, SimClock
from aiops.config import Config
from aiops.controller import Controller
from aiops.telemetry import Telemetry

log = logging.getLogger("aiops.daemon")


class Leader(Protocol):
    def try_acquire_or_renew(self) -> bool: ...

    def release(self) -> None: ...


class Health:
    """Liveness and readiness, updated by the loop, read by the HTTP handler."""

    def __init__(self, interval_s: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._monotonic = monotonic
        self._started = monotonic()
        self._last_loop: float | None = None
        self.ready = False

    def beat(self) -> None:
        self._last_loop = self._monotonic()
        self.ready = True

    def alive(self) -> bool:
        last = self._last_loop if self._last_loop is not None else self._started
        return self._monotonic() - last <= 3 * self.interval_s + 30.0


def serve_http(host: str, port: int, telemetry: Telemetry, health: Health) -> ThreadingHTTPServer:
    """Start the /metrics, /healthz and /readyz server on a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body = generate_latest(telemetry.registry)
                self._send(200, body, CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                ok = health.alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"tick loop stalled\n")
            elif self.path.startswith("/readyz"):
                ok = health.ready
                self._send(200 if ok else 503, b"ready\n" if ok else b"starting\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="aiops-http", daemon=True).start()
    return server


class Daemon:
    def __init__(self, config: Config, controller: Controller, clock: Clock,
                 telemetry: Telemetry, *, leader: Leader | None = None) -> None:
        self.config = config
        self.controller = controller
        self.clock = clock
        self.telemetry = telemetry
        self.leader = leader
        self.health = Health(config.daemon.interval_s)
        self.stop_event = threading.Event()
        self._tick_lock = threading.Lock()
        self.is_leader = leader is None
        # Without leader election this process is the only one, hence the leader.
        telemetry.leader.set(1 if self.is_leader else 0)

    # ----------------------------------------------------------------- jobs
    def tick_job(self) -> None:
        """One tick of every target, if this replica leads; never raises."""
        if not self._tick_lock.acquire(blocking=False):
            return  # the previous tick is still running: skip rather than pile up
        try:
            if self.is_leader:
                self.controller.tick_all()
            else:
                for name in self.controller.runtimes:
                    self.telemetry.ticks.labels(target=name, outcome="standby").inc()
        except Exception:  # pragma: no cover - tick_all already contains its errors
            log.exception("tick loop error")
        finally:
            self.health.beat()
            self._tick_lock.release()

    def refit_job(self) -> None:
        try:
            self.controller.refit()
        except Exception:
            log.exception("refit failed; the previous forecasters stay in use")

    def lease_job(self) -> None:
        if self.leader is None:
            return
        try:
            leading = self.leader.try_acquire_or_renew()
        except Exception as exc:
            log.warning("lease renewal failed: %s", exc)
            leading = False
        if leading != self.is_leader:
            log.info("leadership %s", "acquired" if leading else "lost")
        self.is_leader = leading
        self.telemetry.leader.set(1 if leading else 0)

    # ----------------------------------------------------------------- runs
    def run_simulated(self, duration_s: float,
                      on_tick: Callable[[float], None] | None = None) -> None:
        """Tick on the simulated clock until ``duration_s`` simulated seconds have passed."""
        if not isinstance(self.clock, SimClock):
            raise TypeError("run_simulated needs a SimClock")
        interval = self.config.daemon.interval_s
        refit_every = self.config.forecast.refit_interval_s
        start = self.clock.now()
        next_refit = start + min(refit_every, 1800.0)  # first fit once there is some history
        while self.clock.now() - start < duration_s and not self.stop_event.is_set():
            self.clock.advance(interval)
            self.tick_job()
            if self.clock.now() >= next_refit:
                self.refit_job()
                next_refit = self.clock.now() + refit_every
            if on_tick is not None:
                on_tick(self.clock.now() - start)

    def run_live(self, duration_s: float | None = None) -> None:
        """Run on the wall clock with APScheduler until stopped (or ``duration_s``)."""
        from apscheduler.schedulers.background import BackgroundScheduler

        sched = BackgroundScheduler(timezone="UTC")
        d = self.config.daemon
        if self.leader is not None:
            self.lease_job()
            sched.add_job(self.lease_job, "interval",
                          seconds=self.config.leader_election.retry_period_s,
                          id="lease", max_instances=1, coalesce=True)
        sched.add_job(self.tick_job, "interval", seconds=d.interval_s, id="tick",
                      max_instances=1, coalesce=True)
        sched.add_job(self.refit_job, "interval",
                      seconds=self.config.forecast.refit_interval_s, id="refit",
                      max_instances=1, coalesce=True)
        sched.start()
        self.tick_job()
        try:
            self.stop_event.wait(timeout=duration_s)
        finally:
            # Finish the tick in progress (never leave a half-applied decision), but do not
            # wait for a refit that may take minutes: release the Lease now so the standby
            # takes over at once instead of after the Lease expires.
            sched.shutdown(wait=False)
            with self._tick_lock:
                self.is_leader = False
            if self.leader is not None:
                try:
                    self.leader.release()
                except Exception as exc:
                    log.warning("releasing the lease failed: %s", exc)
