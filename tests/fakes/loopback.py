"""A threaded HTTP(S) server on 127.0.0.1 for the fake servers the tests talk to.

Each fake (API server, Grafana, Prometheus) keeps its own state and request handling; this
holds what they share: a port the OS picks (never a fixed one), HTTP/1.1 keep-alive with
Nagle off (else ~40 ms per answer from delayed ACKs), TLS when given a context (the
handshake runs in the connection's own thread, so a client that never completes one cannot
stall the others), no request logging, and a clean stop.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Serve = Callable[[BaseHTTPRequestHandler], None]


class LoopbackHTTP:
    """Hands every request (any method) to ``serve(handler)``; the handler replies."""

    def __init__(self, serve: Serve, *, tls: ssl.SSLContext | None = None) -> None:
        self._serve = serve
        self._tls = tls
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LoopbackHTTP:
        serve = self._serve

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _any(self) -> None:
                serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any  # noqa: N815

        tls = self._tls

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                sock, addr = super().get_request()
                if tls is not None:
                    sock = tls.wrap_socket(sock, server_side=True,
                                           do_handshake_on_connect=False)
                return sock, addr

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up or refused our certificate: its business

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"


def refusing_port() -> tuple[socket.socket, int]:
    """A loopback port where connections are refused, held until the socket is closed.

    Bound but not listening: the kernel answers a connect with a reset (ECONNREFUSED), and
    nobody else can take the port meanwhile, unlike a port that was merely freed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])
