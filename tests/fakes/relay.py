"""A TCP relay on a fixed loopback address in front of a server that may die and come back.

It plays the part of a Kubernetes Service in front of Prometheus: the daemon keeps one URL
while the pod behind it is killed and replaced (here: a new Prometheus process on a new
port). With no backend, or a backend that refuses, a client's connection is reset at once
(SO_LINGER 0), as a Service without ready endpoints rejects it; nothing is queued or faked.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class Relay:
    def __init__(self) -> None:
        self._backend: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._closing = threading.Event()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="relay")
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def point_at(self, port: int | None) -> None:
        """Send new connections to 127.0.0.1:``port`` (None: reset them); open ones are cut."""
        with self._lock:
            self._backend = ("127.0.0.1", port) if port is not None else None
            conns, self._open = self._open, set()
        for c in conns:
            _reset(c)

    def close(self) -> None:
        self._closing.set()
        self.point_at(None)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            backend = self._backend
        if backend is None:
            _reset(client)
            return
        try:
            upstream = socket.create_connection(backend, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open |= {client, upstream}
        done = threading.Event()

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                done.set()
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)
        done.wait(30)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()
        with self._lock:
            self._open -= {client, upstream}


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset: the peer sees 'connection reset', not a clean end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
